//! The wgpu backend: every op of a Qwen3 forward pass as a WGSL compute shader
//! (`shaders/*.wgsl`, one file per op family), on Vulkan, Metal or DX12 — and on
//! Mesa's lavapipe, the CPU Vulkan driver CI tests with, when asked for.
//!
//! Weights are uploaded once ([`WgpuWeight`]); activations stay in device
//! buffers between ops; ops are recorded into one command encoder that is
//! submitted in batches and before anything the host reads or writes. All
//! arithmetic is f32 (the W8A32 reference): Q8_0 weights are dequantised in
//! the shaders, activations are never quantised.

mod context;
mod ops;
mod shaders;
mod weight;

use tessera_backend::{
    AttentionLayout, AttentionShape, Backend, BackendError, HostTensor, KvRef, Qkv,
};

pub use context::{adapter_count, AdapterDescription, WgpuOptions};
pub use weight::{WeightFormat, WgpuWeight};

use context::Context;
use ops::rope::RopeTableCache;

/// A device buffer of f32 values; `len` is its capacity in elements.
#[derive(Debug)]
pub struct WgpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) len: usize,
}

impl WgpuBuffer {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The wgpu backend on one adapter.
pub struct WgpuBackend {
    ctx: Context,
    rope_tables: RopeTableCache,
}

impl WgpuBackend {
    /// The best adapter (discrete, then integrated, virtual, other GPUs); a CPU
    /// adapter such as lavapipe only when `allow_cpu_adapter` — `auto` backend
    /// selection passes `false`, an explicit `--backend wgpu` may pass `true`.
    pub fn new(allow_cpu_adapter: bool) -> Result<WgpuBackend, BackendError> {
        WgpuBackend::with_options(&WgpuOptions {
            allow_cpu_adapter,
            ..WgpuOptions::default()
        })
    }

    pub fn with_options(options: &WgpuOptions) -> Result<WgpuBackend, BackendError> {
        Ok(WgpuBackend {
            ctx: Context::new(options)?,
            rope_tables: RopeTableCache::default(),
        })
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterDescription {
        &self.ctx.description
    }

    /// The most f32 values one activation buffer may hold on this adapter
    /// (its storage-binding limit): batches must keep `tokens × width` below it.
    pub fn max_buffer_elements(&self) -> usize {
        (self.ctx.activation_bytes / 4) as usize
    }
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;
    type Weight = WgpuWeight;

    fn name(&self) -> String {
        format!("wgpu ({})", self.ctx.description.name)
    }

    fn upload_weight(&self, tensor: &HostTensor) -> Result<WgpuWeight, BackendError> {
        WgpuWeight::upload(&self.ctx, tensor)
    }

    fn max_activation_elements(&self) -> Option<usize> {
        Some(self.max_buffer_elements())
    }

    fn alloc(&self, len: usize) -> Result<WgpuBuffer, BackendError> {
        let bytes = len as u64 * 4;
        if bytes > self.ctx.activation_bytes {
            return Err(BackendError::Device(format!(
                "wgpu: an activation buffer of {bytes} bytes exceeds the {} bytes one binding \
                 holds here (use smaller batches)",
                self.ctx.activation_bytes
            )));
        }
        Ok(WgpuBuffer {
            buffer: self.ctx.storage("activations", len as u64 * 4)?,
            len,
        })
    }

    fn write(&self, buf: &mut WgpuBuffer, data: &[f32]) -> Result<(), BackendError> {
        BackendError::check_len("write", "buffer", data.len(), buf.len)?;
        self.ctx.write(&buf.buffer, data)
    }

    fn read(&self, buf: &WgpuBuffer, len: usize) -> Result<Vec<f32>, BackendError> {
        BackendError::check_len("read", "buffer", len, buf.len)?;
        self.ctx.read(&buf.buffer, len)
    }

    fn embedding(
        &self,
        table: &WgpuWeight,
        ids: &[u32],
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        ops::embedding::embedding(&self.ctx, table, ids, out)
    }

    fn rms_norm(
        &self,
        x: &WgpuBuffer,
        weight: &WgpuWeight,
        rows: usize,
        dim: usize,
        eps: f32,
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        ops::rms_norm::rms_norm(&self.ctx, x, weight, rows, dim, eps, Some(out))
    }

    fn rms_norm_inplace(
        &self,
        x: &mut WgpuBuffer,
        weight: &WgpuWeight,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError> {
        ops::rms_norm::rms_norm(&self.ctx, x, weight, rows, dim, eps, None)
    }

    fn matmul(
        &self,
        x: &WgpuBuffer,
        rows: usize,
        weight: &WgpuWeight,
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        ops::matmul::matmul(&self.ctx, x, rows, weight, out)
    }

    fn rope(
        &self,
        x: &mut WgpuBuffer,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), BackendError> {
        ops::rope::rope(
            &self.ctx,
            &self.rope_tables,
            x,
            positions,
            heads,
            head_dim,
            theta,
        )
    }

    fn attention(
        &self,
        qkv: Qkv<'_, WgpuBuffer>,
        shape: AttentionShape,
        layout: &AttentionLayout,
        prefixes: &[KvRef<'_, WgpuBuffer>],
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        ops::attention::attention(&self.ctx, qkv, shape, layout, prefixes, out)
    }

    fn swiglu(
        &self,
        gate: &WgpuBuffer,
        up: &WgpuBuffer,
        len: usize,
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        ops::swiglu::swiglu(&self.ctx, gate, up, len, out)
    }

    fn add_inplace(
        &self,
        x: &mut WgpuBuffer,
        y: &WgpuBuffer,
        len: usize,
    ) -> Result<(), BackendError> {
        ops::add::add_inplace(&self.ctx, x, y, len)
    }

    fn gather_rows(
        &self,
        x: &WgpuBuffer,
        rows: &[usize],
        dim: usize,
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        ops::copy::gather_rows(&self.ctx, x, rows, dim, out)
    }

    fn copy_rows(
        &self,
        src: &WgpuBuffer,
        src_row: usize,
        dst: &mut WgpuBuffer,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<(), BackendError> {
        ops::copy::copy_rows(&self.ctx, src, src_row, dst, dst_row, rows, width)
    }

    fn score_head(
        &self,
        x: &WgpuBuffer,
        rows: usize,
        weight: &WgpuWeight,
        head_rows: [usize; 2],
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        ops::score_head::score_head(&self.ctx, x, rows, weight, head_rows, out)
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.ctx.wait()
    }
}
