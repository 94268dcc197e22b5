//! Residual add: `x += y`.

use tessera_backend::BackendError;

use super::{u32_of, ELEMENTWISE_WG};
use crate::context::{grid_1d, Context};
use crate::WgpuBuffer;

pub fn add_inplace(
    ctx: &Context,
    x: &mut WgpuBuffer,
    y: &WgpuBuffer,
    len: usize,
) -> Result<(), BackendError> {
    BackendError::check_len("add", "x", len, x.len)?;
    BackendError::check_len("add", "y", len, y.len)?;
    let pipeline = ctx.pipeline("add", &[])?;
    let grid = grid_1d(len.div_ceil(ELEMENTWISE_WG))?;
    ctx.dispatch(
        &pipeline,
        &[u32_of("add", "len", len)?],
        &[&x.buffer, &y.buffer],
        grid,
    )
}
