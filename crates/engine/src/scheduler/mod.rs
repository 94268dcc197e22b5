//! Dynamic batching on one compute thread per device (replica): one bounded
//! queue measured in tokens, batches filled up to a token budget from whatever
//! is queued by whichever device is idle, and results sent back through a
//! oneshot per request.
//!
//! Each compute thread owns its model (moved there and never shared), so async
//! callers only tokenize, [`Scheduler::submit`] and await. A request's documents
//! may be spread over several batches, on one device: the device that takes a
//! request keeps it until it is answered. Its scores are reassembled in document
//! order. A request whose [`Pending`] is dropped (its client went away) is
//! skipped before it is computed. A device that fails
//! [`DEVICE_FAILURES_UNHEALTHY`] batches in a row while another still serves is
//! taken out of rotation: the requests it holds go back to the queue.

mod compute;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tessera_backend::Backend;
use tokio::sync::oneshot;

pub use crate::pack::PackedRequest;
use crate::pack::DEFAULT_MAX_BATCH_TOKENS;
use crate::{Embedder, EngineError, PairScore, PrefixCacheStats, PrefixGroup, Reranker};

/// A model on one device, as a compute thread runs it: groups of sequences in
/// (each a shared prefix and the documents that follow it), one
/// [`Self::Output`] per document out, group by group — a pair's yes/no logits
/// for a reranker ([`Reranker`]), a pooled vector for an embedding model
/// ([`Embedder`]). Test doubles implement it too.
pub trait DeviceModel {
    type Output: Send + 'static;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<Self::Output>>, EngineError>;

    /// The prefix cache's counters, when the model has one.
    fn prefix_cache_stats(&self) -> Option<PrefixCacheStats> {
        None
    }
}

impl<T: DeviceModel + ?Sized> DeviceModel for Box<T> {
    type Output = T::Output;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<T::Output>>, EngineError> {
        (**self).compute(groups)
    }

    fn prefix_cache_stats(&self) -> Option<PrefixCacheStats> {
        (**self).prefix_cache_stats()
    }
}

impl<B: Backend> DeviceModel for Reranker<B> {
    type Output = PairScore;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        self.engine().score_groups(groups)
    }

    fn prefix_cache_stats(&self) -> Option<PrefixCacheStats> {
        Some(self.engine().prefix_cache_stats())
    }
}

impl<B: Backend> DeviceModel for Embedder<B> {
    type Output = Vec<f32>;

    /// Each vector pooled, not yet normalised (a shared prefix computed once).
    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<Vec<f32>>>, EngineError> {
        self.engine().embed_groups(groups)
    }

    fn prefix_cache_stats(&self) -> Option<PrefixCacheStats> {
        Some(self.engine().prefix_cache_stats())
    }
}

/// `compute` for a model that takes whole sequences: each `prefix ++
/// document` joined and passed to `each` in order, the results regrouped.
pub fn per_sequence<T>(
    groups: &[PrefixGroup<'_>],
    each: impl FnOnce(&[&[u32]]) -> Result<Vec<T>, EngineError>,
) -> Result<Vec<Vec<T>>, EngineError> {
    let joined: Vec<Vec<u32>> = groups
        .iter()
        .flat_map(|g| g.documents.iter().map(|d| [g.prefix, d].concat()))
        .collect();
    let sequences: Vec<&[u32]> = joined.iter().map(Vec::as_slice).collect();
    let mut results = each(&sequences)?.into_iter();
    Ok(groups
        .iter()
        .map(|g| results.by_ref().take(g.documents.len()).collect())
        .collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens per forward pass, counted as [`crate::pack`] counts them. A single
    /// document larger than this still runs, alone.
    pub max_batch_tokens: usize,
    /// Tokens waiting or in progress (full pair lengths) beyond which new requests are
    /// refused as overload.
    pub max_queue_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_queue_tokens: 4_194_304,
        }
    }
}

/// What the model computed for one request — each document's item (scores,
/// or vectors), in document order — and where its time went.
#[derive(Clone, Debug)]
pub struct Computed<T = PairScore> {
    pub items: Vec<T>,
    /// From submission to the start of its first batch.
    pub queue_time: Duration,
    /// Sum of the durations of the batches it took part in.
    pub compute_time: Duration,
    pub batches: usize,
}

