//! What the HTTP server adds to a request: a `/v1/rerank` call of 10 documents
//! to an in-process server whose model answers at once (a stub scorer), against
//! the same preparation and shaping called directly (the baseline). The
//! difference is the server's per-request overhead: HTTP, JSON, auth and
//! limits, the blocking-pool hop, the queue and the compute thread's hand-off.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tessera_engine::scheduler::DeviceModel;
use tessera_engine::{prepare, EngineError, PairScore, PrefixGroup, PromptBuilder, RerankOptions};
use tessera_gguf::GgufFile;
use tessera_model::RerankTokenizer;
use tessera_server::{Model, ModelInfo, Server, ServerOptions};

/// A model that scores instantly: every pair gets the same logits.
struct Instant;

impl DeviceModel for Instant {
    type Output = PairScore;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        Ok(groups
            .iter()
            .map(|g| {
                g.documents
                    .iter()
                    .map(|d| PairScore {
                        yes_logit: d.len() as f32,
                        no_logit: 0.0,
                    })
                    .collect()
            })
            .collect())
    }
}

const QUERY: &str = "how do I reset my password";

fn bench(c: &mut Criterion) {
    let file = Arc::new(
        GgufFile::open(tessera_tests::fixture("tiny-q8.gguf")).expect("the fixture opens"),
    );
    let tokenizer = Arc::new(RerankTokenizer::from_gguf(&file).expect("tokenizer"));
    let prompt = PromptBuilder::new(tokenizer, 8192).expect("prompt");
    let docs: Vec<String> = (0..10)
        .map(|i| format!("document {i}: open the login screen and choose forgot password"))
        .collect();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Server::new(ServerOptions::default());
    let info = ModelInfo {
        name: "stub".into(),
        backend: "instant".into(),
        device: "none".into(),
        placeholder: true,
    };
    server
        .service()
        .install(Model::scorers(vec![Instant], prompt.clone()), info)
        .expect("installs");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!(
        "http://{}/v1/rerank",
        listener.local_addr().expect("address")
    );
    let serving = server.clone();
    runtime.spawn(async move { serving.serve(listener, std::future::pending()).await });
    let client = reqwest::Client::new();
    let body = json!({"query": QUERY, "documents": docs});

    let mut group = c.benchmark_group("rerank_10_docs_instant_model");
    group.bench_function("direct", |b| {
        let options = RerankOptions::default();
        b.iter(|| {
            let prepared = prepare(&prompt, QUERY, &docs, &options).expect("prepares");
            let scores = Instant
                .compute(&[PrefixGroup {
                    prefix: &prepared.score.prefix,
                    documents: prepared.score.documents.iter().map(Vec::as_slice).collect(),
                }])
                .expect("scores");
            prepared.output(&scores[0]).top(None)
        })
    });
    group.bench_function("http", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = client.post(&url).json(&body).send().await.expect("sent");
                assert!(response.status().is_success());
                response.bytes().await.expect("body")
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
