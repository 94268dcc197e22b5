//! Embedding gather (`kernels/embedding.cu`).

use tessera_backend::BackendError;
use tessera_gguf::GgmlType;

use super::{row_threads, to_u32};
use crate::{Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend, Launch};

pub fn embedding<D: Device>(
    b: &KernelBackend<D>,
    table: &DeviceWeight<D::Memory>,
    ids: &[u32],
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    let dim = table.cols;
    BackendError::check_len("embedding", "out", ids.len() * dim, out.len)?;
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
        return Err(BackendError::Invalid {
            op: "embedding",
            detail: format!("token id {bad} is outside the table's {} rows", table.rows),
        });
    }
    if ids.is_empty() || dim == 0 {
        return Ok(());
    }
    let id_table = b.upload_table(ids)?;
    let ids_arg = KernelArg::Ptr(b.device.address(&id_table));
    let dim_arg = KernelArg::U32(to_u32(dim, "embedding", "dim")?);
    let out_arg = KernelArg::Ptr(b.address(out));
    let data = KernelArg::Ptr(b.device.address(&table.data));
    let (kernel, args) = match (table.ggml_type, &table.scales) {
        (GgmlType::Q8_0, Some(scales)) => (
            "embedding_q8_0",
            vec![
                data,
                KernelArg::Ptr(b.device.address(scales)),
                ids_arg,
                dim_arg,
                out_arg,
            ],
        ),
        (GgmlType::F32, _) => ("embedding_f32", vec![data, ids_arg, dim_arg, out_arg]),
        (GgmlType::F16, _) => ("embedding_f16", vec![data, ids_arg, dim_arg, out_arg]),
        (GgmlType::BF16, _) => ("embedding_bf16", vec![data, ids_arg, dim_arg, out_arg]),
        (other, _) => {
            return Err(BackendError::UnsupportedType {
                name: table.name.clone(),
                ggml_type: other,
            })
        }
    };
    b.device.launch(&Launch {
        module: "embedding",
        kernel,
        grid: [to_u32(ids.len(), "embedding", "tokens")?, 1, 1],
        block: [row_threads(dim), 1, 1],
        shared_bytes: 0,
        args,
    })
}
