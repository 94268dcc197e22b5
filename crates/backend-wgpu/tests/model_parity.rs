//! The whole reranker on wgpu against the Hugging Face reference on every
//! fixture: scores within 2e-3 of W8A32 (the shaders compute in f32 with Q8_0
//! weights), the same ranking, and the same scores with the prefix cache.

mod common;

use std::sync::Arc;

use tessera_backend_wgpu::{WgpuBackend, WgpuOptions};
use tessera_engine::Reranker;
use tessera_gguf::GgufFile;
use tessera_tests::{case_scores, fixture, load_reference, ranking, MODEL_FIXTURES};

const SCORE_TOLERANCE: f64 = 2e-3;

fn load(backend: WgpuBackend, stem: &str) -> Reranker<WgpuBackend> {
    let file = Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
    Reranker::load(backend, &file, None).expect("fixture loads")
}

#[test]
fn scores_match_the_reference_within_tolerance() {
    for stem in MODEL_FIXTURES {
        let test = format!("model_parity_{stem}");
        let Some(backend) = common::backend(&test, WgpuOptions::default()) else {
            return;
        };
        let reranker = load(backend, stem);
        let reference = load_reference(stem);
        let mut worst = 0.0f64;
        for case in &reference.cases {
            // Twice: the second call takes the query prefix from the cache.
            for pass in ["computed prefix", "cached prefix"] {
                let got = case_scores(&reranker, case);
                let want: Vec<f64> = case.pairs.iter().map(|p| p.w8a32).collect();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let diff = (g - w).abs();
                    worst = worst.max(diff);
                    assert!(
                        diff <= SCORE_TOLERANCE,
                        "{stem} ({pass}): query {:?} doc {i}: score {g:.6}, W8A32 {w:.6} (|Δ| = {diff:.2e})",
                        case.query
                    );
                }
                assert_eq!(
                    ranking(&got),
                    ranking(&want),
                    "{stem} ({pass}): ranking of query {:?}",
                    case.query
                );
            }
        }
        println!("{stem}: worst |score − W8A32 reference| on wgpu = {worst:.2e}");
    }
}

#[test]
fn a_pairs_score_does_not_depend_on_its_batch() {
    let Some(backend) = common::backend("batch_independence", WgpuOptions::default()) else {
        return;
    };
    let reranker = load(backend, "tiny-q8");
    let reference = load_reference("tiny-q8");
    let all: Vec<&[u32]> = reference
        .cases
        .iter()
        .flat_map(|c| c.pairs.iter().map(|p| p.ids.as_slice()))
        .collect();
    let together = reranker.engine().score(&all).expect("batch");
    for (i, seq) in all.iter().enumerate() {
        let alone = reranker.engine().score(&[seq]).expect("single")[0];
        // Each output is one workgroup's fixed-order sum: batch-independent.
        assert!(
            (alone.yes_logit - together[i].yes_logit).abs() <= 1e-5
                && (alone.no_logit - together[i].no_logit).abs() <= 1e-5,
            "pair {i}: alone {alone:?}, in a batch {:?}",
            together[i]
        );
    }
}

#[test]
fn a_batch_larger_than_one_binding_is_split_into_passes() {
    let Some(whole) = common::backend("split_whole", WgpuOptions::default()) else {
        return;
    };
    // 16 KiB activation buffers: 64 tokens of the tiny model's 64-wide rows.
    let capped = WgpuOptions {
        max_activation_bytes: Some(16 << 10),
        ..WgpuOptions::default()
    };
    let Some(small) = common::backend("split_small", capped) else {
        return;
    };
    let whole = load(whole, "tiny-q8");
    let small = load(small, "tiny-q8");
    let limit = small.engine().max_pass_tokens().expect("wgpu has a limit");
    assert!(limit < 100, "the cap must bind: {limit} tokens per pass");

    let prefix = small
        .prompt()
        .query_prefix(None, "how do I reset my password")
        .expect("prefix");
    let docs: Vec<Vec<u32>> = ["short", "a somewhat longer document about passwords", "x"]
        .iter()
        .cycle()
        .take(12)
        .map(|d| {
            let mut ids = small.prompt().document_ids(d).expect("ids");
            ids.extend_from_slice(small.prompt().suffix_ids());
            ids
        })
        .collect();
    let total: usize = docs.iter().map(Vec::len).sum();
    assert!(
        total > limit,
        "{total} document tokens must not fit one pass of {limit}"
    );
    let group = tessera_engine::PrefixGroup {
        prefix: &prefix,
        documents: docs.iter().map(Vec::as_slice).collect(),
    };
    let groups = [group.clone(), group];
    let split = small
        .engine()
        .score_groups(&groups)
        .expect("split into passes");
    let one = whole.engine().score_groups(&groups).expect("one pass");
    assert_eq!(split.len(), 2);
    for (a, b) in split.iter().flatten().zip(one.iter().flatten()) {
        assert!(
            (a.yes_logit - b.yes_logit).abs() <= 1e-5 && (a.no_logit - b.no_logit).abs() <= 1e-5,
            "{a:?} vs {b:?}"
        );
    }
    assert_eq!(split.iter().flatten().count(), 24);
    // A batch the engine may not split (plain sequences) fails cleanly instead.
    let long: Vec<u32> = docs.concat();
    assert!(small.engine().score(&[&long]).is_err());
}
