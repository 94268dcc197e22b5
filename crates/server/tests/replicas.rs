//! Several replicas behind one queue: the same scores as one, work on every
//! replica under concurrent load (per-device metrics), and a replica whose
//! device fails leaves rotation while the other answers, with `/health`
//! saying so.

mod common;

use serde_json::{json, Value};
use tessera_backend::BackendError;
use tessera_engine::scheduler::DeviceModel;
use tessera_engine::{EngineError, PairScore, PrefixGroup};
use tessera_server::{Model, ModelInfo, Server, ServerOptions};

use common::{load_reranker, metric};

const QUERY: &str = "how do I reset my password";

fn info() -> ModelInfo {
    ModelInfo {
        name: "tiny-q8".into(),
        backend: "cpu-reference".into(),
        device: "cpu × 2 replicas".into(),
        placeholder: true,
    }
}

/// A replica whose device fails every batch.
struct BrokenDevice;

impl DeviceModel for BrokenDevice {
    type Output = PairScore;

    fn compute(&self, _: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        std::thread::sleep(std::time::Duration::from_millis(5));
        Err(EngineError::Backend(BackendError::Device(
            "injected: the device fell off the bus".into(),
        )))
    }
}

/// The server on a free port with these replicas; its base URL.
async fn serve(scorers: Vec<Box<dyn DeviceModel<Output = PairScore> + Send>>) -> String {
    let server = Server::new(ServerOptions::default());
    let prompt = load_reranker().prompt().clone();
    server
        .service()
        .install(Model::scorers(scorers, prompt), info())
        .expect("installs");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    base
}

fn documents(i: usize) -> Vec<String> {
    (0..4)
        .map(|d| format!("request {i}, document {d}: open the login screen and choose reset"))
        .collect()
}

async fn rerank(client: &reqwest::Client, base: &str, i: usize) -> (u16, Value) {
    let response = client
        .post(format!("{base}/v1/rerank"))
        .json(&json!({"query": QUERY, "documents": documents(i)}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_score_as_one_and_both_compute() {
    let base = serve(vec![Box::new(load_reranker()), Box::new(load_reranker())]).await;
    let client = reqwest::Client::new();
    let single = load_reranker();
    let calls = (0..24).map(|i| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { (i, rerank(&client, &base, i).await) })
    });
    for call in calls {
        let (i, (status, body)) = call.await.expect("task");
        assert_eq!(status, 200, "{body}");
        let docs = documents(i);
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        let want = single
            .rerank(QUERY, &refs, &Default::default())
            .expect("library rerank");
        for result in body["results"].as_array().expect("results") {
            let index = result["index"].as_u64().expect("index") as usize;
            let got = result["relevance_score"].as_f64().expect("score");
            let expected = f64::from(want.documents[index].relevance);
            assert!((got - expected).abs() <= 1e-6, "{got} vs {expected}");
        }
    }
    let metrics = metrics_text(&client, &base).await;
    for device in ["0", "1"] {
        let batches = metric(
            &metrics,
            &format!("tessera_device_batches_total{{device=\"{device}\"}}"),
        );
        assert!(
            batches.is_some_and(|b| b >= 1.0),
            "device {device} computed nothing:\n{metrics}"
        );
        // Each device has its own prefix cache: each computed the query's
        // prefix once, then served it from its cache.
        let series = |name: &str| metric(&metrics, &format!("{name}{{device=\"{device}\"}}"));
        assert!(
            series("tessera_device_prefix_cache_misses_total").is_some_and(|m| m >= 1.0),
            "{metrics}"
        );
        assert!(series("tessera_device_prefix_cache_bytes").is_some_and(|b| b > 0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_replica_leaves_rotation_and_health_says_degraded() {
    let base = serve(vec![Box::new(BrokenDevice), Box::new(load_reranker())]).await;
    let client = reqwest::Client::new();
    let mut unavailable = 0;
    let mut ok = 0;
    for i in 0..60 {
        let (status, body) = rerank(&client, &base, i).await;
        match status {
            200 => ok += 1,
            503 => {
                assert!(
                    body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("fell off")),
                    "{body}"
                );
                unavailable += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(
        unavailable, 3,
        "the broken replica failed 3 batches, then left"
    );
    assert_eq!(ok, 57);
    let health = client
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    let health: Value = health.json().await.expect("json");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["detail"]
            .as_str()
            .is_some_and(|d| d.contains("device 0") && d.contains("fell off")),
        "{health}"
    );
    let metrics = metrics_text(&client, &base).await;
    assert_eq!(
        metric(&metrics, "tessera_device_in_rotation{device=\"0\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "tessera_device_in_rotation{device=\"1\"}"),
        Some(1.0)
    );
}