/// Batches in a row the device must fail before the scheduler reports it as
/// failing ([`Scheduler::device_failing`]): one failure may be a passing fault
/// (an allocation that did not fit this once), three in a row is a device that
/// stopped.
pub const DEVICE_FAILURES_UNHEALTHY: usize = 3;

#[derive(Clone, Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("overloaded: {queued} tokens are queued and this request needs {requested}; the queue holds {capacity}")]
    Overloaded {
        requested: usize,
        queued: usize,
        capacity: usize,
        /// When the queue is expected to have drained enough.
        retry_after: Duration,
    },
    #[error("the request needs {tokens} tokens, more than the queue holds ({capacity})")]
    TooLarge { tokens: usize, capacity: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the model failed: {0}")]
    Compute(String),
    /// The device failed the batch (a backend `Device` error: a CUDA error, out
    /// of device memory): nothing in the request was wrong, a retry may succeed.
    #[error("the device failed: {0}")]
    Device(String),
    #[error("the compute thread has stopped")]
    ComputeThreadGone,
}

/// What one batch did, for metrics.
#[derive(Clone, Debug)]
pub struct BatchReport {
    /// The device (replica) that ran it, from 0.
    pub device: usize,
    pub groups: usize,
    pub documents: usize,
    /// Tokens of the batch as budgeted (prefix once per group plus documents).
    pub tokens: usize,
    pub elapsed: Duration,
    pub failed: bool,
    /// The scorer's prefix cache counters after the batch (cumulative).
    pub prefix_cache: Option<PrefixCacheStats>,
}

/// Callbacks from the compute thread (keep them cheap: they run between batches).
pub trait SchedulerObserver: Send + Sync {
    fn batch_done(&self, _report: &BatchReport) {}
    /// A request was abandoned by its caller; `documents_left` were never computed.
    fn request_dropped(&self, _documents_left: usize) {}
    /// Device `device` failed its last batches in a row and was taken out of
    /// rotation (another still serves); `failure` is the last error.
    fn device_retired(&self, _device: usize, _failure: &str) {}
}

struct NoObserver;
impl SchedulerObserver for NoObserver {}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SchedulerStats {
    /// Tokens queued or in progress.
    pub queued_tokens: usize,
    pub queued_requests: usize,
    pub completed_requests: u64,
    pub dropped_requests: u64,
    pub batches: u64,
    /// Smoothed throughput of recent batches.
    pub tokens_per_second: f64,
}

type Reply<T> = oneshot::Sender<Result<Computed<T>, SchedulerError>>;

/// A request in the queue or on the compute thread.
struct Job<T> {
    request: PackedRequest,
    /// Documents already scored.
    cursor: usize,
    items: Vec<T>,
    reply: Reply<T>,
    submitted: Instant,
    started: Option<Instant>,
    compute_time: Duration,
    batches: usize,
}

impl<T> Job<T> {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn tokens_left(&self) -> usize {
        let prefix = self.request.prefix.len();
        self.request.documents[self.cursor..]
            .iter()
            .map(|d| prefix + d.len())
            .sum()
    }
}

struct QueueState<T> {
    jobs: VecDeque<Job<T>>,
    closed: bool,
}

/// One device's counters and state.
#[derive(Default)]
struct DeviceSlot {
    /// Batches in a row the device failed (0 after any batch that did not), and
    /// the last such failure.
    failures: AtomicUsize,
    last_failure: Mutex<String>,
    /// Taken out of rotation: its thread has stopped taking work.
    retired: AtomicBool,
    batches: AtomicU64,
    busy_nanos: AtomicU64,
}

/// A device as [`Scheduler::devices`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceStatus {
    pub index: usize,
    /// Out of rotation after failing; `failure` says why.
    pub retired: bool,
    /// The last failure while it failed the batches in a row (empty otherwise).
    pub failure: String,
    pub batches: u64,
    /// Seconds spent computing batches.
    pub busy_seconds: f64,
}

