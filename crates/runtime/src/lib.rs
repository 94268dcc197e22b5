//! Opens a model on a backend: `auto|cpu|cuda|wgpu`, with the reason an
//! explicit choice cannot run here, and the loaded model — a reranker or an
//! embedding model, as the file says — behind object-safe traits so callers do
//! not care which backend runs it.
//!
//! This crate is the one place that names every backend crate; the binary
//! parses flags into [`BackendChoice`] and [`BackendOptions`] and calls
//! [`open`]. GPU backends are cargo features (`cuda`, `wgpu`) that build
//! without a GPU or toolkit and load the device's libraries at run time.
//!
//! One module per backend — `cpu.rs`, `cuda.rs`, `wgpu.rs` — each GPU one with
//! a stand-in (`cuda_off.rs`, `wgpu_off.rs`) compiled when its feature is off,
//! whose entry points say which build they need: the choice of backend stays
//! here, free of `#[cfg]` pairs. `tuning_choice.rs` applies `--tuning`.

use std::sync::Arc;

use tessera_backend::profile::Profiled;
use tessera_backend::{Backend, BackendError};
pub use tessera_engine::scheduler::DeviceModel;
use tessera_engine::{EmbedFormat, Embedder, Engine, EngineError, LoadError, PairScore, Reranker};
use tessera_gguf::GgufFile;
use tessera_model::PromptBuilder;
use tessera_model::{ModelConfig, ModelKind, RerankTokenizer};

mod ceilings;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_off.rs"]
mod cuda;
mod tuning_choice;
#[cfg(feature = "wgpu")]
mod wgpu;
#[cfg(not(feature = "wgpu"))]
#[path = "wgpu_off.rs"]
mod wgpu;

pub use ceilings::{cpu_ceilings, cuda_ceilings, CeilingSizes, Ceilings};
pub use cpu::cpu_model;
pub use cuda::tune;
pub use tessera_backend::profile::{self, Profiler};
pub use tessera_backend_cpu::Precision;
pub use tessera_backend_cuda::tuning::{self, GemmShape, TuningTable};
pub use tessera_backend_cuda::Arithmetic;
pub use tuning_choice::{
    choices_line, gemm_shapes, tuning_cache_path, with_tuning, TuneOptions, Tuning,
};

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// CUDA if a device is present (a build with the `cuda` feature), else a
    /// real (non-CPU) wgpu adapter (`wgpu` feature), else the CPU.
    Auto,
    /// The CPU backend ([`BackendOptions::precision`] picks its arithmetic).
    Cpu,
    /// Our CUDA kernels on device 0.
    Cuda,
    /// WGSL shaders on any wgpu adapter, a CPU one (lavapipe) included when
    /// chosen explicitly.
    Wgpu,
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
            BackendChoice::Wgpu => "wgpu",
        }
    }
}

/// Options of the backends: the CPU's (used when the CPU is chosen, or `auto`
/// falls back), the CUDA backend's arithmetic (docs/kernels.md), and a per-op
/// profiler to wrap the backend in (`tessera bench --profile`).
#[derive(Clone, Debug)]
pub struct BackendOptions {
    pub precision: Precision,
    /// CPU worker threads; `None` uses every core.
    pub threads: Option<usize>,
    pub gpu_precision: Arithmetic,
    /// Which W8A16 GEMM configurations CUDA runs.
    pub tuning: Tuning,
    pub profiler: Option<Arc<Profiler>>,
}

impl BackendOptions {
    /// A tuning table named by path must be readable, whichever backend runs
    /// (a mistyped path is an error, not a silent built-in choice); whether it
    /// is this GPU's is checked when CUDA opens.
    pub fn check_tuning(&self) -> Result<(), RuntimeError> {
        if let Tuning::File(path) = &self.tuning {
            TuningTable::read(path)?;
        }
        Ok(())
    }
}

