//! RMSNorm over rows (`dim` = hidden), also per head (`dim` = head_dim) for QK-norm.

use rayon::prelude::*;
use tessera_backend::BackendError;

use crate::CpuWeight;

fn norm_weight(weight: &CpuWeight, dim: usize) -> Result<Vec<f32>, BackendError> {
    if weight.rows() * weight.cols() != dim {
        return Err(BackendError::Invalid {
            op: "rms_norm",
            detail: format!(
                "weight '{}' has {} elements, rows have {dim}",
                weight.name(),
                weight.rows() * weight.cols()
            ),
        });
    }
    Ok(weight.to_f32())
}

fn normalize_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    // Sum of squares in f64: the reference should not lose digits here.
    let sum_sq: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let scale = (1.0 / (sum_sq / x.len() as f64 + f64::from(eps)).sqrt()) as f32;
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

pub fn rms_norm(
    x: &[f32],
    weight: &CpuWeight,
    rows: usize,
    dim: usize,
    eps: f32,
    out: &mut [f32],
) -> Result<(), BackendError> {
    let w = norm_weight(weight, dim)?;
    BackendError::check_len("rms_norm", "x", rows * dim, x.len())?;
    BackendError::check_len("rms_norm", "out", rows * dim, out.len())?;
    out[..rows * dim]
        .par_chunks_mut(dim.max(1))
        .zip(x[..rows * dim].par_chunks(dim.max(1)))
        .for_each(|(o, x)| normalize_row(x, &w, eps, o));
    Ok(())
}

pub fn rms_norm_inplace(
    x: &mut [f32],
    weight: &CpuWeight,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), BackendError> {
    let w = norm_weight(weight, dim)?;
    BackendError::check_len("rms_norm", "x", rows * dim, x.len())?;
    x[..rows * dim].par_chunks_mut(dim.max(1)).for_each(|row| {
        let input = row.to_vec();
        normalize_row(&input, &w, eps, row);
    });
    Ok(())
}