struct Shared<T> {
    config: SchedulerConfig,
    state: Mutex<QueueState<T>>,
    wake: Condvar,
    /// Tokens queued or in progress: this scheduler's and those of every
    /// scheduler spawned in the same [`QueueBudget`].
    queued_tokens: Arc<AtomicUsize>,
    queued_requests: AtomicUsize,
    completed: AtomicU64,
    dropped: AtomicU64,
    batches: AtomicU64,
    /// f64 bits of the smoothed tokens/s.
    throughput: AtomicU64,
    devices: Vec<DeviceSlot>,
    observer: Arc<dyn SchedulerObserver>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        // A poisoned lock only means a panic elsewhere; the queue itself stays valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tokens_per_second(&self) -> f64 {
        f64::from_bits(self.throughput.load(Ordering::Relaxed))
    }

    /// Time to work off `tokens` at the recent rate (1 s when unknown), 1..=60 s.
    fn drain_time(&self, tokens: usize) -> Duration {
        let rate = self.tokens_per_second();
        let secs = if rate > 0.0 {
            (tokens as f64 / rate).ceil()
        } else {
            1.0
        };
        Duration::from_secs(secs.clamp(1.0, 60.0) as u64)
    }
}

/// The admission limit's count of queued tokens, shared by schedulers that
/// serve different models in one server: `max_queue_tokens` then bounds their
/// sum, so one model's backlog refuses work for the other too (they share the
/// memory the queue protects).
#[derive(Clone, Debug, Default)]
pub struct QueueBudget(Arc<AtomicUsize>);

impl QueueBudget {
    pub fn new() -> QueueBudget {
        QueueBudget::default()
    }
}

/// Handle to the queue and its compute threads; cheap to clone. `T` is what
/// the model computes per sequence: scores, or vectors ([`DeviceModel::Output`]).
pub struct Scheduler<T = PairScore> {
    shared: Arc<Shared<T>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl<T> Clone for Scheduler<T> {
    fn clone(&self) -> Self {
        Scheduler {
            shared: Arc::clone(&self.shared),
            threads: Arc::clone(&self.threads),
        }
    }
}

/// A submitted request's result. Dropping it abandons the request: work not yet
/// started is skipped.
pub struct Pending<T = PairScore> {
    reply: oneshot::Receiver<Result<Computed<T>, SchedulerError>>,
}

impl<T> Pending<T> {
    pub async fn wait(self) -> Result<Computed<T>, SchedulerError> {
        self.reply
            .await
            .unwrap_or(Err(SchedulerError::ComputeThreadGone))
    }

