//! Prefix sharing and the cross-request prefix cache change nothing but the
//! work done: scores equal those of full, unshared sequences (≤ 1e-5) on every
//! fixture, and the counters show the prefix computed once.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_engine::{PrefixGroup, RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_model::TruncationSide;
use tessera_tests::{fixture, load_reference, MODEL_FIXTURES};

const EXACT: f32 = 1e-5;

fn reranker(stem: &str) -> Reranker<CpuBackend> {
    let file = Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture"));
    Reranker::load(CpuBackend::new(), &file, None).expect("loads")
}

/// Scores `(prefix, docs)` both ways and asserts they agree.
fn assert_shared_equals_unshared(
    r: &Reranker<CpuBackend>,
    prefix: &[u32],
    docs: &[Vec<u32>],
    what: &str,
) {
    let group = PrefixGroup {
        prefix,
        documents: docs.iter().map(Vec::as_slice).collect(),
    };
    let shared = r.engine().score_groups(&[group]).expect("shared").remove(0);
    let full: Vec<Vec<u32>> = docs.iter().map(|d| [prefix, d].concat()).collect();
    let refs: Vec<&[u32]> = full.iter().map(Vec::as_slice).collect();
    let unshared = r.engine().score(&refs).expect("unshared");
    for (i, (a, b)) in shared.iter().zip(&unshared).enumerate() {
        assert!(
            (a.probability() - b.probability()).abs() <= EXACT
                && (a.logit_diff() - b.logit_diff()).abs() <= EXACT,
            "{what}: doc {i}: shared {a:?} vs unshared {b:?}"
        );
    }
}

fn doc_with_suffix(r: &Reranker<CpuBackend>, text: &str) -> Vec<u32> {
    let mut ids = r.prompt().document_ids(text).expect("doc");
    ids.extend_from_slice(r.prompt().suffix_ids());
    ids
}

#[test]
fn shared_prefix_scores_equal_full_sequences_on_every_fixture() {
    for stem in MODEL_FIXTURES {
        let r = reranker(stem);
        for case in load_reference(stem).cases {
            let prefix = r
                .prompt()
                .query_prefix(case.instruction.as_deref(), &case.query)
                .expect("prefix");
            let docs: Vec<Vec<u32>> = case
                .documents
                .iter()
                .map(|d| doc_with_suffix(&r, d))
                .collect();
            assert_shared_equals_unshared(&r, &prefix, &docs, stem);
            // And against the committed reference sequences themselves.
            for (d, p) in docs.iter().zip(&case.pairs) {
                assert_eq!([prefix.as_slice(), d].concat(), p.ids);
            }
        }
    }
}

#[test]
fn one_token_documents_and_different_instructions() {
    let r = reranker("tiny-q8-untied");
    let one_token = r.prompt().document_ids("a").expect("doc");
    assert_eq!(one_token.len(), 1, "\" a\" is one token");
    let docs = vec![
        doc_with_suffix(&r, "a"),
        r.prompt().suffix_ids().to_vec(),
        doc_with_suffix(&r, "b c"),
    ];
    for instruction in [
        None,
        Some("Find the answer"),
        Some("Déterminez si le document répond à la requête"),
    ] {
        let prefix = r
            .prompt()
            .query_prefix(instruction, "what is it?")
            .expect("prefix");
        assert_shared_equals_unshared(&r, &prefix, &docs, &format!("instruction {instruction:?}"));
    }
}

#[test]
fn documents_truncated_at_the_context_limit() {
    let r = reranker("tiny-q8");
    let long: String = (0..9000).map(|i| format!("t{} ", i % 31)).collect();
    let prefix = r
        .prompt()
        .query_prefix(None, "long documents")
        .expect("prefix");
    let doc_ids = r.prompt().document_ids(&long).expect("doc");
    let mut docs = Vec::new();
    for side in [TruncationSide::Right, TruncationSide::Left] {
        let pair = r
            .prompt()
            .pair(&prefix, &doc_ids, Some(side))
            .expect("truncates");
        assert_eq!(pair.ids.len(), r.prompt().max_pair_tokens());
        docs.push(pair.ids[pair.prefix_len..].to_vec());
    }
    docs.push(doc_with_suffix(&r, "short"));
    assert_shared_equals_unshared(&r, &prefix, &docs, "truncated");
}

