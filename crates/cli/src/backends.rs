//! Backend selection shared by `serve`, `rerank` and `bench`: `--backend
//! auto|cpu|cuda|wgpu`, and a loaded model behind one object-safe trait so the
//! commands do not care which backend runs it.

use std::sync::Arc;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use tessera_backend::profile::{Profiled, Profiler};
use tessera_backend::Backend;
use tessera_backend_cpu::{CpuBackend, Precision};
use tessera_backend_cuda::Arithmetic;
use tessera_engine::scheduler::GroupScorer;
use tessera_engine::{EngineError, RerankError, RerankOptions, RerankOutput, Reranker};
use tessera_gguf::GgufFile;
use tessera_model::{ModelConfig, PromptBuilder, RerankTokenizer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// CUDA if a device is present (build with `--features cuda`), else a real
    /// (non-CPU) wgpu adapter (`--features wgpu`), else the CPU.
    Auto,
    /// The CPU backend (`--precision` picks its arithmetic).
    Cpu,
    /// Our CUDA kernels on device 0 (needs a build with `--features cuda`).
    Cuda,
    /// WGSL shaders on any wgpu adapter, a CPU one (lavapipe) included when chosen
    /// explicitly (needs a build with `--features wgpu`).
    Wgpu,
}

/// The backend flags every command that runs the model takes: `--backend`,
/// `--precision`, `--gpu-precision`, `--threads`, each with its `TESSERA_*`
/// variable.
#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where to run: auto picks CUDA, then a GPU wgpu adapter, then the CPU.
    #[arg(long, env = "TESSERA_BACKEND", value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// CPU arithmetic: fast (int8 activations, SIMD) or reference (f32 activations).
    #[arg(long, env = "TESSERA_PRECISION", default_value_t = Precision::Fast)]
    pub precision: Precision,
    /// Arithmetic of the CUDA matmuls on Q8_0 weights: w8a8 (int8 activations,
    /// llama.cpp's bits) or w8a16 (f16 activations and attention on the f16
    /// tensor cores, closer to f32; sm_80+).
    #[arg(
        long,
        env = "TESSERA_GPU_PRECISION",
        default_value = "w8a8",
        value_parser = PossibleValuesParser::new(["w8a8", "w8a16"])
            .map(|s| s.parse::<Arithmetic>().expect("one of the possible values"))
    )]
    pub gpu_precision: Arithmetic,
    /// CPU worker threads (default: all cores).
    #[arg(long, env = "TESSERA_THREADS")]
    pub threads: Option<usize>,
}

impl BackendArgs {
    /// The options these flags give, without a profiler.
    pub fn options(&self) -> BackendOptions {
        BackendOptions {
            precision: self.precision,
            threads: self.threads,
            gpu_precision: self.gpu_precision,
            profiler: None,
        }
    }
}

/// Options of the backends: the CPU's (used when the CPU is chosen, or `auto`
/// falls back), the CUDA backend's arithmetic (docs/kernels.md), and a per-op
/// profiler to wrap the backend in (`tessera bench --profile`).
#[derive(Clone, Debug)]
pub struct BackendOptions {
    pub precision: Precision,
    pub threads: Option<usize>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the CUDA backend
    pub gpu_precision: Arithmetic,
    pub profiler: Option<Arc<Profiler>>,
}

/// A reranker on some backend.
pub trait AnyReranker: GroupScorer + Send {
    fn rerank(
        &self,
        query: &str,
        documents: &[&str],
        options: &RerankOptions,
    ) -> Result<RerankOutput, RerankError>;
    fn prompt(&self) -> &PromptBuilder;
    fn config(&self) -> &ModelConfig;
    /// The backend's name, e.g. `cpu-fast (avx512-vnni)`.
    fn backend_name(&self) -> String;
    /// Resizes the prefix cache; 0 drops every entry but the pinned system prompt.
    fn set_prefix_cache_bytes(&self, bytes: usize);
    /// One forward pass over `tokens` tokens of filler (`Engine::warm_up`).
    fn warm_up(&self, tokens: usize) -> Result<(), EngineError>;
}

impl<B: Backend + Send> AnyReranker for Reranker<B>
where
    Reranker<B>: Send,
{
    fn rerank(
        &self,
        query: &str,
        documents: &[&str],
        options: &RerankOptions,
    ) -> Result<RerankOutput, RerankError> {
        Reranker::rerank(self, query, documents, options)
    }

    fn prompt(&self) -> &PromptBuilder {
        Reranker::prompt(self)
    }

    fn config(&self) -> &ModelConfig {
        self.engine().config()
    }

    fn backend_name(&self) -> String {
        self.engine().backend().name()
    }

    fn set_prefix_cache_bytes(&self, bytes: usize) {
        self.engine().set_prefix_cache_bytes(bytes);
    }

    fn warm_up(&self, tokens: usize) -> Result<(), EngineError> {
        self.engine().warm_up(tokens)
    }
}

/// A loaded model and a human description of the device it runs on.
pub struct Loaded {
    pub reranker: Box<dyn AnyReranker>,
    pub device: String,
    /// A real GPU (CUDA, or a wgpu adapter that is not a CPU emulation).
    pub on_gpu: bool,
}

/// The reranker on `backend`, wrapped in the profiler's [`Profiled`] when one
/// is given.
fn reranker_on<B: Backend + Send + 'static>(
    backend: B,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    profiler: Option<Arc<Profiler>>,
) -> anyhow::Result<Box<dyn AnyReranker>>
where
    Reranker<B>: Send,
    Reranker<Profiled<B>>: Send,
{
    Ok(match profiler {
        None => Box::new(Reranker::load(backend, file, tokenizer)?),
        Some(profiler) => Box::new(Reranker::load(
            Profiled::new(backend, profiler),
            file,
            tokenizer,
        )?),
    })
}