    /// For callers outside an async runtime.
    pub fn blocking_wait(self) -> Result<Computed<T>, SchedulerError> {
        self.reply
            .blocking_recv()
            .unwrap_or(Err(SchedulerError::ComputeThreadGone))
    }
}

impl<T: Send + 'static> Scheduler<T> {
    /// One compute thread per copy of the model (a device, or a replica on
    /// the CPU), each owning its copy until shutdown, all fed by one queue
    /// whose tokens count in `budget` — which other schedulers (other models)
    /// may share. Device `i` is `models[i]`; at least one.
    pub fn spawn<M>(
        models: Vec<M>,
        config: SchedulerConfig,
        budget: &QueueBudget,
        observer: Option<Arc<dyn SchedulerObserver>>,
    ) -> std::io::Result<Scheduler<T>>
    where
        M: DeviceModel<Output = T> + Send + 'static,
    {
        let scorers = models;
        if scorers.is_empty() {
            return Err(std::io::Error::other(
                "a scheduler needs at least one model",
            ));
        }
        let shared = Arc::new(Shared {
            config: SchedulerConfig {
                max_batch_tokens: config.max_batch_tokens.max(1),
                max_queue_tokens: config.max_queue_tokens.max(1),
            },
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            queued_tokens: Arc::clone(&budget.0),
            queued_requests: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            throughput: AtomicU64::new(0f64.to_bits()),
            devices: scorers.iter().map(|_| DeviceSlot::default()).collect(),
            observer: observer.unwrap_or_else(|| Arc::new(NoObserver)),
        });
        let several = scorers.len() > 1;
        let mut threads = Vec::with_capacity(scorers.len());
        for (device, scorer) in scorers.into_iter().enumerate() {
            let worker = Arc::clone(&shared);
            let name = if several {
                format!("tessera-compute-{device}")
            } else {
                "tessera-compute".into()
            };
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || compute::run(&worker, &scorer, device));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // Stop the threads already started before reporting.
                    shared.lock().closed = true;
                    shared.wake.notify_all();
                    return Err(e);
                }
            }
        }
        Ok(Scheduler {
            shared,
            threads: Arc::new(Mutex::new(threads)),
        })
    }

    pub fn config(&self) -> SchedulerConfig {
        self.shared.config
    }

    /// The budget this scheduler counts its queued tokens in, for another
    /// model's scheduler to share ([`Self::spawn`]).
    pub fn budget(&self) -> QueueBudget {
        QueueBudget(Arc::clone(&self.shared.queued_tokens))
    }

    /// Queues a request, or refuses it at once when the queue is full or closed.
    pub fn submit(&self, request: PackedRequest) -> Result<Pending<T>, SchedulerError> {
        let (reply, receiver) = oneshot::channel();
        let pending = Pending { reply: receiver };
        if request.documents.is_empty() {
            let _ = reply.send(Ok(Computed {
                items: Vec::new(),
                queue_time: Duration::ZERO,
                compute_time: Duration::ZERO,
                batches: 0,
            }));
            return Ok(pending);
        }
        let tokens = request.tokens();
        let capacity = self.shared.config.max_queue_tokens;
        let mut state = self.shared.lock();
        if state.closed {
            return Err(SchedulerError::ShuttingDown);
        }
        if tokens > capacity {
            return Err(SchedulerError::TooLarge { tokens, capacity });
        }
        // One atomic step: the count may be shared with another model's
        // scheduler, which does not take this queue's lock.
        let admitted =
            self.shared
                .queued_tokens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued + tokens <= capacity).then_some(queued + tokens)
                });
        if let Err(queued) = admitted {
            return Err(SchedulerError::Overloaded {
                requested: tokens,
                queued,
                capacity,
                retry_after: self.shared.drain_time(queued + tokens - capacity),
            });
        }
        self.shared.queued_requests.fetch_add(1, Ordering::AcqRel);
        state.jobs.push_back(Job {
            items: Vec::with_capacity(request.documents.len()),
            request,
            cursor: 0,
            reply,
            submitted: Instant::now(),
            started: None,
            compute_time: Duration::ZERO,
            batches: 0,
        });
        drop(state);
        self.shared.wake.notify_one();
        Ok(pending)
    }

    pub fn stats(&self) -> SchedulerStats {
        let s = &self.shared;
        SchedulerStats {
            queued_tokens: s.queued_tokens.load(Ordering::Acquire),
            queued_requests: s.queued_requests.load(Ordering::Acquire),
            completed_requests: s.completed.load(Ordering::Acquire),
            dropped_requests: s.dropped.load(Ordering::Acquire),
            batches: s.batches.load(Ordering::Acquire),
            tokens_per_second: s.tokens_per_second(),
        }
    }

    /// When no device serves any more — each failed its last
    /// [`DEVICE_FAILURES_UNHEALTHY`] batches in a row or was taken out of
    /// rotation — the last failure: the server then reports itself unhealthy.
    /// `None` while any device serves.
    pub fn device_failing(&self) -> Option<String> {
        let devices = self.devices();
        devices
            .iter()
            .all(|d| !d.failure.is_empty())
            .then(|| devices.last().map(|d| d.failure.clone()))
            .flatten()
    }

    /// Every device's state and counters, in device order.
    pub fn devices(&self) -> Vec<DeviceStatus> {
        self.shared
            .devices
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let retired = slot.retired.load(Ordering::Acquire);
                let failing = slot.failures.load(Ordering::Acquire) >= DEVICE_FAILURES_UNHEALTHY;
                let failure = if retired || failing {
                    slot.last_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                } else {
                    String::new()
                };
                DeviceStatus {
                    index,
                    retired,
                    failure,
                    batches: slot.batches.load(Ordering::Acquire),
                    busy_seconds: slot.busy_nanos.load(Ordering::Acquire) as f64 / 1e9,
                }
            })
            .collect()
    }

    /// Whether any compute thread still runs.
    pub fn is_running(&self) -> bool {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.iter().any(|t| !t.is_finished())
    }

    /// Refuses new requests from now on; queued ones are still computed.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }

    /// [`Self::close`], then waits until everything queued has been answered and the
    /// compute thread (and the model it owns) is gone. Blocks: call it off async workers.
    pub fn shutdown(&self) {
        self.close();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            // A panic there has already been reported to the waiting requests.
            let _ = thread.join();
        }
    }
}
