//! RMSNorm (`kernels/rms_norm.cu`): one block per row.

use tessera_backend::{BackendError, Norm, Rows};
use tessera_gguf::GgmlType;

use super::{row_threads, to_u32};
use crate::{Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend, Launch};

/// The norm weight as an f32 vector of `dim` (checked).
/// The checked operands of an RMSNorm kernel over `x`: its buffer, rows and
/// width, the norm weight's device memory, and epsilon.
pub(crate) fn norm_operands<'a, M>(
    x: Rows<'a, DeviceBuffer<M>>,
    norm: Norm<'a, DeviceWeight<M>>,
) -> Result<(&'a DeviceBuffer<M>, usize, usize, &'a M, f32), BackendError> {
    let w = norm_weight(norm.weight, x.width)?;
    BackendError::check_len("rms_norm", "x", x.rows * x.width, x.data.len)?;
    Ok((x.data, x.rows, x.width, w, norm.eps))
}

pub(crate) fn norm_weight<M>(weight: &DeviceWeight<M>, dim: usize) -> Result<&M, BackendError> {
    if weight.rows * weight.cols != dim {
        return Err(BackendError::Invalid {
            op: "rms_norm",
            detail: format!(
                "weight '{}' has {} elements, rows have {dim}",
                weight.name,
                weight.rows * weight.cols
            ),
        });
    }
    if weight.ggml_type != GgmlType::F32 {
        return Err(BackendError::Invalid {
            op: "rms_norm",
            detail: format!(
                "weight '{}' is a {}-row {:?} matrix, not a vector",
                weight.name, weight.rows, weight.ggml_type
            ),
        });
    }
    Ok(&weight.data)
}

/// `out` is (address, capacity) so the in-place form can pass `x` itself.
pub fn rms_norm<D: Device>(
    b: &KernelBackend<D>,
    x: &DeviceBuffer<D::Memory>,
    weight: &DeviceWeight<D::Memory>,
    rows: usize,
    dim: usize,
    eps: f32,
    out: (u64, usize),
) -> Result<(), BackendError> {
    let w = norm_weight(weight, dim)?;
    BackendError::check_len("rms_norm", "x", rows * dim, x.len)?;
    BackendError::check_len("rms_norm", "out", rows * dim, out.1)?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    b.device.launch(&Launch {
        module: "rms_norm",
        kernel: "rms_norm_f32",
        grid: [to_u32(rows, "rms_norm", "rows")?, 1, 1],
        block: [row_threads(dim), 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.device.address(w)),
            KernelArg::U32(to_u32(dim, "rms_norm", "dim")?),
            KernelArg::F32(eps),
            KernelArg::Ptr(out.0),
        ],
    })
}

/// RMSNorm fused with Q8_0 quantisation of the result (`rms_norm_q8_0`): writes the
/// int8 values `[rows, dim]` and f32 scales `[rows, dim/32]` a Q8_0 matmul reads,
/// and (when given) the f32 result. `dim` must be a multiple of 32.
pub fn rms_norm_q8_0<D: Device>(
    b: &KernelBackend<D>,
    x: Rows<'_, DeviceBuffer<D::Memory>>,
    norm: Norm<'_, DeviceWeight<D::Memory>>,
    out: Option<&mut DeviceBuffer<D::Memory>>,
    quantised: &super::matmul::QuantisedRows<D::Memory>,
) -> Result<(), BackendError> {
    let (x, rows, dim, w, eps) = norm_operands(x, norm)?;
    quantised.check(rows, dim)?;
    let out_address = match out {
        Some(out) => {
            BackendError::check_len("rms_norm", "out", rows * dim, out.len)?;
            b.address(out)
        }
        None => 0,
    };
    if rows == 0 {
        return Ok(());
    }
    b.device.launch(&Launch {
        module: "rms_norm",
        kernel: "rms_norm_q8_0",
        grid: [to_u32(rows, "rms_norm", "rows")?, 1, 1],
        block: [row_threads(dim), 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.device.address(w)),
            KernelArg::U32(to_u32(dim, "rms_norm", "dim")?),
            KernelArg::F32(eps),
            KernelArg::Ptr(out_address),
            KernelArg::Ptr(b.device.address(&quantised.qs)),
            KernelArg::Ptr(b.device.address(&quantised.scales)),
        ],
    })
}
