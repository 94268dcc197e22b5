//! The forward pass over a packed batch. Documents that share a query prefix
//! attend to that prefix's K/V, computed once (or taken from the cache) instead
//! of once per document. Only the last position of each sequence is scored:
//! after the last layer's attention the batch shrinks to those rows, and the
//! head is two rows (yes, no), never the vocabulary projection.

use std::cell::RefCell;
use std::sync::Arc;

use tessera_backend::{
    AttentionLayout, AttentionShape, Backend, BackendError, GateUp, KvRef, Norm, Qkv, Rope, Rows,
};
use tessera_model::{ModelConfig, ModelError, ScoreHeadSource, Weights};

use crate::prefix_cache::{PrefixCache, PrefixCacheStats, PrefixKv, DEFAULT_PREFIX_CACHE_BYTES};

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
    #[error("this is an embedding model: it has no score head to rerank with")]
    NoScoreHead,
}

/// Documents that share one query prefix: each sequence is `prefix ++ document`,
/// where a document's tokens already end with the prompt suffix.
#[derive(Clone, Debug)]
pub struct PrefixGroup<'a> {
    pub prefix: &'a [u32],
    pub documents: Vec<&'a [u32]>,
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

/// A model's weights uploaded to a backend, ready to score batches. It owns the
/// prefix cache: one engine per compute thread, no locks on the hot path.
pub struct Engine<B: Backend> {
    backend: B,
    config: ModelConfig,
    embedding: B::Weight,
    embedding_rows: usize,
    layers: Vec<LayerOnDevice<B::Weight>>,
    output_norm: B::Weight,
    /// The score head: its matrix (`None`: the rows are in the embedding
    /// table) and the yes/no rows. `None` for an embedding model.
    head: Option<(Option<B::Weight>, [usize; 2])>,
    cache: RefCell<PrefixCache<B>>,
}

