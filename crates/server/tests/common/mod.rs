//! Starting the real server in-process on 127.0.0.1 with an ephemeral port, over the
//! tiny fixture model; a scorer that can be held at a gate to make queueing and
//! shutdown observable.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;
use tessera_backend_cpu::CpuBackend;
use tessera_engine::scheduler::DeviceModel;
use tessera_engine::{Embedder, EngineError, PairScore, PrefixGroup, Reranker};
use tessera_gguf::GgufFile;
use tessera_model::{PromptBuilder, RerankTokenizer};
use tessera_server::{Hosted, Model, ModelInfo, Server, ServerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const QUERY: &str = "how do I reset my password";
pub const DOCS: [&str; 3] = [
    "To reset your password, click forgot password on the login screen.",
    "Our office hours are Monday to Friday, 9 to 18.",
    "Password requirements: 12+ characters, one number, one symbol.",
];

pub fn load_reranker() -> Reranker<CpuBackend> {
    let file = GgufFile::open(tessera_tests::fixture("tiny-q8.gguf")).expect("fixture opens");
    Reranker::load(CpuBackend::new(), &Arc::new(file), None).expect("fixture loads")
}

/// The tiny Qwen3 embedding fixture on the CPU reference backend.
pub fn load_embedder() -> Embedder<CpuBackend> {
    let file = GgufFile::open(tessera_tests::fixture("tiny-embed-q8.gguf")).expect("fixture opens");
    Embedder::load(CpuBackend::new(), &Arc::new(file), None).expect("fixture loads")
}

/// A prompt builder over the fixture's tokenizer with a small pair limit, so that
/// truncation and chunking need only short documents.
pub fn small_prompt(max_pair_tokens: usize) -> PromptBuilder {
    let file = GgufFile::open(tessera_tests::fixture("tiny-q8.gguf")).expect("fixture opens");
    let tokenizer = RerankTokenizer::from_gguf(&file).expect("tokenizer");
    PromptBuilder::new(Arc::new(tokenizer), max_pair_tokens).expect("prompt builder")
}

/// Holds every batch until opened; counts batches that started.
#[derive(Clone, Default)]
pub struct Gate {
    state: Arc<(Mutex<bool>, Condvar)>,
    pub entered: Arc<AtomicUsize>,
}

impl Gate {
    pub fn closed() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        let (open, wake) = &*self.state;
        *open.lock().expect("gate") = true;
        wake.notify_all();
    }

    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let (open, wake) = &*self.state;
        let mut is_open = open.lock().expect("gate");
        while !*is_open {
            is_open = wake.wait(is_open).expect("gate");
        }
    }

    pub async fn wait_entered(&self, n: usize) {
        for _ in 0..1000 {
            if self.entered.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{n} batches never started");
    }
}

pub struct Gated<S> {
    pub inner: S,
    pub gate: Gate,
}

impl<S: DeviceModel<Output = PairScore>> DeviceModel for Gated<S> {
    type Output = PairScore;

    fn compute(&self, groups: &[PrefixGroup<'_>]) -> Result<Vec<Vec<PairScore>>, EngineError> {
        self.gate.pass();
        self.inner.compute(groups)
    }
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub server: Server,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn info() -> ModelInfo {
    ModelInfo {
        name: "tiny-q8".into(),
        backend: "cpu-reference".into(),
        device: "cpu".into(),
        placeholder: true,
    }
}

/// The server with the tiny model and its default prompt.
pub async fn start(options: ServerOptions) -> TestServer {
    let reranker = load_reranker();
    let prompt = reranker.prompt().clone();
    start_with(options, Some((reranker, prompt))).await
}

/// The server with the tiny model behind a closed [`Gate`]: every batch waits
/// until the test opens it.
pub async fn start_gated(options: ServerOptions) -> (TestServer, Gate) {
    let gate = Gate::closed();
    let reranker = load_reranker();
    let prompt = reranker.prompt().clone();
    let gated = Gated {
        inner: reranker,
        gate: gate.clone(),
    };
    (start_with(options, Some((gated, prompt))).await, gate)
}

/// The server with any scorer and prompt, or none yet (`/health` is 503).
pub async fn start_with<S: DeviceModel<Output = PairScore> + Send + 'static>(
    options: ServerOptions,
    model: Option<(S, PromptBuilder)>,
) -> TestServer {
    let server = Server::new(options);
    if let Some((scorer, prompt)) = model {
        server
            .service()
            .install(Model::scorers(vec![scorer], prompt), info())
            .expect("model installs");
    }
    serve_server(server).await
}

/// A server hosting the tiny reranker, the tiny embedding model, or both
/// (`options.hosts` is set to match).
pub async fn start_models(
    mut options: ServerOptions,
    reranker: Option<Reranker<CpuBackend>>,
    embedder: Option<Embedder<CpuBackend>>,
) -> TestServer {
    options.service.hosts = Hosted {
        reranker: reranker.is_some(),
        embedder: embedder.is_some(),
    };
    let server = Server::new(options);
    if let Some(reranker) = reranker {
        server
            .service()
            .install(Model::reranker(reranker), info())
            .expect("reranker installs");
    }
    if let Some(embedder) = embedder {
        let format = embedder.format().clone();
        let info = ModelInfo {
            name: "tiny-embed-q8".into(),
            ..info()
        };
        let copies = vec![Box::new(embedder) as Box<dyn DeviceModel<Output = Vec<f32>> + Send>];
        server
            .service()
            .install(Model::Embedder { copies, format }, info)
            .expect("embedder installs");
    }
    serve_server(server).await
}

pub async fn serve_server(server: Server) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        })
    };
    TestServer {
        base,
        client: reqwest::Client::new(),
        server,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Triggers graceful shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.begin_shutdown();
        self.finished().await
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn finished(&mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.expect("server task"),
            None => Ok(()),
        }
    }
}

pub async fn read(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, body)
}

/// `(index, relevance_score)` of a Cohere response's results, in order.
pub fn scores(body: &Value) -> Vec<(u64, f64)> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["relevance_score"].as_f64().expect("score"),
            )
        })
        .collect()
}

/// `metric_name{labels} value` → value.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

pub fn assert_cohere_error(body: &Value, needle: &str) {
    assert!(
        body["id"].as_str().is_some_and(|id| !id.is_empty()),
        "Cohere error shape: {body}"
    );
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

pub fn assert_tei_error(body: &Value, error_type: &str, needle: &str) {
    assert_eq!(body["error_type"], error_type, "{body}");
    let message = body["error"].as_str().expect("error");
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}
