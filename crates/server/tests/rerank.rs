//! The rerank routes over real HTTP: the spec's example, scores equal to the
//! library's, ordering and options of the Cohere and TEI dialects.

mod common;

use common::*;
use serde_json::{json, Value};
use tessera_engine::RerankOptions;
use tessera_model::TruncationSide;
use tessera_server::ServerOptions;

fn served(names: &[&str]) -> ServerOptions {
    ServerOptions {
        served_model_names: names.iter().map(|s| s.to_string()).collect(),
        ..ServerOptions::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_example_has_the_spec_shape_and_library_scores() {
    let server = start(served(&["Qwen/Qwen3-Reranker-4B"])).await;
    let body = json!({"model": "Qwen/Qwen3-Reranker-4B", "query": QUERY, "documents": DOCS});
    let (status, headers, response) = server.post("/v1/rerank", &body).await;
    assert_eq!(status, 200, "{response}");
    assert!(headers.get(tessera_server::TRUNCATED_HEADER).is_none());

    let reference = load_reranker()
        .rerank(QUERY, &DOCS, &RerankOptions::default())
        .expect("library rerank");
    let ranked = reference.ranked();
    let results = response["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for (got, want) in results.iter().zip(&ranked) {
        assert_eq!(got["index"], want.index);
        let score = got["relevance_score"].as_f64().expect("score");
        assert!(
            close(score, f64::from(want.relevance)),
            "{score} vs {}",
            want.relevance
        );
        assert!((0.0..=1.0).contains(&score));
        assert!(
            got.get("document").is_none(),
            "no document key unless asked"
        );
    }
    assert_eq!(response["id"].as_str().map(str::len), Some(36));
    assert_eq!(response["model"], "Qwen/Qwen3-Reranker-4B");
    let meta = &response["meta"];
    assert_eq!(meta["api_version"]["version"], "1");
    let total = reference.total_tokens as u64;
    assert_eq!(meta["billed_units"]["total_tokens"], total);
    assert_eq!(meta["billed_units"]["search_units"], 1);
    assert_eq!(meta["tokens"]["input_tokens"], total);
    assert_eq!(meta["tokens"]["output_tokens"], 0);
    assert_eq!(response["usage"]["total_tokens"], total);
    assert!(meta.get("warnings").is_none());
    server.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_sorted_cut_to_top_n_and_carry_documents_on_request() {
    let server = start(ServerOptions::default()).await;
    let docs: Vec<String> = (0..7)
        .map(|i| format!("document number {i} about passwords"))
        .collect();
    let (_, _, all) = server
        .post("/v1/rerank", &json!({"query": QUERY, "documents": docs}))
        .await;
    let scores: Vec<(u64, f64)> = all["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["relevance_score"].as_f64().expect("score"),
            )
        })
        .collect();
    assert_eq!(scores.len(), 7);
    for pair in scores.windows(2) {
        assert!(
            pair[0].1 > pair[1].1 || (pair[0].1 == pair[1].1 && pair[0].0 < pair[1].0),
            "{pair:?}"
        );
    }
    let (status, _, top) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": docs, "top_n": 2, "return_documents": true}),
        )
        .await;
    assert_eq!(status, 200);
    let top = top["results"].as_array().expect("results");
    assert_eq!(top.len(), 2);
    for (result, (index, score)) in top.iter().zip(&scores) {
        assert_eq!(result["index"], *index);
        assert_eq!(result["relevance_score"].as_f64(), Some(*score));
        assert_eq!(result["document"]["text"], docs[*index as usize]);
    }
    let (_, _, many) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": docs, "top_n": 100, "return_documents": false}),
        )
        .await;
    assert_eq!(many["results"].as_array().map(Vec::len), Some(7));
    assert!(many["results"][0].get("document").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_documents_and_rank_fields() {
    let server = start(ServerOptions::default()).await;
    let reranker = load_reranker();
    let objects = json!([
        {"text": DOCS[0], "id": "a", "title": "Reset"},
        {"text": DOCS[1], "id": "b", "title": "Hours"},
    ]);
    let (status, _, response) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": objects, "return_documents": true}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    let plain = reranker
        .rerank(QUERY, &DOCS[..2], &RerankOptions::default())
        .expect("rerank");
    for result in response["results"].as_array().expect("results") {
        let index = result["index"].as_u64().expect("index") as usize;
        assert_eq!(
            result["document"], objects[index],
            "the object comes back whole"
        );
        let score = result["relevance_score"].as_f64().expect("score");
        assert!(close(score, f64::from(plain.documents[index].relevance)));
    }

    let (status, _, ranked) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": objects, "rank_fields": ["title", "text"]}),
        )
        .await;
    assert_eq!(status, 200, "{ranked}");
    let rendered: Vec<String> = objects
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            format!(
                "title: {}\ntext: {}",
                o["title"].as_str().unwrap_or(""),
                o["text"].as_str().unwrap_or("")
            )
        })
        .collect();
    let refs: Vec<&str> = rendered.iter().map(String::as_str).collect();
    let expected = reranker
        .rerank(QUERY, &refs, &RerankOptions::default())
        .expect("rerank");
    for result in ranked["results"].as_array().expect("results") {
        let index = result["index"].as_u64().expect("index") as usize;
        let score = result["relevance_score"].as_f64().expect("score");
        assert!(close(score, f64::from(expected.documents[index].relevance)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instruction_changes_the_prompt() {
    let server = start(ServerOptions::default()).await;
    let instruction = "Judge whether the passage is about office hours";
    let (status, _, response) = server
        .post("/v2/rerank", &json!({"model": "anything", "query": QUERY, "documents": DOCS, "instruction": instruction}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(response["meta"]["api_version"]["version"], "2");
    assert_eq!(
        response["model"], "tiny-q8",
        "any model name is accepted and ours echoed"
    );
    let options = RerankOptions {
        instruction: Some(instruction.into()),
        ..RerankOptions::default()
    };
    let expected = load_reranker()
        .rerank(QUERY, &DOCS, &options)
        .expect("rerank");
    for result in response["results"].as_array().expect("results") {
        let index = result["index"].as_u64().expect("index") as usize;
        let score = result["relevance_score"].as_f64().expect("score");
        assert!(close(score, f64::from(expected.documents[index].relevance)));
    }
    assert_eq!(
        response["usage"]["total_tokens"],
        expected.total_tokens as u64
    );
}

/// Scores of `prefix ++ chunk ++ suffix` straight from the engine.
fn engine_score(prompt: &tessera_model::PromptBuilder, prefix: &[u32], chunk: &[u32]) -> f64 {
    thread_local! {
        static RERANKER: tessera_engine::Reranker<tessera_backend_cpu::CpuBackend> = load_reranker();
    }
    RERANKER.with(|reranker| score_with(reranker, prompt, prefix, chunk))
}

fn score_with(
    reranker: &tessera_engine::Reranker<tessera_backend_cpu::CpuBackend>,
    prompt: &tessera_model::PromptBuilder,
    prefix: &[u32],
    chunk: &[u32],
) -> f64 {
    let ids = [prefix, chunk, prompt.suffix_ids()].concat();
    let scores = reranker.engine().score(&[&ids]).expect("score");
    f64::from(scores[0].probability())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_documents_are_truncated_or_chunked_and_reported() {
    let max_pair = 128;
    let prompt = small_prompt(max_pair);
    let server = start_with(
        ServerOptions::default(),
        Some((load_reranker(), prompt.clone())),
    )
    .await;
    let long = "passwords can be reset from the login page by anyone who remembers their email. "
        .repeat(12);
    let docs = [DOCS[0].to_string(), long.clone()];
    let prefix = prompt.query_prefix(None, QUERY).expect("prefix");
    let ids = prompt.document_ids(&long).expect("ids");
    let room = max_pair - prefix.len() - prompt.suffix_ids().len();
    assert!(
        ids.len() > 2 * room,
        "the document must need more than two chunks"
    );

    // Default: truncated (tail dropped), listed in warnings and the header.
    let (status, headers, response) = server
        .post("/v1/rerank", &json!({"query": QUERY, "documents": docs}))
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(headers[tessera_server::TRUNCATED_HEADER], "1");
    let warnings = response["meta"]["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0].as_str().is_some_and(|w| w.contains("[1]")),
        "{warnings:?}"
    );
    let score_of = |response: &Value, index: u64| {
        response["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["index"] == index)
            .and_then(|r| r["relevance_score"].as_f64())
            .expect("scored")
    };
    assert!(close(
        score_of(&response, 1),
        engine_score(&prompt, &prefix, &ids[..room])
    ));
    assert_eq!(
        response["usage"]["total_tokens"],
        (2 * prefix.len()
            + 2 * prompt.suffix_ids().len()
            + room
            + prompt.document_ids(DOCS[0]).expect("ids").len()) as u64
    );

    // Left truncation keeps the tail.
    let (_, _, left) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": docs, "truncation_direction": "left"}),
        )
        .await;
    assert!(close(
        score_of(&left, 1),
        engine_score(&prompt, &prefix, &ids[ids.len() - room..])
    ));

    // Two chunks: the maximum of both; the rest is still truncated.
    let (_, headers, chunked) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": docs, "max_chunks_per_doc": 2}),
        )
        .await;
    let best = engine_score(&prompt, &prefix, &ids[..room]).max(engine_score(
        &prompt,
        &prefix,
        &ids[room..2 * room],
    ));
    assert!(close(score_of(&chunked, 1), best));
    assert_eq!(headers[tessera_server::TRUNCATED_HEADER], "1");

    // Enough chunks: nothing truncated, every chunk billed.
    let chunks = ids.len().div_ceil(room);
    let (_, headers, whole) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": docs, "max_chunks_per_doc": chunks}),
        )
        .await;
    assert!(headers.get(tessera_server::TRUNCATED_HEADER).is_none());
    assert!(whole["meta"].get("warnings").is_none());
    let expected = ids
        .chunks(room)
        .map(|c| engine_score(&prompt, &prefix, c))
        .fold(f64::MIN, f64::max);
    assert!(close(score_of(&whole, 1), expected));

    // max_tokens_per_doc cuts before anything else.
    let (_, headers, capped) = server
        .post(
            "/v2/rerank",
            &json!({"query": QUERY, "documents": docs, "max_tokens_per_doc": 5}),
        )
        .await;
    assert_eq!(headers[tessera_server::TRUNCATED_HEADER], "0,1");
    assert!(close(
        score_of(&capped, 1),
        engine_score(&prompt, &prefix, &ids[..5])
    ));

    // truncate: false refuses, naming the document and its length.
    let (status, _, refused) = server
        .post(
            "/v1/rerank",
            &json!({"query": QUERY, "documents": docs, "truncate": false}),
        )
        .await;
    assert_eq!(status, 400);
    assert_cohere_error(&refused, &format!("documents[1] is {} tokens", ids.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_dialect_scores_raw_scores_text_and_the_cohere_fallback() {
    let server = start(ServerOptions::default()).await;
    let expected = load_reranker()
        .rerank(QUERY, &DOCS, &RerankOptions::default())
        .expect("rerank");
    let (status, _, ranks) = server
        .post("/rerank", &json!({"query": QUERY, "texts": DOCS}))
        .await;
    assert_eq!(status, 200, "{ranks}");
    let ranks = ranks.as_array().expect("a bare array");
    assert_eq!(ranks.len(), 3);
    for (got, want) in ranks.iter().zip(expected.ranked()) {
        assert_eq!(got["index"], want.index);
        assert!(close(
            got["score"].as_f64().expect("score"),
            f64::from(want.relevance)
        ));
        assert!(got.get("text").is_none());
    }
    let (_, _, raw) = server
        .post(
            "/rerank",
            &json!({"query": QUERY, "texts": DOCS, "raw_scores": true, "return_text": true}),
        )
        .await;
    for got in raw.as_array().expect("array") {
        let index = got["index"].as_u64().expect("index") as usize;
        let want = expected.documents[index].logits.logit_diff();
        assert!(close(
            got["score"].as_f64().expect("score"),
            f64::from(want)
        ));
        assert_eq!(got["text"], DOCS[index]);
    }
    let (status, _, cohere) = server
        .post(
            "/rerank",
            &json!({"query": QUERY, "documents": DOCS, "top_n": 1}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(cohere["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(cohere["meta"]["api_version"]["version"], "1");
    // TEI's left truncation equals the library's.
    let left = RerankOptions {
        truncation: Some(TruncationSide::Left),
        ..RerankOptions::default()
    };
    let expected_left = load_reranker().rerank(QUERY, &DOCS, &left).expect("rerank");
    let (_, _, ranks) = server
        .post(
            "/rerank",
            &json!({"query": QUERY, "texts": DOCS, "truncation_direction": "left"}),
        )
        .await;
    assert_eq!(ranks[0]["index"], expected_left.ranked()[0].index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_models_info_health_and_openapi() {
    let server = start(served(&["Qwen/Qwen3-Reranker-4B", "reranker"])).await;
    let (status, _, tokens) = server
        .post("/tokenize", &json!({"inputs": "hello world<|im_end|>"}))
        .await;
    assert_eq!(status, 200, "{tokens}");
    let tokens = tokens[0].as_array().expect("one list per input");
    let last = tokens.last().expect("tokens");
    assert_eq!(last["text"], "<|im_end|>");
    assert_eq!(last["special"], true);
    assert_eq!(tokens[0]["special"], false);

    let (status, _, health) = server.get("/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (_, _, models) = server.get("/v1/models").await;
    assert_eq!(models["data"][1]["id"], "reranker");
    assert_eq!(models["models"][0]["name"], "Qwen/Qwen3-Reranker-4B");
    let (_, _, info) = server.get("/info").await;
    assert_eq!(info["limits"]["max_documents"], 10_000);
    assert_eq!(info["limits"]["max_pair_tokens"], 8192);
    assert_eq!(info["backend"], "cpu-reference");
    assert!(info["version"].is_string());

    let (status, headers, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(headers[reqwest::header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|c| c.starts_with("application/json")));
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/v1/rerank",
        "/v2/rerank",
        "/rerank",
        "/tokenize",
        "/health",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let request = &doc["components"]["schemas"]["RerankRequest"];
    assert!(request["properties"]["documents"].is_object());
    assert!(request["required"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("query")) && r.contains(&json!("documents"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_query_is_a_prefix_cache_hit_on_metrics() {
    let server = start(ServerOptions::default()).await;
    let body = json!({"query": QUERY, "documents": DOCS});
    let (status, _, first) = server.post("/v1/rerank", &body).await;
    assert_eq!(status, 200);
    let after_first = server.metrics().await;
    let (status, _, second) = server.post("/v1/rerank", &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        first["results"], second["results"],
        "the cache changes no score"
    );
    let after_second = server.metrics().await;
    let value = |text: &str, name: &str| metric(text, name).unwrap_or(f64::NAN);
    assert_eq!(
        value(&after_first, "tessera_prefix_cache_misses_total"),
        1.0
    );
    assert_eq!(value(&after_first, "tessera_prefix_cache_hits_total"), 0.0);
    assert_eq!(value(&after_second, "tessera_prefix_cache_hits_total"), 1.0);
    assert_eq!(value(&after_second, "tessera_prefix_cache_entries"), 1.0);
    assert!(value(&after_second, "tessera_prefix_cache_bytes") > 0.0);
    // The second request computed only its documents: billed minus its prefix.
    let billed = second["usage"]["total_tokens"].as_f64().expect("tokens");
    let computed = value(&after_second, "tessera_computed_tokens_total")
        - value(&after_first, "tessera_computed_tokens_total");
    let reused = value(&after_second, "tessera_prefix_reused_tokens_total")
        - value(&after_first, "tessera_prefix_reused_tokens_total");
    assert!(computed > 0.0 && reused > 0.0);
    assert_eq!(
        computed + 3.0 * reused,
        billed,
        "three pairs share one prefix"
    );
}
