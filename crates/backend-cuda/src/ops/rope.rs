//! Rotary position embedding (`kernels/rope.cu`): one block per token.

use tessera_backend::{contract, AttentionShape, BackendError, Norm, Rope};

use super::rms_norm::norm_weight;
use super::{grid_yz, row_threads, to_u32};
use crate::{Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend, Launch};

/// Warps per block of the fused QK-norm + RoPE kernel: one (token, head) each.
pub const NORM_ROPE_WARPS: usize = 4;

pub fn rope<D: Device>(
    b: &KernelBackend<D>,
    x: &mut DeviceBuffer<D::Memory>,
    positions: &[u32],
    heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), BackendError> {
    contract::check_rope(x.len, positions, heads, head_dim)?;
    let width = heads * head_dim;
    if positions.is_empty() || width == 0 {
        return Ok(());
    }
    let positions_table = b.upload_table(positions)?;
    let freq_table = b.upload_table(&contract::rope_inv_freq(theta, head_dim))?;
    b.device.launch(&Launch {
        module: "rope",
        kernel: "rope_neox_f32",
        grid: [to_u32(positions.len(), "rope", "tokens")?, 1, 1],
        block: [row_threads(width / 2), 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.device.address(&positions_table)),
            KernelArg::Ptr(b.device.address(&freq_table)),
            KernelArg::U32(to_u32(heads, "rope", "heads")?),
            KernelArg::U32(to_u32(head_dim, "rope", "head_dim")?),
        ],
    })
}

/// QK-norm fused with RoPE (`rms_norm_rope_f32`): per head, RMSNorm with `weight`
/// (`head_dim` values) then the rotation, in place; what `rms_norm_inplace` with
/// rows = tokens × heads followed by `rope` computes.
pub fn rms_norm_rope<D: Device>(
    b: &KernelBackend<D>,
    x: &mut DeviceBuffer<D::Memory>,
    norm: Norm<'_, DeviceWeight<D::Memory>>,
    rope: Rope<'_>,
    heads: usize,
    head_dim: usize,
) -> Result<(), BackendError> {
    with_rope_tables(b, rope, head_dim, |tables| {
        norm_rope_launch(b, x, norm, tables, heads)
    })
}

/// Both halves of the attention's QK-norm + RoPE, sharing one upload of the
/// positions and frequencies: q with `n_heads`, k with `n_kv_heads`.
pub fn qk_norm_rope<D: Device>(
    b: &KernelBackend<D>,
    q: &mut DeviceBuffer<D::Memory>,
    k: &mut DeviceBuffer<D::Memory>,
    q_norm: Norm<'_, DeviceWeight<D::Memory>>,
    k_norm: Norm<'_, DeviceWeight<D::Memory>>,
    rope: Rope<'_>,
    shape: AttentionShape,
) -> Result<(), BackendError> {
    with_rope_tables(b, rope, shape.head_dim, |tables| {
        norm_rope_launch(b, q, q_norm, tables, shape.n_heads)?;
        norm_rope_launch(b, k, k_norm, tables, shape.n_kv_heads)
    })
}

/// Runs `op` with the positions and frequencies on the device. Every layer of a
/// pass has the same ones: they go up once a pass (`with_tables`).
fn with_rope_tables<D: Device, R>(
    b: &KernelBackend<D>,
    rope: Rope<'_>,
    head_dim: usize,
    op: impl FnOnce(&RopeTables) -> Result<R, BackendError>,
) -> Result<R, BackendError> {
    let Rope { positions, theta } = rope;
    if !head_dim.is_multiple_of(2) {
        return Err(BackendError::Invalid {
            op: "rope",
            detail: format!("head_dim {head_dim} is odd"),
        });
    }
    let freq = contract::rope_inv_freq(theta, head_dim);
    b.with_tables(
        &[
            ("positions", bytemuck::cast_slice(positions)),
            ("rope frequencies", bytemuck::cast_slice(&freq)),
        ],
        |addresses| {
            op(&RopeTables {
                positions: addresses[0],
                inv_freq: addresses[1],
                tokens: positions.len(),
                head_dim,
            })
        },
    )
}

/// Device addresses of the token positions and rotation frequencies.
struct RopeTables {
    positions: u64,
    inv_freq: u64,
    tokens: usize,
    head_dim: usize,
}

fn norm_rope_launch<D: Device>(
    b: &KernelBackend<D>,
    x: &mut DeviceBuffer<D::Memory>,
    norm: Norm<'_, DeviceWeight<D::Memory>>,
    tables: &RopeTables,
    heads: usize,
) -> Result<(), BackendError> {
    let (tokens, head_dim) = (tables.tokens, tables.head_dim);
    let w = norm_weight(norm.weight, head_dim)?;
    BackendError::check_len("rope", "x", tokens * heads * head_dim, x.len)?;
    if tokens == 0 || heads == 0 || head_dim == 0 {
        return Ok(());
    }
    let warps = heads.min(NORM_ROPE_WARPS);
    b.device.launch(&Launch {
        module: "rope",
        kernel: "rms_norm_rope_f32",
        grid: [
            to_u32(tokens, "rope", "tokens")?,
            grid_yz(heads.div_ceil(warps), "rope", "head groups")?,
            1,
        ],
        block: [(warps * 32) as u32, 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.device.address(w)),
            KernelArg::Ptr(tables.positions),
            KernelArg::Ptr(tables.inv_freq),
            KernelArg::U32(to_u32(heads, "rope", "heads")?),
            KernelArg::U32(to_u32(head_dim, "rope", "head_dim")?),
            KernelArg::F32(norm.eps),
        ],
    })
}
