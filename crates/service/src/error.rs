//! The one error of every service call. Front ends turn it into their own
//! answers (HTTP statuses, a dialect's field names, exit codes); nothing here
//! knows about them.

use std::time::Duration;

use tessera_engine::scheduler::SchedulerError;
use tessera_engine::{EmbedError, RequestError};
use tessera_model::ModelKind;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service hosts no model of the kind the call needs. `hosted` names
    /// what it does host (a name is `None` while that model loads).
    #[error("this service hosts no {}", kind_name(*.wanted))]
    NotHosted {
        wanted: ModelKind,
        hosted: Vec<(ModelKind, Option<String>)>,
    },
    /// The model the call needs is still loading.
    #[error("the model is not loaded yet")]
    NotReady,
    /// The rerank call's texts or options cannot be prepared (the caller's fault).
    #[error(transparent)]
    Rerank(RequestError),
    /// The embedding call's inputs or options cannot be prepared (the caller's fault).
    #[error(transparent)]
    Embed(EmbedError),
    /// Input `index` of a tokenize call cannot be tokenised (the caller's fault).
    #[error("cannot tokenize input {index}: {message}")]
    Tokenize { index: usize, message: String },
    /// The queue refused the work, or the model failed it.
    #[error(transparent)]
    Queue(#[from] SchedulerError),
    /// No answer within the request deadline; the request's remaining work was dropped.
    #[error("the request was not scored within {:.1} s (--request-timeout); its work was dropped", .0.as_secs_f64())]
    TimedOut(Duration),
    /// A tokenising thread failed (panicked or was cancelled).
    #[error("the tokenizer task failed: {0}")]
    TaskFailed(String),
    /// A model could not be loaded or warmed up (file, backend, device memory).
    #[error("{0}")]
    Load(String),
    /// A fault of ours that is none of the above.
    #[error("{0}")]
    Internal(String),
}

/// How a model kind is named in messages.
pub fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Reranker => "reranker",
        ModelKind::Embedding => "embedding model",
    }
}
