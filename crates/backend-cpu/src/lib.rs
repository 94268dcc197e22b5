//! The CPU backend: the numerical reference every other backend is checked
//! against. Plain f32 arithmetic with a fixed accumulation order per output
//! element, so a token's result never depends on what else is in the batch;
//! Q8_0 weights stay in their file layout and are dequantised a row at a time.
//! `Precision::Fast` swaps in int8 kernels for Q8_0 matmuls and the score head
//! (`fast`). Which one a constructor gives is in its name:
//! [`CpuBackend::reference`] (also [`CpuBackend::new`]) or [`CpuBackend::fast`];
//! there is no `Default`.

mod fast;
mod ops;
mod weight;

use std::sync::Arc;

use tessera_gguf::GgmlType;

use tessera_backend::{
    AttentionLayout, AttentionShape, Backend, BackendError, HostTensor, KvRef, Qkv,
};

pub use weight::CpuWeight;

pub use fast::{Isa, Precision};

/// The CPU backend. Ops run on the calling thread, spread over a rayon pool:
/// the global one, or the backend's own when built with a thread count.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    precision: Precision,
    isa: Isa,
    pool: Option<Arc<rayon::ThreadPool>>,
    mlp_chunk_rows: usize,
}

impl CpuBackend {
    /// `precision` on the best instruction set, on the global rayon pool.
    fn on_global_pool(precision: Precision) -> CpuBackend {
        CpuBackend {
            precision,
            isa: Isa::best(),
            pool: None,
            mlp_chunk_rows: tessera_backend::DEFAULT_MLP_CHUNK_ROWS,
        }
    }

    /// The reference: f32 activations, the oracle of every other path; on the
    /// global rayon pool.
    pub fn reference() -> CpuBackend {
        CpuBackend::on_global_pool(Precision::Reference)
    }

    /// [`CpuBackend::reference`]. (No `Default`: it would hide which
    /// arithmetic one gets.)
    #[allow(clippy::new_without_default)]
    pub fn new() -> CpuBackend {
        CpuBackend::reference()
    }

    /// The fast path (int8 activations) on the best instruction set this CPU
    /// has, on the global rayon pool.
    pub fn fast() -> CpuBackend {
        CpuBackend::on_global_pool(Precision::Fast)
    }

    /// `threads`: `None` runs on the global rayon pool (all cores unless the
    /// process configured it); `Some(n)` on a persistent pool of `n` threads.
    pub fn with_options(
        precision: Precision,
        threads: Option<usize>,
    ) -> Result<CpuBackend, BackendError> {
        CpuBackend::with_isa(precision, threads, Isa::best())
    }

    /// As `with_options`, with the int8 kernels of `isa` (tests, benchmarks);
    /// an error when this CPU lacks it.
    pub fn with_isa(
        precision: Precision,
        threads: Option<usize>,
        isa: Isa,
    ) -> Result<CpuBackend, BackendError> {
        if !isa.is_available() {
            return Err(BackendError::Device(format!(
                "this CPU does not support the {} kernels",
                isa.name()
            )));
        }
        let pool = match threads {
            None => None,
            Some(0) => {
                return Err(BackendError::Device(
                    "the thread count must be at least 1".into(),
                ))
            }
            Some(n) => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("tessera-cpu-{i}"))
                    .build()
                    .map_err(|e| BackendError::Device(format!("cannot start {n} threads: {e}")))?,
            )),
        };
        Ok(CpuBackend {
            isa,
            pool,
            ..CpuBackend::on_global_pool(precision)
        })
    }

    /// The same backend with the MLP run `rows` token rows at a time (at least
    /// one): less memory for long batches, or, in tests, many chunks from few
    /// tokens.
    pub fn with_mlp_chunk_rows(mut self, rows: usize) -> CpuBackend {
        self.mlp_chunk_rows = rows.max(1);
        self
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Threads the ops spread over.
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Runs `op` on the backend's pool.
    fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(op),
            None => op(),
        }
    }
}

impl Backend for CpuBackend {
    fn mlp_chunk_rows(&self) -> usize {
        self.mlp_chunk_rows
    }

    type Buffer = Vec<f32>;
    type Weight = CpuWeight;

    fn name(&self) -> String {
        match self.precision {
            Precision::Reference => "cpu-reference".to_string(),
            Precision::Fast => format!("cpu-fast ({})", self.isa.name()),
        }
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
        self.install(|| ops::embedding::embedding(table, ids, out))
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
        self.install(|| ops::rms_norm::rms_norm(x, weight, rows, dim, eps, out))
    }

    fn rms_norm_inplace(
        &self,
        x: &mut Vec<f32>,
        weight: &CpuWeight,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError> {
        self.install(|| ops::rms_norm::rms_norm_inplace(x, weight, rows, dim, eps))
    }

    fn matmul(
        &self,
        x: &Vec<f32>,
        rows: usize,
        weight: &CpuWeight,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        self.install(|| match self.precision {
            Precision::Fast if weight.ggml_type() == GgmlType::Q8_0 => {
                fast::matmul(self.isa, x, rows, weight, out)
            }
            _ => ops::matmul::matmul(x, rows, weight, out),
        })
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), BackendError> {
        self.install(|| ops::rope::rope(x, positions, heads, head_dim, theta))
    }

    fn attention(
        &self,
        qkv: Qkv<'_, Vec<f32>>,
        shape: AttentionShape,
        layout: &AttentionLayout,
        prefixes: &[KvRef<'_, Vec<f32>>],
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        self.install(|| match self.precision {
            Precision::Reference => ops::attention::attention(qkv, shape, layout, prefixes, out),
            Precision::Fast => {
                fast::attention::attention(qkv, shape, layout, prefixes, out, self.isa)
            }
        })
    }

    fn swiglu(
        &self,
        gate: &Vec<f32>,
        up: &Vec<f32>,
        len: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        self.install(|| ops::swiglu::swiglu(gate, up, len, out))
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
        if self.precision == Precision::Fast {
            if let Some(result) = fast::score_head(x, rows, weight, head_rows, out) {
                return result;
            }
        }
        ops::score_head::score_head(x, rows, weight, head_rows, out)
    }
}
