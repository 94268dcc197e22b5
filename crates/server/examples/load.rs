//! Load generator: N concurrent HTTP clients against an in-process server with the
//! tiny fixture model (or `--url` of a running server), reporting requests/s,
//! documents/s and latency percentiles, and, as the baseline measured in the same
//! run, the same requests scored by calling the library directly on one thread.
//!
//! `cargo run --release -p tessera-server --example load -- [CLIENTS] [REQUESTS] [DOCS] [--url URL]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_backend_cpu::CpuBackend;
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_server::{Model, ModelInfo, Server, ServerOptions};

const QUERY: &str = "how do I reset my password";
const DOCS: [&str; 3] = [
    "To reset your password, click forgot password on the login screen.",
    "Our office hours are Monday to Friday, 9 to 18.",
    "Password requirements: 12+ characters, one number, one symbol.",
];

fn reranker() -> anyhow::Result<Reranker<CpuBackend>> {
    let file = GgufFile::open(tessera_tests::fixture("tiny-q8.gguf"))?;
    Ok(Reranker::load(CpuBackend::new(), &Arc::new(file), None)?)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .iter()
        .position(|a| a == "--url")
        .and_then(|i| args.get(i + 1).cloned());
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let clients = numbers.first().copied().unwrap_or(32);
    let requests = numbers.get(1).copied().unwrap_or(640).max(clients);
    let docs_per_request = numbers.get(2).copied().unwrap_or(3);
    let documents: Vec<&str> = DOCS
        .iter()
        .copied()
        .cycle()
        .take(docs_per_request)
        .collect();

    // Baseline: the library on this thread, one request after another.
    let direct = reranker()?;
    let options = RerankOptions::default();
    direct.rerank(QUERY, &documents, &options)?;
    let started = Instant::now();
    for _ in 0..requests {
        direct.rerank(QUERY, &documents, &options)?;
    }
    let direct_time = started.elapsed();
    drop(direct);

    let (base, server) = match url {
        Some(url) => (url, None),
        None => {
            let server = Server::new(ServerOptions::default());
            let model = reranker()?;
            let info = ModelInfo {
                name: "tiny-q8".into(),
                backend: "cpu".into(),
                device: "cpu".into(),
                placeholder: true,
            };
            server.service().install(Model::reranker(model), info)?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = {
                let server = server.clone();
                tokio::spawn(async move {
                    server
                        .serve(listener, async move {
                            let _ = stopped.await;
                        })
                        .await
                })
            };
            (base, Some((stop, serving)))
        }
    };
    let body = json!({"query": QUERY, "documents": documents});
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/v1/rerank"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, body, url) = (client.clone(), body.clone(), format!("{base}/v1/rerank"));
        let share = requests / clients + usize::from(c < requests % clients);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let t = Instant::now();
                client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let server_time = started.elapsed();
    latencies.sort();
    let n = latencies.len() as f64;
    println!(
        "clients={clients} requests={} docs/request={docs_per_request}",
        latencies.len()
    );
    println!(
        "server: {:.1} requests/s, {:.0} documents/s, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        n / server_time.as_secs_f64(),
        n * docs_per_request as f64 / server_time.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
    );
    println!(
        "direct library calls (same requests, one thread): {:.1} requests/s; server time / direct time = {:.3}",
        n / direct_time.as_secs_f64(),
        server_time.as_secs_f64() / direct_time.as_secs_f64(),
    );
    if let Some((stop, serving)) = server {
        let _ = stop.send(());
        serving.await??;
    }
    Ok(())
}
