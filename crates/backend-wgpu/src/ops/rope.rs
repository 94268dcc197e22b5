//! NeoX rotary embedding. The cos/sin table of a position list is computed on
//! the host in f32 exactly as the reference does and kept on the device: the
//! same positions serve q and k of every layer of a forward pass.

use std::sync::{Arc, Mutex};

use tessera_backend::{contract, BackendError};

use super::{u32_of, ELEMENTWISE_WG};
use crate::context::{grid_1d, Context};
use crate::WgpuBuffer;

/// A table on the device and what it was built from.
struct RopeTable {
    positions: Vec<u32>,
    head_dim: usize,
    theta_bits: u32,
    buffer: Arc<wgpu::Buffer>,
}

/// The last table built.
#[derive(Default)]
pub(crate) struct RopeTableCache {
    last: Mutex<Option<RopeTable>>,
}

impl RopeTableCache {
    fn table(
        &self,
        ctx: &Context,
        positions: &[u32],
        head_dim: usize,
        theta: f32,
    ) -> Result<Arc<wgpu::Buffer>, BackendError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = last.as_ref() {
            if t.positions == positions && t.head_dim == head_dim && t.theta_bits == theta.to_bits()
            {
                return Ok(Arc::clone(&t.buffer));
            }
        }
        let inv_freq = contract::rope_inv_freq(theta, head_dim);
        let mut words = Vec::with_capacity(positions.len() * inv_freq.len() * 2);
        for &pos in positions {
            for &f in &inv_freq {
                let (sin, cos) = (pos as f32 * f).sin_cos();
                words.push(cos.to_bits());
                words.push(sin.to_bits());
            }
        }
        let buffer = Arc::new(ctx.storage_init("rope table", &words)?);
        *last = Some(RopeTable {
            positions: positions.to_vec(),
            head_dim,
            theta_bits: theta.to_bits(),
            buffer: Arc::clone(&buffer),
        });
        Ok(buffer)
    }
}

pub fn rope(
    ctx: &Context,
    cache: &RopeTableCache,
    x: &mut WgpuBuffer,
    positions: &[u32],
    heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), BackendError> {
    contract::check_rope(x.len, positions, heads, head_dim)?;
    let pairs = positions.len() * heads * head_dim / 2;
    if pairs == 0 {
        return Ok(());
    }
    let table = cache.table(ctx, positions, head_dim, theta)?;
    let pipeline = ctx.pipeline("rope", &[])?;
    let grid = grid_1d(pairs.div_ceil(ELEMENTWISE_WG))?;
    ctx.dispatch(
        &pipeline,
        &[
            u32_of("rope", "tokens", positions.len())?,
            u32_of("rope", "heads", heads)?,
            u32_of("rope", "head_dim", head_dim)? / 2,
        ],
        &[&x.buffer, &table],
        grid,
    )
}
