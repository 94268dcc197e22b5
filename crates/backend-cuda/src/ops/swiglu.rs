//! SwiGLU activation (`kernels/swiglu.cu`).

use tessera_backend::BackendError;

use super::{elementwise_grid, to_u32, ELEMENTWISE_THREADS};
use crate::{Device, DeviceBuffer, KernelArg, KernelBackend, Launch};

pub fn swiglu<D: Device>(
    b: &KernelBackend<D>,
    gate: &DeviceBuffer<D::Memory>,
    up: &DeviceBuffer<D::Memory>,
    len: usize,
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    BackendError::check_len("swiglu", "gate", len, gate.len)?;
    BackendError::check_len("swiglu", "up", len, up.len)?;
    BackendError::check_len("swiglu", "out", len, out.len)?;
    if len == 0 {
        return Ok(());
    }
    b.device.launch(&Launch {
        module: "swiglu",
        kernel: "swiglu_f32",
        grid: elementwise_grid(len),
        block: [ELEMENTWISE_THREADS, 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(gate)),
            KernelArg::Ptr(b.address(up)),
            KernelArg::Ptr(b.address(out)),
            KernelArg::U32(to_u32(len, "swiglu", "len")?),
        ],
    })
}
