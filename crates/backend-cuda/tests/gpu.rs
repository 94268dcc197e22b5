//! The CUDA backend on a real GPU (feature `cuda`): the op parity kit against the
//! f64 oracles, and the model parity on the tiny fixtures (W8A8 reference). On a
//! machine without a CUDA driver or NVRTC each test prints why it is skipped;
//! there, `CudaBackend::new` must return that reason as an error, not panic.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use tessera_backend::parity::{run_all, Tolerances};
use tessera_backend_cuda::{cuda_available, CudaBackend};
use tessera_engine::Reranker;
use tessera_gguf::GgufFile;
use tessera_tests::{check_w8a8, fixture, MODEL_FIXTURES};

fn gpu() -> Option<CudaBackend> {
    if let Err(why) = cuda_available() {
        println!("skipped: {why}");
        return None;
    }
    match CudaBackend::new(0) {
        Ok(backend) => Some(backend),
        Err(e) => panic!("a CUDA driver and NVRTC are present, but: {e}"),
    }
}

#[test]
fn without_a_driver_new_is_an_error_not_a_panic() {
    if let Err(why) = cuda_available() {
        let err = CudaBackend::new(0).err().expect("no driver, so no backend");
        assert_eq!(err.to_string(), why.to_string());
        println!("no CUDA here, as expected: {err}");
    } else {
        println!("skipped: this machine has a CUDA driver");
    }
}

#[test]
fn every_op_matches_the_oracles_on_the_gpu() {
    let Some(backend) = gpu() else { return };
    println!("device: {}", tessera_backend::Backend::name(&backend));
    let reports = run_all(&backend, Tolerances::W8A8, 7);
    for r in &reports {
        println!("{r}");
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.to_string())
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn gpu_scores_match_the_w8a8_reference_on_every_fixture() {
    if gpu().is_none() {
        return;
    }
    for stem in MODEL_FIXTURES {
        let backend = CudaBackend::new(0).expect("checked above");
        let file =
            Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
        let reranker = Reranker::load(backend, &file, None).expect("fixture loads");
        check_w8a8(stem, &reranker, stem, false);
    }
}
