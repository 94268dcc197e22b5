//! Embedding gather: token rows of the table as f32, one dispatch per part of
//! a table split over several bindings.

use tessera_backend::BackendError;

use super::{u32_of, ELEMENTWISE_WG};
use crate::context::{grid_1d, Context};
use crate::{WgpuBuffer, WgpuWeight};

pub fn embedding(
    ctx: &Context,
    table: &WgpuWeight,
    ids: &[u32],
    out: &mut WgpuBuffer,
) -> Result<(), BackendError> {
    let dim = table.cols();
    BackendError::check_len("embedding", "out", ids.len() * dim, out.len)?;
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows()) {
        return Err(BackendError::Invalid {
            op: "embedding",
            detail: format!(
                "token id {bad} is outside the table's {} rows",
                table.rows()
            ),
        });
    }
    if ids.is_empty() || dim == 0 {
        return Ok(());
    }
    let n = u32_of("embedding", "ids × dim", ids.len() * dim)?;
    let ids_buffer = ctx.storage_init("token ids", ids)?;
    let pipeline = ctx.pipeline("embedding", table.flags())?;
    let grid = grid_1d((n as usize).div_ceil(ELEMENTWISE_WG))?;
    for part in &table.parts {
        let lo = part.row0 as u32;
        // Parts no token reads cost nothing.
        if !ids.iter().any(|&id| id >= lo && id < lo + part.rows as u32) {
            continue;
        }
        let mut buffers = vec![&ids_buffer, &out.buffer];
        buffers.extend(part.bindings());
        ctx.dispatch(
            &pipeline,
            &[ids.len() as u32, dim as u32, lo, part.rows as u32],
            &buffers,
            grid,
        )?;
    }
    Ok(())
}
