//! Causal GQA attention over packed sequences, each optionally preceded by a
//! shared prefix's K/V. One query row at a time: the scores of a row (at most
//! prefix + sequence long) are the only extra memory, never a sequence ×
//! sequence matrix.

use rayon::prelude::*;
use tessera_backend::contract::{self, AttentionLens};
use tessera_backend::{AttentionLayout, AttentionShape, BackendError, KvRef, Qkv};

use super::dot;

/// Where a row's keys come from: its prefix (if any) and its own sequence.
#[derive(Clone, Copy)]
struct RowSource {
    seq_start: usize,
    prefix: Option<usize>,
}

/// The op contract's checks ([`contract::check_attention`]), shared with the
/// fast path.
pub(crate) fn validate(
    qkv: Qkv<'_, Vec<f32>>,
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, Vec<f32>>],
    out: &[f32],
) -> Result<(), BackendError> {
    let lens = AttentionLens::of(qkv, out.len(), Vec::len);
    contract::check_attention(shape, layout, lens, prefixes, Vec::len)
}

pub fn attention(
    qkv: Qkv<'_, Vec<f32>>,
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, Vec<f32>>],
    out: &mut [f32],
) -> Result<(), BackendError> {
    validate(qkv, shape, layout, prefixes, out)?;
    let Qkv { q, k, v } = qkv;
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let tokens = layout.total_tokens();
    let (qw, kvw) = (shape.q_width(), shape.kv_width());
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (d as f32).sqrt();

    let mut sources: Vec<Option<RowSource>> = vec![None; tokens];
    for seq in &layout.sequences {
        for slot in &mut sources[seq.start..seq.start + seq.len] {
            *slot = Some(RowSource {
                seq_start: seq.start,
                prefix: seq.prefix,
            });
        }
    }
    out[..tokens * qw]
        .par_chunks_mut(qw.max(1))
        .enumerate()
        .for_each_init(Vec::new, |scores, (row, out_row)| {
            let Some(source) = sources[row] else {
                return;
            };
            let prefix = source.prefix.map(|p| prefixes[p]);
            let prefix_len = prefix.map_or(0, |p| p.len);
            // Key j of this row: prefix keys first, then the sequence's own.
            let key = |j: usize, off: usize| -> (&[f32], &[f32]) {
                match prefix {
                    Some(p) if j < prefix_len => {
                        let at = j * kvw + off;
                        (&p.k[at..at + d], &p.v[at..at + d])
                    }
                    _ => {
                        let at = (source.seq_start + j - prefix_len) * kvw + off;
                        (&k[at..at + d], &v[at..at + d])
                    }
                }
            };
            let keys = prefix_len + row - source.seq_start + 1;
            for h in 0..n_heads {
                let kv_off = (h / group) * d;
                let q_vec = &q[row * qw + h * d..row * qw + (h + 1) * d];
                scores.clear();
                scores.extend((0..keys).map(|j| dot(q_vec, key(j, kv_off).0) * scale));
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let o = &mut out_row[h * d..(h + 1) * d];
                o.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    for (acc, &val) in o.iter_mut().zip(key(j, kv_off).1) {
                        *acc += p * val;
                    }
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
            }
        });
    Ok(())
}
