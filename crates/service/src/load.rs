//! Loading what a service hosts from model files: each file on every device
//! of the placement (CPU replicas, or one engine per GPU), its prefix cache
//! sized, warmed up, and installed — on a thread of its own, so a front end
//! can answer "loading" meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_engine::scheduler::DeviceModel;
use tessera_gguf::GgufFile;
use tessera_model::{ModelKind, RerankTokenizer};
use tessera_runtime::{AnyModel, BackendChoice, BackendOptions, Devices, Loaded};
use tokio::sync::oneshot;

use crate::hosted::{Hosted, Model, ModelInfo};
use crate::{Service, ServiceError};

/// A model file to host.
#[derive(Clone)]
pub struct ModelFile {
    pub file: Arc<GgufFile>,
    /// How it is named in logs and `/info`: `general.name`, or the file stem.
    pub name: String,
    /// The embedded tiny random model: its scores mean nothing.
    pub placeholder: bool,
    /// A tokenizer to use instead of the file's own.
    pub tokenizer: Option<RerankTokenizer>,
}

/// Where the engines go; every hosted model is placed the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// N copies on the chosen backend (N > 1: the CPU, the threads split between them).
    Replicas(usize),
    /// One engine per named GPU (or wgpu adapter).
    Gpus(Devices),
}

/// Reports long steps (a terminal shows them as a spinner or a bar).
pub trait Progress: Send + Sync {
    /// A step of unknown length has begun; it ends when the returned guard is dropped.
    fn step(&self, what: &str) -> Box<dyn Send> {
        tracing::info!("{what}");
        Box::new(())
    }

    /// `total` bytes of `name` are about to be read; the returned function is
    /// called with each chunk's length as it is read.
    fn reading(&self, name: &str, total: u64) -> Box<dyn FnMut(u64) + Send> {
        tracing::info!(model = name, mib = total >> 20, "reading the model file");
        Box::new(|_| {})
    }
}

/// [`Progress`] to the log only.
pub struct LogProgress;

impl Progress for LogProgress {}

/// What to load and how.
#[derive(Clone)]
pub struct LoadPlan {
    pub reranker: Option<ModelFile>,
    pub embedder: Option<ModelFile>,
    /// Resolved already: with several replicas, the CPU.
    pub backend: BackendChoice,
    pub backend_options: BackendOptions,
    pub placement: Placement,
    /// Bytes of query-prefix K/V kept across requests, per model and device.
    pub prefix_cache_bytes: usize,
    /// Tokens of the warm-up pass run before the model is installed: compiles
    /// the GPU kernels and takes a full batch's activation memory. `None`:
    /// the batch budget on a GPU, none on the CPU (there it would only cost
    /// startup time).
    pub warm_up_tokens: Option<usize>,
    pub progress: Arc<dyn Progress>,
}

impl LoadPlan {
    pub fn hosts(&self) -> Hosted {
        Hosted {
            reranker: self.reranker.is_some(),
            embedder: self.embedder.is_some(),
        }
    }
}

/// The models of a [`LoadPlan`] on their way in: [`Self::wait`] resolves once
/// they are installed, or with why they could not be.
pub struct Loading {
    done: oneshot::Receiver<Result<(), ServiceError>>,
}

impl Loading {
    pub(crate) fn done() -> Loading {
        let (tell, done) = oneshot::channel();
        let _ = tell.send(Ok(()));
        Loading { done }
    }

    pub async fn wait(self) -> Result<(), ServiceError> {
        self.done
            .await
            .unwrap_or_else(|_| Err(ServiceError::Internal("the model loader stopped".into())))
    }

    /// For callers outside an async runtime.
    pub fn blocking_wait(self) -> Result<(), ServiceError> {
        self.done
            .blocking_recv()
            .unwrap_or_else(|_| Err(ServiceError::Internal("the model loader stopped".into())))
    }
}

/// Loads `plan` on a thread of its own and installs each model into `service`
/// (the embedding model first), unless shutdown began meanwhile.
pub(crate) fn spawn(service: Service, plan: LoadPlan) -> Loading {
    let (tell, done) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("tessera-load".into())
        .spawn(move || {
            let _ = tell.send(load_all(&service, &plan));
        });
    if let Err(e) = spawned {
        let (tell, done) = oneshot::channel();
        let _ = tell.send(Err(ServiceError::Internal(format!(
            "cannot start the model loader: {e}"
        ))));
        return Loading { done };
    }
    Loading { done }
}

