//! The forward pass of a Qwen3 reranker over any [`Backend`]: packed batches of
//! (query, document) token sequences in, yes/no logits of each sequence's last
//! token out; and the reranking front end that turns texts into scores.

mod forward;
mod prefix_cache;
mod rerank;
pub mod scheduler;

pub use forward::{Engine, EngineError, PairScore, PrefixGroup};
pub use prefix_cache::{PrefixCacheStats, DEFAULT_PREFIX_CACHE_BYTES};
pub use rerank::{DocumentScore, LoadError, RerankError, RerankOptions, RerankOutput, Reranker};
