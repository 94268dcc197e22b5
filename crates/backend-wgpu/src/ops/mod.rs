//! One module per op family, the same stems as the CPU ops and the shaders:
//! each checks shapes, picks the shader variant and records its dispatches.

pub mod add;
pub mod attention;
pub mod copy;
pub mod embedding;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod score_head;
pub mod swiglu;

use tessera_backend::BackendError;

/// Invocations per workgroup of the element-wise shaders.
pub(crate) const ELEMENTWISE_WG: usize = 256;

/// A count as the u32 a shader reads, or an error naming the op.
pub(crate) fn u32_of(op: &'static str, what: &str, n: usize) -> Result<u32, BackendError> {
    u32::try_from(n).map_err(|_| BackendError::Invalid {
        op,
        detail: format!("{what} = {n} does not fit the shaders' 32-bit indices"),
    })
}