fn load_all(service: &Service, plan: &LoadPlan) -> Result<(), ServiceError> {
    let mut models = Vec::new();
    if let Some(source) = &plan.reranker {
        let (all, info) = load(source, plan, service.options().scheduler.max_batch_tokens)?;
        let rerankers = all
            .into_iter()
            .map(|m| m.into_reranker(&info.name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServiceError::Load(e.to_string()))?;
        let prompt = rerankers
            .first()
            .map(|m| m.prompt().clone())
            .ok_or_else(|| ServiceError::Load(format!("{}: no device took it", info.name)))?;
        models.push((Model::scorers(rerankers, prompt), info));
    }
    if let Some(source) = &plan.embedder {
        let (all, info) = load(source, plan, service.options().scheduler.max_batch_tokens)?;
        let embedders = all
            .into_iter()
            .map(|m| m.into_embedder(&info.name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServiceError::Load(e.to_string()))?;
        let format = embedders
            .first()
            .map(|m| m.format().clone())
            .ok_or_else(|| ServiceError::Load(format!("{}: no device took it", info.name)))?;
        let copies = embedders
            .into_iter()
            .map(|m| Box::new(m) as Box<dyn DeviceModel<Output = Vec<f32>> + Send>)
            .collect();
        models.push((Model::Embedder { copies, format }, info));
    }
    if service.is_shutting_down() {
        return Ok(());
    }
    // The embedding model first: the reranker's arrival is what a front end
    // that hosts only a reranker waits for.
    for (model, info) in models.into_iter().rev() {
        service.install(model, info)?;
    }
    tracing::info!("ready");
    Ok(())
}

/// One model file on every device of the placement, warmed up.
fn load(
    source: &ModelFile,
    plan: &LoadPlan,
    max_batch_tokens: usize,
) -> Result<(Vec<AnyModel>, ModelInfo), ServiceError> {
    let started = Instant::now();
    warm_pages(&source.file, &source.name, plan.progress.as_ref());
    let step = plan.progress.step("building the engine");
    let opened = match &plan.placement {
        Placement::Replicas(n) => tessera_runtime::open_replicas(
            plan.backend,
            &source.file,
            source.tokenizer.clone(),
            &plan.backend_options,
            *n,
        ),
        Placement::Gpus(devices) => tessera_runtime::open_devices(
            plan.backend,
            devices,
            &source.file,
            source.tokenizer.clone(),
            &plan.backend_options,
        ),
    };
    let all: Vec<Loaded> = opened
        .map_err(|e| ServiceError::Load(format!("cannot load model {}: {e}", source.name)))?;
    let Some(first) = all.first() else {
        return Err(ServiceError::Load(format!(
            "cannot load model {}: no device took it",
            source.name
        )));
    };
    for loaded in &all {
        loaded
            .model
            .on_device()
            .set_prefix_cache_bytes(plan.prefix_cache_bytes);
    }
    drop(step);
    let tokens = plan
        .warm_up_tokens
        .unwrap_or(if first.on_gpu { max_batch_tokens } else { 0 });
    if tokens > 0 {
        let step = plan.progress.step("warm-up pass");
        let start = Instant::now();
        for loaded in &all {
            loaded.model.on_device().warm_up(tokens).map_err(|e| {
                ServiceError::Load(format!(
                    "the warm-up pass of {tokens} tokens failed: lower --max-batch-tokens \
                     (or --warm-up-tokens) to what the device holds: {e}"
                ))
            })?;
        }
        drop(step);
        tracing::info!(
            tokens,
            seconds = seconds(start.elapsed()),
            "warm-up pass done"
        );
    }
    let device = match (&plan.placement, all.len()) {
        (_, 1) => first.device.clone(),
        (Placement::Replicas(_), n) => {
            format!("{n} replicas of {}, the mapping shared", first.device)
        }
        (Placement::Gpus(_), _) => all
            .iter()
            .map(|l| l.device.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    };
    let info = ModelInfo {
        name: source.name.clone(),
        backend: first.model.on_device().backend_name(),
        device,
        placeholder: source.placeholder,
    };
    let kind: ModelKind = first.model.kind();
    tracing::info!(
        model = %info.name,
        kind = kind.name(),
        backend = %info.backend,
        device = %info.device,
        seconds = seconds(started.elapsed()),
        "model loaded"
    );
    Ok((all.into_iter().map(|l| l.model).collect(), info))
}

/// Seconds rounded to the millisecond, for log fields (`0.266`, not
/// `0.265521812`).
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e3).round() / 1e3
}

/// Reads every page of the mapped file once, so the load that follows (and the
/// first requests) do not stall on disk.
fn warm_pages(file: &Arc<GgufFile>, name: &str, progress: &dyn Progress) {
    const CHUNK: usize = 8 << 20;
    const PAGE: usize = 4096;
    let bytes = file.bytes();
    let mut advance = progress.reading(name, bytes.len() as u64);
    let mut checksum = 0u8;
    for chunk in bytes.chunks(CHUNK) {
        for offset in (0..chunk.len()).step_by(PAGE) {
            checksum ^= chunk[offset];
        }
        advance(chunk.len() as u64);
    }
    std::hint::black_box(checksum);
}
