//! The fused ops of [`Backend`] as sequences of its basic ops: the trait's
//! default implementations, and what a backend that fuses them is checked
//! against (a fused kernel must compute the same values, and the CUDA kernels
//! the same bits).

use crate::{AttentionShape, Backend, BackendError, GateUp, Norm, Rope, Rows};

/// RMSNorm of `x` into `normed`, then `outs[i] = normed · weights[i]ᵀ`.
pub fn rms_norm_matmuls<B: Backend + ?Sized>(
    b: &B,
    x: Rows<'_, B::Buffer>,
    norm: Norm<'_, B::Weight>,
    weights: &[&B::Weight],
    normed: &mut B::Buffer,
    outs: &mut [&mut B::Buffer],
) -> Result<(), BackendError> {
    check_pairs("rms_norm_matmuls", weights.len(), outs.len())?;
    b.rms_norm(x.data, norm.weight, x.rows, x.width, norm.eps, normed)?;
    for (weight, out) in weights.iter().zip(outs.iter_mut()) {
        b.matmul(normed, x.rows, weight, out)?;
    }
    Ok(())
}

/// QK-norm then RoPE, in place on q (`tokens × n_heads × head_dim`) and k
/// (`tokens × n_kv_heads × head_dim`).
pub fn qk_norm_rope<B: Backend + ?Sized>(
    b: &B,
    q: &mut B::Buffer,
    k: &mut B::Buffer,
    q_norm: Norm<'_, B::Weight>,
    k_norm: Norm<'_, B::Weight>,
    rope: Rope<'_>,
    shape: AttentionShape,
) -> Result<(), BackendError> {
    let tokens = rope.positions.len();
    let d = shape.head_dim;
    b.rms_norm_inplace(q, q_norm.weight, tokens * shape.n_heads, d, q_norm.eps)?;
    b.rms_norm_inplace(k, k_norm.weight, tokens * shape.n_kv_heads, d, k_norm.eps)?;
    b.rope(q, rope.positions, shape.n_heads, d, rope.theta)?;
    b.rope(k, rope.positions, shape.n_kv_heads, d, rope.theta)
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
pub fn swiglu_matmul_add<B: Backend + ?Sized>(
    b: &B,
    gate_up: GateUp<'_, B::Buffer>,
    down: &B::Weight,
    n: usize,
    act: &mut B::Buffer,
    scratch: &mut B::Buffer,
    out: &mut B::Buffer,
) -> Result<(), BackendError> {
    let GateUp {
        gate,
        up,
        rows,
        ffn,
    } = gate_up;
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
