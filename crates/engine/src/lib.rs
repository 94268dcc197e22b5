//! The forward pass of a Qwen3 reranker over any [`Backend`]: packed batches of
//! (query, document) token sequences in, yes/no logits of each sequence's last
//! token out; and the one front door that turns a rerank call's texts into
//! ranked scores ([`request`]), for the server and the command line alike.
//!
//! [`Backend`]: tessera_backend::Backend

mod embed;
mod forward;
mod load;
pub mod pack;
mod prefix_cache;
pub mod request;
mod rerank;
pub mod scheduler;

pub use embed::{
    normalise, EmbedError, EmbedFormat, EmbedInput, EmbedOptions, Embedder, Embedding,
    PreparedEmbeddings,
};
pub use forward::{Engine, EngineError, PairScore, PrefixGroup};
pub use load::LoadError;
pub use pack::{PackedRequest, DEFAULT_MAX_BATCH_TOKENS};
pub use prefix_cache::{PrefixCacheStats, DEFAULT_PREFIX_CACHE_BYTES};
pub use request::{
    prepare, DocumentScore, PreparedRequest, RequestError, RerankOptions, RerankOutput,
};
pub use rerank::{RerankError, Reranker};
/// What a request is made of, for callers that reach the model only through the engine.
pub use tessera_model::{PromptBuilder, PromptError, TokenizerError, TruncationSide};
