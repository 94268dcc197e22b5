//! The op parity kit (`tessera_backend::parity`) on the CUDA kernels executed by
//! the emulator, both Q8_0 matmul paths, against the f64 oracles at the GPU
//! tolerances.

use tessera_backend::parity::{run_all, CaseReport, Tolerances};
use tessera_backend_cuda::{KernelBackend, MatmulPath};
use tessera_cuda_emulated::{emulated_w8a16, EmulatedDevice};

fn run(path: MatmulPath) -> Vec<CaseReport> {
    let backend = KernelBackend::with_device(EmulatedDevice::new(path));
    let reports = run_all(&backend, Tolerances::W8A8, 7);
    for r in &reports {
        println!("{r}");
    }
    reports
}

fn assert_all_pass(reports: &[CaseReport]) {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn every_op_matches_the_oracles_with_the_mma_matmul() {
    assert_all_pass(&run(MatmulPath::Mma));
}

#[test]
fn every_op_matches_the_oracles_with_the_dp4a_matmul() {
    assert_all_pass(&run(MatmulPath::Dp4a));
}

/// The W8A16 arithmetic (f16 tensor-core matmuls, f16 activation rows, the W8A32
/// score head) against the same oracles at its much tighter tolerance.
#[test]
fn every_op_matches_the_oracles_with_the_w8a16_matmul() {
    let reports = run_all(&emulated_w8a16(), Tolerances::W8A16, 7);
    for r in &reports {
        println!("{r}");
    }
    assert_all_pass(&reports);
}
