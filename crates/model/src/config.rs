//! Qwen3 hyper-parameters read from the GGUF's `qwen3.*` metadata. Nothing about
//! the 4B size is assumed: tiny test models run through the same code.

use tessera_gguf::{GgufError, GgufFile};

/// Errors loading a model: which key or tensor, and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not a Qwen3 model: general.architecture is '{0}', expected 'qwen3'")]
    Architecture(String),
    #[error("model metadata: {0}")]
    Metadata(#[from] GgufError),
    #[error("model metadata: {key} = {value}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}': {detail}")]
    Tensor { name: String, detail: String },
    #[error("score head: {0}")]
    ScoreHead(String),
}

impl From<tessera_gguf::TensorError> for ModelError {
    fn from(e: tessera_gguf::TensorError) -> ModelError {
        ModelError::Tensor {
            name: e.name,
            detail: e.detail,
        }
    }
}

/// What a Qwen3 GGUF is for, from `qwen3.pooling_type` as llama.cpp's
/// converter writes it (0 none, 1 mean, 2 cls, 3 last, 4 rank).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A reranker: yes/no logits at the last token (pooling `rank`, or no
    /// pooling key at all: older reranker conversions).
    Reranker,
    /// An embedding model: the last token's hidden state (pooling `last`).
    Embedding,
}

impl ModelKind {
    /// The kind and the pooling's name; an error for a pooling this runtime
    /// does not serve (mean or CLS pooling, i.e. not a Qwen3 reranker or
    /// Qwen3-Embedding model).
    pub fn from_gguf(file: &GgufFile) -> Result<(ModelKind, &'static str), ModelError> {
        let key = "qwen3.pooling_type";
        if file.get(key).is_none() {
            return Ok((ModelKind::Reranker, "rank (no pooling_type key)"));
        }
        match file.get_u64(key)? {
            4 => Ok((ModelKind::Reranker, "rank")),
            3 => Ok((ModelKind::Embedding, "last")),
            other => Err(ModelError::BadValue {
                key: key.to_string(),
                value: other.to_string(),
                reason: "only rank (4, a Qwen3 reranker) and last (3, a Qwen3 embedding \
                         model) pooling are served"
                    .into(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Reranker => "reranker",
            ModelKind::Embedding => "embedding",
        }
    }

    /// The pooling this runtime serves the kind with (`qwen3.pooling_type`).
    pub fn pooling(self) -> &'static str {
        match self {
            ModelKind::Reranker => "rank",
            ModelKind::Embedding => "last",
        }
    }

    /// The name with its article, for sentences: "a reranker", "an embedding".
    pub fn article(self) -> &'static str {
        match self {
            ModelKind::Reranker => "a reranker",
            ModelKind::Embedding => "an embedding",
        }
    }
}

/// The architecture hyper-parameters of a Qwen3 decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Maximum positions the model was trained for (`qwen3.context_length`).
    pub context_length: usize,
}

impl ModelConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig, ModelError> {
        let arch = file.get_str("general.architecture")?;
        if arch != "qwen3" {
            return Err(ModelError::Architecture(arch.to_string()));
        }
        let count = |key: &str| -> Result<usize, ModelError> {
            let value = file.get_u64(key)?;
            match usize::try_from(value) {
                Ok(v) if v > 0 && v <= 1 << 24 => Ok(v),
                _ => Err(ModelError::BadValue {
                    key: key.to_string(),
                    value: value.to_string(),
                    reason: "must be between 1 and 16,777,216".into(),
                }),
            }
        };
        let n_heads = count("qwen3.attention.head_count")?;
        let n_kv_heads = count("qwen3.attention.head_count_kv")?;
        let hidden = count("qwen3.embedding_length")?;
        // head_dim is not hidden / heads in Qwen3 (4B: 128, not 80).
        let head_dim = match file.get("qwen3.attention.key_length") {
            Some(_) => count("qwen3.attention.key_length")?,
            None => hidden / n_heads,
        };
        if file.get("qwen3.attention.value_length").is_some() {
            let value_length = count("qwen3.attention.value_length")?;
            if value_length != head_dim {
                return Err(ModelError::BadValue {
                    key: "qwen3.attention.value_length".into(),
                    value: value_length.to_string(),
                    reason: format!("must equal key_length ({head_dim})"),
                });
            }
        }
        if n_heads % n_kv_heads != 0 {
            return Err(ModelError::BadValue {
                key: "qwen3.attention.head_count_kv".into(),
                value: n_kv_heads.to_string(),
                reason: format!("must divide head_count ({n_heads})"),
            });
        }
        if head_dim % 2 != 0 {
            return Err(ModelError::BadValue {
                key: "qwen3.attention.key_length".into(),
                value: head_dim.to_string(),
                reason: "rotary embedding needs an even head dimension".into(),
            });
        }
        let float = |key: &str, default: f32| -> Result<f32, ModelError> {
            let value = match file.get(key) {
                Some(_) => file.get_f32(key)?,
                None => default,
            };
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(ModelError::BadValue {
                    key: key.to_string(),
                    value: value.to_string(),
                    reason: "must be a positive finite number".into(),
                })
            }
        };
        Ok(ModelConfig {
            n_layers: count("qwen3.block_count")?,
            hidden,
            ffn: count("qwen3.feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: float("qwen3.attention.layer_norm_rms_epsilon", 1e-6)?,
            rope_theta: float("qwen3.rope.freq_base", 1e6)?,
            context_length: match file.get("qwen3.context_length") {
                Some(_) => count("qwen3.context_length")?,
                None => 8192,
            },
        })
    }

    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
