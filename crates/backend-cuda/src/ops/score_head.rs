//! The score head (`kernels/score_head.cu`): two logits per row. A Q8_0 head
//! quantises the rows first in W8A8 (as the matmuls); in W8A16 it reads the f32
//! rows against the exact `q · d` (two rows of the head: no speed to gain).

use tessera_backend::BackendError;
use tessera_gguf::GgmlType;

use super::matmul::{quantize, QuantisedRows};
use super::to_u32;
use crate::{Arithmetic, Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend, Launch};

/// Threads per block: one warp per logit.
pub const THREADS: u32 = 64;

pub fn score_head<D: Device>(
    b: &KernelBackend<D>,
    x: &DeviceBuffer<D::Memory>,
    rows: usize,
    weight: &DeviceWeight<D::Memory>,
    head_rows: [usize; 2],
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    let k = weight.cols;
    BackendError::check_len("score_head", "x", rows * k, x.len)?;
    BackendError::check_len("score_head", "out", rows * 2, out.len)?;
    if let Some(&bad) = head_rows.iter().find(|&&r| r >= weight.rows) {
        return Err(BackendError::Invalid {
            op: "score_head",
            detail: format!(
                "head row {bad} is outside '{}' ({} rows)",
                weight.name, weight.rows
            ),
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let yes = KernelArg::U32(to_u32(head_rows[0], "score_head", "row")?);
    let no = KernelArg::U32(to_u32(head_rows[1], "score_head", "row")?);
    let k_arg = KernelArg::U32(to_u32(k, "score_head", "k")?);
    let out_arg = KernelArg::Ptr(b.address(out));
    let data = KernelArg::Ptr(b.device.address(&weight.data));
    let grid = [to_u32(rows, "score_head", "rows")?, 1, 1];
    let launch = |kernel, args| {
        b.device.launch(&Launch {
            module: "score_head",
            kernel,
            grid,
            block: [THREADS, 1, 1],
            shared_bytes: 0,
            args,
        })
    };
    match (weight.ggml_type, &weight.scales) {
        (GgmlType::Q8_0, Some(scales)) if b.arithmetic() == Arithmetic::W8A16 => {
            let args = vec![
                KernelArg::Ptr(b.address(x)),
                data,
                KernelArg::Ptr(b.device.address(scales)),
                yes,
                no,
                k_arg,
                out_arg,
            ];
            launch("score_head_q8_0_f32", args)
        }
        (GgmlType::Q8_0, Some(scales)) => {
            let quantised = QuantisedRows::alloc(&b.device, rows, k)?;
            quantize(b, x, rows, k, &quantised)?;
            let args = vec![
                KernelArg::Ptr(b.device.address(&quantised.qs)),
                KernelArg::Ptr(b.device.address(&quantised.scales)),
                data,
                KernelArg::Ptr(b.device.address(scales)),
                yes,
                no,
                k_arg,
                out_arg,
            ];
            launch("score_head_q8_0", args)
        }
        (ty, _) => {
            let kernel = match ty {
                GgmlType::F32 => "score_head_f32",
                GgmlType::F16 => "score_head_f16",
                GgmlType::BF16 => "score_head_bf16",
                other => {
                    return Err(BackendError::UnsupportedType {
                        name: weight.name.clone(),
                        ggml_type: other,
                    })
                }
            };
            let args = vec![KernelArg::Ptr(b.address(x)), data, yes, no, k_arg, out_arg];
            launch(kernel, args)
        }
    }
}
