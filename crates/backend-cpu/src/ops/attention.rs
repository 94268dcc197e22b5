//! Causal GQA attention over packed sequences, one query row at a time: the
//! scores of a row (at most one sequence long) are the only extra memory, never
//! a sequence × sequence matrix.

use rayon::prelude::*;
use tessera_backend::{AttentionLayout, AttentionShape, BackendError};

use super::dot;

pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    layout: &AttentionLayout,
    out: &mut [f32],
) -> Result<(), BackendError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
        return Err(BackendError::Invalid {
            op: "attention",
            detail: format!("{n_heads} query heads cannot share {n_kv_heads} KV heads"),
        });
    }
    let tokens = layout.total_tokens();
    let (qw, kvw) = (shape.q_width(), shape.kv_width());
    BackendError::check_len("attention", "q", tokens * qw, q.len())?;
    BackendError::check_len("attention", "k", tokens * kvw, k.len())?;
    BackendError::check_len("attention", "v", tokens * kvw, v.len())?;
    BackendError::check_len("attention", "out", tokens * qw, out.len())?;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (d as f32).sqrt();

    // (row, first row of its sequence) for every row a sequence covers.
    let mut row_seq_start = vec![None; tokens];
    for seq in &layout.sequences {
        for slot in &mut row_seq_start[seq.start..seq.start + seq.len] {
            *slot = Some(seq.start);
        }
    }
    out[..tokens * qw]
        .par_chunks_mut(qw.max(1))
        .enumerate()
        .for_each_init(Vec::new, |scores, (row, out_row)| {
            let Some(start) = row_seq_start[row] else {
                return;
            };
            for h in 0..n_heads {
                let kv_off = (h / group) * d;
                let q_vec = &q[row * qw + h * d..row * qw + (h + 1) * d];
                scores.clear();
                scores.extend(
                    (start..=row)
                        .map(|j| dot(q_vec, &k[j * kvw + kv_off..j * kvw + kv_off + d]) * scale),
                );
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let o = &mut out_row[h * d..(h + 1) * d];
                o.fill(0.0);
                for (j, &p) in (start..=row).zip(scores.iter()) {
                    let v_vec = &v[j * kvw + kv_off..j * kvw + kv_off + d];
                    for (acc, &val) in o.iter_mut().zip(v_vec) {
                        *acc += p * val;
                    }
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
            }
        });
    Ok(())
}
