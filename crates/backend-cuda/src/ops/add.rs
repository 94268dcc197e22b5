//! Residual add (`kernels/add.cu`).

use tessera_backend::BackendError;

use super::{elementwise_grid, to_u32, ELEMENTWISE_THREADS};
use crate::{Device, DeviceBuffer, KernelArg, KernelBackend, Launch};

pub fn add_inplace<D: Device>(
    b: &KernelBackend<D>,
    x: &mut DeviceBuffer<D::Memory>,
    y: &DeviceBuffer<D::Memory>,
    len: usize,
) -> Result<(), BackendError> {
    BackendError::check_len("add", "x", len, x.len)?;
    BackendError::check_len("add", "y", len, y.len)?;
    if len == 0 {
        return Ok(());
    }
    b.device.launch(&Launch {
        module: "add",
        kernel: "add_f32",
        grid: elementwise_grid(len),
        block: [ELEMENTWISE_THREADS, 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.address(y)),
            KernelArg::U32(to_u32(len, "add", "len")?),
        ],
    })
}