fn on_backend<B: Backend + Send + 'static>(
    backend: B,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    device: String,
    on_gpu: bool,
    profiler: Option<Arc<Profiler>>,
) -> anyhow::Result<Loaded>
where
    Reranker<B>: Send,
    Reranker<Profiled<B>>: Send,
{
    Ok(Loaded {
        reranker: reranker_on(backend, file, tokenizer, profiler)?,
        device,
        on_gpu,
    })
}

fn on_cpu(
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    cpu: BackendOptions,
) -> anyhow::Result<Loaded> {
    let backend = CpuBackend::with_options(cpu.precision, cpu.threads)?;
    let device = format!("cpu ({} threads)", backend.threads());
    on_backend(backend, file, tokenizer, device, false, cpu.profiler)
}

#[cfg(feature = "cuda")]
fn on_cuda(
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> anyhow::Result<Loaded> {
    use tessera_backend_cuda::CudaDevice;
    let backend =
        tessera_backend_cuda::CudaBackend::new(0)?.with_arithmetic(options.gpu_precision)?;
    let name = backend.name();
    // A second handle on the same GPU, to read its memory after the backend
    // has moved into the engine.
    let probe = CudaDevice::new(0)?;
    let (before, total) = probe.memory_in_use()?;
    let reranker = reranker_on(backend, file, tokenizer, options.profiler.clone())?;
    // The same context's default stream: waits for the backend's work too.
    tessera_backend_cuda::Device::synchronize(&probe)?;
    let (after, _) = probe.memory_in_use()?;
    // What loading added: the weights as uploaded, plus the pinned system
    // prompt's K/V and what its capture pass left in the pool (a few MB).
    let resident = after.saturating_sub(before) as f64 / 1e9;
    Ok(Loaded {
        reranker,
        device: format!(
            "cuda:0 {name}, model resident {resident:.2} GB of {:.1} GB",
            total as f64 / 1e9
        ),
        on_gpu: true,
    })
}

/// Whether `choice` can run in this build, checked before anything is loaded:
/// a backend that is not compiled in, or CUDA without a driver, is a clear
/// error naming the backend and the build command. (`auto` always can: it falls
/// back to the CPU.)
pub fn available(choice: BackendChoice) -> anyhow::Result<()> {
    match choice {
        BackendChoice::Auto | BackendChoice::Cpu => Ok(()),
        BackendChoice::Cuda => cuda_available(),
        BackendChoice::Wgpu => wgpu_compiled(),
    }
}

#[cfg(feature = "cuda")]
fn cuda_available() -> anyhow::Result<()> {
    tessera_backend_cuda::cuda_available().map_err(|e| anyhow::anyhow!("backend cuda: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda_available() -> anyhow::Result<()> {
    anyhow::bail!("backend cuda: {NO_CUDA}")
}

#[cfg(feature = "wgpu")]
fn wgpu_compiled() -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_compiled() -> anyhow::Result<()> {
    anyhow::bail!("backend wgpu: {NO_WGPU}")
}

#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str = "this tessera was built without CUDA support; build it with \
     `cargo build --release -p tessera-cli --features cuda`";
#[cfg(not(feature = "wgpu"))]
const NO_WGPU: &str = "this tessera was built without wgpu support; build it with \
     `cargo build --release -p tessera-cli --features wgpu`";

#[cfg(not(feature = "cuda"))]
fn on_cuda(
    _: &Arc<GgufFile>,
    _: Option<RerankTokenizer>,
    _: &BackendOptions,
) -> anyhow::Result<Loaded> {
    anyhow::bail!("{NO_CUDA}")
}

#[cfg(feature = "wgpu")]
fn on_wgpu(
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    allow_cpu_adapter: bool,
    profiler: Option<Arc<Profiler>>,
) -> anyhow::Result<Loaded> {
    let backend = tessera_backend_wgpu::WgpuBackend::new(allow_cpu_adapter)?;
    let adapter = backend.adapter();
    let device = format!(
        "{} ({}, {})",
        adapter.name, adapter.api, adapter.device_type
    );
    let on_gpu = !adapter.is_cpu;
    on_backend(backend, file, tokenizer, device, on_gpu, profiler)
}

#[cfg(not(feature = "wgpu"))]
fn on_wgpu(
    _: &Arc<GgufFile>,
    _: Option<RerankTokenizer>,
    _: bool,
    _: Option<Arc<Profiler>>,
) -> anyhow::Result<Loaded> {
    anyhow::bail!("{NO_WGPU}")
}

/// Loads the model on the chosen backend; `auto` tries CUDA, then a real wgpu
/// adapter (never lavapipe on its own), then the CPU, logging why it skipped each.
pub fn load(
    choice: BackendChoice,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    cpu: BackendOptions,
) -> anyhow::Result<Loaded> {
    match choice {
        BackendChoice::Cpu => on_cpu(file, tokenizer, cpu),
        BackendChoice::Cuda => on_cuda(file, tokenizer, &cpu),
        BackendChoice::Wgpu => on_wgpu(file, tokenizer, true, cpu.profiler.clone()),
        BackendChoice::Auto => {
            match on_cuda(file, tokenizer.clone(), &cpu) {
                Ok(loaded) => return Ok(loaded),
                Err(e) => tracing::info!("backend auto: no CUDA ({e:#})"),
            }
            match on_wgpu(file, tokenizer.clone(), false, cpu.profiler.clone()) {
                Ok(loaded) => return Ok(loaded),
                Err(e) => tracing::info!("backend auto: no GPU wgpu adapter ({e:#})"),
            }
            on_cpu(file, tokenizer, cpu)
        }
    }
}
