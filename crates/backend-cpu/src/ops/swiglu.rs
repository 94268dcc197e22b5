//! SwiGLU activation: `silu(gate) * up`.

use tessera_backend::BackendError;

pub fn swiglu(gate: &[f32], up: &[f32], len: usize, out: &mut [f32]) -> Result<(), BackendError> {
    BackendError::check_len("swiglu", "gate", len, gate.len())?;
    BackendError::check_len("swiglu", "up", len, up.len())?;
    BackendError::check_len("swiglu", "out", len, out.len())?;
    for ((o, &g), &u) in out[..len].iter_mut().zip(&gate[..len]).zip(&up[..len]) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
    Ok(())
}
