//! What every handler shares: the options, the loaded model (absent while it
//! loads), metrics, and whether shutdown has begun.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tessera_engine::scheduler::{GroupScorer, Scheduler, SchedulerConfig};
use tessera_engine::PromptBuilder;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Server limits and identity; every field has a command-line flag.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Accepted bearer keys; empty ⇒ no authentication.
    pub api_keys: Vec<String>,
    /// Names clients may send as `model`; empty ⇒ any name is accepted.
    pub served_model_names: Vec<String>,
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
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_keys: Vec::new(),
            served_model_names: Vec::new(),
            max_documents: 10_000,
            max_body_bytes: 32 << 20,
            scheduler: SchedulerConfig::default(),
            request_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
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

pub struct AppState {
    pub options: ServerOptions,
    pub metrics: Arc<Metrics>,
    model: OnceLock<LoadedModel>,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(options: ServerOptions) -> AppState {
        AppState {
            options,
            metrics: Arc::new(Metrics::new()),
            model: OnceLock::new(),
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
        if self.model.get().is_some() {
            return Err(std::io::Error::other("a model is already installed"));
        }
        let observer =
            Arc::clone(&self.metrics) as Arc<dyn tessera_engine::scheduler::SchedulerObserver>;
        let scheduler = Scheduler::spawn_replicas(scorers, self.options.scheduler, Some(observer))?;
        let loaded = LoadedModel {
            info,
            prompt,
            scheduler,
        };
        if let Err(lost) = self.model.set(loaded) {
            lost.scheduler.shutdown();
            return Err(std::io::Error::other("a model is already installed"));
        }
        Ok(())
    }

    pub fn model(&self) -> Result<&LoadedModel, ApiError> {
        self.model.get().ok_or_else(ApiError::not_ready)
    }

    pub fn is_ready(&self) -> bool {
        self.model.get().is_some_and(|m| m.scheduler.is_running())
    }

    /// Whether a model was installed and its compute thread has since stopped.
    pub fn compute_stopped(&self) -> bool {
        self.model.get().is_some_and(|m| !m.scheduler.is_running())
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops the compute thread after what it holds is answered. Blocking.
    pub fn stop_model(&self) {
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
}

impl ServerOptions {
    /// With served names configured, a `model` naming none of them is a 404.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        let served = &self.served_model_names;
        match requested {
            Some(name) if !served.is_empty() && !served.iter().any(|s| s == name) => {
                Err(ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    crate::error::ErrorKind::Validation,
                    format!(
                        "model: '{name}' is not served here; available: {}",
                        served.join(", ")
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}
