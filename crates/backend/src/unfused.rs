//! The fused ops of [`Backend`] as sequences of its basic ops: the trait's
//! default implementations, and what a backend that fuses them is checked
//! against (a fused kernel must compute the same values, and the CUDA kernels
//! the same bits).

use crate::{AttentionShape, Backend, BackendError};

/// RMSNorm of `rows × dim` values into `normed`, then `outs[i] = normed · weights[i]ᵀ`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_matmuls<B: Backend + ?Sized>(
    b: &B,
    x: &B::Buffer,
    rows: usize,
    dim: usize,
    norm: &B::Weight,
    eps: f32,
    weights: &[&B::Weight],
    normed: &mut B::Buffer,
    outs: &mut [&mut B::Buffer],
) -> Result<(), BackendError> {
    check_pairs("rms_norm_matmuls", weights.len(), outs.len())?;
    b.rms_norm(x, norm, rows, dim, eps, normed)?;
    for (weight, out) in weights.iter().zip(outs.iter_mut()) {
        b.matmul(normed, rows, weight, out)?;
    }
    Ok(())
}

/// QK-norm then RoPE, in place on q (`tokens × n_heads × head_dim`) and k
/// (`tokens × n_kv_heads × head_dim`).
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope<B: Backend + ?Sized>(
    b: &B,
    q: &mut B::Buffer,
    k: &mut B::Buffer,
    q_norm: &B::Weight,
    k_norm: &B::Weight,
    positions: &[u32],
    shape: AttentionShape,
    eps: f32,
    theta: f32,
) -> Result<(), BackendError> {
    let tokens = positions.len();
    let d = shape.head_dim;
    b.rms_norm_inplace(q, q_norm, tokens * shape.n_heads, d, eps)?;
    b.rms_norm_inplace(k, k_norm, tokens * shape.n_kv_heads, d, eps)?;
    b.rope(q, positions, shape.n_heads, d, theta)?;
    b.rope(k, positions, shape.n_kv_heads, d, theta)
}

/// `out += x · wᵀ` through `scratch` (room for the product).
pub fn matmul_add<B: Backend + ?Sized>(
    b: &B,
    x: &B::Buffer,
    rows: usize,
    weight: &B::Weight,
    n: usize,
    scratch: &mut B::Buffer,
    out: &mut B::Buffer,
) -> Result<(), BackendError> {
    b.matmul(x, rows, weight, scratch)?;
    b.add_inplace(out, scratch, rows * n)
}

/// `out += swiglu(gate, up) · downᵀ`: the activation into `act` (`rows × ffn`),
/// the product into `scratch` (`rows × n`), then the add.
#[allow(clippy::too_many_arguments)]
pub fn swiglu_matmul_add<B: Backend + ?Sized>(
    b: &B,
    gate: &B::Buffer,
    up: &B::Buffer,
    rows: usize,
    ffn: usize,
    down: &B::Weight,
    n: usize,
    act: &mut B::Buffer,
    scratch: &mut B::Buffer,
    out: &mut B::Buffer,
) -> Result<(), BackendError> {
    b.swiglu(gate, up, rows * ffn, act)?;
    matmul_add(b, act, rows, down, n, scratch, out)
}

/// An error unless there is one output buffer per weight.
pub fn check_pairs(op: &'static str, weights: usize, outs: usize) -> Result<(), BackendError> {
    if weights != outs {
        return Err(BackendError::Invalid {
            op,
            detail: format!("{weights} weights but {outs} output buffers"),
        });
    }
    Ok(())
}
