//! [`Service`]: the calls every front end makes — rerank, embed, tokenize,
//! info, health — over the hosted models. A call is tokenised in the bounded
//! pool, queued for its model's compute threads and awaited within the
//! request deadline; dropping a call's future abandons its queued work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_engine::scheduler::{Scheduler, SchedulerConfig, SchedulerObserver, SchedulerStats};
use tessera_engine::{
    EmbedError, EmbedFormat, EmbedInput, EmbedOptions, Embedding, PreparedEmbeddings,
    PromptBuilder, RerankOptions, RerankOutput,
};
use tessera_model::ModelKind;

use crate::hosted::{Hosted, HostedModel, Model, ModelInfo, Models, Queue};
use crate::load::{self, LoadPlan, Loading};
use crate::pool::{PoolGauges, TokenizePool};
use crate::ServiceError;

/// Everything a service is started with; every field has a `tessera serve` flag.
#[derive(Clone)]
pub struct ServiceOptions {
    /// Which models the service hosts. With [`Self::load`], the models of the
    /// plan; otherwise the kinds the caller will [`Service::install`].
    pub hosts: Hosted,
    /// The model files to load, where, and how ([`Service::start`] loads them
    /// on a thread of its own).
    pub load: Option<LoadPlan>,
    pub scheduler: SchedulerConfig,
    /// Longest a call may wait for its results (queue and compute); past it
    /// the call fails with [`ServiceError::TimedOut`] and its remaining work is dropped.
    pub request_timeout: Duration,
    /// Calls tokenised at once, each on its own blocking thread; the others
    /// wait for a turn without a thread.
    pub tokenize_threads: usize,
    pub observers: Observers,
}

impl std::fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("hosts", &self.hosts)
            .field("loads", &self.load.as_ref().map(|plan| plan.hosts()))
            .field("scheduler", &self.scheduler)
            .field("request_timeout", &self.request_timeout)
            .field("tokenize_threads", &self.tokenize_threads)
            .finish_non_exhaustive()
    }
}

/// Who is told what the service does (metrics).
#[derive(Clone, Default)]
pub struct Observers {
    /// Every batch of the reranker.
    pub reranker: Option<Arc<dyn SchedulerObserver>>,
    /// Every batch of the embedding model.
    pub embedder: Option<Arc<dyn SchedulerObserver>>,
    /// The tokenising pool's busy and waiting gauges.
    pub tokenize_pool: PoolGauges,
    /// Each call's tokenising time, as soon as it is tokenised.
    pub tokenized: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
}

/// The default tokenising threads: one per core.
pub fn default_tokenize_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            hosts: Hosted::default(),
            load: None,
            scheduler: SchedulerConfig::default(),
            request_timeout: Duration::from_secs(300),
            tokenize_threads: default_tokenize_threads(),
            observers: Observers::default(),
        }
    }
}

/// A rerank call: a query, its documents, and the API's options.
#[derive(Clone, Debug)]
pub struct RerankJob {
    pub query: String,
    pub documents: Vec<String>,
    pub options: RerankOptions,
}