impl Default for BackendOptions {
    /// The fast CPU arithmetic on every core, W8A8 on CUDA, no profiler.
    fn default() -> Self {
        BackendOptions {
            precision: Precision::Fast,
            threads: None,
            gpu_precision: Arithmetic::W8A8,
            tuning: Tuning::Default,
            profiler: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The chosen backend cannot run in this build or on this machine.
    #[error("backend {backend}: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// The backend could not be created (no device, out of memory, ...). The
    /// message carries the backend's error (not as a `source`, so a printed
    /// chain says it once).
    #[error("backend {backend}: {error}")]
    Backend {
        backend: &'static str,
        error: BackendError,
    },
    /// The model failed to load on the backend.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A tuning table that cannot be used (unreadable, or another device's).
    #[error(transparent)]
    Tuning(#[from] tuning::TuningError),
    /// The file holds another kind of model than the caller needs.
    #[error("{what} is {} model (pooling: {}); {needed}", found.article(), found.pooling())]
    WrongKind {
        what: String,
        found: ModelKind,
        needed: String,
    },
}

impl RuntimeError {
    fn backend(backend: &'static str) -> impl FnOnce(BackendError) -> RuntimeError {
        move |error| RuntimeError::Backend { backend, error }
    }
}

/// What every loaded model says and does about its engine, whatever its kind.
pub trait OnDevice: Send {
    fn config(&self) -> &ModelConfig;
    /// The backend's name, e.g. `cpu-fast (avx512-vnni)`.
    fn backend_name(&self) -> String;
    /// Resizes the prefix cache; 0 drops every entry but the pinned ones (a
    /// reranker's system prompt).
    fn set_prefix_cache_bytes(&self, bytes: usize);
    /// One forward pass over `tokens` tokens of filler (`Engine::warm_up`).
    fn warm_up(&self, tokens: usize) -> Result<(), EngineError>;
}

/// A model that owns an [`Engine`]: a reranker or an embedder.
trait HasEngine {
    type On: Backend;
    fn engine(&self) -> &Engine<Self::On>;
}

impl<B: Backend> HasEngine for Reranker<B> {
    type On = B;
    fn engine(&self) -> &Engine<B> {
        Reranker::engine(self)
    }
}

impl<B: Backend> HasEngine for Embedder<B> {
    type On = B;
    fn engine(&self) -> &Engine<B> {
        Embedder::engine(self)
    }
}

impl<M: HasEngine + Send> OnDevice for M {
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

/// A loaded reranker on some backend: it scores (query, document) pairs
/// ([`DeviceModel`]) and carries the prompt requests are prepared with.
pub trait AnyReranker: DeviceModel<Output = PairScore> + OnDevice {
    fn prompt(&self) -> &PromptBuilder;
}

impl<B: Backend + Send> AnyReranker for Reranker<B>
where
    Reranker<B>: Send,
{
    fn prompt(&self) -> &PromptBuilder {
        Reranker::prompt(self)
    }
}

/// A loaded embedding model on some backend: it pools sequences into vectors
/// ([`DeviceModel`]) and carries how its inputs are tokenised.
pub trait AnyEmbedder: DeviceModel<Output = Vec<f32>> + OnDevice {
    fn format(&self) -> &EmbedFormat;
}

impl<B: Backend + Send> AnyEmbedder for Embedder<B>
where
    Embedder<B>: Send,
{
    fn format(&self) -> &EmbedFormat {
        Embedder::format(self)
    }
}

/// A loaded model of either kind: the file's `pooling_type` decides which.
pub enum AnyModel {
    Reranker(Box<dyn AnyReranker>),
    Embedder(Box<dyn AnyEmbedder>),
}

impl AnyModel {
    pub fn kind(&self) -> ModelKind {
        match self {
            AnyModel::Reranker(_) => ModelKind::Reranker,
            AnyModel::Embedder(_) => ModelKind::Embedding,
        }
    }

    /// Its engine, whatever the kind.
    pub fn on_device(&self) -> &dyn OnDevice {
        match self {
            AnyModel::Reranker(m) => m.as_ref(),
            AnyModel::Embedder(m) => m.as_ref(),
        }
    }

    /// The reranker, or [`RuntimeError::WrongKind`] naming `what` (the file).
    pub fn into_reranker(self, what: &str) -> Result<Box<dyn AnyReranker>, RuntimeError> {
        match self {
            AnyModel::Reranker(m) => Ok(m),
            AnyModel::Embedder(_) => Err(RuntimeError::WrongKind {
                what: what.to_string(),
                found: ModelKind::Embedding,
                needed: "reranking needs a reranker (pooling rank or none)".into(),
            }),
        }
    }

    /// The embedding model, or [`RuntimeError::WrongKind`] naming `what`.
    pub fn into_embedder(self, what: &str) -> Result<Box<dyn AnyEmbedder>, RuntimeError> {
        match self {
            AnyModel::Embedder(m) => Ok(m),
            AnyModel::Reranker(_) => Err(RuntimeError::WrongKind {
                what: what.to_string(),
                found: ModelKind::Reranker,
                needed: "embeddings need an embedding model (pooling last)".into(),
            }),
        }
    }
}

/// A loaded model and a human description of the device it runs on.
pub struct Loaded {
    pub model: AnyModel,
    pub device: String,
    /// A real GPU (CUDA, or a wgpu adapter that is not a CPU emulation).
    pub on_gpu: bool,
}

/// The file's model, of the kind it declares, on `backend`, wrapped in the
/// profiler's [`Profiled`] when one is given.
pub(crate) fn model_on<B: Backend + Send + 'static>(
    backend: B,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    profiler: Option<Arc<Profiler>>,
) -> Result<AnyModel, RuntimeError>
where
    Reranker<B>: Send,
    Reranker<Profiled<B>>: Send,
    Embedder<B>: Send,
    Embedder<Profiled<B>>: Send,
{
    let (kind, _) = ModelKind::from_gguf(file).map_err(LoadError::from)?;
    Ok(match (kind, profiler) {
        (ModelKind::Reranker, None) => {
            AnyModel::Reranker(Box::new(Reranker::load(backend, file, tokenizer)?))
        }
        (ModelKind::Reranker, Some(profiler)) => AnyModel::Reranker(Box::new(Reranker::load(
            Profiled::new(backend, profiler),
            file,
            tokenizer,
        )?)),
        (ModelKind::Embedding, None) => {
            AnyModel::Embedder(Box::new(Embedder::load(backend, file, tokenizer)?))
        }
        (ModelKind::Embedding, Some(profiler)) => AnyModel::Embedder(Box::new(Embedder::load(
            Profiled::new(backend, profiler),
            file,
            tokenizer,
        )?)),
    })
}

/// A backend this build leaves out, with the command that builds it in.
#[cfg(any(not(feature = "cuda"), not(feature = "wgpu")))]
pub(crate) fn not_built(backend: &'static str) -> RuntimeError {
    let (what, feature) = match backend {
        "cuda" => ("CUDA", "cuda"),
        _ => ("wgpu", "wgpu"),
    };
    RuntimeError::Unavailable {
        backend,
        reason: format!(
            "this tessera was built without {what} support; build it with \
             `cargo build --release -p tessera-cli --features {feature}`"
        ),
    }
}

/// Whether `choice` can run in this build, checked before anything is loaded:
/// a backend that is not compiled in, or CUDA without a driver, is an error
/// naming the backend and the build command. (`auto` always can: it falls back
/// to the CPU.)
pub fn available(choice: BackendChoice) -> Result<(), RuntimeError> {
    match choice {
        BackendChoice::Auto | BackendChoice::Cpu => Ok(()),
        BackendChoice::Cuda => cuda::available(),
        BackendChoice::Wgpu => wgpu::compiled(),
    }
}

/// The GPU backend `auto` would pick on this machine, if any — CUDA with a
/// driver, else a wgpu adapter that is not a CPU — found without loading a model.
pub fn auto_gpu() -> Option<&'static str> {
    if cuda::available().is_ok() {
        return Some("cuda");
    }
    wgpu::gpu_adapter().then_some("wgpu")
}

/// The backend `replicas` copies run on: `choice` itself for one copy; for
/// more, the CPU — under `cpu`, or `auto` where it picks the CPU — and an error
/// naming the GPU backend and `--devices` otherwise. Resolve once (`auto` probes
/// the devices) and pass the result on.
pub fn replicas_backend(
    choice: BackendChoice,
    replicas: usize,
) -> Result<BackendChoice, RuntimeError> {
    if replicas <= 1 {
        return Ok(choice);
    }
    let (backend, how) = match choice {
        BackendChoice::Cpu => return Ok(BackendChoice::Cpu),
        BackendChoice::Auto => match auto_gpu() {
            None => return Ok(BackendChoice::Cpu),
            Some(gpu) => (gpu, format!("--backend auto picked {gpu} here")),
        },
        other => (
            other.name(),
            format!("--backend {} runs on GPUs", other.name()),
        ),
    };
    Err(RuntimeError::Unavailable {
        backend,
        reason: format!(
            "--replicas {replicas} makes copies on the CPU, and {how}: for several GPUs use \
             --devices (all, or 0,1,...), for CPU copies --backend cpu"
        ),
    })
}

/// `replicas` copies of the model on the CPU, the worker threads split evenly
/// between them (each its own pool): one compute thread each behind one queue
/// gives several batches in flight, which a CPU with many cores fills better
/// than one batch at a time. More than one replica needs the CPU backend.
pub fn open_replicas(
    choice: BackendChoice,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
    replicas: usize,
) -> Result<Vec<Loaded>, RuntimeError> {
    options.check_tuning()?;
    if replicas <= 1 {
        return Ok(vec![open(choice, file, tokenizer, options)?]);
    }
    // The CPU, or the refusal (a caller that resolved `auto` already passes `cpu`).
    replicas_backend(choice, replicas)?;
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per_replica = (threads / replicas).max(1);
    let each = BackendOptions {
        threads: Some(per_replica),
        ..options.clone()
    };
    (0..replicas)
        .map(|_| cpu::on_cpu(file, tokenizer.clone(), &each))
        .collect()
}

/// Which GPUs `--devices` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Devices {
    /// Every GPU the driver sees.
    All,
    /// These ordinals, in this order.
    List(Vec<usize>),
}

impl std::str::FromStr for Devices {
    type Err = String;

