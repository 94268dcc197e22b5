//! The fast CPU path (int8 activations) against the fixtures' W8A8 reference
//! (every Q8_0 matmul input, score head included, quantised as ggml does), on
//! every fixture and every instruction set this CPU runs: scores within max
//! 1.5e-2 / mean 2e-3, and the reference's ranking wherever its scores are
//! clearly apart. Tiny random models amplify single rounding flips, so the
//! tolerances are loose here; the op-level checks (fast_kernels) are the precise ones.

use std::sync::Arc;

use tessera_backend_cpu::{CpuBackend, Isa, Precision};
use tessera_engine::Reranker;
use tessera_gguf::GgufFile;
use tessera_tests::{check_w8a8, fixture, MODEL_FIXTURES};

#[test]
fn fast_path_matches_the_w8a8_reference_on_every_fixture() {
    for isa in Isa::ALL {
        if !isa.is_available() {
            println!("skipped: this CPU does not run the {} kernels", isa.name());
            continue;
        }
        for stem in MODEL_FIXTURES {
            check_fixture(stem, isa);
        }
    }
}

fn check_fixture(stem: &str, isa: Isa) {
    let file = Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
    let backend = CpuBackend::with_isa(Precision::Fast, Some(2), isa).expect("available");
    let reranker = Reranker::load(backend, &file, None).expect("fixture loads");
    check_w8a8(&format!("{stem} ({})", isa.name()), &reranker, stem, true);
}
