//! The bad-input battery: requests a careless or hostile client sends, over real
//! HTTP, each answered with the documented 4xx and a message naming the problem —
//! never a 5xx — and the server answering correctly afterwards.

mod common;

use common::*;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};
use tessera_server::ServerOptions;

const KEY: &str = "battery-key";
const MODEL: &str = "Qwen/Qwen3-Reranker-4B";

/// One hostile request and what it must get back.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    auth: Option<String>,
    body: Vec<u8>,
    status: u16,
    /// Text the error message must contain (case-insensitive).
    needle: &'static str,
}

fn post(name: &'static str, path: &'static str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        content_type: Some("application/json"),
        auth: Some(format!("Bearer {KEY}")),
        body: body.into(),
        status: 400,
        needle: "",
    }
}

impl Case {
    fn expect(mut self, status: u16, needle: &'static str) -> Case {
        self.status = status;
        self.needle = needle;
        self
    }

    fn content_type(mut self, value: Option<&'static str>) -> Case {
        self.content_type = value;
        self
    }

    fn auth(mut self, value: Option<&str>) -> Case {
        self.auth = value.map(str::to_string);
        self
    }

    fn method(mut self, method: Method) -> Case {
        self.method = method;
        self
    }
}

fn json_body(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("serialisable")
}

