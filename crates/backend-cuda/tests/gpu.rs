//! The CUDA backend on a real GPU (feature `cuda`): the op parity kit against the
//! f64 oracles, and the model parity on the tiny fixtures, in both arithmetics
//! (W8A8 against the W8A8 reference, W8A16 against W8A32). On a
//! machine without a CUDA driver or NVRTC each test prints why it is skipped;
//! there, `CudaBackend::new` must return that reason as an error, not panic.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use tessera_backend::parity::Tolerances;
use tessera_backend_cuda::{cuda_available, Arithmetic, CudaBackend};
use tessera_engine::Reranker;
use tessera_gguf::GgufFile;
use tessera_tests::{check_reference, check_w8a8, fixture, Reference, MODEL_FIXTURES};

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

/// The GPU in W8A16, or `None` (printed) when it has no f16 tensor cores.
fn gpu_w8a16() -> Option<CudaBackend> {
    match gpu()?.with_arithmetic(Arithmetic::W8A16) {
        Ok(backend) => Some(backend),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

tessera_backend::parity_tests! {
    every_op_on_the_gpu: gpu(), Tolerances::W8A8;
    every_op_on_the_gpu_in_w8a16: gpu_w8a16(), Tolerances::W8A16;
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

/// As the emulated W8A16 model parity (crates/cuda-emulated/tests/model_parity.rs),
/// with the same bounds, on the GPU's own tensor cores.
#[test]
fn gpu_w8a16_scores_match_the_w8a32_reference_on_every_fixture() {
    let Some(backend) = gpu() else { return };
    if let Err(why) = backend.with_arithmetic(Arithmetic::W8A16) {
        println!("skipped: {why}");
        return;
    }
    for stem in MODEL_FIXTURES {
        let backend = CudaBackend::new(0)
            .and_then(|b| b.with_arithmetic(Arithmetic::W8A16))
            .expect("checked above");
        let file =
            Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"));
        let reranker = Reranker::load(backend, &file, None).expect("fixture loads");
        check_reference(
            &format!("{stem} w8a16"),
            &reranker,
            stem,
            Reference::W8A32,
            (5e-3, 1e-3),
            true,
        );
    }
}

/// The wgmma probe (kernels/wgmma_probe.cu) on an sm_90 GPU, in both shared
/// memory layouts: the hardware's product against f64. The emulated test runs
/// the same probe; agreement here is what says the emulator reads the PTX
/// ISA's wgmma layouts, descriptors and async groups as the hardware does.
#[test]
fn wgmma_probe_on_the_gpu_matches_the_product_in_both_layouts() {
    use tessera_backend_cuda::probe::{wgmma_probe, WgmmaLayout};
    use tessera_backend_cuda::Device;
    let Some(backend) = gpu() else {
        return;
    };
    let device = backend.device();
    let cc = device.identity().compute_capability;
    if cc != "9.0" {
        println!("skipped: wgmma needs compute capability 9.0 (sm_90a); this GPU is {cc}");
        return;
    }
    for layout in [WgmmaLayout::Interleave, WgmmaLayout::Swizzle128] {
        for (k, seed) in [(64, 1), (128, 2), (1024, 3)] {
            let result =
                wgmma_probe(device, "wgmma_probe_64x64", k, layout, seed).expect("probe runs");
            let error = result.relative_error();
            println!("wgmma probe {layout:?} k {k}: relative error {error:.2e}");
            // The tensor cores may truncate inside each k16 sum: allow a few
            // f32 ulps per instruction.
            assert!(error < 1e-5, "{layout:?} k {k}: {error:.2e}");
        }
    }
}

/// The wgmma W8A16 GEMM (a tuner candidate on sm_90 only) through the whole
/// op kit on an sm_90 GPU, each configuration unsplit and split two ways: what
/// the emulated kit checks, on the hardware's own wgmma, swizzle and
/// asynchronous groups (named `every_op_…` so gpu-check's parity step runs it).
#[test]
fn every_op_on_the_gpu_with_the_wgmma_gemm() {
    use tessera_backend_cuda::ops::w8a16::{GemmChoice, GEMM_CONFIGS};
    use tessera_backend_cuda::GemmPolicy;
    let Some(backend) = gpu_w8a16() else {
        return;
    };
    let identity = tessera_backend_cuda::Device::identity(backend.device());
    if !identity.has_wgmma() {
        let cc = identity.compute_capability;
        println!("skipped: wgmma needs compute capability 9.0 (sm_90a); this GPU is {cc}");
        return;
    }
    drop(backend);
    for config in GEMM_CONFIGS.iter().filter(|c| c.wgmma) {
        for split_k in [1, 2] {
            let choice = GemmChoice { config, split_k };
            println!("GEMM {choice}");
            let backend = gpu_w8a16()
                .expect("checked above")
                .with_gemm_policy(GemmPolicy::Fixed(choice));
            tessera_backend::parity::assert_all_pass(
                &backend,
                Tolerances::W8A16,
                tessera_backend::parity::SEED,
            );
        }
    }
}

/// The wgmma attention (v4, a tuner candidate on sm_90 only) through the whole
/// op kit on an sm_90 GPU: the emulated kit's check on the hardware's own
/// wgmma, TMA and mbarriers (named `every_op_…` so gpu-check's parity step
/// runs it).
#[test]
fn every_op_on_the_gpu_with_the_wgmma_attention() {
    use tessera_backend_cuda::ops::attention::AttentionKernel;
    let Some(backend) = gpu_w8a16() else {
        return;
    };
    let backend = backend.with_attention(AttentionKernel::Wgmma);
    if backend.attention_kernel(128) != AttentionKernel::Wgmma {
        let cc = tessera_backend_cuda::Device::identity(backend.device()).compute_capability;
        println!("skipped: wgmma needs compute capability 9.0 (sm_90a); this GPU is {cc}");
        return;
    }
    tessera_backend::parity::assert_all_pass(
        &backend,
        Tolerances::W8A16,
        tessera_backend::parity::SEED,
    );
}
