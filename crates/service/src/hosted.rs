//! A model the service hosts: one kind, one queue, one compute thread per
//! device (or replica), and what callers may know about it. The one place that
//! says which kind of model a call needs ([`Models::get`]).

use std::sync::{Arc, OnceLock};

use tessera_engine::scheduler::{
    DeviceModel, DeviceStatus, QueueBudget, Scheduler, SchedulerConfig, SchedulerObserver,
    SchedulerStats,
};
use tessera_engine::{EmbedFormat, PairScore, PromptBuilder};
use tessera_model::ModelKind;
use tessera_runtime::{AnyEmbedder, AnyReranker};

use crate::ServiceError;

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

/// A model handed to [`crate::Service::install`]: its copies (one per device
/// or replica, the same model on each), each what a compute thread runs, and
/// what its requests are prepared with.
pub enum Model {
    /// Scores (query, document) pairs; requests are prepared with `prompt`.
    Reranker {
        copies: Vec<Box<dyn DeviceModel<Output = PairScore> + Send>>,
        prompt: PromptBuilder,
    },
    /// Pools sequences into vectors; its inputs are tokenised with `format`.
    Embedder {
        copies: Vec<Box<dyn DeviceModel<Output = Vec<f32>> + Send>>,
        format: EmbedFormat,
    },
}

impl Model {
    pub fn kind(&self) -> ModelKind {
        match self {
            Model::Reranker { .. } => ModelKind::Reranker,
            Model::Embedder { .. } => ModelKind::Embedding,
        }
    }

    /// One copy of a loaded reranker, with its own prompt.
    pub fn reranker<M: AnyReranker + 'static>(model: M) -> Model {
        let prompt = model.prompt().clone();
        Model::scorers(vec![model], prompt)
    }

    /// One copy of a loaded embedding model, with its own format.
    pub fn embedder<M: AnyEmbedder + 'static>(model: M) -> Model {
        Model::Embedder {
            format: model.format().clone(),
            copies: vec![Box::new(model)],
        }
    }

    /// Copies of a scorer (one per device or replica: loaded rerankers, or
    /// test doubles) sharing one prompt.
    pub fn scorers<S>(scorers: Vec<S>, prompt: PromptBuilder) -> Model
    where
        S: DeviceModel<Output = PairScore> + Send + 'static,
    {
        Model::Reranker {
            copies: scorers
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn DeviceModel<Output = PairScore> + Send>)
                .collect(),
            prompt,
        }
    }
}

/// What a hosted model's requests are prepared with, and its queue.
pub(crate) enum Queue {
    Scores {
        prompt: PromptBuilder,
        scheduler: Scheduler,
    },
    Vectors {
        format: EmbedFormat,
        scheduler: Scheduler<Vec<f32>>,
    },
}

/// A model the service hosts, loaded and computing.
pub struct HostedModel {
    pub info: ModelInfo,
    pub(crate) queue: Queue,
}

impl HostedModel {
    pub fn kind(&self) -> ModelKind {
        match self.queue {
            Queue::Scores { .. } => ModelKind::Reranker,
            Queue::Vectors { .. } => ModelKind::Embedding,
        }
    }

    /// The longest sequence the model takes: a whole (query, document) pair for
    /// a reranker, an input with its end-of-text token for an embedding model.
    pub fn max_input_tokens(&self) -> usize {
        match &self.queue {
            Queue::Scores { prompt, .. } => prompt.max_pair_tokens(),
            Queue::Vectors { format, .. } => format.max_tokens(),
        }
    }

    /// An embedding model's vector width (`None` for a reranker).
    pub fn dimensions(&self) -> Option<usize> {
        match &self.queue {
            Queue::Scores { .. } => None,
            Queue::Vectors { format, .. } => Some(format.width()),
        }
    }

    pub fn stats(&self) -> SchedulerStats {
        match &self.queue {
            Queue::Scores { scheduler, .. } => scheduler.stats(),
            Queue::Vectors { scheduler, .. } => scheduler.stats(),
        }
    }

    /// Every device's state and counters, in device order.
    pub fn devices(&self) -> Vec<DeviceStatus> {
        match &self.queue {
            Queue::Scores { scheduler, .. } => scheduler.devices(),
            Queue::Vectors { scheduler, .. } => scheduler.devices(),
        }
    }

    /// When no device serves any more, the last failure.
    pub fn device_failing(&self) -> Option<String> {
        match &self.queue {
            Queue::Scores { scheduler, .. } => scheduler.device_failing(),
            Queue::Vectors { scheduler, .. } => scheduler.device_failing(),
        }
    }

    /// Whether any of its compute threads still runs.
    pub fn is_running(&self) -> bool {
        match &self.queue {
            Queue::Scores { scheduler, .. } => scheduler.is_running(),
            Queue::Vectors { scheduler, .. } => scheduler.is_running(),
        }
    }

    fn close(&self) {
        match &self.queue {
            Queue::Scores { scheduler, .. } => scheduler.close(),
            Queue::Vectors { scheduler, .. } => scheduler.close(),
        }
    }

