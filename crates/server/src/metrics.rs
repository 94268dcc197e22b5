//! Prometheus metrics: requests by route and status, the scheduler's queue and
//! batches, throughput, and where request time goes (tokenize, queue, inference).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tessera_service::{BatchReport, PrefixCacheStats, SchedulerObserver, SchedulerStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// `reranker` or `embedding`.
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    queue_tokens: Gauge,
    queue_requests: Gauge,
    batch_documents: Histogram,
    batch_tokens: Histogram,
    batch_seconds: Histogram,
    batch_failures: Counter,
    inference_tokens: Counter,
    tokens_per_second: Gauge<f64, AtomicU64>,
    documents_scored: Counter,
    tokenize_seconds: Histogram,
    tokenize_pool: tessera_service::PoolGauges,
    queue_seconds: Histogram,
    inference_seconds: Histogram,
    dropped_requests: Counter,
    dropped_documents: Counter,
    connections: Gauge,
    header_timeouts: Counter,
    accept_errors: Counter,
    device_batches: Family<DeviceLabels, Counter>,
    device_busy_seconds: Family<DeviceLabels, Counter<f64, AtomicU64>>,
    device_tokens: Family<DeviceLabels, Counter>,
    device_in_rotation: Family<DeviceLabels, Gauge>,
    model_batches: Family<ModelLabels, Counter>,
    model_busy_seconds: Family<ModelLabels, Counter<f64, AtomicU64>>,
    model_tokens: Family<ModelLabels, Counter>,
    model_failures: Family<ModelLabels, Counter>,
    inputs_embedded: Counter,
    prefix: PrefixMetrics,
}

/// The compute thread's prefix cache, from the cumulative counters each batch
/// reports (counters advance by the difference to the last report).
#[derive(Default)]
struct PrefixMetrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    computed_tokens: Counter,
    reused_tokens: Counter,
    entries: Gauge,
    bytes: Gauge,
    capacity_bytes: Gauge,
    /// Per device: its cache's hits and misses, and what it holds.
    device_hits: Family<DeviceLabels, Counter>,
    device_misses: Family<DeviceLabels, Counter>,
    device_bytes: Family<DeviceLabels, Gauge>,
    /// Each device's last report (each device has its own cache).
    last: Mutex<Vec<PrefixCacheStats>>,
}

