//! The Qwen3 reranker as data: hyper-parameters from GGUF metadata, weight
//! resolution by GGUF tensor names, the yes/no score head, the tokenizer built from
//! the GGUF's `tokenizer.ggml.*` metadata, and the rerank prompt builder.

pub mod config;
pub mod prompt;
pub mod tokenizer;
pub mod weights;

pub use config::{ModelConfig, ModelError, ModelKind};
pub use prompt::{PairTokens, PromptBuilder, PromptError, TruncationSide};
pub use tokenizer::{RerankTokenizer, TokenizerError, TokenizerSummary};
pub use weights::{LayerWeights, ScoreHead, ScoreHeadSource, Weights};
