//! What every handler shares: the options, the loaded models (a reranker, an
//! embedding model, or both; absent while they load), metrics, and whether
//! shutdown has begun.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use tessera_engine::scheduler::{
    Compute, EmbedModel, Embeds, GroupScorer, QueueBudget, Scheduler, SchedulerConfig,
    SchedulerObserver,
};
use tessera_engine::{EmbedFormat, PromptBuilder};

use crate::error::{ApiError, ErrorKind};
use crate::metrics::{EmbeddingObserver, Metrics};

/// Server limits and identity; every field has a command-line flag.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Accepted bearer keys; empty ⇒ no authentication.
    pub api_keys: Vec<String>,
    /// Names clients may send as `model` to the reranker; empty ⇒ any name
    /// is accepted.
    pub served_model_names: Vec<String>,
    /// The same for the embedding model (`/v1/embeddings`, `/embed`).
    pub embedding_served_model_names: Vec<String>,
    /// Which models this server hosts: the routes of a model it does not host
    /// answer 404 naming what it serves; those of one still loading, 503.
    pub hosts: Hosted,
    pub max_documents: usize,
    pub max_body_bytes: usize,
    pub scheduler: SchedulerConfig,
    /// Longest a rerank request may wait for its scores (queue and compute); past
    /// it the client gets a 503 and the request's remaining work is dropped.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers, counted from when
    /// the connection is ready for them (an idle keep-alive connection is closed
    /// after it too); past it the connection is closed without an answer.
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body once its headers are
    /// in; past it the answer is 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Open connections at most; at the limit new ones wait in the kernel's
    /// accept backlog until one closes.
    pub max_connections: usize,
    /// Requests tokenised at once, each on its own blocking thread (/tokenize
    /// included); others wait for a turn without a thread.
    pub tokenize_threads: usize,
}

/// The default tokenising threads: one per core.
pub fn default_tokenize_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_keys: Vec::new(),
            served_model_names: Vec::new(),
            embedding_served_model_names: Vec::new(),
            hosts: Hosted::default(),
            max_documents: 10_000,
            max_body_bytes: 32 << 20,
            scheduler: SchedulerConfig::default(),
            request_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            tokenize_threads: default_tokenize_threads(),
        }
    }
}

/// The models a server hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hosted {
    pub reranker: bool,
    pub embedder: bool,
}

impl Default for Hosted {
    /// A reranker only.
    fn default() -> Self {
        Hosted {
            reranker: true,
            embedder: false,
        }
    }
}

/// The loaded model as `/info` describes it.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// `general.name` of the GGUF, or its file stem.
    pub name: String,
    pub backend: String,
    pub device: String,
    /// The embedded tiny random model: its scores mean nothing.
    pub placeholder: bool,
}

pub struct LoadedModel {
    pub info: ModelInfo,
    pub prompt: PromptBuilder,
    pub scheduler: Scheduler,
}

/// The embedding model: how its inputs are tokenised, and its queue.
pub struct LoadedEmbedder {
    pub info: ModelInfo,
    pub format: EmbedFormat,
    pub scheduler: Scheduler<Vec<f32>>,
}

