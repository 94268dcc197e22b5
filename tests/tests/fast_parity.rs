//! The fast CPU path (int8 activations) against the fixtures' W8A8 reference
//! (every Q8_0 matmul input, score head included, quantised as ggml does), on
//! every fixture and every instruction set this CPU runs: scores within max
//! 1.5e-2 / mean 2e-3, and the reference's ranking wherever its scores are
//! clearly apart. Tiny random models amplify single rounding flips, so the
//! tolerances are loose here; the op-level checks (fast_kernels) are the precise ones.

use std::sync::Arc;

use tessera_backend_cpu::{CpuBackend, Isa, Precision};
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_tests::{fixture, load_reference, MODEL_FIXTURES};

const MAX_ABS: f64 = 1.5e-2;
const MEAN_ABS: f64 = 2e-3;

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
    let reference = load_reference(stem);
    let (mut worst, mut sum, mut count) = (0.0f64, 0.0f64, 0usize);
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
        let want: Vec<f64> = case.pairs.iter().map(|p| p.w8a8).collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = (g - w).abs();
            assert!(
                diff <= MAX_ABS,
                "{stem} ({}): query {:?} doc {i}: score {g:.6}, W8A8 reference {w:.6} (|Δ| = {diff:.2e})",
                isa.name(),
                case.query
            );
            worst = worst.max(diff);
            sum += diff;
            count += 1;
        }
        // Ranking: any two documents the reference puts clearly apart keep their order.
        for i in 0..want.len() {
            for j in 0..want.len() {
                if want[i] - want[j] > 2.0 * MAX_ABS {
                    assert!(
                        got[i] > got[j],
                        "{stem} ({}): query {:?}: docs {i} and {j} swapped ({:.4} vs {:.4}; reference {:.4} vs {:.4})",
                        isa.name(),
                        case.query,
                        got[i],
                        got[j],
                        want[i],
                        want[j]
                    );
                }
            }
        }
    }
    let mean = sum / count as f64;
    println!(
        "{stem} ({}): {count} pairs, |score − W8A8| max {worst:.2e}, mean {mean:.2e}",
        isa.name()
    );
    assert!(
        mean <= MEAN_ABS,
        "{stem} ({}): mean |Δ| {mean:.2e} > {MEAN_ABS:.0e}",
        isa.name()
    );
}
