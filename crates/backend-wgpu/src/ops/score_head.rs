//! The score head: two rows (yes, no) of the head matrix against each row,
//! one dispatch per head row, bound to the part that holds it.

use tessera_backend::BackendError;

use super::u32_of;
use crate::context::{grid_1d, Context};
use crate::{WgpuBuffer, WgpuWeight};

pub fn score_head(
    ctx: &Context,
    x: &WgpuBuffer,
    rows: usize,
    weight: &WgpuWeight,
    head_rows: [usize; 2],
    out: &mut WgpuBuffer,
) -> Result<(), BackendError> {
    let k = weight.cols();
    BackendError::check_len("score_head", "x", rows * k, x.len)?;
    BackendError::check_len("score_head", "out", rows * 2, out.len)?;
    u32_of("score_head", "rows × k", rows * k)?;
    let pipeline = ctx.pipeline("score_head", weight.flags())?;
    let grid = grid_1d(rows)?;
    for (j, &head_row) in head_rows.iter().enumerate() {
        let (part, local) = weight
            .locate(head_row)
            .ok_or_else(|| BackendError::Invalid {
                op: "score_head",
                detail: format!(
                    "head row {head_row} is outside '{}' ({} rows)",
                    weight.name(),
                    weight.rows()
                ),
            })?;
        let buffers: Vec<&wgpu::Buffer> = [&x.buffer, &out.buffer]
            .into_iter()
            .chain(part.bindings())
            .collect();
        ctx.dispatch(
            &pipeline,
            &[rows as u32, k as u32, local as u32, j as u32],
            &buffers,
            grid,
        )?;
    }
    Ok(())
}
