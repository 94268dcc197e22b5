//! RMSNorm over rows (hidden state) and per head (QK-norm), in place or not.

use tessera_backend::BackendError;

use super::u32_of;
use crate::context::{grid_1d, Context};
use crate::weight::WeightFormat;
use crate::{WgpuBuffer, WgpuWeight};

fn check_weight(weight: &WgpuWeight, dim: usize) -> Result<&wgpu::Buffer, BackendError> {
    match weight.parts.as_slice() {
        [part] if weight.format() == WeightFormat::F32 && weight.rows() * weight.cols() == dim => {
            Ok(&part.data)
        }
        _ => Err(BackendError::Invalid {
            op: "rms_norm",
            detail: format!(
                "weight '{}' has {} elements, rows have {dim}",
                weight.name(),
                weight.rows() * weight.cols()
            ),
        }),
    }
}

/// `out = None`: in place on `x`.
pub fn rms_norm(
    ctx: &Context,
    x: &WgpuBuffer,
    weight: &WgpuWeight,
    rows: usize,
    dim: usize,
    eps: f32,
    out: Option<&WgpuBuffer>,
) -> Result<(), BackendError> {
    let w = check_weight(weight, dim)?;
    BackendError::check_len("rms_norm", "x", rows * dim, x.len)?;
    u32_of("rms_norm", "rows × dim", rows * dim)?;
    let params = [rows as u32, dim as u32, eps.to_bits()];
    let grid = grid_1d(rows)?;
    match out {
        Some(out) => {
            BackendError::check_len("rms_norm", "out", rows * dim, out.len)?;
            let pipeline = ctx.pipeline("rms_norm", &[])?;
            ctx.dispatch(&pipeline, &params, &[&x.buffer, w, &out.buffer], grid)
        }
        None => {
            let pipeline = ctx.pipeline("rms_norm", &["inplace"])?;
            ctx.dispatch(&pipeline, &params, &[&x.buffer, w], grid)
        }
    }
}