fn cases() -> Vec<Case> {
    let v1 = "/v1/rerank";
    let v2 = "/v2/rerank";
    let tei = "/rerank";
    let ok_docs = json!(["a document", "another document"]);
    let many: Vec<&str> = vec!["x"; 10_001];
    let megabyte = "lorem ipsum ".repeat(1 << 20 >> 4);
    let deep = format!(
        "{{\"query\": \"q\", \"documents\": {}\"a\"{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let mut invalid_utf8 = br#"{"query": "q", "documents": [""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(br#""]}"#);
    let mut utf8_query = br#"{"query": ""#.to_vec();
    utf8_query.extend_from_slice(&[0xe2, 0x82]);
    utf8_query.extend_from_slice(br#"", "texts": ["a"]}"#);
    vec![
        // Syntax.
        post("empty body", v1, "").expect(400, "malformed JSON"),
        post("truncated JSON", v1, r#"{"query": "q", "documents": ["#)
            .expect(400, "malformed JSON"),
        post(
            "trailing garbage",
            v1,
            r#"{"query": "q", "documents": ["a"]} }"#,
        )
        .expect(400, "malformed JSON"),
        post("single quotes", v1, "{'query': 'q', 'documents': ['a']}")
            .expect(400, "malformed JSON"),
        post(
            "NaN top_n",
            v1,
            r#"{"query": "q", "documents": ["a"], "top_n": NaN}"#,
        )
        .expect(400, "malformed JSON"),
        post("invalid UTF-8 in a document", v1, invalid_utf8).expect(400, "malformed JSON"),
        post("invalid UTF-8 in a TEI query", tei, utf8_query).expect(400, "malformed JSON"),
        post(
            "lone high surrogate",
            v1,
            r#"{"query": "q\ud800", "documents": ["a"]}"#,
        )
        .expect(400, "malformed JSON"),
        post(
            "lone low surrogate in a document",
            v2,
            r#"{"query": "q", "documents": ["\udc00x"]}"#,
        )
        .expect(400, "malformed JSON"),
        post("bad escape", v1, r#"{"query": "\q", "documents": ["a"]}"#).expect(400, "escape"),
        post("nesting 5000 deep", v1, deep).expect(400, "malformed JSON"),
        // Shape and types.
        post("null body", v1, "null").expect(422, "JSON object"),
        post("array body", v2, "[1, 2]").expect(422, "JSON object"),
        post("string body", tei, r#""query""#).expect(422, "JSON object"),
        post(
            "query is a number",
            v1,
            r#"{"query": 3, "documents": ["a"]}"#,
        )
        .expect(422, "query"),
        post(
            "query is null",
            v1,
            r#"{"query": null, "documents": ["a"]}"#,
        )
        .expect(422, "query"),
        post(
            "documents is a string",
            v1,
            r#"{"query": "q", "documents": "a"}"#,
        )
        .expect(422, "documents"),
        post(
            "a document is a number",
            v2,
            r#"{"query": "q", "documents": ["a", 7]}"#,
        )
        .expect(422, "documents[1]"),
        post(
            "top_n is a string",
            v1,
            r#"{"query": "q", "documents": ["a"], "top_n": "2"}"#,
        )
        .expect(422, "top_n"),
        post(
            "top_n is fractional",
            v1,
            r#"{"query": "q", "documents": ["a"], "top_n": 1.5}"#,
        )
        .expect(422, "top_n"),
        post(
            "top_n beyond i64",
            v1,
            r#"{"query": "q", "documents": ["a"], "top_n": 1e400}"#,
        )
        .expect(400, "malformed JSON"),
        post(
            "return_documents is a string",
            v1,
            r#"{"query": "q", "documents": ["a"], "return_documents": "yes"}"#,
        )
        .expect(422, "return_documents"),
        post(
            "TEI texts hold a number",
            tei,
            r#"{"query": "q", "texts": [1]}"#,
        )
        .expect(422, "texts[0]"),
        post(
            "TEI raw_scores is a string",
            tei,
            r#"{"query": "q", "texts": ["a"], "raw_scores": "no"}"#,
        )
        .expect(422, "raw_scores"),
        post(
            "document object without text",
            v1,
            json_body(json!({"query": "q", "documents": [{"title": "x"}]})),
        )
        .expect(400, "documents[0]"),
        // Missing and empty fields.
        post("no query", v1, json_body(json!({"documents": ok_docs}))).expect(400, "query"),
        post("no documents", v2, json_body(json!({"query": "q"}))).expect(400, "documents"),
        post("TEI without texts", tei, json_body(json!({"query": "q"}))).expect(400, "texts"),
        post(
            "empty query",
            v1,
            json_body(json!({"query": "", "documents": ok_docs})),
        )
        .expect(400, "query"),
        post(
            "blank query",
            v2,
            json_body(json!({"query": " \n\t ", "documents": ok_docs})),
        )
        .expect(400, "query"),
        post(
            "empty document list",
            v1,
            json_body(json!({"query": "q", "documents": []})),
        )
        .expect(400, "documents"),
        post(
            "empty TEI texts",
            tei,
            json_body(json!({"query": "q", "texts": []})),
        )
        .expect(400, "texts"),
        // Values out of range.
        post(
            "10,001 documents",
            v1,
            json_body(json!({"query": "q", "documents": many})),
        )
        .expect(400, "maximum of 10000"),
        post(
            "top_n zero",
            v1,
            json_body(json!({"query": "q", "documents": ok_docs, "top_n": 0})),
        )
        .expect(400, "top_n"),
        post(
            "top_n negative",
            v2,
            json_body(json!({"query": "q", "documents": ok_docs, "top_n": -1})),
        )
        .expect(400, "top_n"),
        post(
            "max_chunks_per_doc zero",
            v1,
            json_body(json!({"query": "q", "documents": ok_docs, "max_chunks_per_doc": 0})),
        )
        .expect(400, "max_chunks_per_doc"),
        post(
            "max_tokens_per_doc negative",
            v2,
            json_body(json!({"query": "q", "documents": ok_docs, "max_tokens_per_doc": -5})),
        )
        .expect(400, "max_tokens_per_doc"),
        post(
            "unknown truncation_direction",
            tei,
            json_body(json!({"query": "q", "texts": ["a"], "truncation_direction": "up"})),
        )
        .expect(400, "truncation_direction"),
        post(
            "rank_fields naming a missing field",
            v1,
            json_body(
                json!({"query": "q", "documents": [{"text": "x"}], "rank_fields": ["title"]}),
            ),
        )
        .expect(400, "title"),
        post(
            "a 1 MB document that must not be truncated",
            tei,
            json_body(json!({"query": "q", "texts": [megabyte], "truncate": false})),
        )
        .expect(400, "texts[0]"),
        post(
            "a query longer than the context",
            v1,
            json_body(json!({"query": "long ".repeat(9000), "documents": ok_docs})),
        )
        .expect(400, "query"),
        // Model names and keys.
        post(
            "unknown model",
            v1,
            json_body(json!({"model": "rerank-english-v3.0", "query": "q", "documents": ok_docs})),
        )
        .expect(404, "rerank-english-v3.0"),
        post(
            "model of the wrong type",
            v2,
            json_body(json!({"model": 4, "query": "q", "documents": ok_docs})),
        )
        .expect(422, "model"),
        post(
            "no API key",
            v1,
            json_body(json!({"query": "q", "documents": ok_docs})),
        )
        .auth(None)
        .expect(401, "API key"),
        post(
            "wrong API key",
            v2,
            json_body(json!({"query": "q", "documents": ok_docs})),
        )
        .auth(Some("Bearer battery-keyX"))
        .expect(401, "API key"),
        post(
            "key without Bearer",
            tei,
            json_body(json!({"query": "q", "texts": ["a"]})),
        )
        .auth(Some(KEY))
        .expect(401, "API key"),
        // Transport: size, media type, method, route.
        post(
            "body over the limit",
            v1,
            json_body(json!({"query": "q", "documents": ["z".repeat(5 << 20)]})),
        )
        .expect(413, "max-body-bytes"),
        post(
            "text/plain body",
            v1,
            json_body(json!({"query": "q", "documents": ok_docs})),
        )
        .content_type(Some("text/plain"))
        .expect(415, "application/json"),
        post(
            "no content type",
            tei,
            json_body(json!({"query": "q", "texts": ["a"]})),
        )
        .content_type(None)
        .expect(415, "Content-Type"),
        post("form encoded", v2, "query=q&documents=a")
            .content_type(Some("application/x-www-form-urlencoded"))
            .expect(415, "application/json"),
        post("GET on a POST route", v1, "")
            .method(Method::GET)
            .expect(405, "GET"),
        post("DELETE on a POST route", tei, "")
            .method(Method::DELETE)
            .expect(405, "DELETE"),
        post("POST on /health", "/health", "{}").expect(405, "POST"),
        post("unknown route", "/v3/rerank", "{}").expect(404, "/v3/rerank"),
    ]
}

fn error_message(body: &Value) -> String {
    body["message"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_documented_4xx_and_the_server_keeps_serving() {
    let server = start(ServerOptions {
        api_keys: vec![KEY.into()],
        served_model_names: vec![MODEL.into()],
        max_body_bytes: 4 << 20,
        ..ServerOptions::default()
    })
    .await;
    let good = json!({"query": "how do I reset my password", "documents": DOCS});
    let score = || async {
        let response = server
            .client
            .post(server.url("/v1/rerank"))
            .header(AUTHORIZATION, format!("Bearer {KEY}"))
            .json(&good)
            .send()
            .await
            .expect("sent");
        let (status, _, body) = read(response).await;
        assert_eq!(status, 200, "{body}");
        body["results"].clone()
    };
    let before = score().await;

    let cases = cases();
    assert!(cases.len() >= 40, "the battery has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut request = server
            .client
            .request(case.method.clone(), server.url(case.path))
            .body(case.body.clone());
        if let Some(value) = case.content_type {
            request = request.header(CONTENT_TYPE, value);
        }
        if let Some(value) = &case.auth {
            request = request.header(AUTHORIZATION, value);
        }
        let sent = request.send().await;
        let (status, _, body) = read(sent.unwrap_or_else(|e| panic!("{}: {e:?}", case.name))).await;
        let message = error_message(&body);
        let named = message.to_lowercase().contains(&case.needle.to_lowercase());
        let shaped = if case.path == "/rerank" {
            body["error_type"].is_string()
        } else {
            body["id"].is_string()
        };
        if status != case.status || !named || !shaped {
            failures.push(format!(
                "{}: expected {} naming {:?}, got {status} {body}",
                case.name, case.status, case.needle
            ));
        }
        assert!(
            status < 500,
            "{}: a 5xx for client input: {body}",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Still up, with unchanged scores, and every refusal counted.
    assert_eq!(score().await, before);
    let metrics = server.metrics().await;
    assert!(
        !metrics.contains("status=\"5"),
        "no 5xx may be counted: {metrics}"
    );
}
