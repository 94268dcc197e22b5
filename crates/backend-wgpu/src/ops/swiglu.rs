//! SwiGLU: `out = silu(gate) * up`.

use tessera_backend::BackendError;

use super::{u32_of, ELEMENTWISE_WG};
use crate::context::{grid_1d, Context};
use crate::WgpuBuffer;

pub fn swiglu(
    ctx: &Context,
    gate: &WgpuBuffer,
    up: &WgpuBuffer,
    len: usize,
    out: &mut WgpuBuffer,
) -> Result<(), BackendError> {
    BackendError::check_len("swiglu", "gate", len, gate.len)?;
    BackendError::check_len("swiglu", "up", len, up.len)?;
    BackendError::check_len("swiglu", "out", len, out.len)?;
    let pipeline = ctx.pipeline("swiglu", &[])?;
    let grid = grid_1d(len.div_ceil(ELEMENTWISE_WG))?;
    ctx.dispatch(
        &pipeline,
        &[u32_of("swiglu", "len", len)?],
        &[&gate.buffer, &up.buffer, &out.buffer],
        grid,
    )
}
