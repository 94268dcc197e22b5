//! `/v1/embeddings` (OpenAI) and `/embed` (TEI) over the tiny embedding
//! fixture, beside the reranker in one server: the vectors are the library's,
//! in input order, billed per token; every input form; `dimensions`
//! renormalised; base64 as OpenAI encodes it; errors in OpenAI's shape; a route
//! whose model is not hosted answers 404 naming what is.

mod common;

use base64::Engine as _;
use common::{load_embedder, load_reranker, start_models, TestServer, DOCS, QUERY};
use serde_json::{json, Value};
use tessera_engine::{EmbedOptions, Embedding};
use tessera_server::ServerOptions;

async fn both() -> TestServer {
    start_models(
        ServerOptions::default(),
        Some(load_reranker()),
        Some(load_embedder()),
    )
    .await
}

fn vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding", "{item}");
            assert_eq!(item["index"], i, "data is in input order: {body}");
            item["embedding"]
                .as_array()
                .expect("float vector")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

fn close(got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tolerance, "component {i}: {g} vs {w}");
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// What the library computes for the same texts (its own CPU reference model).
fn library(texts: &[&str], options: &EmbedOptions) -> Vec<Embedding> {
    load_embedder()
        .embed(texts, options)
        .expect("library embeds")
}

fn assert_openai_error(body: &Value, param: Option<&str>, needle: &str) {
    let error = &body["error"];
    let message = error["message"].as_str().expect("error.message");
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
    assert!(error["type"].is_string(), "error.type: {body}");
    assert!(error.get("code").is_some(), "error.code present: {body}");
    match param {
        Some(p) => assert_eq!(error["param"], p, "{body}"),
        None => assert!(error["param"].is_null(), "{body}"),
    }
}