/// An embedding call's inputs: texts, or token ids the caller tokenised itself.
#[derive(Clone, Debug)]
pub enum EmbedInputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl EmbedInputs {
    pub fn len(&self) -> usize {
        match self {
            EmbedInputs::Texts(t) => t.len(),
            EmbedInputs::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An embedding call.
#[derive(Clone, Debug)]
pub struct EmbedJob {
    pub inputs: EmbedInputs,
    pub options: EmbedOptions,
    /// Scale each vector to unit length.
    pub normalize: bool,
}

/// Tokenises and cuts an embedding call's inputs with `format` (the engine's
/// front door), the vectors to be normalised as the job asks.
pub fn prepare_embeddings(
    format: &EmbedFormat,
    job: &EmbedJob,
) -> Result<PreparedEmbeddings, EmbedError> {
    let borrowed: Vec<EmbedInput<'_>> = match &job.inputs {
        EmbedInputs::Texts(texts) => texts.iter().map(|t| EmbedInput::Text(t)).collect(),
        EmbedInputs::Tokens(ids) => ids.iter().map(|t| EmbedInput::Tokens(t)).collect(),
    };
    let mut prepared = format.prepare(&borrowed, &job.options)?;
    prepared.normalize = job.normalize;
    Ok(prepared)
}

/// Where a call's time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub tokenize: Duration,
    /// From submission to the start of its first batch.
    pub queue: Duration,
    /// Sum of the durations of the batches it took part in.
    pub compute: Duration,
    pub batches: usize,
}

/// A rerank call's answer: scores shaped by the engine (best chunk per
/// document, billing), the documents cut to fit, and its timings.
#[derive(Clone, Debug)]
pub struct Reranked {
    pub output: RerankOutput,
    /// Pairs scored (chunks of every document).
    pub pairs: usize,
    pub truncated: Vec<usize>,
    pub timings: Timings,
}

/// An embedding call's answer: one vector per input, in input order.
#[derive(Clone, Debug)]
pub struct Embedded {
    pub vectors: Vec<Embedding>,
    /// Tokens of every input (with their end-of-text tokens).
    pub tokens: usize,
    /// Inputs cut to the model's context, ascending.
    pub truncated: Vec<usize>,
    pub timings: Timings,
}

/// One token of a tokenize call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    /// The text it covers in the input (or its decoding when offsets miss).
    pub text: String,
    /// A special (added) token.
    pub special: bool,
    /// Byte offsets in the input.
    pub start: usize,
    pub stop: usize,
}

/// Whether the service can take calls, as a health probe asks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Every hosted model is loaded and computing.
    Ready,
    /// Serving, with devices out of rotation or one model's devices all
    /// failing while the other model serves: what, in words.
    Degraded(String),
    /// A hosted model is still loading.
    Loading,
    /// No hosted model serves: each failed its last batches on every device.
    DeviceFailing(String),
    /// A hosted model's compute threads have stopped.
    ComputeStopped,
    /// Shutdown has begun: no new calls.
    ShuttingDown,
}

struct Inner {
    options: ServiceOptions,
    models: Models,
    pool: TokenizePool,
    shutting_down: AtomicBool,
}