/// A pass's per-sequence results split back into their groups.
fn regroup<T>(groups: &[PrefixGroup<'_>], items: Vec<T>) -> Vec<Vec<T>> {
    let mut flat = items.into_iter();
    groups
        .iter()
        .map(|g| flat.by_ref().take(g.documents.len()).collect())
        .collect()
}

/// What a pass over the layers produces.
enum Pass {
    /// Yes/no logits at the last row of each sequence.
    Score,
    /// The K/V of every layer for the (single) sequence's tokens, appended to
    /// its prefix's; the last layer stops once its K/V exist.
    CaptureKv,
    /// The final norm's output at the last row of each sequence (the pooled
    /// hidden state of an embedding model).
    Embed,
}

enum PassOutput<B: Backend> {
    Scores(Vec<PairScore>),
    Kv(PrefixKv<B>),
    Hidden(Vec<Vec<f32>>),
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
        let head = match &weights.score_head {
            None => None,
            Some(h) if h.source == ScoreHeadSource::TiedEmbedding => Some((None, h.rows)),
            Some(h) => Some((Some(up(&h.tensor)?), h.rows)),
        };
        Ok(Engine {
            config: weights.config.clone(),
            embedding,
            embedding_rows: weights.token_embd.rows,
            layers,
            output_norm,
            head,
            backend,
            cache: RefCell::new(PrefixCache::new(DEFAULT_PREFIX_CACHE_BYTES)),
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Bytes of K/V one prefix token takes (all layers).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.layers.len() * self.config.kv_width() * std::mem::size_of::<f32>()
    }

    /// Sets the cross-request prefix cache's byte budget (0 keeps nothing
    /// between calls; prefixes are still shared within a call).
    pub fn set_prefix_cache_bytes(&self, bytes: usize) {
        self.cache.borrow_mut().set_capacity(bytes);
    }

    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.cache.borrow().stats
    }

    /// Computes and pins a prefix every query starts with (the system prompt):
    /// never evicted, and the parent of every other prefix that extends it.
    pub fn pin_prefix(&self, ids: &[u32]) -> Result<(), EngineError> {
        self.check_ids(0, ids)?;
        if ids.is_empty() {
            return Ok(());
        }
        let kv = Arc::new(self.capture_kv(ids, None)?);
        self.cache.borrow_mut().pin(ids.to_vec(), kv);
        Ok(())
    }

    fn check_ids(&self, index: usize, ids: &[u32]) -> Result<(), EngineError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.embedding_rows) {
            return Err(EngineError::TokenOutOfRange {
                index,
                id,
                rows: self.embedding_rows,
            });
        }
        Ok(())
    }

    /// The prefix's K/V: from the cache, or computed (from the pinned parent
    /// when it extends it) and cached.
    fn prefix_kv(&self, ids: &[u32]) -> Result<Arc<PrefixKv<B>>, EngineError> {
        let cached = self.cache.borrow_mut().get(ids);
        if let Some(kv) = cached {
            self.cache.borrow_mut().stats.reused_tokens += ids.len() as u64;
            return Ok(kv);
        }
        let parent = self.cache.borrow().parent_of(ids);
        let kv = Arc::new(self.capture_kv(ids, parent.as_deref())?);
        self.cache
            .borrow_mut()
            .insert(ids.to_vec(), Arc::clone(&kv));
        Ok(kv)
    }

    fn capture_kv(
        &self,
        ids: &[u32],
        parent: Option<&PrefixKv<B>>,
    ) -> Result<PrefixKv<B>, EngineError> {
        let start = parent.map_or(0, |p| p.len);
        if let Some(p) = parent {
            self.cache.borrow_mut().stats.reused_tokens += p.len as u64;
        }
        let own = &ids[start..];
        let positions: Vec<u32> = (start..ids.len()).map(|p| p as u32).collect();
        let layout = AttentionLayout::packed_with_prefixes(&[own.len()], &[parent.map(|_| 0)]);
        let prefixes: Vec<&PrefixKv<B>> = parent.into_iter().collect();
        match self.run(own, &positions, &layout, &prefixes, Pass::CaptureKv)? {
            PassOutput::Kv(kv) => Ok(kv),
            _ => unreachable!("a capture pass returns K/V"),
        }
    }

    /// Scores every (prefix, document) pair of every group; results per group,
    /// in document order. Each distinct prefix is computed at most once (and
    /// not at all when cached); scores equal those of [`Engine::score`] on the
    /// concatenated sequences.
    ///
    /// When the backend limits one activation buffer, documents are spread over
    /// as many passes as needed (a pair's score does not depend on its batch).
    pub fn score_groups(
        &self,
        groups: &[PrefixGroup<'_>],
    ) -> Result<Vec<Vec<PairScore>>, EngineError> {
        self.in_passes(groups, |pass| self.score_pass(pass))
    }

    /// Each document's pooled vector ([`Self::embed`]) with its group's prefix
    /// before it, the prefix's K/V computed once and kept in the prefix cache,
    /// as [`Self::score_groups`] shares a query's.
    pub fn embed_groups(
        &self,
        groups: &[PrefixGroup<'_>],
    ) -> Result<Vec<Vec<Vec<f32>>>, EngineError> {
        self.in_passes(groups, |pass| self.embed_pass(pass))
    }

    /// `pass` over `groups` in as many passes as the backend's activation
    /// limit needs (a sequence's result does not depend on its batch).
    fn in_passes<T>(
        &self,
        groups: &[PrefixGroup<'_>],
        pass: impl Fn(&[PrefixGroup<'_>]) -> Result<Vec<Vec<T>>, EngineError>,
    ) -> Result<Vec<Vec<T>>, EngineError> {
        let Some(limit) = self.max_pass_tokens() else {
            return pass(groups);
        };
        let mut results: Vec<Vec<T>> = groups.iter().map(|_| Vec::new()).collect();
        // Passes filled by the one packer; `first` is the first group with
        // documents left, `cursors` how many of each group are done.
        let mut cursors = vec![0; groups.len()];
        let mut first = 0;
        while first < groups.len() {
            if cursors[first] == groups[first].documents.len() {
                first += 1;
                continue;
            }
            let queue = groups[first..]
                .iter()
                .zip(&cursors[first..])
                .map(|(g, &c)| (g.prefix.len(), g.documents[c..].iter().map(|d| d.len())));
            let counts = crate::pack::next_pass(queue, limit);
            let mut part = Vec::with_capacity(counts.len());
            let mut members = Vec::with_capacity(counts.len());
            for (offset, &taken) in counts.iter().enumerate() {
                let index = first + offset;
                let start = cursors[index];
                part.push(PrefixGroup {
                    prefix: groups[index].prefix,
                    documents: groups[index].documents[start..start + taken].to_vec(),
                });
                members.push(index);
                cursors[index] += taken;
            }
            for (index, items) in members.into_iter().zip(pass(&part)?) {
                results[index].extend(items);
            }
        }
        Ok(results)
    }

    /// Runs the forward pass once over `tokens` tokens of filler (sequences of at
    /// most 512 tokens, no prefix), the way a batch at the scheduler's token
    /// budget would: a GPU backend compiles its kernels and its memory pool keeps
    /// the activation memory of the largest pass, and a budget the device cannot
    /// hold fails here, at startup, instead of on a request. Leaves the prefix
    /// cache and its counters as they were.
    pub fn warm_up(&self, tokens: usize) -> Result<(), EngineError> {
        let len = 512.min(self.config.context_length).max(1);
        // Token 0 is a valid row of every embedding table.
        let filler = vec![0u32; len];
        let mut sequences: Vec<&[u32]> = vec![&filler[..]; tokens / len];
        if !tokens.is_multiple_of(len) {
            sequences.push(&filler[..tokens % len]);
        }
        if sequences.is_empty() {
            return Ok(());
        }
        let stats = self.prefix_cache_stats();
        // An embedding model has no head to score with: its pass pools.
        let result = match self.head {
            Some(_) => self.score(&sequences).map(|_| ()),
            None => self.embed(&sequences).map(|_| ()),
        };
        self.cache.borrow_mut().stats = stats;
        result
    }

    /// Tokens one pass may hold on this backend: its activation-buffer limit over
    /// the widest per-token activation row.
    pub fn max_pass_tokens(&self) -> Option<usize> {
        let c = &self.config;
        let widest = c.hidden.max(c.q_width()).max(c.kv_width()).max(1);
        self.backend
            .max_activation_elements()
            .map(|elements| (elements / widest).max(1))
    }

    /// One score pass over every document of every group.
    fn score_pass(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        match self.grouped_pass(groups, Pass::Score)? {
            None => Ok(groups.iter().map(|_| Vec::new()).collect()),
            Some(PassOutput::Scores(scores)) => Ok(regroup(groups, scores)),
            Some(_) => unreachable!("a score pass returns scores"),
        }
    }

    /// One embed pass over every document of every group.
    fn embed_pass(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<Vec<f32>>>, EngineError> {
        match self.grouped_pass(groups, Pass::Embed)? {
            None => Ok(groups.iter().map(|_| Vec::new()).collect()),
            Some(PassOutput::Hidden(rows)) => Ok(regroup(groups, rows)),
            Some(_) => unreachable!("an embed pass returns hidden states"),
        }
    }

    /// One forward pass over every document of every group, each after its
    /// group's prefix (from the cache, or computed and cached); `None` when
    /// there are no documents.
    fn grouped_pass(
        &self,
        groups: &[PrefixGroup<'_>],
        pass: Pass,
    ) -> Result<Option<PassOutput<B>>, EngineError> {
        let mut index = 0;
        for group in groups {
            self.check_ids(index, group.prefix)?;
            for doc in &group.documents {
                self.check_sequence(index, group.prefix.len(), doc)?;
                index += 1;
            }
        }
        let mut prefixes: Vec<Arc<PrefixKv<B>>> = Vec::new();
        let mut group_prefix: Vec<Option<usize>> = Vec::with_capacity(groups.len());
        for group in groups {
            if group.prefix.is_empty() || group.documents.is_empty() {
                group_prefix.push(None);
                continue;
            }
            let kv = self.prefix_kv(group.prefix)?;
            let existing = prefixes.iter().position(|p| Arc::ptr_eq(p, &kv));
            group_prefix.push(Some(existing.unwrap_or_else(|| {
                prefixes.push(kv);
                prefixes.len() - 1
            })));
        }
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut lengths = Vec::new();
        let mut seq_prefix = Vec::new();
        for (group, &prefix) in groups.iter().zip(&group_prefix) {
            let start = group.prefix.len() as u32;
            for doc in &group.documents {
                ids.extend_from_slice(doc);
                positions.extend(start..start + doc.len() as u32);
                lengths.push(doc.len());
                seq_prefix.push(prefix);
            }
        }
        if lengths.is_empty() {
            return Ok(None);
        }
        let layout = AttentionLayout::packed_with_prefixes(&lengths, &seq_prefix);
        let prefix_refs: Vec<&PrefixKv<B>> = prefixes.iter().map(|p| p.as_ref()).collect();
        self.run(&ids, &positions, &layout, &prefix_refs, pass)
            .map(Some)
    }

    fn check_sequence(
        &self,
        index: usize,
        prefix_len: usize,
        doc: &[u32],
    ) -> Result<(), EngineError> {
        if doc.is_empty() {
            return Err(EngineError::EmptySequence { index });
        }
        let len = prefix_len + doc.len();
        if len > self.config.context_length {
            return Err(EngineError::SequenceTooLong {
                index,
                len,
                max: self.config.context_length,
            });
        }
        self.check_ids(index, doc)
    }

    /// Scores each token sequence independently, with no prefix sharing (a
    /// sequence's result does not depend on the others in the batch).
    pub fn score(&self, sequences: &[&[u32]]) -> Result<Vec<PairScore>, EngineError> {
        let groups: Vec<PrefixGroup<'_>> = sequences
            .iter()
            .map(|s| PrefixGroup {
                prefix: &[],
                documents: vec![s],
            })
            .collect();
        Ok(self.score_groups(&groups)?.into_iter().flatten().collect())
    }

    /// Each sequence's hidden state at its last token after the final norm —
    /// what an embedding model pools (before any L2 normalisation) — from
    /// forward passes over them packed without padding (one, unless the
    /// backend's activation limit needs more). The score head of a reranker is
    /// this vector's dot product with its yes/no rows.
    pub fn embed(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        let group = PrefixGroup {
            prefix: &[],
            documents: sequences.to_vec(),
        };
        Ok(self.embed_groups(&[group])?.into_iter().flatten().collect())
    }

    /// Runs the layers over packed sequences whose tokens sit at `positions`.
    fn run(
        &self,
        ids: &[u32],
        positions: &[u32],
        layout: &AttentionLayout,
        prefixes: &[&PrefixKv<B>],
        pass: Pass,
    ) -> Result<PassOutput<B>, EngineError> {
        let b = &self.backend;
        let c = &self.config;
        let tokens = ids.len();
        self.cache.borrow_mut().stats.computed_tokens += tokens as u64;
        let (hidden, qw, kvw) = (c.hidden, c.q_width(), c.kv_width());
        let shape = AttentionShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        };
        let last_rows = layout.last_rows();
        let n_seq = last_rows.len();
        let chunk = b.mlp_chunk_rows().max(1).min(tokens);

        let mut x = b.alloc(tokens * hidden)?;
        let mut normed = b.alloc(tokens * hidden)?;
        let mut q = b.alloc(tokens * qw)?;
        let mut k = b.alloc(tokens * kvw)?;
        let mut v = b.alloc(tokens * kvw)?;
        let mut attn = b.alloc(tokens * qw)?;
        // Workspace of the residual matmuls (`rows × hidden`).
        let mut proj = b.alloc(tokens * hidden)?;
        let mut gate = b.alloc(chunk * c.ffn)?;
        let mut up = b.alloc(chunk * c.ffn)?;
        let mut act = b.alloc(chunk * c.ffn)?;
        // The residual rows of one MLP chunk, when the rows take several.
        let mut chunk_x = if tokens > chunk {
            Some(b.alloc(chunk * hidden)?)
        } else {
            None
        };
        let mut captured = Vec::new();
        let parent_len = prefixes.first().map_or(0, |p| p.len);

        b.embedding(&self.embedding, ids, &mut x)?;
        let mut rows = tokens;
        for (index, layer) in self.layers.iter().enumerate() {
            let last_layer = index + 1 == self.layers.len();
            let norm = |weight| Norm {
                weight,
                eps: c.rms_eps,
            };
            let x_rows = Rows {
                data: &x,
                rows,
                width: hidden,
            };
            b.rms_norm_matmuls(
                x_rows,
                norm(&layer.attn_norm),
                &[&layer.q, &layer.k, &layer.v],
                &mut normed,
                &mut [&mut q, &mut k, &mut v],
            )?;
            let rope = Rope {
                positions,
                theta: c.rope_theta,
            };
            b.qk_norm_rope(
                &mut q,
                &mut k,
                norm(&layer.q_norm),
                norm(&layer.k_norm),
                rope,
                shape,
            )?;
            if let Pass::CaptureKv = pass {
                let total = parent_len + tokens;
                let mut layer_k = b.alloc(total * kvw)?;
                let mut layer_v = b.alloc(total * kvw)?;
                if let Some(parent) = prefixes.first() {
                    let KvRef { k: pk, v: pv, .. } = parent.layer(index);
                    b.copy_rows(pk, 0, &mut layer_k, 0, parent_len, kvw)?;
                    b.copy_rows(pv, 0, &mut layer_v, 0, parent_len, kvw)?;
                }
                b.copy_rows(&k, 0, &mut layer_k, parent_len, tokens, kvw)?;
                b.copy_rows(&v, 0, &mut layer_v, parent_len, tokens, kvw)?;
                captured.push((layer_k, layer_v));
                if last_layer {
                    return Ok(PassOutput::Kv(PrefixKv {
                        len: total,
                        bytes: total * self.kv_bytes_per_token(),
                        layers: captured,
                    }));
                }
            }
            let layer_prefixes: Vec<KvRef<'_, B::Buffer>> =
                prefixes.iter().map(|p| p.layer(index)).collect();
            let qkv = Qkv {
                q: &q,
                k: &k,
                v: &v,
            };
            b.attention(qkv, shape, layout, &layer_prefixes, &mut attn)?;
            if last_layer {
                // Only the last token of each sequence is scored: the rest of the
                // last layer runs on those rows alone.
                b.gather_rows(&attn, &last_rows, qw, &mut q)?;
                std::mem::swap(&mut attn, &mut q);
                b.gather_rows(&x, &last_rows, hidden, &mut normed)?;
                std::mem::swap(&mut x, &mut normed);
                rows = n_seq;
            }
            b.matmul_add(&attn, rows, &layer.o, hidden, &mut proj, &mut x)?;
            let mut mlp = |residual: &mut B::Buffer, n: usize| -> Result<(), BackendError> {
                let residual_rows = Rows {
                    data: &*residual,
                    rows: n,
                    width: hidden,
                };
                b.rms_norm_matmuls(
                    residual_rows,
                    norm(&layer.ffn_norm),
                    &[&layer.gate, &layer.up],
                    &mut normed,
                    &mut [&mut gate, &mut up],
                )?;
                let gate_up = GateUp {
                    gate: &gate,
                    up: &up,
                    rows: n,
                    ffn: c.ffn,
                };
                b.swiglu_matmul_add(gate_up, &layer.down, hidden, &mut act, &mut proj, residual)
            };
            match chunk_x.as_mut() {
                Some(chunk_x) if rows > chunk => {
                    let mut start = 0;
                    while start < rows {
                        let n = chunk.min(rows - start);
                        b.copy_rows(&x, start, chunk_x, 0, n, hidden)?;
                        mlp(chunk_x, n)?;
                        b.copy_rows(chunk_x, 0, &mut x, start, n, hidden)?;
                        start += n;
                    }
                }
                _ => mlp(&mut x, rows)?,
            }
        }
        if let Pass::CaptureKv = pass {
            // A model without layers has no K/V to share.
            return Ok(PassOutput::Kv(PrefixKv {
                len: parent_len + tokens,
                bytes: 0,
                layers: Vec::new(),
            }));
        }
        if self.layers.is_empty() {
            b.gather_rows(&x, &last_rows, hidden, &mut normed)?;
            std::mem::swap(&mut x, &mut normed);
        }
        b.rms_norm(&x, &self.output_norm, n_seq, hidden, c.rms_eps, &mut normed)?;
        if let Pass::Embed = pass {
            let rows = b.read(&normed, n_seq * hidden)?;
            return Ok(PassOutput::Hidden(
                rows.chunks_exact(hidden.max(1))
                    .map(<[f32]>::to_vec)
                    .collect(),
            ));
        }
        let mut logits = b.alloc(n_seq * 2)?;
        let Some((head, rows)) = &self.head else {
            return Err(EngineError::NoScoreHead);
        };
        let head = head.as_ref().unwrap_or(&self.embedding);
        b.score_head(&normed, n_seq, head, *rows, &mut logits)?;
        let logits = b.read(&logits, n_seq * 2)?;
        Ok(PassOutput::Scores(
            logits
                .chunks_exact(2)
                .map(|l| PairScore {
                    yes_logit: l[0],
                    no_logit: l[1],
                })
                .collect(),
        ))
    }
}