pub struct AppState {
    pub options: ServerOptions,
    pub metrics: Arc<Metrics>,
    /// Where requests are tokenised (`options.tokenize_threads` at once).
    pub tokenize: crate::tokenize_pool::TokenizePool,
    model: OnceLock<LoadedModel>,
    embedder: OnceLock<LoadedEmbedder>,
    /// Queued tokens of both models, bounded by `max_queue_tokens` together.
    budget: QueueBudget,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(options: ServerOptions) -> AppState {
        let metrics = Arc::new(Metrics::new());
        AppState {
            tokenize: crate::tokenize_pool::TokenizePool::new(
                options.tokenize_threads,
                metrics.tokenize_pool_gauges(),
            ),
            options,
            metrics,
            model: OnceLock::new(),
            embedder: OnceLock::new(),
            budget: QueueBudget::new(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Moves `scorer` onto its compute thread and starts answering requests. A model
    /// can be installed once.
    pub fn install_model<S>(
        &self,
        scorer: S,
        prompt: PromptBuilder,
        info: ModelInfo,
    ) -> std::io::Result<()>
    where
        S: GroupScorer + Send + 'static,
    {
        self.install_replicas(vec![scorer], prompt, info)
    }

    /// One compute thread per scorer (device or replica), all fed by one
    /// queue; the scorers must be the same model (they share `prompt`).
    pub fn install_replicas<S>(
        &self,
        scorers: Vec<S>,
        prompt: PromptBuilder,
        info: ModelInfo,
    ) -> std::io::Result<()>
    where
        S: GroupScorer + Send + 'static,
    {
        let observer = Arc::clone(&self.metrics) as Arc<dyn SchedulerObserver>;
        self.install_once(&self.model, "a model", scorers, observer, |scheduler| {
            LoadedModel {
                info,
                prompt,
                scheduler,
            }
        })
    }

    /// Moves the embedding model (one per device or replica) onto compute
    /// threads fed by its own queue, whose tokens count against the same
    /// `max_queue_tokens` as the reranker's. Installed once.
    pub fn install_embedder<M>(
        &self,
        models: Vec<M>,
        format: EmbedFormat,
        info: ModelInfo,
    ) -> std::io::Result<()>
    where
        M: EmbedModel + Send + 'static,
    {
        let observer: Arc<dyn SchedulerObserver> =
            Arc::new(EmbeddingObserver(Arc::clone(&self.metrics)));
        let scorers = models.into_iter().map(Embeds).collect();
        self.install_once(
            &self.embedder,
            "an embedding model",
            scorers,
            observer,
            |scheduler| LoadedEmbedder {
                info,
                format,
                scheduler,
            },
        )
    }

    /// Starts `scorers`' compute threads, counting in the shared queue
    /// budget, and keeps what `wrap` makes of their scheduler in `cell`: once
    /// (a second install, or one losing a race, is refused and its threads
    /// stopped).
    fn install_once<S, T>(
        &self,
        cell: &OnceLock<T>,
        what: &str,
        scorers: Vec<S>,
        observer: Arc<dyn SchedulerObserver>,
        wrap: impl FnOnce(Scheduler<S::Item>) -> T,
    ) -> std::io::Result<()>
    where
        S: Compute + Send + 'static,
    {
        let taken = || std::io::Error::other(format!("{what} is already installed"));
        if cell.get().is_some() {
            return Err(taken());
        }
        let scheduler = Scheduler::spawn_in(
            &self.budget,
            scorers,
            self.options.scheduler,
            Some(observer),
        )?;
        let handle = scheduler.clone();
        cell.set(wrap(scheduler)).map_err(|_| {
            handle.shutdown();
            taken()
        })
    }

    /// The reranker: 404 when this server hosts none, 503 while it loads.
    pub fn model(&self) -> Result<&LoadedModel, ApiError> {
        if !self.options.hosts.reranker {
            return Err(self.not_hosted("a reranker", "/v1/rerank"));
        }
        self.model.get().ok_or_else(ApiError::not_ready)
    }

    /// The embedding model: 404 when this server hosts none, 503 while it loads.
    pub fn embedder(&self) -> Result<&LoadedEmbedder, ApiError> {
        if !self.options.hosts.embedder {
            return Err(self.not_hosted("an embedding model", "/v1/embeddings"));
        }
        self.embedder.get().ok_or_else(ApiError::not_ready)
    }

    /// The reranker if this server hosts one and it is loaded.
    pub fn loaded_reranker(&self) -> Option<&LoadedModel> {
        self.model.get()
    }

    /// The embedding model if this server hosts one and it is loaded.
    pub fn loaded_embedder(&self) -> Option<&LoadedEmbedder> {
        self.embedder.get()
    }

    fn not_hosted(&self, what: &str, route: &str) -> ApiError {
        let mut serves = Vec::new();
        if self.options.hosts.reranker {
            let name = self
                .model
                .get()
                .map_or("(loading)", |m| m.info.name.as_str());
            serves.push(format!("reranker '{name}' (POST /v1/rerank)"));
        }
        if self.options.hosts.embedder {
            let name = self
                .embedder
                .get()
                .map_or("(loading)", |m| m.info.name.as_str());
            serves.push(format!("embedding model '{name}' (POST /v1/embeddings)"));
        }
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorKind::Validation,
            format!(
                "model: this server hosts no {} ({route}); it serves {}",
                what.trim_start_matches("a ").trim_start_matches("an "),
                serves.join(" and ")
            ),
        )
        .at("model")
    }

    /// Every hosted model is loaded and computing.
    pub fn is_ready(&self) -> bool {
        let hosts = self.options.hosts;
        let reranker =
            !hosts.reranker || self.model.get().is_some_and(|m| m.scheduler.is_running());
        let embedder = !hosts.embedder
            || self
                .embedder
                .get()
                .is_some_and(|m| m.scheduler.is_running());
        (hosts.reranker || hosts.embedder) && reranker && embedder
    }

    /// Whether a model was installed and its compute threads have since stopped.
    pub fn compute_stopped(&self) -> bool {
        self.model.get().is_some_and(|m| !m.scheduler.is_running())
            || self
                .embedder
                .get()
                .is_some_and(|m| !m.scheduler.is_running())
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops the compute threads after what they hold is answered. Blocking.
    pub fn stop_model(&self) {
        if let Some(model) = self.model.get() {
            model.scheduler.close();
        }
        if let Some(embedder) = self.embedder.get() {
            embedder.scheduler.shutdown();
        }
        if let Some(model) = self.model.get() {
            model.scheduler.shutdown();
        }
    }

    /// The name echoed in responses: the requested one when it is served, else the
    /// first served name, else the model's own.
    pub fn response_model_name(&self, requested: Option<&str>, own: &str) -> String {
        let served = &self.options.served_model_names;
        match requested {
            Some(name) if served.iter().any(|s| s == name) => name.to_string(),
            _ => served.first().cloned().unwrap_or_else(|| own.to_string()),
        }
    }

    /// With served names configured, a `model` naming none of them is a 404.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        self.options.check_model(requested)
    }

    /// [`Self::response_model_name`] for the embedding model.
    pub fn embedding_model_name(&self, requested: Option<&str>, own: &str) -> String {
        let served = &self.options.embedding_served_model_names;
        match requested {
            Some(name) if served.iter().any(|s| s == name) || served.is_empty() => name.to_string(),
            _ => served.first().cloned().unwrap_or_else(|| own.to_string()),
        }
    }
}

impl ServerOptions {
    /// With served names configured, a `model` naming none of them is a 404.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        check_served(&self.served_model_names, requested)
    }

    /// [`Self::check_model`] against the embedding model's served names.
    pub fn check_embedding_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        check_served(&self.embedding_served_model_names, requested)
    }
}

fn check_served(served: &[String], requested: Option<&str>) -> Result<(), ApiError> {
    match requested {
        Some(name) if !served.is_empty() && !served.iter().any(|s| s == name) => {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorKind::Validation,
                format!(
                    "model: '{name}' is not served here; available: {}",
                    served.join(", ")
                ),
            )
            .at("model"))
        }
        _ => Ok(()),
    }
}
