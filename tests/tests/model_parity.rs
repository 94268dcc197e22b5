//! The CPU reference runtime against the Hugging Face transformers reference on
//! every fixture: token ids, scores (W8A32 / fp32 within 2e-3) and ranking.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_tests::{fixture, load_reference, ranking, ModelReference, MODEL_FIXTURES};

const SCORE_TOLERANCE: f64 = 2e-3;

fn load(stem: &str) -> (Reranker<CpuBackend>, ModelReference) {
    let file = Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
    let reranker = Reranker::load(CpuBackend::new(), &file, None).expect("fixture loads");
    (reranker, load_reference(stem))
}

#[test]
fn prompts_tokenize_exactly_like_the_reference() {
    for stem in MODEL_FIXTURES {
        let (reranker, reference) = load(stem);
        let prompt = reranker.prompt();
        for case in &reference.cases {
            let prefix = prompt
                .query_prefix(case.instruction.as_deref(), &case.query)
                .expect("prefix");
            for (doc, pair) in case.documents.iter().zip(&case.pairs) {
                let built = prompt
                    .pair(&prefix, &prompt.document_ids(doc).expect("doc"), None)
                    .expect("fits");
                assert_eq!(
                    built.ids, pair.ids,
                    "{stem}: ids of query {:?} doc {doc:?}",
                    case.query
                );
                assert_eq!(built.prefix_len, pair.prefix_len, "{stem}: prefix length");
            }
        }
    }
}

#[test]
fn scores_match_the_reference_within_tolerance() {
    for stem in MODEL_FIXTURES {
        let (reranker, reference) = load(stem);
        let mut worst = 0.0f64;
        for case in &reference.cases {
            let docs: Vec<&str> = case.documents.iter().map(String::as_str).collect();
            let options = RerankOptions {
                instruction: case.instruction.clone(),
                ..RerankOptions::default()
            };
            let out = reranker
                .rerank(&case.query, &docs, &options)
                .expect("rerank");
            let got: Vec<f64> = out
                .documents
                .iter()
                .map(|d| f64::from(d.relevance))
                .collect();
            let want: Vec<f64> = case.pairs.iter().map(|p| p.w8a32).collect();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let diff = (g - w).abs();
                worst = worst.max(diff);
                assert!(
                    diff <= SCORE_TOLERANCE,
                    "{stem}: query {:?} doc {i}: score {g:.6}, reference W8A32 {w:.6} (|Δ| = {diff:.2e})",
                    case.query
                );
            }
            assert_eq!(
                ranking(&got),
                ranking(&want),
                "{stem}: ranking of query {:?}",
                case.query
            );
            if stem == "tiny-f32" {
                for (g, p) in got.iter().zip(&case.pairs) {
                    assert!(
                        (g - p.fp32).abs() <= SCORE_TOLERANCE,
                        "{stem}: fp32 reference {} vs {g}",
                        p.fp32
                    );
                }
            }
            let tokens: usize = case.pairs.iter().map(|p| p.ids.len()).sum();
            assert_eq!(
                out.total_tokens, tokens,
                "{stem}: billed tokens are the full pair lengths"
            );
        }
        println!("{stem}: worst |score − W8A32 reference| = {worst:.2e}");
    }
}

#[test]
fn a_pairs_score_does_not_depend_on_its_batch() {
    let (reranker, reference) = load("tiny-q8");
    let all: Vec<&[u32]> = reference
        .cases
        .iter()
        .flat_map(|c| c.pairs.iter().map(|p| p.ids.as_slice()))
        .collect();
    let together = reranker.engine().score(&all).expect("batch");
    let reversed: Vec<&[u32]> = all.iter().rev().copied().collect();
    let together_reversed = reranker.engine().score(&reversed).expect("batch");
    for (i, seq) in all.iter().enumerate() {
        let alone = reranker.engine().score(&[seq]).expect("single")[0];
        let in_batch = together[i];
        let in_reversed = together_reversed[all.len() - 1 - i];
        for other in [in_batch, in_reversed] {
            assert!(
                (alone.probability() - other.probability()).abs() <= 1e-6
                    && (alone.yes_logit - other.yes_logit).abs() <= 1e-6,
                "pair {i}: alone {alone:?}, in a batch {other:?}"
            );
        }
    }
}

#[test]
fn reference_scores_are_spread_enough_to_test_ranking() {
    // Guards the fixtures themselves: a case whose scores sit together would make
    // the ranking assertion meaningless.
    for stem in MODEL_FIXTURES {
        let reference = load_reference(stem);
        assert!(reference.cases.len() >= 4, "{stem}: too few cases");
        for case in &reference.cases {
            let scores: Vec<f64> = case.pairs.iter().map(|p| p.w8a32).collect();
            for (i, a) in scores.iter().enumerate() {
                for b in &scores[i + 1..] {
                    assert!(
                        (a - b).abs() >= 0.01,
                        "{stem}: scores {a} and {b} too close"
                    );
                }
            }
        }
    }
}