#[test]
fn a_query_repeated_after_eviction_scores_the_same() {
    let r = reranker("tiny-q8");
    let docs = ["alpha beta", "gamma", "delta epsilon zeta"];
    let options = RerankOptions::default();
    // Room for either query's prefix, not both.
    let len = |q: &str| r.prompt().query_prefix(None, q).expect("prefix").len();
    let longest = len("first query").max(len("a second, different query"));
    r.engine()
        .set_prefix_cache_bytes(longest * r.engine().kv_bytes_per_token());

    let first = r.rerank("first query", &docs, &options).expect("rerank");
    let before = r.engine().prefix_cache_stats();
    let again = r.rerank("first query", &docs, &options).expect("rerank");
    let after_hit = r.engine().prefix_cache_stats();
    assert_eq!(
        after_hit.hits,
        before.hits + 1,
        "the repeated query is a cache hit"
    );
    assert_eq!(first, again);

    r.rerank("a second, different query", &docs, &options)
        .expect("rerank");
    let after_other = r.engine().prefix_cache_stats();
    assert!(
        after_other.evictions > after_hit.evictions,
        "the first prefix was evicted"
    );
    let third = r.rerank("first query", &docs, &options).expect("rerank");
    assert_eq!(
        r.engine().prefix_cache_stats().misses,
        after_other.misses + 1,
        "recomputed after eviction"
    );
    assert_eq!(first, third);
    assert!(
        r.engine().prefix_cache_stats().bytes <= r.engine().prefix_cache_stats().capacity_bytes
    );
}

#[test]
fn the_prefix_is_computed_once_per_request_and_extends_the_pinned_system_prompt() {
    let r = reranker("tiny-q8");
    r.engine().set_prefix_cache_bytes(0);
    let system = r.prompt().system_ids().len();
    let prefix = r
        .prompt()
        .query_prefix(None, "what is computed")
        .expect("prefix");
    let docs: Vec<Vec<u32>> = ["one", "two words", "three more words"]
        .iter()
        .map(|d| doc_with_suffix(&r, d))
        .collect();
    let before = r.engine().prefix_cache_stats();
    let group = PrefixGroup {
        prefix: &prefix,
        documents: docs.iter().map(Vec::as_slice).collect(),
    };
    r.engine().score_groups(&[group]).expect("scores");
    let after = r.engine().prefix_cache_stats();
    let doc_tokens: usize = docs.iter().map(Vec::len).sum();
    assert_eq!(
        after.computed_tokens - before.computed_tokens,
        (prefix.len() - system + doc_tokens) as u64,
        "only the query part of the prefix and the documents are computed"
    );
    assert_eq!(after.reused_tokens - before.reused_tokens, system as u64);
}

#[test]
fn billing_counts_full_pairs_whether_or_not_the_cache_served_them() {
    let r = reranker("tiny-q8");
    let docs = ["one", "two words"];
    let cold = r
        .rerank("billing", &docs, &RerankOptions::default())
        .expect("rerank");
    let warm = r
        .rerank("billing", &docs, &RerankOptions::default())
        .expect("rerank");
    let prefix = r
        .prompt()
        .query_prefix(None, "billing")
        .expect("prefix")
        .len();
    let expected: usize = docs
        .iter()
        .map(|d| {
            prefix + r.prompt().document_ids(d).expect("doc").len() + r.prompt().suffix_ids().len()
        })
        .sum();
    assert_eq!(cold.total_tokens, expected);
    assert_eq!(warm.total_tokens, expected);
}
