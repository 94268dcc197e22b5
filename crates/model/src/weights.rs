//! Weight resolution by GGUF tensor names, and where the yes/no score head comes
//! from: `cls.output.weight` (current llama.cpp conversions), else the yes/no rows
//! of `output.weight`, else of `token_embd.weight` (tied embeddings).

use std::fmt;
use std::sync::Arc;

use tessera_gguf::HostTensor;
use tessera_gguf::{GgmlType, GgufFile};

use crate::config::{ModelConfig, ModelError};

/// Where the two score rows were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreHeadSource {
    /// `cls.output.weight`, rows ordered by `qwen3.classifier.output_labels`.
    ClsOutput,
    /// The yes/no rows of the untied `output.weight`.
    Output,
    /// The yes/no rows of `token_embd.weight` (tied embeddings).
    TiedEmbedding,
}

impl fmt::Display for ScoreHeadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScoreHeadSource::ClsOutput => "cls.output.weight (classifier head)",
            ScoreHeadSource::Output => "yes/no rows of output.weight",
            ScoreHeadSource::TiedEmbedding => "yes/no rows of token_embd.weight (tied)",
        })
    }
}

/// The two-row score head: logits are `x · tensor[rows[0]]` (yes) and `x · tensor[rows[1]]` (no).
#[derive(Clone, Debug)]
pub struct ScoreHead {
    pub source: ScoreHeadSource,
    pub tensor: HostTensor,
    pub rows: [usize; 2],
}

/// The tensors of one decoder layer.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: HostTensor,
    pub attn_q: HostTensor,
    pub attn_k: HostTensor,
    pub attn_v: HostTensor,
    pub attn_output: HostTensor,
    pub attn_q_norm: HostTensor,
    pub attn_k_norm: HostTensor,
    pub ffn_norm: HostTensor,
    pub ffn_gate: HostTensor,
    pub ffn_up: HostTensor,
    pub ffn_down: HostTensor,
}

/// Every tensor a forward pass needs, zero-copy views of the file.
#[derive(Clone, Debug)]
pub struct Weights {
    pub config: ModelConfig,
    pub token_embd: HostTensor,
    pub layers: Vec<LayerWeights>,
    pub output_norm: HostTensor,
    /// A reranker's yes/no head; `None` for an embedding model, which pools
    /// the final norm's hidden state instead.
    pub score_head: Option<ScoreHead>,
}

const MATRIX_TYPES: [GgmlType; 4] = [GgmlType::Q8_0, GgmlType::F32, GgmlType::F16, GgmlType::BF16];
const NORM_TYPES: [GgmlType; 3] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16];

struct Resolver<'a> {
    file: &'a Arc<GgufFile>,
}

impl Resolver<'_> {
    fn optional(&self, name: &str) -> Result<Option<HostTensor>, ModelError> {
        Ok(HostTensor::from_gguf(self.file, name)?)
    }

    fn tensor(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        types: &[GgmlType],
    ) -> Result<HostTensor, ModelError> {
        let tensor = self
            .optional(name)?
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        check_tensor(&tensor, rows, cols, types)?;
        Ok(tensor)
    }
}

fn check_tensor(
    tensor: &HostTensor,
    rows: usize,
    cols: usize,
    types: &[GgmlType],
) -> Result<(), ModelError> {
    if !types.contains(&tensor.ggml_type) {
        let accepted: Vec<&str> = types.iter().map(|t| t.name()).collect();
        return Err(ModelError::Tensor {
            name: tensor.name.clone(),
            detail: format!(
                "type {} is not supported here (accepted: {})",
                tensor.ggml_type.name(),
                accepted.join(", ")
            ),
        });
    }
    tensor.expect_shape(rows, cols)?;
    Ok(())
}

impl Weights {
    /// Resolves every tensor of a Qwen3 reranker. `yes_no` are the token ids of
    /// "yes" and "no", used when the head is taken from a vocabulary matrix.
    pub fn load(file: &Arc<GgufFile>, yes_no: [u32; 2]) -> Result<Weights, ModelError> {
        let mut weights = Weights::load_without_head(file)?;
        let r = Resolver { file };
        weights.score_head = Some(resolve_score_head(
            file,
            &r,
            &weights.config,
            weights.token_embd.clone(),
            yes_no,
        )?);
        Ok(weights)
    }

