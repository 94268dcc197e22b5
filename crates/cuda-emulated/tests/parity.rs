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
