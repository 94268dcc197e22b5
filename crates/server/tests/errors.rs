//! Every error class of the HTTP contract, in each dialect's shape, plus auth and
//! model-name rules.

mod common;

use common::*;
use reqwest::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::json;
use tessera_engine::scheduler::SchedulerConfig;
use tessera_server::ServerOptions;
use tessera_server::ServiceOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_are_400_naming_the_field() {
    let server = start(ServerOptions {
        max_documents: 5,
        ..ServerOptions::default()
    })
    .await;
    let cases = [
        (json!({"query": "", "documents": DOCS}), "query"),
        (json!({"query": QUERY, "documents": []}), "documents"),
        (
            json!({"query": QUERY, "documents": DOCS, "top_n": 0}),
            "top_n",
        ),
        (
            json!({"query": QUERY, "documents": DOCS, "top_n": -3}),
            "top_n",
        ),
        (
            json!({"query": QUERY, "documents": vec!["a"; 6]}),
            "maximum of 5",
        ),
        (
            json!({"query": QUERY, "documents": DOCS, "max_chunks_per_doc": 0}),
            "max_chunks_per_doc",
        ),
        (
            json!({"query": QUERY, "documents": DOCS, "max_tokens_per_doc": 0}),
            "max_tokens_per_doc",
        ),
        (
            json!({"query": QUERY, "documents": DOCS, "truncation_direction": "up"}),
            "truncation_direction",
        ),
        (
            json!({"query": QUERY, "documents": [{"title": "x"}]}),
            "documents[0]",
        ),
        (
            json!({"query": QUERY, "documents": [{"text": "x"}], "rank_fields": ["title"]}),
            "title",
        ),
        (json!({"documents": DOCS}), "query"),
        (json!({"query": QUERY}), "documents"),
        (
            json!({"query": "long ".repeat(9000), "documents": DOCS}),
            "query",
        ),
    ];
    for (body, needle) in &cases {
        let (status, _, response) = server.post("/v1/rerank", body).await;
        assert_eq!(status, 400, "{body} → {response}");
        assert_cohere_error(&response, needle);
    }
    let (status, _, response) = server
        .post("/rerank", &json!({"query": QUERY, "texts": []}))
        .await;
    assert_eq!(status, 400);
    assert_tei_error(&response, "empty", "texts");
    let (status, _, response) = server
        .post("/rerank", &json!({"query": " ", "texts": ["a"]}))
        .await;
    assert_eq!(status, 400);
    assert_tei_error(&response, "empty", "query");
    let (status, _, response) = server
        .post("/rerank", &json!({"query": "q", "texts": vec!["a"; 6]}))
        .await;
    assert_eq!(status, 400);
    assert_tei_error(&response, "validation", "texts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_and_wrong_types_are_422() {
    let server = start(ServerOptions::default()).await;
    let send = |path: &'static str, body: &'static str| {
        let request = server
            .client
            .post(server.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        async move { read(request.send().await.expect("sent")).await }
    };
    let (status, _, body) = send("/v1/rerank", r#"{"query": "q", "documents": ["#).await;
    assert_eq!(status, 400);
    assert_cohere_error(&body, "malformed JSON");
    let (status, _, body) = send("/rerank", "{nope").await;
    assert_eq!(status, 400);
    assert_tei_error(&body, "validation", "malformed JSON");

    let wrong = [
        (r#"{"query": 3, "documents": ["a"]}"#, "query"),
        (r#"{"query": "q", "documents": "a"}"#, "documents"),
        (r#"{"query": "q", "documents": ["a", 7]}"#, "documents[1]"),
        (
            r#"{"query": "q", "documents": ["a"], "top_n": "2"}"#,
            "top_n",
        ),
        (
            r#"{"query": "q", "documents": ["a"], "return_documents": "yes"}"#,
            "return_documents",
        ),
        (
            r#"{"query": "q", "documents": [{"text": 5}]}"#,
            "documents[0].text",
        ),
        (r#"[1, 2]"#, "JSON object"),
    ];
    for (body, needle) in wrong {
        let (status, _, response) = send("/v1/rerank", body).await;
        assert_eq!(status, 422, "{body} → {response}");
        assert_cohere_error(&response, needle);
    }
    let (status, _, response) = send("/rerank", r#"{"query": "q", "texts": [1]}"#).await;
    assert_eq!(status, 422);
    assert_tei_error(&response, "validation", "texts[0]");
    // Unknown fields are ignored.
    let (status, _, _) = send(
        "/v1/rerank",
        r#"{"query": "q", "documents": ["a"], "future": {"x": 1}}"#,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_type_size_route_and_method_errors() {
    let server = start(ServerOptions {
        max_body_bytes: 1024,
        ..ServerOptions::default()
    })
    .await;
    let response = server
        .client
        .post(server.url("/v1/rerank"))
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"query": "q", "documents": ["a"]}"#)
        .send()
        .await
        .expect("sent");
    let (status, _, body) = read(response).await;
    assert_eq!(status, 415);
    assert_cohere_error(&body, "application/json");

    let big = json!({"query": "q", "documents": ["x".repeat(2000)]});
    let (status, headers, body) = server.post("/v1/rerank", &big).await;
    assert_eq!(status, 413);
    // The unread rest of the body makes the connection unusable: it is closed.
    assert_eq!(headers[reqwest::header::CONNECTION], "close");
    // The limit is named with its value, as the flag takes it.
    assert_cohere_error(&body, "limit of 1024 bytes (--max-body-bytes 1KiB)");
    let (status, _, body) = server
        .post(
            "/rerank",
            &json!({"query": "q", "texts": ["x".repeat(2000)]}),
        )
        .await;
    assert_eq!(status, 413);
    assert_tei_error(&body, "validation", "limit");

    let (status, headers, body) = server.get("/v1/rerank").await;
    assert_eq!(status, 405);
    assert_eq!(headers[ALLOW], "POST");
    assert_cohere_error(&body, "GET");
    let response = server
        .client
        .post(server.url("/health"))
        .send()
        .await
        .expect("sent");
    let (status, headers, _) = read(response).await;
    assert_eq!(
        (status, &headers[ALLOW]),
        (405, &"GET".parse().expect("header"))
    );

    let (status, _, body) = server.get("/v1/nothing").await;
    assert_eq!(status, 404);
    assert_cohere_error(&body, "/v1/nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_names_are_free_without_served_names_and_checked_with_them() {
    let open = start(ServerOptions::default()).await;
    let (status, _, body) = open
        .post(
            "/v1/rerank",
            &json!({"model": "rerank-english-v3.0", "query": "q", "documents": ["a"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["model"], "tiny-q8");

    let strict = start(ServerOptions {
        served_model_names: vec!["Qwen/Qwen3-Reranker-4B".into(), "reranker".into()],
        ..ServerOptions::default()
    })
    .await;
    let (status, _, body) = strict
        .post(
            "/v1/rerank",
            &json!({"model": "rerank-english-v3.0", "query": "q", "documents": ["a"]}),
        )
        .await;
    assert_eq!(status, 404);
    assert_cohere_error(&body, "rerank-english-v3.0");
    let (status, _, body) = strict
        .post(
            "/v2/rerank",
            &json!({"model": "reranker", "query": "q", "documents": ["a"]}),
        )
        .await;
    assert_eq!((status, body["model"].as_str()), (200, Some("reranker")));
    let (status, _, body) = strict
        .post("/v2/rerank", &json!({"query": "q", "documents": ["a"]}))
        .await;
    assert_eq!(
        (status, body["model"].as_str()),
        (200, Some("Qwen/Qwen3-Reranker-4B"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_everything_but_health_and_metrics() {
    let server = start(ServerOptions {
        api_keys: vec!["first-key".into(), "second-key".into()],
        ..ServerOptions::default()
    })
    .await;
    let body = json!({"query": "q", "documents": ["a"]});
    let call = |path: &'static str, key: Option<&'static str>| {
        let mut request = server.client.post(server.url(path)).json(&body);
        if let Some(key) = key {
            request = request.header(AUTHORIZATION, key);
        }
        async move { read(request.send().await.expect("sent")).await }
    };
    let (status, headers, response) = call("/v1/rerank", None).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key(reqwest::header::WWW_AUTHENTICATE));
    assert_cohere_error(&response, "API key");
    let (status, _, _) = call("/v1/rerank", Some("Bearer first-keyX")).await;
    assert_eq!(status, 401);
    let (status, _, response) = call("/rerank", Some("Bearer nope")).await;
    assert_eq!(status, 401);
    assert_tei_error(&response, "validation", "API key");
    assert_eq!(call("/v1/rerank", Some("Bearer second-key")).await.0, 200);
    assert_eq!(call("/v2/rerank", Some("bearer first-key")).await.0, 200);

    assert_eq!(server.get("/health").await.0, 200);
    assert_eq!(server.get("/metrics").await.0, 200);
    for path in ["/info", "/v1/models", "/openapi.json"] {
        assert_eq!(server.get(path).await.0, 401, "{path}");
    }
    let authed = server
        .client
        .get(server.url("/info"))
        .bearer_auth("first-key")
        .send()
        .await
        .expect("sent");
    assert_eq!(authed.status(), 200);

    let open = start(ServerOptions::default()).await;
    assert_eq!(
        open.post("/v1/rerank", &body).await.0,
        200,
        "no keys: no auth"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_429_with_retry_after_and_loading_is_503() {
    let options = ServerOptions {
        service: ServiceOptions {
            scheduler: SchedulerConfig {
                max_batch_tokens: 16_384,
                max_queue_tokens: 300,
            },
            ..Default::default()
        },
        ..ServerOptions::default()
    };
    let (server, gate) = start_gated(options).await;
    let body = json!({"query": QUERY, "documents": DOCS[..2]});
    let first = {
        let request = server.client.post(server.url("/v1/rerank")).json(&body);
        tokio::spawn(async move { request.send().await })
    };
    gate.wait_entered(1).await;
    let (status, headers, response) = server.post("/v1/rerank", &body).await;
    assert_eq!(status, 429, "{response}");
    assert!(headers[RETRY_AFTER]
        .to_str()
        .is_ok_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    assert_cohere_error(&response, "overloaded");
    let (status, headers, response) = server
        .post("/rerank", &json!({"query": QUERY, "texts": DOCS[..2]}))
        .await;
    assert_eq!(status, 429);
    assert!(headers.contains_key(RETRY_AFTER));
    assert_tei_error(&response, "overloaded", "overloaded");
    // A request that could never fit the queue is 413, not a retry loop.
    let huge = json!({"query": QUERY, "documents": ["word ".repeat(400)]});
    assert_eq!(server.post("/v1/rerank", &huge).await.0, 413);
    gate.open();
    let first = first.await.expect("task").expect("answered");
    assert_eq!(first.status(), 200);

    let loading = start_with::<Gated<tessera_engine::Reranker<tessera_backend_cpu::CpuBackend>>>(
        ServerOptions::default(),
        None,
    )
    .await;
    let (status, _, health) = loading.get("/health").await;
    assert_eq!((status, health["status"].as_str()), (503, Some("loading")));
    let (status, _, response) = loading.post("/v1/rerank", &body).await;
    assert_eq!(status, 503);
    assert_cohere_error(&response, "not loaded");
    let (status, _, response) = loading
        .post("/rerank", &json!({"query": "q", "texts": ["a"]}))
        .await;
    assert_eq!(status, 503);
    assert_tei_error(&response, "unhealthy", "not loaded");
}
