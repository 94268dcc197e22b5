//! The server under concurrency: batched answers equal solo answers, a client that
//! leaves has its queued work dropped, shutdown answers what is in flight, and the
//! metrics show it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tessera_server::ServerOptions;
use tessera_service::ModelKind;

fn request_for(i: usize) -> Value {
    let documents: Vec<String> = (0..1 + i % 5)
        .map(|d| format!("document {d} of request {i}: {}", DOCS[(i + d) % 3]))
        .collect();
    json!({"query": format!("{QUERY} ({i})"), "documents": documents})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_the_scores_they_get_alone() {
    let solo = start(ServerOptions::default()).await;
    let mut alone = Vec::new();
    for i in 0..32 {
        let (status, _, body) = solo.post("/v1/rerank", &request_for(i)).await;
        assert_eq!(status, 200);
        alone.push(scores(&body));
    }
    // The first batch is held until all 32 requests are queued, so that they are
    // batched together whatever the machine's speed.
    let (server, gate) = start_gated(ServerOptions::default()).await;
    let blocker = {
        let request = server
            .client
            .post(server.url("/v1/rerank"))
            .json(&request_for(99));
        tokio::spawn(async move { request.send().await })
    };
    gate.wait_entered(1).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let request = server
            .client
            .post(server.url("/v1/rerank"))
            .json(&request_for(i));
        tasks.push(tokio::spawn(async move {
            read(request.send().await.expect("sent")).await
        }));
    }
    let service = server.server.service().clone();
    let reranker = service.model(ModelKind::Reranker).expect("model");
    for _ in 0..1000 {
        if reranker.stats().queued_requests == 33 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(reranker.stats().queued_requests, 33, "all requests queued");
    gate.open();
    assert_eq!(
        blocker.await.expect("task").expect("answered").status(),
        200
    );
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, _, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        let together = scores(&body);
        assert_eq!(together.len(), alone[i].len());
        for (a, b) in together.iter().zip(&alone[i]) {
            assert_eq!(a.0, b.0, "request {i}: same order");
            assert!((a.1 - b.1).abs() <= 1e-6, "request {i}: {} vs {}", a.1, b.1);
        }
    }
    let text = server.metrics().await;
    let batches = metric(&text, "tessera_batch_documents_count").expect("batches");
    assert!(
        batches <= 4.0,
        "32 queued requests share batches; ran {batches}"
    );
    assert_eq!(metric(&text, "tessera_queue_tokens"), Some(0.0));
    assert_eq!(
        metric(
            &text,
            "tessera_requests_total{route=\"/v1/rerank\",status=\"200\"}"
        ),
        Some(33.0)
    );
    server.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_clients_queued_work_is_dropped() {
    let (server, gate) = start_gated(ServerOptions::default()).await;
    let first = {
        let request = server
            .client
            .post(server.url("/v1/rerank"))
            .json(&json!({"query": QUERY, "documents": DOCS}));
        tokio::spawn(async move { request.send().await })
    };
    gate.wait_entered(1).await;
    // Queued behind the held batch; the client gives up and closes the connection.
    let impatient = server
        .client
        .post(server.url("/v1/rerank"))
        .timeout(Duration::from_millis(300))
        .json(&json!({"query": "another query", "documents": DOCS}))
        .send()
        .await;
    assert!(impatient.is_err_and(|e| e.is_timeout()));
    // Give the server a moment to notice the closed connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.open();
    assert_eq!(first.await.expect("task").expect("answered").status(), 200);
    // The compute thread drops the departed request's job when it next looks at
    // its queue, just after answering the first: wait for that (bounded).
    let mut text = server.metrics().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metric(&text, "tessera_queue_requests") != Some(0.0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = server.metrics().await;
    }
    assert_eq!(
        metric(&text, "tessera_dropped_requests_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "tessera_dropped_documents_total"), Some(3.0));
    assert_eq!(
        metric(
            &text,
            "tessera_requests_total{route=\"/v1/rerank\",status=\"499\"}"
        ),
        Some(1.0),
        "the hang-up is counted as 499"
    );
    assert_eq!(
        metric(&text, "tessera_batch_documents_count"),
        Some(1.0),
        "only the first request ran"
    );
    assert_eq!(gate.entered.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_requests_in_flight() {
    let (mut server, gate) = start_gated(ServerOptions::default()).await;
    let in_flight: Vec<_> = (0..3)
        .map(|i| {
            let request = server
                .client
                .post(server.url("/v1/rerank"))
                .json(&request_for(i));
            tokio::spawn(async move { read(request.send().await.expect("sent")).await })
        })
        .collect();
    gate.wait_entered(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.server.state().is_shutting_down());
    // No new connections once shutdown began.
    let refused = reqwest::Client::new()
        .get(server.url("/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "the listener is closed");
    gate.open();
    for task in in_flight {
        let (status, _, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
    }
    server.finished().await.expect("serve returns cleanly");
    assert!(!server
        .server
        .service()
        .model(ModelKind::Reranker)
        .expect("model")
        .is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_routes_queue_batches_and_timings() {
    let server = start(ServerOptions::default()).await;
    server
        .post("/v1/rerank", &json!({"query": QUERY, "documents": DOCS}))
        .await;
    server.post("/v1/rerank", &json!({"query": ""})).await;
    let text = server.metrics().await;
    for series in [
        "tessera_requests_total{route=\"/v1/rerank\",status=\"200\"} 1",
        "tessera_requests_total{route=\"/v1/rerank\",status=\"400\"} 1",
        "tessera_queue_tokens 0",
        "tessera_batch_documents_count 1",
        "tessera_tokenize_seconds_count 1",
        "tessera_queue_seconds_count 1",
        "tessera_inference_seconds_count 1",
        "tessera_documents_scored_total 3",
        "tessera_dropped_requests_total 0",
    ] {
        assert!(text.contains(series), "missing {series:?} in\n{text}");
    }
    assert!(metric(&text, "tessera_tokens_per_second").is_some_and(|t| t > 0.0));
    assert!(metric(&text, "tessera_inference_tokens_total").is_some_and(|t| t > 0.0));
}

/// 512 requests at once: at most `tokenize_threads` of them are tokenised at a
/// time (the rest wait without a thread), every one is answered, and the gauges
/// say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_is_tokenised_by_a_bounded_pool() {
    let server = start(ServerOptions {
        service: tessera_server::ServiceOptions {
            tokenize_threads: 2,
            ..Default::default()
        },
        max_connections: 1024,
        ..ServerOptions::default()
    })
    .await;
    let tasks: Vec<_> = (0..512)
        .map(|i| {
            let request = server
                .client
                .post(server.url("/v1/rerank"))
                .json(&request_for(i));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("joined").expect("answered"), 200);
    }
    let text = server.metrics().await;
    let peak = metric(&text, "tessera_tokenize_threads_peak").expect("peak gauge");
    assert!(
        (1.0..=2.0).contains(&peak),
        "at most 2 tokenising threads, saw {peak}"
    );
    assert_eq!(metric(&text, "tessera_tokenize_threads"), Some(0.0));
    assert_eq!(metric(&text, "tessera_tokenize_waiting"), Some(0.0));
}
