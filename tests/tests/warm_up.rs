//! The startup warm-up pass: runs a full forward pass of filler tokens (ragged
//! last sequence included) and leaves no trace — the same scores afterwards,
//! the prefix cache's counters and entries as they were.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_engine::Reranker;
use tessera_gguf::GgufFile;
use tessera_tests::{case_scores, fixture, load_reference};

#[test]
fn warm_up_runs_a_pass_and_changes_nothing() {
    let file = Arc::new(GgufFile::open(fixture("tiny-q8.gguf")).expect("fixture opens"));
    let reference = load_reference("tiny-q8");
    let reranker = Reranker::load(CpuBackend::new(), &file, None).expect("loads");
    let case = &reference.cases[0];
    let before = case_scores(&reranker, case);
    let stats = reranker.engine().prefix_cache_stats();
    assert!(
        stats.computed_tokens > 0,
        "the first rerank computed tokens"
    );

    // 3 × 512 + 211: several full filler sequences and a ragged one.
    reranker.engine().warm_up(1_747).expect("warm-up pass");
    reranker
        .engine()
        .warm_up(0)
        .expect("an empty warm-up is a no-op");
    assert_eq!(reranker.engine().prefix_cache_stats(), stats);
    assert_eq!(case_scores(&reranker, case), before);
}
