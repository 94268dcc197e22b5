//! Residual add.

use tessera_backend::BackendError;

pub fn add_inplace(x: &mut [f32], y: &[f32], len: usize) -> Result<(), BackendError> {
    BackendError::check_len("add", "x", len, x.len())?;
    BackendError::check_len("add", "y", len, y.len())?;
    for (a, b) in x[..len].iter_mut().zip(&y[..len]) {
        *a += b;
    }
    Ok(())
}