    /// Resolves the decoder's tensors without a score head: an embedding
    /// model's (a classifier or output matrix in the file is not used).
    pub fn load_without_head(file: &Arc<GgufFile>) -> Result<Weights, ModelError> {
        let config = ModelConfig::from_gguf(file)?;
        let r = Resolver { file };
        let c = &config;
        let embd = r
            .optional("token_embd.weight")?
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        check_tensor(&embd, embd.rows, c.hidden, &MATRIX_TYPES)?;

        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(LayerWeights {
                attn_norm: r.tensor(&n("attn_norm"), 1, c.hidden, &NORM_TYPES)?,
                attn_q: r.tensor(&n("attn_q"), c.q_width(), c.hidden, &MATRIX_TYPES)?,
                attn_k: r.tensor(&n("attn_k"), c.kv_width(), c.hidden, &MATRIX_TYPES)?,
                attn_v: r.tensor(&n("attn_v"), c.kv_width(), c.hidden, &MATRIX_TYPES)?,
                attn_output: r.tensor(&n("attn_output"), c.hidden, c.q_width(), &MATRIX_TYPES)?,
                attn_q_norm: r.tensor(&n("attn_q_norm"), 1, c.head_dim, &NORM_TYPES)?,
                attn_k_norm: r.tensor(&n("attn_k_norm"), 1, c.head_dim, &NORM_TYPES)?,
                ffn_norm: r.tensor(&n("ffn_norm"), 1, c.hidden, &NORM_TYPES)?,
                ffn_gate: r.tensor(&n("ffn_gate"), c.ffn, c.hidden, &MATRIX_TYPES)?,
                ffn_up: r.tensor(&n("ffn_up"), c.ffn, c.hidden, &MATRIX_TYPES)?,
                ffn_down: r.tensor(&n("ffn_down"), c.hidden, c.ffn, &MATRIX_TYPES)?,
            });
        }
        let output_norm = r.tensor("output_norm.weight", 1, c.hidden, &NORM_TYPES)?;
        Ok(Weights {
            config,
            token_embd: embd,
            layers,
            output_norm,
            score_head: None,
        })
    }

    /// Bytes of all tensors a forward pass uses.
    pub fn total_bytes(&self) -> usize {
        let layer_bytes: usize = self
            .layers
            .iter()
            .map(|l| {
                [
                    &l.attn_norm,
                    &l.attn_q,
                    &l.attn_k,
                    &l.attn_v,
                    &l.attn_output,
                    &l.attn_q_norm,
                    &l.attn_k_norm,
                    &l.ffn_norm,
                    &l.ffn_gate,
                    &l.ffn_up,
                    &l.ffn_down,
                ]
                .iter()
                .map(|t| t.bytes().len())
                .sum::<usize>()
            })
            .sum();
        layer_bytes + self.token_embd.bytes().len() + self.output_norm.bytes().len()
    }
}

fn resolve_score_head(
    file: &GgufFile,
    r: &Resolver<'_>,
    c: &ModelConfig,
    embd: HostTensor,
    yes_no: [u32; 2],
) -> Result<ScoreHead, ModelError> {
    if let Some(cls) = r.optional("cls.output.weight")? {
        check_tensor(&cls, cls.rows, c.hidden, &MATRIX_TYPES)?;
        let rows = match file.get("qwen3.classifier.output_labels") {
            None => [0, 1],
            Some(_) => {
                let labels = file.get_str_array("qwen3.classifier.output_labels")?;
                let find = |label: &str| {
                    labels.iter().position(|l| l == label).ok_or_else(|| {
                        ModelError::ScoreHead(format!(
                            "qwen3.classifier.output_labels {labels:?} has no '{label}'"
                        ))
                    })
                };
                [find("yes")?, find("no")?]
            }
        };
        if rows.iter().any(|&row| row >= cls.rows) {
            return Err(ModelError::ScoreHead(format!(
                "cls.output.weight has {} rows, labels need rows {rows:?}",
                cls.rows
            )));
        }
        return Ok(ScoreHead {
            source: ScoreHeadSource::ClsOutput,
            tensor: cls,
            rows,
        });
    }
    let (source, tensor) = match r.optional("output.weight")? {
        Some(output) => {
            check_tensor(&output, output.rows, c.hidden, &MATRIX_TYPES)?;
            (ScoreHeadSource::Output, output)
        }
        None => (ScoreHeadSource::TiedEmbedding, embd),
    };
    let rows = yes_no.map(|id| id as usize);
    if let Some(&bad) = rows.iter().find(|&&row| row >= tensor.rows) {
        return Err(ModelError::ScoreHead(format!(
            "{} has {} rows; token id {bad} is out of range",
            tensor.name, tensor.rows
        )));
    }
    Ok(ScoreHead {
        source,
        tensor,
        rows,
    })
}
