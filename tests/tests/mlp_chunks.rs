//! The engine's MLP over many row chunks gives the same scores, bit for bit, as
//! over one: every op is row-wise, so splitting the rows must not change a
//! value. The chunk size is forced down to a few rows so the fixtures' short
//! batches cross many chunk boundaries (ragged last chunk included), on the
//! reference and on the fast path.

use std::sync::Arc;

use tessera_backend_cpu::{CpuBackend, Precision};
use tessera_engine::Reranker;
use tessera_gguf::GgufFile;
use tessera_tests::{case_scores, fixture, load_reference, MODEL_FIXTURES};

#[test]
fn chunked_mlp_scores_equal_one_chunk_scores() {
    for stem in MODEL_FIXTURES {
        let file =
            Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
        let reference = load_reference(stem);
        for precision in [Precision::Reference, Precision::Fast] {
            let backend = CpuBackend::with_options(precision, Some(2)).expect("backend");
            let whole = Reranker::load(backend.clone().with_mlp_chunk_rows(1 << 20), &file, None)
                .expect("loads");
            let chunked =
                Reranker::load(backend.with_mlp_chunk_rows(3), &file, None).expect("loads");
            for case in &reference.cases {
                let a = case_scores(&whole, case);
                let b = case_scores(&chunked, case);
                assert_eq!(a, b, "{stem} {precision}: chunked MLP changed scores");
            }
        }
    }
}
