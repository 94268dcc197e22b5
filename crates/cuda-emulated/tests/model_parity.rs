//! End to end on the tiny fixtures through the emulated CUDA kernels: the engine's
//! whole forward pass (prefix K/V cache included) on `EmulatedCudaBackend`,
//! scores within max 1.5e-2 / mean 2e-3 of each pair's W8A8 reference (int8
//! activations into every Q8_0 matmul and the score head, as the kernels compute).
//! Tiny random models amplify single rounding flips, so these bounds are loose;
//! the op-level parity cases are the precise checks.

use std::sync::Arc;

use tessera_cuda_emulated::emulated;
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_tests::{fixture, load_reference, MODEL_FIXTURES};

const MAX_ABS: f64 = 1.5e-2;
const MEAN_ABS: f64 = 2e-3;

#[test]
fn emulated_kernels_match_the_w8a8_reference_on_every_fixture() {
    for stem in MODEL_FIXTURES {
        let file =
            Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
        let reranker = Reranker::load(emulated(), &file, None).expect("fixture loads");
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
            for (i, (doc, pair)) in out.documents.iter().zip(&case.pairs).enumerate() {
                let diff = (f64::from(doc.relevance) - pair.w8a8).abs();
                assert!(
                    diff <= MAX_ABS,
                    "{stem}: query {:?} doc {i}: score {:.6}, W8A8 reference {:.6}",
                    case.query,
                    doc.relevance,
                    pair.w8a8
                );
                worst = worst.max(diff);
                sum += diff;
                count += 1;
            }
        }
        let mean = sum / count as f64;
        println!("{stem}: {count} pairs, |score − W8A8| max {worst:.2e}, mean {mean:.2e}");
        assert!(
            mean <= MEAN_ABS,
            "{stem}: mean |Δ| {mean:.2e} > {MEAN_ABS:.0e}"
        );
    }
}