    fn from_str(text: &str) -> Result<Devices, String> {
        if text.trim().eq_ignore_ascii_case("all") {
            return Ok(Devices::All);
        }
        let mut list = Vec::new();
        for part in text.split(',') {
            let n: usize = part
                .trim()
                .parse()
                .map_err(|_| format!("expected all or GPU numbers like 0,1,3; got {text:?}"))?;
            if list.contains(&n) {
                return Err(format!("GPU {n} is named twice in {text:?}"));
            }
            list.push(n);
        }
        Ok(Devices::List(list))
    }
}

/// The model on each of `devices`, one engine per device with the weights
/// loaded on each: CUDA GPUs by the driver's numbering (`Cuda`, or `Auto`), or
/// wgpu adapters (`Wgpu`) numbered as `tessera_backend_wgpu::WgpuOptions::adapter`
/// counts the usable ones: discrete GPUs, integrated, virtual, other kinds,
/// CPU adapters last.
pub fn open_devices(
    choice: BackendChoice,
    devices: &Devices,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Vec<Loaded>, RuntimeError> {
    options.check_tuning()?;
    match choice {
        BackendChoice::Wgpu => wgpu::open_adapters(devices, file, tokenizer, options),
        BackendChoice::Cuda | BackendChoice::Auto => {
            cuda::open_gpus(devices, file, tokenizer, options)
        }
        BackendChoice::Cpu => Err(RuntimeError::Unavailable {
            backend: "cpu",
            reason: "devices are GPUs (CUDA) or wgpu adapters; on the CPU use replicas".into(),
        }),
    }
}

/// Loads the model on the chosen backend; `auto` tries CUDA, then a real wgpu
/// adapter (never lavapipe on its own), then the CPU, logging why it skipped each.
pub fn open(
    choice: BackendChoice,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    options.check_tuning()?;
    match choice {
        BackendChoice::Cpu => cpu::on_cpu(file, tokenizer, options),
        BackendChoice::Cuda => cuda::on_cuda(file, tokenizer, options),
        BackendChoice::Wgpu => wgpu::on_wgpu(file, tokenizer, true, options),
        BackendChoice::Auto => {
            match cuda::on_cuda(file, tokenizer.clone(), options) {
                Ok(loaded) => return Ok(loaded),
                // A GPU is there but the table asked for is not its own: say
                // so rather than run elsewhere without it.
                Err(e @ RuntimeError::Tuning(_)) => return Err(e),
                Err(e) => tracing::info!("backend auto: no CUDA ({e})"),
            }
            match wgpu::on_wgpu(file, tokenizer.clone(), false, options) {
                Ok(loaded) => return Ok(loaded),
                Err(e) => tracing::info!("backend auto: no GPU wgpu adapter ({e})"),
            }
            cpu::on_cpu(file, tokenizer, options)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_backend_left_out_of_the_build_says_how_to_build_it() {
        let cases = [
            (BackendChoice::Cuda, cfg!(feature = "cuda")),
            (BackendChoice::Wgpu, cfg!(feature = "wgpu")),
        ];
        for (choice, built) in cases {
            match available(choice) {
                Ok(()) => assert!(built, "{} is not built in", choice.name()),
                Err(RuntimeError::Unavailable { backend, reason }) => {
                    assert!(!built);
                    assert_eq!(backend, choice.name());
                    assert!(
                        reason.contains(&format!("--features {}", choice.name())),
                        "{reason}"
                    );
                }
                // Built in, but no driver on this machine.
                Err(other) => assert!(built, "{other}"),
            }
        }
        assert!(available(BackendChoice::Auto).is_ok());
        assert!(available(BackendChoice::Cpu).is_ok());
    }
}
