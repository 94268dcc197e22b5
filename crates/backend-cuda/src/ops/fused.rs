//! The fused ops of the engine's layer on Q8_0 weights: the activations are
//! quantised once (W8A8: int8 blocks; W8A16: f16 rows), by the kernel that
//! produces them (RMSNorm, SwiGLU), and read by every matmul that needs them;
//! residual adds happen in the matmul epilogue. Each computes the same bits as the op sequence it replaces
//! (in W8A16: with the same split-K factor, which a grouped launch may choose otherwise than a single one)
//! (`tessera_backend::unfused`), which runs instead for other weight types.

use tessera_backend::{unfused, BackendError, GateUp, Norm, Rows};
use tessera_gguf::{GgmlType, QK8_0};

use super::matmul::{launch_quantising, matmul_quantised, quantize};
use super::rms_norm::rms_norm_q8_0;
use super::w8a16;
use crate::{Arithmetic, Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend};

type Buffer<D> = DeviceBuffer<<D as Device>::Memory>;
type Weight<D> = DeviceWeight<<D as Device>::Memory>;

/// Whether the int8 path takes a matmul of rows of `k` by `weight`.
fn int8_path<M>(weight: &DeviceWeight<M>, k: usize) -> bool {
    weight.ggml_type == GgmlType::Q8_0 && weight.cols == k && k.is_multiple_of(QK8_0)
}

fn check_features<M>(
    op: &'static str,
    weight: &DeviceWeight<M>,
    n: usize,
) -> Result<(), BackendError> {
    if weight.rows != n {
        return Err(BackendError::Invalid {
            op,
            detail: format!(
                "weight '{}' has {} output features, {n} expected",
                weight.name, weight.rows
            ),
        });
    }
    Ok(())
}

/// `rms_norm_q8_0` once, then every matmul on its int8 rows (`normed` is not
/// written).
pub fn rms_norm_matmuls<D: Device>(
    b: &KernelBackend<D>,
    x: Rows<'_, Buffer<D>>,
    norm: Norm<'_, Weight<D>>,
    weights: &[&Weight<D>],
    normed: &mut Buffer<D>,
    outs: &mut [&mut Buffer<D>],
) -> Result<(), BackendError> {
    let (rows, dim) = (x.rows, x.width);
    if !weights.iter().all(|w| int8_path(w, dim)) {
        return unfused::rms_norm_matmuls(b, x, norm, weights, normed, outs);
    }
    unfused::check_pairs("rms_norm_matmuls", weights.len(), outs.len())?;
    if rows == 0 {
        return Ok(());
    }
    if b.arithmetic() == Arithmetic::W8A16 {
        let mut out_refs: Vec<&mut Buffer<D>> = outs.iter_mut().map(|o| &mut **o).collect();
        return w8a16::matmuls(
            b,
            rows,
            dim,
            weights,
            false,
            &mut out_refs,
            |halves, layout| w8a16::rms_norm_f16(b, x, norm, halves, layout),
        );
    }
    b.with_quantised(rows, dim, |quantised| {
        rms_norm_q8_0(b, x, norm, None, quantised)?;
        for (weight, out) in weights.iter().zip(outs.iter_mut()) {
            matmul_quantised(b, quantised, rows, weight, false, out)?;
        }
        Ok(())
    })
}

/// `out += x · wᵀ` with the add in the matmul's epilogue (`scratch` unused).
pub fn matmul_add<D: Device>(
    b: &KernelBackend<D>,
    x: &Buffer<D>,
    rows: usize,
    weight: &Weight<D>,
    n: usize,
    scratch: &mut Buffer<D>,
    out: &mut Buffer<D>,
) -> Result<(), BackendError> {
    let k = weight.cols;
    if !int8_path(weight, k) {
        return unfused::matmul_add(b, x, rows, weight, n, scratch, out);
    }
    check_features("matmul_add", weight, n)?;
    BackendError::check_len("matmul_add", "x", rows * k, x.len)?;
    BackendError::check_len("matmul_add", "out", rows * n, out.len)?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if b.arithmetic() == Arithmetic::W8A16 {
        return w8a16::matmuls(b, rows, k, &[weight], true, &mut [out], |halves, layout| {
            w8a16::to_f16(b, x, rows, k, halves, layout)
        });
    }
    b.with_quantised(rows, k, |quantised| {
        quantize(b, x, rows, k, quantised)?;
        matmul_quantised(b, quantised, rows, weight, true, out)
    })
}

/// `swiglu_q8_0` straight into int8 blocks, then `out += act · downᵀ` in the
/// epilogue (`act` and `scratch` unused).
pub fn swiglu_matmul_add<D: Device>(
    b: &KernelBackend<D>,
    gate_up: GateUp<'_, Buffer<D>>,
    down: &Weight<D>,
    n: usize,
    act: &mut Buffer<D>,
    scratch: &mut Buffer<D>,
    out: &mut Buffer<D>,
) -> Result<(), BackendError> {
    let GateUp {
        gate,
        up,
        rows,
        ffn,
    } = gate_up;
    if !int8_path(down, ffn) {
        return unfused::swiglu_matmul_add(b, gate_up, down, n, act, scratch, out);
    }
    check_features("swiglu_matmul_add", down, n)?;
    BackendError::check_len("swiglu_matmul_add", "gate", rows * ffn, gate.len)?;
    BackendError::check_len("swiglu_matmul_add", "up", rows * ffn, up.len)?;
    BackendError::check_len("swiglu_matmul_add", "out", rows * n, out.len)?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if b.arithmetic() == Arithmetic::W8A16 {
        return w8a16::matmuls(b, rows, ffn, &[down], true, &mut [out], |halves, layout| {
            w8a16::swiglu_f16(b, gate, up, rows, ffn, halves, layout)
        });
    }
    let blocks = rows * ffn / QK8_0;
    b.with_quantised(rows, ffn, |quantised| {
        launch_quantising(
            b,
            ("swiglu", "swiglu_q8_0"),
            vec![
                KernelArg::Ptr(b.address(gate)),
                KernelArg::Ptr(b.address(up)),
            ],
            blocks,
            quantised,
        )?;
        matmul_quantised(b, quantised, rows, down, true, out)
    })
}
