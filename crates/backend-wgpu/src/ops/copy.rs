//! Row copies: contiguous runs as buffer-to-buffer copies, gathers (the last
//! token of each sequence) through `shaders/copy.wgsl`.

use tessera_backend::BackendError;

use super::{u32_of, ELEMENTWISE_WG};
use crate::context::{grid_1d, Context};
use crate::WgpuBuffer;

pub fn gather_rows(
    ctx: &Context,
    x: &WgpuBuffer,
    rows: &[usize],
    dim: usize,
    out: &mut WgpuBuffer,
) -> Result<(), BackendError> {
    BackendError::check_len("gather_rows", "out", rows.len() * dim, out.len)?;
    let mut indices = Vec::with_capacity(rows.len());
    for &row in rows {
        BackendError::check_len("gather_rows", "x", (row + 1) * dim, x.len)?;
        indices.push(u32_of("gather_rows", "row", row)?);
    }
    if rows.is_empty() || dim == 0 {
        return Ok(());
    }
    let table = ctx.storage_init("gather rows", &indices)?;
    let pipeline = ctx.pipeline("copy", &[])?;
    let grid = grid_1d((rows.len() * dim).div_ceil(ELEMENTWISE_WG))?;
    ctx.dispatch(
        &pipeline,
        &[
            u32_of("gather_rows", "rows", rows.len())?,
            u32_of("gather_rows", "dim", dim)?,
        ],
        &[&x.buffer, &table, &out.buffer],
        grid,
    )
}

pub fn copy_rows(
    ctx: &Context,
    src: &WgpuBuffer,
    src_row: usize,
    dst: &mut WgpuBuffer,
    dst_row: usize,
    rows: usize,
    width: usize,
) -> Result<(), BackendError> {
    BackendError::check_len("copy_rows", "src", (src_row + rows) * width, src.len)?;
    BackendError::check_len("copy_rows", "dst", (dst_row + rows) * width, dst.len)?;
    let bytes = |elements: usize| elements as u64 * 4;
    ctx.copy(
        &src.buffer,
        bytes(src_row * width),
        &dst.buffer,
        bytes(dst_row * width),
        bytes(rows * width),
    )
}
