//! The transport-free core under every front end (the HTTP server, `tessera
//! rerank`, `tessera embed`): it hosts the models — a reranker, an embedding
//! model, or both, on devices or CPU replicas, warmed up, behind one shared
//! queue budget — and offers [`Service::rerank`], [`Service::embed`],
//! [`Service::tokenize`], the hosted models' descriptions and
//! [`Service::health`] as calls with one [`ServiceError`].
//!
//! A call is tokenised in a pool bounded to a few threads (its waiting calls
//! hold none), then queued by tokens for the model's compute threads, which
//! interleave big and small requests pass by pass; its future resolves with
//! the results shaped by the engine, or is dropped to abandon the work.
//!
//! Front ends depend on this crate alone: what they need of the engine and
//! the model (options, outputs, queue statistics) is re-exported here.

mod error;
mod hosted;
mod load;
mod pool;
mod service;

pub use error::{kind_name, ServiceError};
pub use hosted::{Hosted, HostedModel, Model, ModelInfo};
pub use load::{LoadPlan, Loading, LogProgress, ModelFile, Placement, Progress};
pub use pool::PoolGauges;
pub use service::{
    default_tokenize_threads, prepare_embeddings, EmbedInputs, EmbedJob, Embedded, Health,
    Observers, RerankJob, Reranked, Service, ServiceOptions, Timings, Token,
};

/// The queue's configuration, statistics and observer (for metrics).
pub use tessera_engine::scheduler::{
    BatchReport, DeviceStatus, SchedulerConfig, SchedulerError, SchedulerObserver, SchedulerStats,
};
/// What a call is made of and what comes back, from the engine; with the
/// engine's front door (`prepare_rerank`, [`prepare_embeddings`]) for
/// validating requests without a model loaded.
pub use tessera_engine::{
    prepare as prepare_rerank,
    request::{chunk_note, ranking},
    DocumentScore, EmbedError, EmbedFormat, EmbedOptions, Embedding, PrefixCacheStats,
    PreparedEmbeddings, PreparedRequest, PromptBuilder, PromptError, RequestError, RerankOptions,
    RerankOutput, DEFAULT_MAX_BATCH_TOKENS,
};
/// A packed request and its groups, as a benchmark feeds a model directly.
pub use tessera_engine::{PackedRequest, PrefixGroup};
/// The models' kinds and request options.
pub use tessera_model::{ModelKind, TruncationSide};