impl PrefixMetrics {
    fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "tessera_prefix_cache_hits",
                "Query prefixes served from the cache",
                &self.hits,
            ),
            (
                "tessera_prefix_cache_misses",
                "Query prefixes computed",
                &self.misses,
            ),
            (
                "tessera_prefix_cache_evictions",
                "Prefixes evicted to stay within --prefix-cache-bytes",
                &self.evictions,
            ),
            (
                "tessera_computed_tokens",
                "Token rows the model computed (prefixes once, documents)",
                &self.computed_tokens,
            ),
            (
                "tessera_prefix_reused_tokens",
                "Prefix tokens served from K/V computed earlier",
                &self.reused_tokens,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let gauges = [
            (
                "tessera_prefix_cache_entries",
                "Prefixes held in the cache",
                &self.entries,
            ),
            (
                "tessera_prefix_cache_bytes",
                "Bytes of K/V held by the prefix cache",
                &self.bytes,
            ),
            (
                "tessera_prefix_cache_capacity_bytes",
                "The prefix cache's byte bound",
                &self.capacity_bytes,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "tessera_device_prefix_cache_hits",
            "Query prefixes served from each device's cache",
            self.device_hits.clone(),
        );
        registry.register(
            "tessera_device_prefix_cache_misses",
            "Query prefixes each device computed",
            self.device_misses.clone(),
        );
        registry.register(
            "tessera_device_prefix_cache_bytes",
            "Bytes of K/V held by each device's prefix cache",
            self.device_bytes.clone(),
        );
    }

    fn update(&self, device: usize, now: &PrefixCacheStats) {
        let mut all = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() <= device {
            all.resize(device + 1, PrefixCacheStats::default());
        }
        let last = &mut all[device];
        let labels = DeviceLabels {
            device: device.to_string(),
        };
        self.device_hits
            .get_or_create(&labels)
            .inc_by(now.hits.saturating_sub(last.hits));
        self.device_misses
            .get_or_create(&labels)
            .inc_by(now.misses.saturating_sub(last.misses));
        self.device_bytes
            .get_or_create(&labels)
            .set(i64::try_from(now.bytes).unwrap_or(i64::MAX));
        self.hits.inc_by(now.hits.saturating_sub(last.hits));
        self.misses.inc_by(now.misses.saturating_sub(last.misses));
        self.evictions
            .inc_by(now.evictions.saturating_sub(last.evictions));
        self.computed_tokens
            .inc_by(now.computed_tokens.saturating_sub(last.computed_tokens));
        self.reused_tokens
            .inc_by(now.reused_tokens.saturating_sub(last.reused_tokens));
        *last = *now;
        // The gauges sum the devices' caches.
        let gauge = |f: fn(&PrefixCacheStats) -> usize| {
            i64::try_from(all.iter().map(f).sum::<usize>()).unwrap_or(i64::MAX)
        };
        self.entries.set(gauge(|s| s.entries));
        self.bytes.set(gauge(|s| s.bytes));
        self.capacity_bytes.set(gauge(|s| s.capacity_bytes));
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 0.5 ms .. ~65 s
    exponential_buckets(0.0005, 2.0, 18)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "tessera_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let queue_tokens = Gauge::default();
        registry.register(
            "tessera_queue_tokens",
            "Tokens queued or being computed",
            queue_tokens.clone(),
        );
        let queue_requests = Gauge::default();
        registry.register(
            "tessera_queue_requests",
            "Requests queued or being computed",
            queue_requests.clone(),
        );
        let batch_documents = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "tessera_batch_documents",
            "Pairs per forward pass",
            batch_documents.clone(),
        );
        let batch_tokens = Histogram::new(exponential_buckets(16.0, 2.0, 14));
        registry.register(
            "tessera_batch_tokens",
            "Tokens per forward pass",
            batch_tokens.clone(),
        );
        let batch_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "tessera_batch_seconds",
            "Duration of one forward pass",
            batch_seconds.clone(),
        );
        let batch_failures = Counter::default();
        registry.register(
            "tessera_batch_failures",
            "Forward passes that failed",
            batch_failures.clone(),
        );
        let inference_tokens = Counter::default();
        registry.register(
            "tessera_inference_tokens",
            "Tokens computed by the model",
            inference_tokens.clone(),
        );
        let tokens_per_second = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "tessera_tokens_per_second",
            "Recent model throughput in tokens per second (smoothed over batches)",
            tokens_per_second.clone(),
        );
        let documents_scored = Counter::default();
        registry.register(
            "tessera_documents_scored",
            "Documents scored (all routes)",
            documents_scored.clone(),
        );
        let tokenize_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "tessera_tokenize_seconds",
            "Time to tokenize one request",
            tokenize_seconds.clone(),
        );
        let tokenize_pool = tessera_service::PoolGauges::default();
        for (name, help, gauge) in [
            (
                "tessera_tokenize_threads",
                "Threads tokenising requests now (at most --tokenize-threads)",
                &tokenize_pool.busy,
            ),
            (
                "tessera_tokenize_threads_peak",
                "Most threads tokenising at once since the start",
                &tokenize_pool.busy_peak,
            ),
            (
                "tessera_tokenize_waiting",
                "Requests waiting for a tokenising thread (they hold none)",
                &tokenize_pool.waiting,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        let queue_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "tessera_queue_seconds",
            "Time a request waited before its first batch",
            queue_seconds.clone(),
        );
        let inference_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "tessera_inference_seconds",
            "Time of the batches a request took part in",
            inference_seconds.clone(),
        );
        let dropped_requests = Counter::default();
        registry.register(
            "tessera_dropped_requests",
            "Requests whose client left before they were computed; their work was skipped",
            dropped_requests.clone(),
        );
        let dropped_documents = Counter::default();
        registry.register(
            "tessera_dropped_documents",
            "Pairs never computed because their client left",
            dropped_documents.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "tessera_connections",
            "Open client connections (at most --max-connections)",
            connections.clone(),
        );
        let header_timeouts = Counter::default();
        registry.register(
            "tessera_header_timeouts",
            "Connections closed because a request's headers did not arrive within --header-timeout (idle keep-alive connections included)",
            header_timeouts.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "tessera_accept_errors",
            "Failed accepts of new connections (e.g. out of file descriptors)",
            accept_errors.clone(),
        );
        let device_batches = Family::<DeviceLabels, Counter>::default();
        registry.register(
            "tessera_device_batches",
            "Forward passes by device (replica)",
            device_batches.clone(),
        );
        let device_busy_seconds = Family::<DeviceLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "tessera_device_busy_seconds",
            "Seconds each device spent computing batches",
            device_busy_seconds.clone(),
        );
        let device_tokens = Family::<DeviceLabels, Counter>::default();
        registry.register(
            "tessera_device_tokens",
            "Tokens each device computed",
            device_tokens.clone(),
        );
        let device_in_rotation = Family::<DeviceLabels, Gauge>::default();
        registry.register(
            "tessera_device_in_rotation",
            "1 while a device takes work, 0 once it was taken out after failing",
            device_in_rotation.clone(),
        );
        let model_batches = Family::<ModelLabels, Counter>::default();
        registry.register(
            "tessera_model_batches",
            "Forward passes by model (reranker, embedding)",
            model_batches.clone(),
        );
        let model_busy_seconds = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "tessera_model_busy_seconds",
            "Seconds each model's devices spent computing batches",
            model_busy_seconds.clone(),
        );
        let model_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "tessera_model_tokens",
            "Tokens computed by each model (failed batches excluded)",
            model_tokens.clone(),
        );
        let model_failures = Family::<ModelLabels, Counter>::default();
        registry.register(
            "tessera_model_batch_failures",
            "Failed forward passes by model",
            model_failures.clone(),
        );
        let inputs_embedded = Counter::default();
        registry.register(
            "tessera_inputs_embedded",
            "Inputs answered with an embedding",
            inputs_embedded.clone(),
        );
        let prefix = PrefixMetrics::default();
        prefix.register(&mut registry);
        Metrics {
            registry,
            tokenize_pool,
            requests,
            queue_tokens,
            queue_requests,
            batch_documents,
            batch_tokens,
            batch_seconds,
            batch_failures,
            inference_tokens,
            tokens_per_second,
            documents_scored,
            tokenize_seconds,
            queue_seconds,
            inference_seconds,
            dropped_requests,
            dropped_documents,
            connections,
            header_timeouts,
            accept_errors,
            device_batches,
            device_busy_seconds,
            device_tokens,
            device_in_rotation,
            model_batches,
            model_busy_seconds,
            model_tokens,
            model_failures,
            inputs_embedded,
            prefix,
        }
    }

    /// A connection opened (`+1`) or closed (`-1`).
    pub fn connection_delta(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    pub fn record_header_timeout(&self) {
        self.header_timeouts.inc();
    }

    pub fn record_accept_error(&self) {
        self.accept_errors.inc();
    }

    pub fn record_request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The gauges the tokenising pool keeps up to date.
    pub fn tokenize_pool_gauges(&self) -> tessera_service::PoolGauges {
        self.tokenize_pool.clone()
    }

    pub fn record_tokenize(&self, elapsed: Duration) {
        self.tokenize_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn record_scored(&self, documents: usize, queue: Duration, inference: Duration) {
        self.documents_scored.inc_by(documents as u64);
        self.queue_seconds.observe(queue.as_secs_f64());
        self.inference_seconds.observe(inference.as_secs_f64());
    }

    pub fn record_embedded(&self, inputs: usize, queue: Duration, inference: Duration) {
        self.inputs_embedded.inc_by(inputs as u64);
        self.queue_seconds.observe(queue.as_secs_f64());
        self.inference_seconds.observe(inference.as_secs_f64());
    }

    /// What every batch records, whichever model ran it: the per-model
    /// counters, the batch histograms, failures and tokens computed.
    fn model_batch_done(&self, model: &str, report: &BatchReport) {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        self.model_batches.get_or_create(&labels).inc();
        self.model_busy_seconds
            .get_or_create(&labels)
            .inc_by(report.elapsed.as_secs_f64());
        self.batch_documents.observe(report.documents as f64);
        self.batch_tokens.observe(report.tokens as f64);
        self.batch_seconds.observe(report.elapsed.as_secs_f64());
        if report.failed {
            self.model_failures.get_or_create(&labels).inc();
            self.batch_failures.inc();
        } else {
            self.model_tokens
                .get_or_create(&labels)
                .inc_by(report.tokens as u64);
            self.inference_tokens.inc_by(report.tokens as u64);
        }
    }

    /// The exposition text; queue gauges are read from the scheduler now.
    pub fn render(&self, stats: Option<SchedulerStats>) -> String {
        if let Some(stats) = stats {
            self.queue_tokens
                .set(i64::try_from(stats.queued_tokens).unwrap_or(i64::MAX));
            self.queue_requests
                .set(i64::try_from(stats.queued_requests).unwrap_or(i64::MAX));
            self.tokens_per_second.set(stats.tokens_per_second);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The embedding model's scheduler observer: the per-model counters, the
/// batch histograms and failures (with `model="embedding"`); the per-device
/// and prefix-cache series describe the reranker's devices only.
pub struct EmbeddingObserver(pub std::sync::Arc<Metrics>);

impl SchedulerObserver for EmbeddingObserver {
    fn batch_done(&self, report: &BatchReport) {
        self.0.model_batch_done("embedding", report);
    }

    fn request_dropped(&self, documents_left: usize) {
        self.0.request_dropped(documents_left);
    }

    fn device_retired(&self, device: usize, failure: &str) {
        tracing::error!(
            device,
            failure,
            "embedding device {device} failed its last batches in a row: taken out of \
             rotation; the other devices serve its requests"
        );
    }
}

impl SchedulerObserver for Metrics {
    fn batch_done(&self, report: &BatchReport) {
        self.model_batch_done("reranker", report);
        let device = DeviceLabels {
            device: report.device.to_string(),
        };
        self.device_batches.get_or_create(&device).inc();
        self.device_busy_seconds
            .get_or_create(&device)
            .inc_by(report.elapsed.as_secs_f64());
        self.device_in_rotation.get_or_create(&device).set(1);
        if !report.failed {
            self.device_tokens
                .get_or_create(&device)
                .inc_by(report.tokens as u64);
        }
        if let Some(stats) = &report.prefix_cache {
            self.prefix.update(report.device, stats);
        }
    }

    fn request_dropped(&self, documents_left: usize) {
        self.dropped_requests.inc();
        self.dropped_documents.inc_by(documents_left as u64);
    }

    fn device_retired(&self, device: usize, failure: &str) {
        tracing::error!(
            device,
            failure,
            "device {device} failed its last batches in a row: taken out of rotation; \
             the other devices serve its requests"
        );
        self.device_in_rotation
            .get_or_create(&DeviceLabels {
                device: device.to_string(),
            })
            .set(0);
    }
}
