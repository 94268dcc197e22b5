//! One forward pass over a packed batch. Only the last position of each sequence
//! is scored: after the last layer's attention the batch shrinks to those rows,
//! and the head is two rows (yes, no), never the vocabulary projection.

use tessera_backend::{AttentionLayout, AttentionShape, Backend, BackendError};
use tessera_model::{ModelConfig, ModelError, ScoreHeadSource, Weights};

/// Token rows of the MLP processed at once: bounds the `tokens × ffn`
/// intermediates, so long sequences need memory linear in their length.
pub const MLP_CHUNK_ROWS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("sequence {index} is empty")]
    EmptySequence { index: usize },
    #[error("sequence {index} has {len} tokens; the model's context is {max}")]
    SequenceTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("sequence {index}: token id {id} is outside the embedding table ({rows} rows)")]
    TokenOutOfRange { index: usize, id: u32, rows: usize },
}

/// The two logits at a sequence's last token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairScore {
    pub yes_logit: f32,
    pub no_logit: f32,
}

impl PairScore {
    /// `yes − no`: the raw score (TEI's `raw_scores`).
    pub fn logit_diff(&self) -> f32 {
        self.yes_logit - self.no_logit
    }

    /// P(yes) = softmax([yes, no])[0] = sigmoid(yes − no).
    pub fn probability(&self) -> f32 {
        let z = f64::from(self.yes_logit) - f64::from(self.no_logit);
        let p = if z >= 0.0 {
            1.0 / (1.0 + (-z).exp())
        } else {
            let e = z.exp();
            e / (1.0 + e)
        };
        p as f32
    }
}

struct LayerOnDevice<W> {
    attn_norm: W,
    q: W,
    k: W,
    v: W,
    o: W,
    q_norm: W,
    k_norm: W,
    ffn_norm: W,
    gate: W,
    up: W,
    down: W,
}

/// A model's weights uploaded to a backend, ready to score batches.
pub struct Engine<B: Backend> {
    backend: B,
    config: ModelConfig,
    embedding: B::Weight,
    embedding_rows: usize,
    layers: Vec<LayerOnDevice<B::Weight>>,
    output_norm: B::Weight,
    /// `None`: the head rows are in the embedding table.
    head: Option<B::Weight>,
    head_rows: [usize; 2],
}

