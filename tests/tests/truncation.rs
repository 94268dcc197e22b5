//! Long documents: truncated to the pair context (tail by default, head with
//! Left), reported, or rejected; a maximum-length pair runs through the forward pass.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_engine::{RequestError, RerankError, RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_model::TruncationSide;
use tessera_tests::fixture;

fn reranker() -> Reranker<CpuBackend> {
    let file = Arc::new(GgufFile::open(fixture("tiny-q8.gguf")).expect("fixture"));
    Reranker::load(CpuBackend::new(), &file, None).expect("loads")
}

#[test]
fn a_document_longer_than_the_context_is_truncated_and_reported() {
    let r = reranker();
    let max = r.prompt().max_pair_tokens();
    let long: String = (0..max + 500).map(|i| format!("w{} ", i % 97)).collect();
    let docs = ["short document", long.as_str()];
    let out = r
        .rerank("query", &docs, &RerankOptions::default())
        .expect("rerank");
    assert_eq!(out.truncated(), vec![1]);
    assert_eq!(
        out.documents[1].tokens, max,
        "a truncated pair fills the context exactly"
    );
    assert!(out.documents[0].tokens < max);
    let p = out.documents[1].relevance;
    assert!((0.0..=1.0).contains(&p));

    // Left truncation keeps the tail: a different pair, so (almost surely) a different score.
    let left = RerankOptions {
        truncation: Some(TruncationSide::Left),
        ..RerankOptions::default()
    };
    let out_left = r.rerank("query", &docs, &left).expect("rerank");
    assert_eq!(out_left.documents[1].tokens, max);
    assert_ne!(out_left.documents[1].logits, out.documents[1].logits);

    let reject = RerankOptions {
        truncation: None,
        ..RerankOptions::default()
    };
    match r.rerank("query", &docs, &reject) {
        Err(RerankError::Request(RequestError::DocumentTooLong { index: 1, .. })) => {}
        other => panic!("expected document 1 to be rejected, got {other:?}"),
    }
}

#[test]
fn a_query_that_leaves_no_room_is_an_error() {
    let r = reranker();
    let query: String = (0..r.prompt().max_pair_tokens())
        .map(|i| format!("q{i} "))
        .collect();
    assert!(matches!(
        r.rerank(&query, &["doc"], &RerankOptions::default()),
        Err(RerankError::Request(RequestError::Query(_)))
    ));
}
