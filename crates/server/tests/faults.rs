//! Faults inside the server: a panic on the compute thread answers the requests of
//! that batch with an error and the worker keeps serving; a request that cannot be
//! scored in time gets a 503 at its deadline instead of waiting forever.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tessera_engine::scheduler::DeviceModel;
use tessera_engine::{EngineError, PairScore, PrefixGroup};
use tessera_server::ServerOptions;

/// The real model, with a test-only hook that panics in the next `panics` batches
/// (after computing them, so the engine is exercised and then unwound through).
struct Faulty<S> {
    inner: S,
    panics: Arc<AtomicUsize>,
}

impl<S: DeviceModel<Output = PairScore>> DeviceModel for Faulty<S> {
    type Output = PairScore;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        let scores = self.inner.compute(groups)?;
        let armed = self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if armed {
            panic!("injected fault on the compute thread");
        }
        Ok(scores)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_compute_thread_fails_its_requests_and_the_worker_survives() {
    let body = json!({"query": QUERY, "documents": DOCS});
    let healthy = start(ServerOptions::default()).await;
    let (status, _, expected) = healthy.post("/v1/rerank", &body).await;
    assert_eq!(status, 200);

    let panics = Arc::new(AtomicUsize::new(0));
    let reranker = load_reranker();
    let prompt = reranker.prompt().clone();
    let faulty = Faulty {
        inner: reranker,
        panics: Arc::clone(&panics),
    };
    let server = start_with(ServerOptions::default(), Some((faulty, prompt))).await;

    for round in 0..3 {
        panics.store(1, Ordering::SeqCst);
        let (status, _, response) = server.post("/v1/rerank", &body).await;
        assert_eq!(status, 500, "round {round}: {response}");
        assert_cohere_error(&response, "panicked");
        let (status, _, response) = server
            .post("/rerank", &json!({"query": QUERY, "texts": DOCS}))
            .await;
        // The hook is spent: the TEI request is served.
        assert_eq!(status, 200, "{response}");

        panics.store(1, Ordering::SeqCst);
        let (status, _, response) = server
            .post("/rerank", &json!({"query": QUERY, "texts": DOCS}))
            .await;
        assert_eq!(status, 500);
        assert_tei_error(&response, "backend", "panicked");

        let (status, _, health) = server.get("/health").await;
        assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
        // The same scores as a server that never failed.
        let (status, _, after) = server.post("/v1/rerank", &body).await;
        assert_eq!(status, 200, "{after}");
        for ((i, a), (j, b)) in scores(&after).iter().zip(scores(&expected)) {
            assert_eq!(*i, j);
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "tessera_batch_failures_total"), Some(6.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_503_and_its_work_is_dropped() {
    let options = ServerOptions {
        service: tessera_server::ServiceOptions {
            request_timeout: Duration::from_millis(400),
            ..Default::default()
        },
        ..ServerOptions::default()
    };
    let (server, gate) = start_gated(options).await;
    let body = json!({"query": QUERY, "documents": DOCS});

    // The first batch hangs at the gate; a second request waits in the queue.
    let tei = json!({"query": "another query", "texts": DOCS});
    let started = Instant::now();
    let (first, second) = tokio::join!(
        server.post("/v1/rerank", &body),
        server.post("/rerank", &tei)
    );
    let waited = started.elapsed();
    assert_eq!(first.0, 503, "{}", first.2);
    assert_cohere_error(&first.2, "--request-timeout");
    assert!(first.1.contains_key("retry-after"));
    assert_eq!(second.0, 503, "{}", second.2);
    assert_tei_error(&second.2, "unhealthy", "--request-timeout");
    assert!(
        waited < Duration::from_secs(10),
        "answered at the deadline, not when the hang ended ({waited:?})"
    );

    // The hang ends: nothing of the abandoned requests is computed any more, and
    // new requests are served.
    gate.open();
    let (status, _, response) = server.post("/v1/rerank", &body).await;
    assert_eq!(status, 200, "{response}");
    let metrics = server.metrics().await;
    let dropped = metric(&metrics, "tessera_dropped_requests_total").expect("dropped counter");
    assert_eq!(dropped, 2.0, "{metrics}");
    assert_eq!(
        gate.entered.load(Ordering::SeqCst),
        2,
        "only the hung batch and the last request ran"
    );
}

/// A device error in a batch (injected into the emulated CUDA backend's kernel
/// launches) fails that batch's requests with 503 and `Retry-After`, and the
/// server keeps serving; a device that fails batch after batch makes `/health`
/// say so (503) until a batch succeeds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_fault_fails_its_batch_with_503_and_the_server_keeps_serving() {
    use std::sync::Arc;

    use tessera_backend_cuda::{KernelBackend, MatmulPath};
    use tessera_cuda_emulated::EmulatedDevice;
    use tessera_engine::Reranker;
    use tessera_gguf::GgufFile;

    let faults = Arc::new(AtomicUsize::new(0));
    let device = EmulatedDevice::new(MatmulPath::Mma).with_launch_faults(Arc::clone(&faults));
    let file =
        Arc::new(GgufFile::open(tessera_tests::fixture("tiny-q8.gguf")).expect("fixture opens"));
    let reranker = Reranker::load(KernelBackend::with_device(device), &file, None).expect("loads");
    let prompt = reranker.prompt().clone();
    let server = start_with(ServerOptions::default(), Some((reranker, prompt))).await;
    let request =
        |query: &str| json!({"query": query, "documents": ["reset the password", "office hours"]});

    faults.store(1, Ordering::SeqCst);
    let (status, headers, body) = server.post("/v1/rerank", &request("a")).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_cohere_error(&body, "the device failed");
    let (status, _, _) = server.get("/health").await;
    assert_eq!(status, 200, "one failed batch is not a failing device");
    let (status, _, body) = server.post("/v1/rerank", &request("b")).await;
    assert_eq!(status, 200, "served again after the fault: {body}");

    // A device that fails every batch.
    faults.store(usize::MAX, Ordering::SeqCst);
    for query in ["c", "d", "e"] {
        let (status, _, _) = server.post("/v1/rerank", &request(query)).await;
        assert_eq!(status, 503);
    }
    let (status, _, body) = server.get("/health").await;
    assert_eq!(status, 503);
    assert!(
        body["status"]
            .as_str()
            .unwrap()
            .starts_with("device failing"),
        "{body}"
    );
    // It recovers: the next batch succeeds and the server is healthy again.
    faults.store(0, Ordering::SeqCst);
    let (status, _, body) = server.post("/v1/rerank", &request("f")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = server.get("/health").await;
    assert_eq!(status, 200);
    // The failed batches left nothing behind: query "a", whose first batch
    // failed, scores exactly as on a backend that never failed.
    let (status, _, body) = server.post("/v1/rerank", &request("a")).await;
    assert_eq!(status, 200, "{body}");
    let clean = Reranker::load(
        KernelBackend::with_device(EmulatedDevice::new(MatmulPath::Mma)),
        &file,
        None,
    )
    .expect("loads");
    let want = clean
        .rerank(
            "a",
            &["reset the password", "office hours"],
            &Default::default(),
        )
        .expect("scores");
    let mut want: Vec<(u64, f32)> = want
        .documents
        .iter()
        .map(|d| (d.index as u64, d.relevance))
        .collect();
    want.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    // The JSON carries each f32 score in its shortest form: back to f32, exact.
    let got: Vec<(u64, f32)> = scores(&body).iter().map(|&(i, s)| (i, s as f32)).collect();
    assert_eq!(got, want);
    server.shutdown().await.expect("clean shutdown");
}
