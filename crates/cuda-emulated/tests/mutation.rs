//! Proof that the emulated parity checks bite: kernel files compiled again with a
//! deliberate bug (a `TESSERA_MUTATE_*` macro; see build.rs) must fail the parity
//! cases of their op and of the fused ops that launch the same kernel, and only
//! those.

use tessera_backend::parity::{run_all, Tolerances};
use tessera_backend_cuda::{Arithmetic, KernelBackend, MatmulPath};
use tessera_cuda_emulated::EmulatedDevice;

/// The kit's op names of the Q8_0 matmul kernels' cases: the op itself and the
/// fused ops built on it.
const MATMUL_OPS: &[&str] = &["matmul", "norm_matmuls", "matmul_add", "swiglu_mm_add"];
/// The kit's Q8_0 cases among them: 6 matmul, 3 of each fused op.
const Q8_0_CASES: usize = 6 + 3 + 3 + 3;

/// Runs the kit with `kernel` replaced by its mutant; returns (failed, passed)
/// case names of `ops`, and the failures of other ops.
fn run_mutant(
    kernel: &str,
    mutant: &str,
    ops: &[&str],
    path: MatmulPath,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    run_mutant_in(kernel, mutant, ops, path, Arithmetic::W8A8)
}

/// As `run_mutant`, with the Q8_0 matmuls in `arithmetic` (at its tolerances).
fn run_mutant_in(
    kernel: &str,
    mutant: &str,
    ops: &[&str],
    path: MatmulPath,
    arithmetic: Arithmetic,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let device = EmulatedDevice::new(path).with_kernel_replaced(kernel, mutant);
    let backend = KernelBackend::with_device(device)
        .with_arithmetic(arithmetic)
        .expect("the emulated mma device runs both arithmetics");
    let tolerances = match arithmetic {
        Arithmetic::W8A8 => Tolerances::W8A8,
        Arithmetic::W8A16 => Tolerances::W8A16,
    };
    let reports = run_all(&backend, tolerances, 7);
    let (mut failed, mut passed, mut others) = (Vec::new(), Vec::new(), Vec::new());
    for r in reports {
        let line = r.to_string();
        match (ops.contains(&r.op), r.passed()) {
            (true, false) => failed.push(line),
            (true, true) => passed.push(line),
            (false, false) => others.push(line),
            (false, true) => {}
        }
    }
    println!("{mutant}: {} failing {ops:?} cases", failed.len());
    for line in &failed {
        println!("  {line}");
    }
    (failed, passed, others)
}

#[test]
fn a_wrong_weight_index_in_rms_norm_fails_every_rms_norm_case() {
    let (failed, passed, others) = run_mutant(
        "rms_norm_f32",
        "mutant_rms_norm_index::rms_norm_f32",
        &["rms_norm", "norm_matmuls"],
        MatmulPath::Mma,
    );
    // The fused norm on Q8_0 weights is another kernel (rms_norm_q8_0); with
    // F32 weights norm_matmuls runs rms_norm_f32 and must fail.
    let wrong: Vec<_> = passed
        .iter()
        .filter(|l| l.starts_with("rms_norm ") || l.contains("F32"))
        .collect();
    assert!(wrong.is_empty(), "mutant passed: {wrong:?}");
    assert_eq!(failed.len(), 4 + 3, "{failed:?}");
    assert!(others.is_empty(), "other ops failed: {others:?}");
}

#[test]
fn a_swapped_mma_fragment_register_fails_the_q8_0_matmul_cases() {
    let (failed, passed, others) = run_mutant(
        "matmul_q8_0_mma",
        "mutant_mma_fragment::matmul_q8_0_mma",
        MATMUL_OPS,
        MatmulPath::Mma,
    );
    let q8_passed: Vec<_> = passed.iter().filter(|l| l.contains("Q8_0")).collect();
    assert!(q8_passed.is_empty(), "mutant passed: {q8_passed:?}");
    assert_eq!(
        failed.len(),
        Q8_0_CASES,
        "every Q8_0 matmul case fails: {failed:?}"
    );
    assert!(others.is_empty(), "other ops failed: {others:?}");
}

#[test]
fn reading_a_cp_async_stage_before_its_wait_fails_the_q8_0_matmul_cases() {
    for (kernel, path) in [
        ("matmul_q8_0_mma", MatmulPath::Mma),
        ("matmul_q8_0_dp4a", MatmulPath::Dp4a),
    ] {
        let mutant = format!("mutant_cp_async_wait::{kernel}");
        let (failed, passed, others) = run_mutant(kernel, &mutant, MATMUL_OPS, path);
        assert!(
            passed.iter().all(|l| !l.contains("Q8_0")),
            "mutant passed: {passed:?}"
        );
        assert_eq!(
            failed.len(),
            Q8_0_CASES,
            "every Q8_0 matmul case fails: {failed:?}"
        );
        assert!(others.is_empty(), "other ops failed: {others:?}");
    }
}

#[test]
fn a_missing_barrier_in_attention_fails_the_attention_cases() {
    for kernel in ["attention_f32_d32", "attention_f32_d128"] {
        let mutant = format!("mutant_attention_barrier::{kernel}");
        let (failed, _, others) = run_mutant(kernel, &mutant, &["attention"], MatmulPath::Mma);
        assert!(!failed.is_empty(), "{mutant} passed every case");
        assert!(others.is_empty(), "other ops failed: {others:?}");
    }
}