#[tokio::test]
async fn vectors_are_the_librarys_in_input_order_and_billed_per_token() {
    let server = both().await;
    let texts = [QUERY, DOCS[0], DOCS[1], DOCS[2]];
    let (status, _, body) = server
        .post(
            "/v1/embeddings",
            &json!({"input": texts, "model": "Qwen/Qwen3-Embedding-8B", "user": "u-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "Qwen/Qwen3-Embedding-8B");
    let want = library(&texts, &EmbedOptions::default());
    let got = vectors(&body);
    assert_eq!(got.len(), texts.len());
    for (g, w) in got.iter().zip(&want) {
        close(g, &w.values, 1e-6);
        assert!((norm(g) - 1.0).abs() < 1e-5);
    }
    let tokens: usize = want.iter().map(|e| e.tokens).sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);

    // One at a time gives the same vectors as all together (batching invariance).
    for (text, all) in texts.iter().zip(&got) {
        let (_, _, one) = server.post("/v1/embeddings", &json!({"input": text})).await;
        close(&vectors(&one)[0], all, 1e-5);
    }
    server.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn every_input_form_dimensions_base64_and_the_instruction() {
    let server = both().await;
    let embedder = load_embedder();
    let (full, _) = embedder
        .input_ids(0, DOCS[0], &EmbedOptions::default())
        .expect("ids");
    // The text's own tokens, without the end-of-text token the server appends.
    let ids = &full[..full.len() - 1];
    let (_, _, text) = server
        .post("/v1/embeddings", &json!({"input": DOCS[0]}))
        .await;
    let text = vectors(&text).remove(0);
    for input in [json!(ids), json!([ids, ids])] {
        let (status, _, body) = server
            .post("/v1/embeddings", &json!({"input": input}))
            .await;
        assert_eq!(status, 200, "{body}");
        for v in vectors(&body) {
            close(&v, &text, 1e-6);
        }
    }

    let (_, _, cut) = server
        .post(
            "/v1/embeddings",
            &json!({"input": DOCS[0], "dimensions": 8}),
        )
        .await;
    let cut = vectors(&cut).remove(0);
    let scale = norm(&text[..8]) as f32;
    let renormalised: Vec<f32> = text[..8].iter().map(|v| v / scale).collect();
    close(&cut, &renormalised, 1e-6);
    assert!((norm(&cut) - 1.0).abs() < 1e-5);

    let (status, _, encoded) = server
        .post(
            "/v1/embeddings",
            &json!({"input": [DOCS[0]], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{encoded}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(
            encoded["data"][0]["embedding"]
                .as_str()
                .expect("base64 string"),
        )
        .expect("valid base64");
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, text, "base64 carries the same f32 bits");

    let task = "Given a web search query, retrieve relevant passages that answer the query";
    let (_, _, instructed) = server
        .post(
            "/v1/embeddings",
            &json!({"input": QUERY, "instruction": task}),
        )
        .await;
    let want = library(
        &[QUERY],
        &EmbedOptions {
            instruction: Some(task.into()),
            ..EmbedOptions::default()
        },
    );
    close(&vectors(&instructed)[0], &want[0].values, 1e-6);
    server.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn errors_are_in_openais_shape_and_name_the_field() {
    let server = both().await;
    let width = load_embedder().width();
    let cases = [
        (
            json!({"input": "x", "dimensions": 0}),
            400,
            Some("dimensions"),
            "at least 1",
        ),
        (
            json!({"input": "x", "dimensions": width + 1}),
            400,
            Some("dimensions"),
            "between 1 and",
        ),
        (
            json!({"input": []}),
            400,
            Some("input"),
            "must not be empty",
        ),
        // A wrong type is a 400 in OpenAI's dialect (a 422 in the others).
        (
            json!({"input": ["a", 3]}),
            400,
            Some("input[1]"),
            "expected a string",
        ),
        (
            json!({"input": "x", "dimensions": "8"}),
            400,
            Some("dimensions"),
            "expected an integer, got a string",
        ),
        (json!({"input": null}), 400, Some("input"), "got null"),
        (
            json!({"input": [1, 2, 151999999]}),
            400,
            Some("input[2]"),
            "vocabulary",
        ),
        (
            json!({"input": [[[1]]]}),
            400,
            Some("input[0][0]"),
            "expected a token id",
        ),
        (
            json!({"input": [[]]}),
            400,
            Some("input[0]"),
            "must not be empty",
        ),
        (json!({"input": [1.5]}), 400, Some("input[0]"), "integer"),
        (
            json!({"input": "x", "dimensions": 1e30}),
            400,
            Some("dimensions"),
            "an integer",
        ),
        (
            json!({"input": "x", "dimensions": -3}),
            400,
            Some("dimensions"),
            "at least 1",
        ),
        (
            json!({"input": "x", "instruction": " "}),
            400,
            Some("instruction"),
            "must not be empty",
        ),
        (
            json!({"input": "x", "truncation_direction": "middle"}),
            400,
            Some("truncation_direction"),
            "left",
        ),
        (
            json!({"input": [[1], [-2]]}),
            400,
            Some("input[1][0]"),
            "token id",
        ),
        (
            json!({"input": [[5, 151999999]]}),
            400,
            Some("input[0][1]"),
            "vocabulary",
        ),
        (
            json!({"input": "x", "encoding_format": "int8"}),
            400,
            Some("encoding_format"),
            "base64",
        ),
        (json!({"model": "m"}), 400, Some("input"), "required"),
    ];
    for (body, status, param, needle) in cases {
        let (got, _, answer) = server.post("/v1/embeddings", &body).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_openai_error(&answer, param, needle);
    }
    // Too long: cut by default (and reported), refused with truncate: false.
    let long = "word ".repeat(9_000);
    let (status, headers, body) = server
        .post("/v1/embeddings", &json!({"input": ["short", long]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-truncated-inputs"], "1");
    assert_eq!(
        body["usage"]["prompt_tokens"].as_u64().map(|t| t > 8_000),
        Some(true)
    );
    let (status, _, body) = server
        .post("/v1/embeddings", &json!({"input": long, "truncate": false}))
        .await;
    assert_eq!(status, 400);
    assert_openai_error(&body, Some("input[0]"), "tokens");
    server.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn auth_and_served_names_answer_in_openais_shape() {
    let options = ServerOptions {
        api_keys: vec!["k".into()],
        embedding_served_model_names: vec!["Qwen/Qwen3-Embedding-8B".into()],
        ..ServerOptions::default()
    };
    let server = start_models(options, Some(load_reranker()), Some(load_embedder())).await;
    let (status, _, body) = server.post("/v1/embeddings", &json!({"input": "x"})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    // `/v1/models` is read by both SDKs: its errors carry both shapes.
    let (status, _, body) = server.get("/v1/models").await;
    assert_eq!(status, 401);
    common::assert_cohere_error(&body, "API key");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let answer = server
        .client
        .post(server.url("/v1/embeddings"))
        .bearer_auth("k")
        .json(&json!({"input": "x", "model": "other"}))
        .send()
        .await
        .expect("sent");
    let (status, _, body) = common::read(answer).await;
    assert_eq!(status, 404);
    assert_openai_error(&body, Some("model"), "Qwen/Qwen3-Embedding-8B");
    server.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn a_route_whose_model_is_not_hosted_is_a_404_naming_what_is() {
    let rerank_only = start_models(ServerOptions::default(), Some(load_reranker()), None).await;
    let (status, _, body) = rerank_only
        .post("/v1/embeddings", &json!({"input": "x"}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_openai_error(&body, Some("model"), "reranker 'tiny-q8'");
    let (status, _, body) = rerank_only.post("/embed", &json!({"inputs": "x"})).await;
    assert_eq!(status, 404, "{body}");
    common::assert_tei_error(&body, "validation", "no embedding model");
    rerank_only.shutdown().await.expect("clean stop");

    let embed_only = start_models(ServerOptions::default(), None, Some(load_embedder())).await;
    let (status, _, body) = embed_only
        .post("/v1/rerank", &json!({"query": QUERY, "documents": DOCS}))
        .await;
    assert_eq!(status, 404, "{body}");
    common::assert_cohere_error(&body, "embedding model 'tiny-embed-q8'");
    let (status, _, info) = embed_only.get("/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["model_type"], "embedding");
    let (status, _, health) = embed_only.get("/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    embed_only.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn models_lists_both_kinds_and_metrics_count_each_model() {
    let server = both().await;
    let (status, _, body) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let kinds: Vec<(&str, &str)> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or(""),
                m["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("tiny-q8", "reranker"), ("tiny-embed-q8", "embedding")]
    );
    let (_, _, info) = server.get("/info").await;
    assert_eq!(
        info["embedding_model"]["dimensions"],
        load_embedder().width()
    );

    server
        .post("/v1/embeddings", &json!({"input": ["a", "b"]}))
        .await;
    server
        .post("/v1/rerank", &json!({"query": QUERY, "documents": DOCS}))
        .await;
    let text = server.metrics().await;
    for model in ["embedding", "reranker"] {
        let batches = common::metric(
            &text,
            &format!("tessera_model_batches_total{{model=\"{model}\"}}"),
        );
        assert!(batches.is_some_and(|b| b >= 1.0), "{model}: {text}");
    }
    assert_eq!(
        common::metric(&text, "tessera_inputs_embedded_total"),
        Some(2.0)
    );
    server.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn tei_embed_normalises_unless_asked_not_to() {
    let server = both().await;
    let (status, _, body) = server
        .post("/embed", &json!({"inputs": [DOCS[0], DOCS[1]]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let unit: Vec<Vec<f32>> = serde_json::from_value(body).expect("array of vectors");
    assert_eq!(unit.len(), 2);
    let (_, _, raw) = server
        .post("/embed", &json!({"inputs": DOCS[0], "normalize": false}))
        .await;
    let raw: Vec<Vec<f32>> = serde_json::from_value(raw).expect("array of vectors");
    let length = norm(&raw[0]);
    assert!((length - 1.0).abs() > 1e-3, "a raw hidden state: {length}");
    let scaled: Vec<f32> = raw[0].iter().map(|v| v / length as f32).collect();
    close(&scaled, &unit[0], 1e-5);
    let (status, _, body) = server.post("/embed", &json!({"inputs": [1]})).await;
    assert_eq!(status, 422);
    common::assert_tei_error(&body, "validation", "inputs[0]");
    server.shutdown().await.expect("clean stop");
}

/// An embedding model whose device fails every batch.
struct BrokenEmbedder;

impl tessera_engine::scheduler::DeviceModel for BrokenEmbedder {
    type Output = Vec<f32>;

    fn compute(
        &self,
        _: &[tessera_engine::PrefixGroup<'_>],
    ) -> Result<Vec<Vec<Vec<f32>>>, tessera_engine::EngineError> {
        Err(tessera_engine::EngineError::Backend(
            tessera_backend::BackendError::Device("injected: the device fell off the bus".into()),
        ))
    }
}

/// One model's devices all failing leaves the other serving: `/health` says
/// `degraded` (200), the failing model's clients get 503 with Retry-After,
/// the other model's are served.
#[tokio::test]
async fn a_failing_model_degrades_the_server_while_the_other_serves() {
    let options = ServerOptions {
        service: tessera_server::ServiceOptions {
            hosts: tessera_server::Hosted {
                reranker: true,
                embedder: true,
            },
            ..Default::default()
        },
        ..ServerOptions::default()
    };
    let server = tessera_server::Server::new(options);
    server
        .service()
        .install(
            tessera_server::Model::reranker(load_reranker()),
            common::info(),
        )
        .expect("reranker installs");
    let format = load_embedder().format().clone();
    let copies = vec![Box::new(BrokenEmbedder)
        as Box<
            dyn tessera_engine::scheduler::DeviceModel<Output = Vec<f32>> + Send,
        >];
    server
        .service()
        .install(
            tessera_server::Model::Embedder { copies, format },
            common::info(),
        )
        .expect("embedder installs");
    let server = common::serve_server(server).await;
    for _ in 0..3 {
        let (status, headers, body) = server.post("/v1/embeddings", &json!({"input": "x"})).await;
        assert_eq!(status, 503, "{body}");
        assert!(headers.contains_key("retry-after"));
    }
    let (status, _, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded");
    let detail = health["detail"].as_str().expect("detail");
    assert!(detail.contains("embedding model"), "{detail}");
    let (status, _, _) = server
        .post("/v1/rerank", &json!({"query": QUERY, "documents": DOCS}))
        .await;
    assert_eq!(status, 200);
    server.shutdown().await.expect("clean stop");
}
