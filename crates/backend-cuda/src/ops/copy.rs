//! Row gathers and copies (`kernels/copy.cu`).

use tessera_backend::BackendError;

use super::{elementwise_grid, row_threads, to_u32, ELEMENTWISE_THREADS};
use crate::{Device, DeviceBuffer, KernelArg, KernelBackend, Launch};

pub fn gather_rows<D: Device>(
    b: &KernelBackend<D>,
    x: &DeviceBuffer<D::Memory>,
    rows: &[usize],
    dim: usize,
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    BackendError::check_len("gather_rows", "out", rows.len() * dim, out.len)?;
    let mut table = Vec::with_capacity(rows.len());
    for &row in rows {
        BackendError::check_len("gather_rows", "x", (row + 1) * dim, x.len)?;
        table.push(to_u32(row, "gather_rows", "row")?);
    }
    if rows.is_empty() || dim == 0 {
        return Ok(());
    }
    let table = b.upload_table(&table)?;
    b.device.launch(&Launch {
        module: "copy",
        kernel: "gather_rows_f32",
        grid: [to_u32(rows.len(), "gather_rows", "rows")?, 1, 1],
        block: [row_threads(dim), 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.device.address(&table)),
            KernelArg::U32(to_u32(dim, "gather_rows", "dim")?),
            KernelArg::Ptr(b.address(out)),
        ],
    })
}

pub fn copy_rows<D: Device>(
    b: &KernelBackend<D>,
    src: &DeviceBuffer<D::Memory>,
    src_row: usize,
    dst: &mut DeviceBuffer<D::Memory>,
    dst_row: usize,
    rows: usize,
    width: usize,
) -> Result<(), BackendError> {
    let n = rows * width;
    BackendError::check_len("copy_rows", "src", (src_row + rows) * width, src.len)?;
    BackendError::check_len("copy_rows", "dst", (dst_row + rows) * width, dst.len)?;
    if n == 0 {
        return Ok(());
    }
    let src_address = b.address(src) + (src_row * width * 4) as u64;
    let dst_address = b.address(dst) + (dst_row * width * 4) as u64;
    b.device.launch(&Launch {
        module: "copy",
        kernel: "copy_f32",
        grid: elementwise_grid(n),
        block: [ELEMENTWISE_THREADS, 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(src_address),
            KernelArg::Ptr(dst_address),
            KernelArg::U64(n as u64),
        ],
    })
}