/// The transport-free core: cheap to clone, shared by every front end.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    /// A service hosting what `options` names. With a [`LoadPlan`] the models
    /// load on a thread of their own, and calls fail with
    /// [`ServiceError::NotReady`] until they are in; the returned [`Loading`]
    /// says when they are (or why they could not be). Without one, the
    /// caller installs the hosted models ([`Self::install`]).
    pub fn start(options: ServiceOptions) -> (Service, Loading) {
        let mut options = options;
        if let Some(plan) = &options.load {
            options.hosts = plan.hosts();
        }
        let service = Service {
            inner: Arc::new(Inner {
                models: Models::new(options.hosts),
                pool: TokenizePool::new(
                    options.tokenize_threads,
                    options.observers.tokenize_pool.clone(),
                ),
                options,
                shutting_down: AtomicBool::new(false),
            }),
        };
        let loading = match service.inner.options.load.clone() {
            Some(plan) => load::spawn(service.clone(), plan),
            None => Loading::done(),
        };
        (service, loading)
    }

    pub fn options(&self) -> &ServiceOptions {
        &self.inner.options
    }

    pub fn hosts(&self) -> Hosted {
        self.inner.models.hosts
    }

    /// Moves `model` onto its compute threads (one per copy) behind one queue,
    /// whose tokens count against the same `max_queue_tokens` as the other
    /// kind's; calls of its kind are answered from now on. Each kind is
    /// installed once, and only a kind the service hosts.
    pub fn install(&self, model: Model, info: ModelInfo) -> Result<(), ServiceError> {
        let observers = &self.inner.options.observers;
        let observer = match model.kind() {
            ModelKind::Reranker => observers.reranker.clone(),
            ModelKind::Embedding => observers.embedder.clone(),
        };
        self.inner
            .models
            .install(model, info, self.inner.options.scheduler, observer)
    }

    /// The hosted model of `kind`: [`ServiceError::NotHosted`] when there is
    /// none, [`ServiceError::NotReady`] while it loads.
    pub fn model(&self, kind: ModelKind) -> Result<&HostedModel, ServiceError> {
        self.inner.models.get(kind)
    }

    /// The hosted model of `kind` if it is loaded.
    pub fn loaded(&self, kind: ModelKind) -> Option<&HostedModel> {
        self.inner.models.loaded(kind)
    }

    /// Both models' queue counters summed (the budget is shared), or the one's.
    pub fn stats(&self) -> Option<SchedulerStats> {
        let reranker = self.loaded(ModelKind::Reranker).map(HostedModel::stats);
        let embedder = self.loaded(ModelKind::Embedding).map(HostedModel::stats);
        match (reranker, embedder) {
            (Some(r), Some(e)) => Some(SchedulerStats {
                // The queued-token count is the shared budget: the same in both.
                queued_tokens: r.queued_tokens,
                queued_requests: r.queued_requests + e.queued_requests,
                completed_requests: r.completed_requests + e.completed_requests,
                dropped_requests: r.dropped_requests + e.dropped_requests,
                batches: r.batches + e.batches,
                tokens_per_second: r.tokens_per_second + e.tokens_per_second,
            }),
            (one, other) => one.or(other),
        }
    }

    /// The service is unhealthy only when no hosted model serves; one still
    /// serving while the other's devices fail, or a device out of rotation,
    /// is [`Health::Degraded`].
    pub fn health(&self) -> Health {
        if self.is_shutting_down() {
            return Health::ShuttingDown;
        }
        let models = &self.inner.models;
        let hosts = self.hosts();
        let failing_of = |kind| models.loaded(kind).and_then(HostedModel::device_failing);
        let reranker_failing = failing_of(ModelKind::Reranker);
        let embedder_failing =
            failing_of(ModelKind::Embedding).map(|failure| format!("embedding model: {failure}"));
        let none_serves = (!hosts.reranker || reranker_failing.is_some())
            && (!hosts.embedder || embedder_failing.is_some());
        let failing: Vec<String> = reranker_failing
            .into_iter()
            .chain(embedder_failing)
            .collect();
        if !failing.is_empty() && none_serves {
            return Health::DeviceFailing(failing.join("; "));
        }
        if models.is_ready() {
            // Devices out of rotation, each model's named by `whose`.
            let retired = |kind, whose: &'static str| {
                models
                    .loaded(kind)
                    .map(HostedModel::devices)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|d| d.retired)
                    .map(move |d| {
                        format!("{whose}device {} out of rotation: {}", d.index, d.failure)
                    })
            };
            let out: Vec<String> = failing
                .iter()
                .map(|f| format!("device failing, the other model serves: {f}"))
                .chain(retired(ModelKind::Reranker, ""))
                .chain(retired(ModelKind::Embedding, "embedding model's "))
                .collect();
            if out.is_empty() {
                Health::Ready
            } else {
                Health::Degraded(out.join("; "))
            }
        } else if models.compute_stopped() {
            Health::ComputeStopped
        } else {
            Health::Loading
        }
    }

    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops the compute threads after what they hold is answered. Blocking:
    /// call it off async workers.
    pub fn stop(&self) {
        self.inner.models.stop();
    }

    /// Ranks `job`'s documents against its query: tokenised in the pool,
    /// queued, awaited within the deadline.
    pub async fn rerank(&self, job: RerankJob) -> Result<Reranked, ServiceError> {
        let (_, scheduler) = self.reranker()?;
        let started = Instant::now();
        let worker = self.clone();
        let mut prepared = self
            .inner
            .pool
            .run(move || {
                let (prompt, _) = worker.reranker()?;
                tessera_engine::prepare(prompt, &job.query, &job.documents, &job.options)
                    .map_err(ServiceError::Rerank)
            })
            .await??;
        let tokenize = self.tokenized(started);
        let pending = scheduler.submit(std::mem::take(&mut prepared.score))?;
        // Dropping `pending` on time-out abandons whatever of the request is not computed.
        let output = self.within_deadline(pending.wait()).await??;
        Ok(Reranked {
            output: prepared.output(&output.items),
            pairs: output.items.len(),
            truncated: prepared.truncated,
            timings: Timings {
                tokenize,
                queue: output.queue_time,
                compute: output.compute_time,
                batches: output.batches,
            },
        })
    }

    /// Embeds `job`'s inputs: prepared in the pool, queued, awaited within
    /// the deadline; vectors cut to `dimensions` and normalised as asked.
    pub async fn embed(&self, job: EmbedJob) -> Result<Embedded, ServiceError> {
        let (_, scheduler) = self.embedder()?;
        let started = Instant::now();
        let worker = self.clone();
        let prepared = self
            .inner
            .pool
            .run(move || worker.prepare_embeddings(&job))
            .await??;
        let tokenize = self.tokenized(started);
        let pending = scheduler.submit(prepared.packed_request())?;
        let output = self.within_deadline(pending.wait()).await??;
        if output.items.len() != prepared.sequences.len() {
            return Err(ServiceError::Internal(format!(
                "the model returned {} vectors for {} inputs",
                output.items.len(),
                prepared.sequences.len()
            )));
        }
        let truncated = (0..prepared.truncated.len())
            .filter(|&i| prepared.truncated[i])
            .collect();
        Ok(Embedded {
            tokens: prepared.total_tokens(),
            vectors: prepared.finish(output.items),
            truncated,
            timings: Timings {
                tokenize,
                queue: output.queue_time,
                compute: output.compute_time,
                batches: output.batches,
            },
        })
    }

    fn prepare_embeddings(&self, job: &EmbedJob) -> Result<PreparedEmbeddings, ServiceError> {
        let (format, _) = self.embedder()?;
        prepare_embeddings(format, job).map_err(ServiceError::Embed)
    }

    /// The hosted reranker's prompt and queue.
    fn reranker(&self) -> Result<(&PromptBuilder, &Scheduler), ServiceError> {
        match &self.model(ModelKind::Reranker)?.queue {
            Queue::Scores { prompt, scheduler } => Ok((prompt, scheduler)),
            Queue::Vectors { .. } => Err(ServiceError::Internal(
                "the reranker slot holds another kind".into(),
            )),
        }
    }

    /// The hosted embedding model's format and queue.
    fn embedder(&self) -> Result<(&EmbedFormat, &Scheduler<Vec<f32>>), ServiceError> {
        match &self.model(ModelKind::Embedding)?.queue {
            Queue::Vectors { format, scheduler } => Ok((format, scheduler)),
            Queue::Scores { .. } => Err(ServiceError::Internal(
                "the embedding slot holds another kind".into(),
            )),
        }
    }

    /// Each input's tokens, with the text each covers — by the reranker's
    /// tokenizer when the service hosts one, else the embedding model's — in
    /// the same bounded pool as every other call.
    pub async fn tokenize(&self, inputs: Vec<String>) -> Result<Vec<Vec<Token>>, ServiceError> {
        let worker = self.clone();
        self.inner
            .pool
            .run(move || worker.tokenize_now(&inputs))
            .await?
    }

    fn tokenize_now(&self, inputs: &[String]) -> Result<Vec<Vec<Token>>, ServiceError> {
        let kind = if self.hosts().reranker {
            ModelKind::Reranker
        } else {
            ModelKind::Embedding
        };
        let tokenizer = self.model(kind)?.tokenizer().inner();
        let added = tokenizer.get_added_vocabulary();
        inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let encoding =
                    tokenizer
                        .encode(text.as_str(), false)
                        .map_err(|e| ServiceError::Tokenize {
                            index,
                            message: e.to_string(),
                        })?;
                Ok(encoding
                    .get_ids()
                    .iter()
                    .zip(encoding.get_offsets())
                    .map(|(&id, &(start, stop))| {
                        let piece = tokenizer.id_to_token(id).unwrap_or_default();
                        let text = text
                            .get(start..stop)
                            .map(str::to_string)
                            .or_else(|| tokenizer.decode(&[id], false).ok())
                            .unwrap_or_default();
                        Token {
                            id,
                            text,
                            special: added.is_special_token(&piece),
                            start,
                            stop,
                        }
                    })
                    .collect())
            })
            .collect()
    }

    /// The time since `started`, told to the observer.
    fn tokenized(&self, started: Instant) -> Duration {
        let elapsed = started.elapsed();
        if let Some(tokenized) = &self.inner.options.observers.tokenized {
            tokenized(elapsed);
        }
        elapsed
    }

    async fn within_deadline<F: std::future::Future>(
        &self,
        work: F,
    ) -> Result<F::Output, ServiceError> {
        let deadline = self.inner.options.request_timeout;
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| ServiceError::TimedOut(deadline))
    }
}
