//! The per-op profile (`tessera_backend::profile`, behind `tessera bench
//! --profile`) on the CPU backend and a fixture: a profiled engine gives the
//! same scores as a plain one, records nothing until asked, and records every
//! op kind of the layer, layer by layer, with the embedding before the first.

use std::sync::Arc;

use tessera_backend::profile::{by_layer, by_op, Profiled, Profiler};
use tessera_backend_cpu::{CpuBackend, Precision};
use tessera_engine::Reranker;
use tessera_gguf::GgufFile;
use tessera_tests::{case_scores, fixture, load_reference};

#[test]
fn a_profiled_pass_times_every_op_by_layer_and_changes_no_score() {
    let stem = "tiny-q8";
    let file = Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
    let reference = load_reference(stem);
    let case = &reference.cases[0];
    let backend = CpuBackend::with_options(Precision::Fast, Some(2)).expect("backend");
    let plain = Reranker::load(backend.clone(), &file, None).expect("loads");
    let profiler = Profiler::new();
    let profiled =
        Reranker::load(Profiled::new(backend, profiler.clone()), &file, None).expect("loads");
    let layers = plain.engine().config().n_layers;

    // Loading ran a pass (the pinned system prompt): nothing was recorded.
    assert!(profiler.finish().is_empty());
    profiler.start();
    let scores = case_scores(&profiled, case);
    let ops = profiler.finish();
    assert_eq!(scores, case_scores(&plain, case));

    let kinds: Vec<&str> = by_op(&ops).iter().map(|(op, _, _)| *op).collect();
    for kind in [
        "embedding",
        "norm + q/k/v",
        "qk-norm + rope",
        "attention",
        "o + residual",
        "norm + gate/up",
        "swiglu + down + residual",
        "score head",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    // Layer 0 holds what runs before the first q/k/v projection.
    let per_layer = by_layer(&ops);
    assert_eq!(per_layer.len(), layers + 1, "{per_layer:?}");
    assert!(per_layer[1..].iter().all(|&s| s > 0.0));
    assert!(ops
        .iter()
        .filter(|o| o.op == "embedding")
        .all(|o| o.layer == 0));
    // Stopped: later work is not recorded.
    case_scores(&profiled, case);
    assert!(profiler.finish().is_empty());
}
