//! The op parity kit (`tessera_backend::parity`) on the CUDA kernels executed by
//! the emulator, both Q8_0 matmul paths of W8A8 and the W8A16 arithmetic,
//! against the f64 oracles at the GPU tolerances.

use tessera_backend::parity::Tolerances;
use tessera_backend_cuda::{KernelBackend, MatmulPath};
use tessera_cuda_emulated::{emulated_w8a16, EmulatedDevice};

tessera_backend::parity_tests! {
    every_op_emulated_with_the_mma_matmul:
        Some(KernelBackend::with_device(EmulatedDevice::new(MatmulPath::Mma))), Tolerances::W8A8;
    every_op_emulated_with_the_dp4a_matmul:
        Some(KernelBackend::with_device(EmulatedDevice::new(MatmulPath::Dp4a))), Tolerances::W8A8;
    // f16 tensor-core matmuls, f16 activation rows, the W8A32 score head: the
    // same oracles at a much tighter tolerance.
    every_op_emulated_in_w8a16: Some(emulated_w8a16()), Tolerances::W8A16;
}

/// Every W8A16 GEMM configuration a tuning table may name, unsplit and split
/// two and three ways (k shares of one stage, and empty ones, included), passes
/// the kit's matmul cases: what `tessera tune` picks among is all correct.
#[test]
fn every_w8a16_gemm_configuration_and_split_passes_the_kit() {
    use tessera_backend::parity::run_all;
    use tessera_backend_cuda::ops::w8a16::{GemmChoice, GEMM_CONFIGS};
    use tessera_backend_cuda::GemmPolicy;
    let mut failures = Vec::new();
    let (mut checked, mut runs) = (0, 0);
    for config in GEMM_CONFIGS {
        let splits: &[usize] = if config.grouped { &[1, 2, 3] } else { &[1] };
        for &split_k in splits {
            let choice = GemmChoice { config, split_k };
            let backend = emulated_w8a16().with_gemm_policy(GemmPolicy::Fixed(choice));
            runs += 1;
            for report in run_all(&backend, Tolerances::W8A16, tessera_backend::parity::SEED) {
                let matmul = ["matmul", "norm_matmuls", "matmul_add", "swiglu_mm_add"];
                if matmul.contains(&report.op) && report.case.starts_with("Q8_0") {
                    checked += 1;
                    if !report.passed() {
                        failures.push(format!("{choice}: {report}"));
                    }
                }
            }
        }
    }
    println!("{checked} Q8_0 cases");
    assert!(failures.is_empty(), "failed:\n{}", failures.join("\n"));
    // 15 Q8_0 cases per run: 6 matmuls, 3 of each fused op; 8 grouped
    // configurations (4 v3, 4 wgmma) × 3 splits, and v2.
    assert_eq!(runs, 8 * 3 + 1);
    assert_eq!(checked, 15 * runs);
}

/// The v3 and wgmma GEMMs check the dynamic shared memory they were given against their
/// layout: a launch plan one byte short fails instead of writing past it, and
/// the plan's own size (`GemmConfig::shared_bytes`) passes that check.
#[test]
fn a_w8a16_gemm_given_too_little_shared_memory_fails_the_launch() {
    use tessera_backend_cuda::device::TensorMap;
    use tessera_backend_cuda::ops::w8a16::GEMM_CONFIGS;
    use tessera_backend_cuda::{Device, KernelArg, Launch};
    let device = EmulatedDevice::new(MatmulPath::Mma);
    for config in GEMM_CONFIGS.iter().filter(|c| c.grouped) {
        let launch = |shared: usize| Launch {
            module: config.module,
            kernel: config.kernel,
            grid: [1, 1, 1],
            block: [config.threads(), 1, 1],
            shared_bytes: shared as u32,
            // rows = 0 and n = 0: nothing to read or write once the check passes.
            args: [
                vec![KernelArg::Ptr(0), KernelArg::Ptr(0)],
                vec![KernelArg::U32(0), KernelArg::U32(32), KernelArg::U32(0)],
                [
                    KernelArg::Ptr(0),
                    KernelArg::Ptr(0),
                    KernelArg::Ptr(0),
                    KernelArg::U32(0),
                ]
                .repeat(3),
                vec![KernelArg::Ptr(0), KernelArg::U32(0)],
                // The TMA kernels' four tensor maps (never read: no tile).
                vec![KernelArg::TensorMap(TensorMap([0; 128])); if config.tma { 4 } else { 0 }],
                // The persistent kernel's split-K factor.
                vec![KernelArg::U32(1); usize::from(config.persistent)],
            ]
            .concat(),
        };
        let short = device
            .launch(&launch(config.shared_bytes() - 1))
            .unwrap_err();
        assert!(
            short.to_string().contains("less dynamic shared memory"),
            "{}: {short}",
            config.name
        );
        device.launch(&launch(config.shared_bytes())).unwrap();
    }
}

/// A device that lets a block opt in to only 99 KiB of shared memory (sm_86,
/// sm_89) runs every W8A16 op: the built-in choice falls back to the GEMM
/// configurations that fit (64 × 128, v2) and attention to v2, and the device
/// refuses anything larger, as the CUDA driver would.
#[test]
fn w8a16_on_a_99_kib_device_falls_back_to_what_fits() {
    use tessera_backend::parity::assert_all_pass;
    use tessera_backend_cuda::ops::attention::AttentionKernel;
    use tessera_backend_cuda::Arithmetic;
    let small = || EmulatedDevice::new(MatmulPath::Mma).with_max_shared_per_block(99 * 1024);
    let backend = KernelBackend::with_device(small())
        .with_arithmetic(Arithmetic::W8A16)
        .expect("mma device");
    assert_eq!(
        backend.gemm_choice(4096, &[2560], 9728).config.name,
        "64x128"
    );
    assert_eq!(backend.attention_kernel(128), AttentionKernel::Mma);
    assert_eq!(backend.attention_kernel(64), AttentionKernel::F16Kv);
    assert_all_pass(&backend, Tolerances::W8A16, tessera_backend::parity::SEED);
    // What does not fit is refused by the device, not run.
    use tessera_backend_cuda::ops::w8a16::{GemmChoice, GemmConfig};
    use tessera_backend_cuda::GemmPolicy;
    let forced = KernelBackend::with_device(small())
        .with_arithmetic(Arithmetic::W8A16)
        .expect("mma device")
        .with_gemm_policy(GemmPolicy::Fixed(GemmChoice {
            config: GemmConfig::named("256x128").unwrap(),
            split_k: 1,
        }));
    let reports = tessera_backend::parity::run_all(&forced, Tolerances::W8A16, 7);
    let refused = reports
        .iter()
        .filter(|r| {
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("this device allows"))
        })
        .count();
    assert!(
        refused > 0,
        "a 157 KiB launch on a 99 KiB device must be refused"
    );
}
