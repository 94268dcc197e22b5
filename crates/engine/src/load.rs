//! Why a model file could not become a reranker or an embedding model: the
//! errors both loaders share (`Reranker::load`, `Embedder::load`).

use tessera_model::prompt::PromptError;

use crate::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Tokenizer(#[from] tessera_model::TokenizerError),
    #[error("the tokenizer has no token '{0}' (needed for the score head)")]
    MissingToken(String),
    #[error(
        "this GGUF is an embedding model (pooling: {pooling}), not a reranker: it has no \
         yes/no score head to rerank with"
    )]
    WrongKind { pooling: &'static str },
    #[error(
        "this GGUF is a reranker (pooling: {pooling}), not an embedding model: it pools \
         yes/no logits, not a vector"
    )]
    NotEmbedding { pooling: &'static str },
    #[error(transparent)]
    Model(#[from] tessera_model::ModelError),
    #[error("prompt: {0}")]
    Prompt(PromptError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}
