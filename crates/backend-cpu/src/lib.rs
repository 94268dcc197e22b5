//! The CPU backend: the numerical reference every other backend is checked
//! against. Plain f32 arithmetic with a fixed accumulation order per output
//! element, so a token's result never depends on what else is in the batch;
//! Q8_0 weights stay in their file layout and are dequantised a row at a time.

mod ops;
mod weight;

use tessera_backend::{AttentionLayout, AttentionShape, Backend, BackendError, HostTensor, KvRef};

pub use weight::CpuWeight;

/// The CPU reference backend. Ops run on the calling thread, spread over the
/// global rayon pool.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;
    type Weight = CpuWeight;

    fn name(&self) -> String {
        "cpu-reference".to_string()
    }

    fn upload_weight(&self, tensor: &HostTensor) -> Result<CpuWeight, BackendError> {
        CpuWeight::new(tensor)
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>, BackendError> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| {
            BackendError::Device(format!(
                "cannot allocate {len} f32 values ({} MiB)",
                (len * 4) >> 20
            ))
        })?;
        buf.resize(len, 0.0);
        Ok(buf)
    }

    fn write(&self, buf: &mut Vec<f32>, data: &[f32]) -> Result<(), BackendError> {
        BackendError::check_len("write", "buffer", data.len(), buf.len())?;
        buf[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, buf: &Vec<f32>, len: usize) -> Result<Vec<f32>, BackendError> {
        BackendError::check_len("read", "buffer", len, buf.len())?;
        Ok(buf[..len].to_vec())
    }

    fn embedding(
        &self,
        table: &CpuWeight,
        ids: &[u32],
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        ops::embedding::embedding(table, ids, out)
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        weight: &CpuWeight,
        rows: usize,
        dim: usize,
        eps: f32,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        ops::rms_norm::rms_norm(x, weight, rows, dim, eps, out)
    }

    fn rms_norm_inplace(
        &self,
        x: &mut Vec<f32>,
        weight: &CpuWeight,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError> {
        ops::rms_norm::rms_norm_inplace(x, weight, rows, dim, eps)
    }

    fn matmul(
        &self,
        x: &Vec<f32>,
        rows: usize,
        weight: &CpuWeight,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        ops::matmul::matmul(x, rows, weight, out)
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), BackendError> {
        ops::rope::rope(x, positions, heads, head_dim, theta)
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        shape: AttentionShape,
        layout: &AttentionLayout,
        prefixes: &[KvRef<'_, Vec<f32>>],
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        ops::attention::attention(q, k, v, shape, layout, prefixes, out)
    }

    fn swiglu(
        &self,
        gate: &Vec<f32>,
        up: &Vec<f32>,
        len: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        ops::swiglu::swiglu(gate, up, len, out)
    }

    fn add_inplace(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<(), BackendError> {
        ops::add::add_inplace(x, y, len)
    }

    fn gather_rows(
        &self,
        x: &Vec<f32>,
        rows: &[usize],
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        ops::copy::gather_rows(x, rows, dim, out)
    }

    fn copy_rows(
        &self,
        src: &Vec<f32>,
        src_row: usize,
        dst: &mut Vec<f32>,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<(), BackendError> {
        ops::copy::copy_rows(src, src_row, dst, dst_row, rows, width)
    }

    fn score_head(
        &self,
        x: &Vec<f32>,
        rows: usize,
        weight: &CpuWeight,
        head_rows: [usize; 2],
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        ops::score_head::score_head(x, rows, weight, head_rows, out)
    }
}
