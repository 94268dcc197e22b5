//! Causal GQA attention over packed sequences with shared prefixes
//! (`shaders/attention.wgsl`): the query rows are grouped by the prefix their
//! sequence attends to, and each group is one dispatch with that prefix's K/V
//! bound.

use tessera_backend::contract::{self, AttentionLens};
use tessera_backend::{AttentionLayout, AttentionShape, BackendError, KvRef, Qkv};

use super::u32_of;
use crate::context::{Context, MAX_GRID_DIM};
use crate::WgpuBuffer;

/// The largest head_dim the shader holds in workgroup memory.
const MAX_HEAD_DIM: usize = 256;

pub fn attention(
    ctx: &Context,
    qkv: Qkv<'_, WgpuBuffer>,
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, WgpuBuffer>],
    out: &mut WgpuBuffer,
) -> Result<(), BackendError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let lens = AttentionLens::of(qkv, out.len, |b| b.len);
    contract::check_attention(shape, layout, lens, prefixes, |b| b.len)?;
    let Qkv { q, k, v } = qkv;
    if d > MAX_HEAD_DIM {
        return Err(BackendError::Invalid {
            op: "attention",
            detail: format!("head_dim {d} exceeds the shader's {MAX_HEAD_DIM}"),
        });
    }
    let tokens = layout.total_tokens();
    let (qw, kvw) = (shape.q_width(), shape.kv_width());
    u32_of("attention", "tokens × q width", tokens * qw)?;
    for p in prefixes {
        u32_of("attention", "prefix × kv width", p.len * kvw)?;
    }
    // Query rows per prefix (index 0: no prefix, i + 1: prefix i).
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); prefixes.len() + 1];
    for seq in &layout.sequences {
        // Prefix indices are checked above.
        let group = seq.prefix.map_or(0, |p| p + 1);
        for row in seq.start..seq.start + seq.len {
            groups[group].extend([row as u32, seq.start as u32]);
        }
    }
    let pipeline = ctx.pipeline("attention", &[])?;
    let scale = 1.0 / (d as f32).sqrt();
    for (index, rows) in groups.iter().enumerate() {
        let n_rows = rows.len() / 2;
        if n_rows == 0 {
            continue;
        }
        let (pk, pv, prefix_len) = match index {
            0 => (&k.buffer, &v.buffer, 0),
            i => {
                let p = &prefixes[i - 1];
                (&p.k.buffer, &p.v.buffer, p.len)
            }
        };
        let table = ctx.storage_init("attention rows", rows)?;
        let mut offset = 0;
        while offset < n_rows {
            let count = (n_rows - offset).min(MAX_GRID_DIM as usize);
            ctx.dispatch(
                &pipeline,
                &[
                    n_heads as u32,
                    (n_heads / n_kv_heads) as u32,
                    d as u32,
                    qw as u32,
                    kvw as u32,
                    prefix_len as u32,
                    scale.to_bits(),
                    offset as u32,
                ],
                &[&q.buffer, &k.buffer, &v.buffer, pk, pv, &out.buffer, &table],
                (n_heads as u32, count as u32),
            )?;
            offset += count;
        }
    }
    Ok(())
}