impl<B: Backend> Engine<B> {
    /// Uploads every weight once.
    pub fn new(backend: B, weights: &Weights) -> Result<Engine<B>, EngineError> {
        let up = |t| backend.upload_weight(t);
        let mut layers = Vec::with_capacity(weights.layers.len());
        for l in &weights.layers {
            layers.push(LayerOnDevice {
                attn_norm: up(&l.attn_norm)?,
                q: up(&l.attn_q)?,
                k: up(&l.attn_k)?,
                v: up(&l.attn_v)?,
                o: up(&l.attn_output)?,
                q_norm: up(&l.attn_q_norm)?,
                k_norm: up(&l.attn_k_norm)?,
                ffn_norm: up(&l.ffn_norm)?,
                gate: up(&l.ffn_gate)?,
                up: up(&l.ffn_up)?,
                down: up(&l.ffn_down)?,
            });
        }
        let embedding = up(&weights.token_embd)?;
        let output_norm = up(&weights.output_norm)?;
        // A head taken from the embedding matrix shares its upload.
        let head = match weights.score_head.source {
            ScoreHeadSource::TiedEmbedding => None,
            _ => Some(up(&weights.score_head.tensor)?),
        };
        Ok(Engine {
            config: weights.config.clone(),
            embedding,
            embedding_rows: weights.token_embd.rows,
            layers,
            output_norm,
            head,
            head_rows: weights.score_head.rows,
            backend,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Scores each token sequence independently (a sequence's result does not
    /// depend on the others in the batch). Positions start at 0 in each.
    pub fn score(&self, sequences: &[&[u32]]) -> Result<Vec<PairScore>, EngineError> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        for (index, seq) in sequences.iter().enumerate() {
            if seq.is_empty() {
                return Err(EngineError::EmptySequence { index });
            }
            if seq.len() > self.config.context_length {
                return Err(EngineError::SequenceTooLong {
                    index,
                    len: seq.len(),
                    max: self.config.context_length,
                });
            }
            if let Some(&id) = seq.iter().find(|&&id| id as usize >= self.embedding_rows) {
                return Err(EngineError::TokenOutOfRange {
                    index,
                    id,
                    rows: self.embedding_rows,
                });
            }
        }
        let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let layout = AttentionLayout::packed(&lengths);
        let ids: Vec<u32> = sequences.iter().flat_map(|s| s.iter().copied()).collect();
        let positions: Vec<u32> = lengths.iter().flat_map(|&n| 0..n as u32).collect();
        self.forward(&ids, &positions, &layout)
    }

    fn forward(
        &self,
        ids: &[u32],
        positions: &[u32],
        layout: &AttentionLayout,
    ) -> Result<Vec<PairScore>, EngineError> {
        let b = &self.backend;
        let c = &self.config;
        let tokens = ids.len();
        let (hidden, qw, kvw) = (c.hidden, c.q_width(), c.kv_width());
        let shape = AttentionShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        };
        let last_rows = layout.last_rows();
        let n_seq = last_rows.len();
        let chunk = MLP_CHUNK_ROWS.min(tokens);

        let mut x = b.alloc(tokens * hidden)?;
        let mut normed = b.alloc(tokens * hidden)?;
        let mut q = b.alloc(tokens * qw)?;
        let mut k = b.alloc(tokens * kvw)?;
        let mut v = b.alloc(tokens * kvw)?;
        let mut attn = b.alloc(tokens * qw)?;
        let mut proj = b.alloc(tokens * hidden)?;
        let mut chunk_in = b.alloc(chunk * hidden)?;
        let mut gate = b.alloc(chunk * c.ffn)?;
        let mut up = b.alloc(chunk * c.ffn)?;
        let mut act = b.alloc(chunk * c.ffn)?;
        let mut chunk_out = b.alloc(chunk * hidden)?;

        b.embedding(&self.embedding, ids, &mut x)?;
        let mut rows = tokens;
        for (index, layer) in self.layers.iter().enumerate() {
            let last_layer = index + 1 == self.layers.len();
            b.rms_norm(&x, &layer.attn_norm, rows, hidden, c.rms_eps, &mut normed)?;
            b.matmul(&normed, rows, &layer.q, &mut q)?;
            b.matmul(&normed, rows, &layer.k, &mut k)?;
            b.matmul(&normed, rows, &layer.v, &mut v)?;
            b.rms_norm_inplace(
                &mut q,
                &layer.q_norm,
                rows * c.n_heads,
                c.head_dim,
                c.rms_eps,
            )?;
            b.rms_norm_inplace(
                &mut k,
                &layer.k_norm,
                rows * c.n_kv_heads,
                c.head_dim,
                c.rms_eps,
            )?;
            b.rope(&mut q, positions, c.n_heads, c.head_dim, c.rope_theta)?;
            b.rope(&mut k, positions, c.n_kv_heads, c.head_dim, c.rope_theta)?;
            b.attention(&q, &k, &v, shape, layout, &mut attn)?;
            if last_layer {
                // Only the last token of each sequence is scored: the rest of the
                // last layer runs on those rows alone.
                b.gather_rows(&attn, &last_rows, qw, &mut q)?;
                std::mem::swap(&mut attn, &mut q);
                b.gather_rows(&x, &last_rows, hidden, &mut normed)?;
                std::mem::swap(&mut x, &mut normed);
                rows = n_seq;
            }
            b.matmul(&attn, rows, &layer.o, &mut proj)?;
            b.add_inplace(&mut x, &proj, rows * hidden)?;
            b.rms_norm(&x, &layer.ffn_norm, rows, hidden, c.rms_eps, &mut normed)?;
            let mut start = 0;
            while start < rows {
                let n = chunk.min(rows - start);
                b.copy_rows(&normed, start, &mut chunk_in, 0, n, hidden)?;
                b.matmul(&chunk_in, n, &layer.gate, &mut gate)?;
                b.matmul(&chunk_in, n, &layer.up, &mut up)?;
                b.swiglu(&gate, &up, n * c.ffn, &mut act)?;
                b.matmul(&act, n, &layer.down, &mut chunk_out)?;
                b.copy_rows(&chunk_out, 0, &mut proj, start, n, hidden)?;
                start += n;
            }
            b.add_inplace(&mut x, &proj, rows * hidden)?;
        }
        if self.layers.is_empty() {
            b.gather_rows(&x, &last_rows, hidden, &mut normed)?;
            std::mem::swap(&mut x, &mut normed);
        }
        b.rms_norm(&x, &self.output_norm, n_seq, hidden, c.rms_eps, &mut normed)?;
        let mut logits = b.alloc(n_seq * 2)?;
        let head = self.head.as_ref().unwrap_or(&self.embedding);
        b.score_head(&normed, n_seq, head, self.head_rows, &mut logits)?;
        let logits = b.read(&logits, n_seq * 2)?;
        Ok(logits
            .chunks_exact(2)
            .map(|l| PairScore {
                yes_logit: l[0],
                no_logit: l[1],
            })
            .collect())
    }
}