/// The W8A16 kernels' new instructions each have a mutant the kit must catch:
/// the f16 mma's A fragment (registers 1 and 2 swapped), the byte permutation
/// that builds f16 pairs from int8 weights (the pair swapped), the cp.async
/// pipeline (a stage read one wait too early) and, in v3, the converted-weight
/// double buffer (stage s + 1 converted into the buffer stage s reads). Each
/// runs on every configuration it is compiled into; a one-stage GEMM (k ≤ 64
/// in v3) neither waits nor converts in its loop, so the two pipeline mutants
/// fail the cases with a second stage.
#[test]
fn w8a16_mutants_fail_every_q8_0_matmul_case() {
    use tessera_backend_cuda::ops::w8a16::{GemmChoice, GEMM_CONFIGS};
    use tessera_backend_cuda::GemmPolicy;
    for space in [
        "mutant_f16_fragment",
        "mutant_prmt_selector",
        "mutant_w16_wait",
        "mutant_w16_buffer",
    ] {
        // The mutants of matmul_w8a16.cu (the wgmma kernels have their own:
        // tests/wgmma_gemm.rs).
        for config in GEMM_CONFIGS.iter().filter(|c| c.module == "matmul_w8a16") {
            if space == "mutant_w16_buffer" && !config.grouped {
                continue; // v2 converts into registers
            }
            let kernel = config.kernel;
            let mutant = format!("{space}::{kernel}");
            let device = EmulatedDevice::new(MatmulPath::Mma).with_kernel_replaced(kernel, &mutant);
            let backend = KernelBackend::with_device(device)
                .with_arithmetic(Arithmetic::W8A16)
                .expect("the emulated mma device runs W8A16")
                .with_gemm_policy(GemmPolicy::Fixed(GemmChoice { config, split_k: 1 }));
            let mut failed = 0;
            for r in run_all(&backend, Tolerances::W8A16, 7) {
                let q8 = MATMUL_OPS.contains(&r.op) && r.case.starts_with("Q8_0");
                let stages = case_k(&r.case).div_ceil(if config.grouped { 64 } else { 32 });
                let pipeline = matches!(space, "mutant_w16_wait" | "mutant_w16_buffer");
                let must_fail = q8 && (!pipeline || stages > 1);
                if must_fail {
                    assert!(!r.passed(), "{mutant} on {config:?} passed {r}");
                    failed += 1;
                } else if !q8 {
                    assert!(r.passed(), "{mutant}: another op failed: {r}");
                }
            }
            println!("{mutant}: {failed} Q8_0 cases fail");
            assert!(failed >= 6, "{mutant}: only {failed} cases fail");
        }
    }
}

/// The k of a kit case named `{type}_{rows}x{k}_by_{n}`.
fn case_k(case: &str) -> usize {
    let dims = case.split("_by_").next().unwrap_or_default();
    let k = dims.rsplit('x').next().unwrap_or_default();
    k.parse().unwrap_or(0)
}

/// The tensor-core attention (W8A16 mode) against three classic slips: a row
/// that also sees the key after its own (causal mask), query heads mapped to KV
/// heads round-robin instead of in groups (GQA), and the barrier between
/// writing a K/V tile and reading it missing; in v3 (`attention_f16kv_d*`) also
/// its cp.async double buffer: a tile read before its copies land (wait), and
/// the buffer being filled read instead of the one that landed. Each fails
/// attention cases, and nothing else, in both kernels.
#[test]
fn tensor_core_attention_mutants_fail_the_attention_cases() {
    use tessera_backend_cuda::ops::attention::AttentionKernel;
    let common = [
        "mutant_attention_causal",
        "mutant_attention_gqa",
        "mutant_attention_barrier",
    ];
    let v3 = ["mutant_attention_wait", "mutant_attention_buffer"];
    for (family, which, spaces) in [
        ("attention_mma", AttentionKernel::Mma, &common[..]),
        (
            "attention_f16kv",
            AttentionKernel::F16Kv,
            &[&common[..], &v3[..]].concat()[..],
        ),
    ] {
        for d in [16, 128] {
            let kernel = format!("{family}_d{d}");
            for space in spaces {
                let mutant = format!("{space}::{kernel}");
                let device =
                    EmulatedDevice::new(MatmulPath::Mma).with_kernel_replaced(&kernel, &mutant);
                let backend = KernelBackend::with_device(device)
                    .with_arithmetic(Arithmetic::W8A16)
                    .expect("the emulated mma device runs W8A16")
                    .with_attention(which);
                let (mut failed, mut others) = (0, Vec::new());
                for r in run_all(&backend, Tolerances::W8A16, 7) {
                    match (r.op == "attention", r.passed()) {
                        (true, false) => failed += 1,
                        (false, false) => others.push(r.to_string()),
                        _ => {}
                    }
                }
                println!("{mutant}: {failed} attention cases fail");
                assert!(failed > 0, "{mutant} passed every case");
                assert!(others.is_empty(), "{mutant}: other ops failed: {others:?}");
            }
        }
    }
}
