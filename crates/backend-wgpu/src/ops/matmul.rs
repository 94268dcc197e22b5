//! `out[rows, n] = x[rows, k] · wᵀ`: 32×32 tiles through workgroup memory
//! (`shaders/matmul_q8_0.wgsl`), one dispatch per weight part, each writing
//! its own columns.

use tessera_backend::BackendError;

use super::u32_of;
use crate::context::{Context, MAX_GRID_DIM};
use crate::{WgpuBuffer, WgpuWeight};

/// Output rows and columns per workgroup.
const TILE: usize = 32;

pub fn matmul(
    ctx: &Context,
    x: &WgpuBuffer,
    rows: usize,
    weight: &WgpuWeight,
    out: &mut WgpuBuffer,
) -> Result<(), BackendError> {
    let (n, k) = (weight.rows(), weight.cols());
    BackendError::check_len("matmul", "x", rows * k, x.len)?;
    BackendError::check_len("matmul", "out", rows * n, out.len)?;
    u32_of("matmul", "rows × k", rows * k)?;
    u32_of("matmul", "rows × n", rows * n)?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let row_tiles = rows.div_ceil(TILE);
    if row_tiles > MAX_GRID_DIM as usize {
        return Err(BackendError::Invalid {
            op: "matmul",
            detail: format!("{rows} rows exceed one dispatch"),
        });
    }
    let pipeline = ctx.pipeline("matmul_q8_0", weight.flags())?;
    for part in &weight.parts {
        let col_tiles = part.rows.div_ceil(TILE);
        if col_tiles > MAX_GRID_DIM as usize {
            return Err(BackendError::Invalid {
                op: "matmul",
                detail: format!("{} output columns in one weight part", part.rows),
            });
        }
        let buffers: Vec<&wgpu::Buffer> = [&x.buffer, &out.buffer]
            .into_iter()
            .chain(part.bindings())
            .collect();
        ctx.dispatch(
            &pipeline,
            &[
                rows as u32,
                k as u32,
                part.rows as u32,
                n as u32,
                part.row0 as u32,
            ],
            &buffers,
            (col_tiles as u32, row_tiles as u32),
        )?;
    }
    Ok(())
}
