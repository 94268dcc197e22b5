//! One front door: `tessera rerank --json` and a running `tessera serve`'s
//! `/v1/rerank` prepare, score and rank a request identically — every fixture
//! case, the API's truncation options, and long documents split into chunks.

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tessera_tests::load_reference;

use common::{request, serve};

/// How long a request may go unanswered: the chunked cases score several
/// 8,192-token pairs.
const PATIENCE: Duration = Duration::from_secs(120);

/// `tessera rerank --json` with the request's options as flags; its body, or
/// its stderr when it fails.
fn rerank_cli(body: &Value, dir: &std::path::Path) -> Result<Value, String> {
    let documents = dir.join("documents.jsonl");
    let lines: Vec<String> = body["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(Value::to_string)
        .collect();
    std::fs::write(&documents, lines.join("\n")).expect("documents written");
    let mut args: Vec<String> = [
        "rerank",
        "--json",
        "--backend",
        "cpu",
        "--query",
        body["query"].as_str().expect("query"),
        "--documents-file",
    ]
    .map(String::from)
    .to_vec();
    args.push(documents.display().to_string());
    for (field, flag) in [
        ("instruction", "--instruction"),
        ("top_n", "--top-n"),
        ("max_tokens_per_doc", "--max-tokens-per-doc"),
        ("max_chunks_per_doc", "--max-chunks-per-doc"),
    ] {
        match &body[field] {
            Value::Null => {}
            Value::String(s) => args.extend([flag.to_string(), s.clone()]),
            other => args.extend([flag.to_string(), other.to_string()]),
        }
    }
    if body["truncation_direction"] == "left" {
        args.push("--truncate-left".into());
    }
    if body["truncate"] == false {
        args.push("--no-truncate".into());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(&args)
        .output()
        .expect("rerank runs");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("stdout is JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The two bodies rank the same documents with the same scores and bill the
/// same tokens with the same warnings (ids differ; the model name is the
/// server's to choose).
fn assert_same(label: &str, cli: &Value, server: &Value) {
    let (a, b) = (&cli["results"], &server["results"]);
    let (a, b) = (
        a.as_array().expect("cli results"),
        b.as_array().expect("server results"),
    );
    assert_eq!(a.len(), b.len(), "{label}: result count");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["index"], y["index"], "{label}: order");
        let (p, q) = (
            x["relevance_score"].as_f64().expect("score"),
            y["relevance_score"].as_f64().expect("score"),
        );
        assert!((p - q).abs() <= 1e-6, "{label}: {p} vs {q}");
    }
    for field in ["billed_units", "tokens", "warnings"] {
        assert_eq!(
            cli["meta"][field], server["meta"][field],
            "{label}: {field}"
        );
    }
    assert_eq!(cli["usage"], server["usage"], "{label}: usage");
}

#[test]
fn rerank_and_the_server_agree_on_fixtures_options_and_chunked_documents() {
    let served = serve(&["--backend", "cpu"]);
    let dir = std::env::temp_dir().join(format!("tessera-front-door-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let mut bodies = Vec::new();
    for case in load_reference("tiny-q8").cases {
        let mut body = json!({"query": case.query, "documents": case.documents});
        if let Some(instruction) = case.instruction {
            body["instruction"] = instruction.into();
        }
        bodies.push(body);
    }
    let first = load_reference("tiny-q8").cases.remove(0);
    bodies.push(json!({
        "query": first.query, "documents": first.documents, "top_n": 2,
        "max_tokens_per_doc": 5, "truncation_direction": "left",
    }));
    // Documents longer than one pair's context (8,192 tokens): split into
    // chunks, each chunk a pair, the document scoring its best one.
    let long = |words: usize, seed: usize| -> String {
        (0..words)
            .map(|i| format!("w{} ", (i * 7 + seed) % 101))
            .collect()
    };
    let documents = json!(["a short document", long(9_000, 1), long(4_000, 2)]);
    for (chunks, side) in [(3, "right"), (2, "left"), (1, "right")] {
        bodies.push(json!({
            "query": "which document repeats itself", "documents": documents,
            "max_chunks_per_doc": chunks, "truncation_direction": side,
        }));
    }
    let refused = json!({
        "query": "q", "documents": documents, "max_chunks_per_doc": 2, "truncate": false,
    });

    let mut chunked_tokens = Vec::new();
    for (n, body) in bodies.iter().enumerate() {
        let (status, server) = request(&served.address, "POST", "/v1/rerank", Some(body), PATIENCE);
        assert_eq!(status, 200, "case {n}: {server}");
        let cli = rerank_cli(body, &dir).unwrap_or_else(|e| panic!("case {n}: {e}"));
        assert_same(&format!("case {n}"), &cli, &server);
        if body["max_chunks_per_doc"].is_number() {
            chunked_tokens.push(server["usage"]["total_tokens"].as_u64().expect("tokens"));
        }
    }
    // Three chunks bill more than two, two more than one: the chunks ran.
    assert!(
        chunked_tokens[0] > chunked_tokens[1] && chunked_tokens[1] > chunked_tokens[2],
        "{chunked_tokens:?}"
    );
    assert!(chunked_tokens[2] > 8_192, "one chunk still fills a pair");

    let (status, server) = request(
        &served.address,
        "POST",
        "/v1/rerank",
        Some(&refused),
        PATIENCE,
    );
    assert_eq!(status, 400, "{server}");
    let message = server["message"].as_str().expect("message");
    let cli = rerank_cli(&refused, &dir).expect_err("a document that does not fit fails");
    // The same numbers in both: "… is N tokens long but only C fit beside the query (2 chunks of R)".
    let numbers = message
        .split_once(" is ")
        .map(|(_, rest)| rest)
        .expect("the server names the document");
    assert!(
        cli.contains(numbers.trim_end_matches(", and truncate is false")),
        "{cli} vs {message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tessera embed --json` and `/v1/embeddings` of a server hosting the
/// embedding fixture alone give the same body: vectors (documents, and
/// instructed queries with `dimensions`), billing and model name.
#[test]
fn embed_and_the_server_agree_on_vectors_and_billing() {
    let model = tessera_tests::fixture("tiny-embed-q8.gguf")
        .display()
        .to_string();
    let served = serve(&["--model", &model, "--backend", "cpu"]);
    let texts = [
        "To reset your password, click forgot password on the login screen.",
        "Dove si trova Roma?",
        "",
    ];
    let task = "Given a web search query, retrieve relevant passages that answer the query";
    for (instruction, dimensions) in [(None, None), (Some(task), Some(8))] {
        let mut args = vec!["embed", "--json", "--backend", "cpu", "--model", &model];
        let dims = dimensions.map(|d: u32| d.to_string());
        if let Some(task) = instruction {
            args.extend(["--instruction", task]);
        }
        if let Some(d) = &dims {
            args.extend(["--dimensions", d]);
        }
        args.push("--");
        args.extend(texts);
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .output()
            .expect("embed runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON body");
        let body = json!({"input": texts, "instruction": instruction, "dimensions": dimensions});
        let (status, server) = request(
            &served.address,
            "POST",
            "/v1/embeddings",
            Some(&body),
            PATIENCE,
        );
        assert_eq!(status, 200, "{server}");
        assert_eq!(cli["usage"], server["usage"]);
        assert_eq!(cli["model"], server["model"]);
        let vectors = |body: &Value| -> Vec<Vec<f64>> {
            body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|d| {
                    d["embedding"]
                        .as_array()
                        .expect("floats")
                        .iter()
                        .map(|v| v.as_f64().expect("number"))
                        .collect()
                })
                .collect()
        };
        let (ours, theirs) = (vectors(&cli), vectors(&server));
        assert_eq!(ours.len(), texts.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.len(), dimensions.map_or(32, |d| d as usize));
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
        }
    }
}