    fn shutdown(&self) {
        match &self.queue {
            Queue::Scores { scheduler, .. } => scheduler.shutdown(),
            Queue::Vectors { scheduler, .. } => scheduler.shutdown(),
        }
    }

    /// The tokenizer requests to this model are tokenised with.
    pub(crate) fn tokenizer(&self) -> &tessera_model::RerankTokenizer {
        match &self.queue {
            Queue::Scores { prompt, .. } => prompt.tokenizer(),
            Queue::Vectors { format, .. } => format.tokenizer(),
        }
    }
}

/// Which kinds the service hosts: the calls of a kind it does not host fail
/// with [`ServiceError::NotHosted`]; those of one still loading, with
/// [`ServiceError::NotReady`].
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

impl Hosted {
    pub fn hosts(&self, kind: ModelKind) -> bool {
        match kind {
            ModelKind::Reranker => self.reranker,
            ModelKind::Embedding => self.embedder,
        }
    }
}

/// The hosted models by kind, each installed once, their queued tokens
/// counted in one budget.
pub(crate) struct Models {
    pub hosts: Hosted,
    reranker: OnceLock<HostedModel>,
    embedder: OnceLock<HostedModel>,
    /// Queued tokens of both models, bounded by `max_queue_tokens` together.
    budget: QueueBudget,
}

impl Models {
    pub fn new(hosts: Hosted) -> Models {
        Models {
            hosts,
            reranker: OnceLock::new(),
            embedder: OnceLock::new(),
            budget: QueueBudget::new(),
        }
    }

    fn cell(&self, kind: ModelKind) -> &OnceLock<HostedModel> {
        match kind {
            ModelKind::Reranker => &self.reranker,
            ModelKind::Embedding => &self.embedder,
        }
    }

    /// The model of `kind`: [`ServiceError::NotHosted`] when this service
    /// hosts none, [`ServiceError::NotReady`] while it loads.
    pub fn get(&self, kind: ModelKind) -> Result<&HostedModel, ServiceError> {
        if !self.hosts.hosts(kind) {
            let hosted = [ModelKind::Reranker, ModelKind::Embedding]
                .into_iter()
                .filter(|&k| self.hosts.hosts(k))
                .map(|k| (k, self.loaded(k).map(|m| m.info.name.clone())))
                .collect();
            return Err(ServiceError::NotHosted {
                wanted: kind,
                hosted,
            });
        }
        self.loaded(kind).ok_or(ServiceError::NotReady)
    }

    /// The model of `kind` if it is hosted and loaded.
    pub fn loaded(&self, kind: ModelKind) -> Option<&HostedModel> {
        self.cell(kind).get()
    }

    fn all(&self) -> impl Iterator<Item = &HostedModel> {
        self.reranker.get().into_iter().chain(self.embedder.get())
    }

    /// Starts `model`'s compute threads behind one queue and keeps it: once
    /// per kind (a second install, or one losing a race, is refused and its
    /// threads stopped), and only a kind the service was started to host.
    pub fn install(
        &self,
        model: Model,
        info: ModelInfo,
        config: SchedulerConfig,
        observer: Option<Arc<dyn SchedulerObserver>>,
    ) -> Result<(), ServiceError> {
        let kind = model.kind();
        let what = crate::error::kind_name(kind);
        if !self.hosts.hosts(kind) {
            return Err(ServiceError::Internal(format!(
                "this service was not started to host an {what}"
            )));
        }
        let cell = self.cell(kind);
        let taken = || ServiceError::Internal(format!("the {what} is already installed"));
        if cell.get().is_some() {
            return Err(taken());
        }
        let queue = match model {
            Model::Reranker { copies, prompt } => Queue::Scores {
                prompt,
                scheduler: self.spawn(copies, config, observer)?,
            },
            Model::Embedder { copies, format } => Queue::Vectors {
                format,
                scheduler: self.spawn(copies, config, observer)?,
            },
        };
        cell.set(HostedModel { info, queue }).map_err(|lost| {
            lost.shutdown();
            taken()
        })
    }

    fn spawn<M>(
        &self,
        copies: Vec<M>,
        config: SchedulerConfig,
        observer: Option<Arc<dyn SchedulerObserver>>,
    ) -> Result<Scheduler<M::Output>, ServiceError>
    where
        M: DeviceModel + Send + 'static,
    {
        Scheduler::spawn(copies, config, &self.budget, observer)
            .map_err(|e| ServiceError::Internal(format!("cannot start a compute thread: {e}")))
    }

    /// Every hosted model is loaded and computing.
    pub fn is_ready(&self) -> bool {
        let ready =
            |kind| !self.hosts.hosts(kind) || self.loaded(kind).is_some_and(|m| m.is_running());
        (self.hosts.reranker || self.hosts.embedder)
            && ready(ModelKind::Reranker)
            && ready(ModelKind::Embedding)
    }

    /// Whether a model was installed and its compute threads have since stopped.
    pub fn compute_stopped(&self) -> bool {
        self.all().any(|m| !m.is_running())
    }

    /// Stops the compute threads after what they hold is answered. Blocking.
    pub fn stop(&self) {
        for model in self.all() {
            model.close();
        }
        for model in self.all() {
            model.shutdown();
        }
    }
}
