//! `out = x · wᵀ` with `w` in its file layout: each task dequantises a tile of
//! weight rows once and applies it to every token row.

use rayon::prelude::*;
use tessera_backend::BackendError;

use super::{dot, OutPtr};
use crate::CpuWeight;

/// Weight rows per task: enough work per task, a scratch tile that stays in cache.
const TILE_ROWS: usize = 16;

pub fn matmul(
    x: &[f32],
    rows: usize,
    weight: &CpuWeight,
    out: &mut [f32],
) -> Result<(), BackendError> {
    let (n, k) = (weight.rows(), weight.cols());
    BackendError::check_len("matmul", "x", rows * k, x.len())?;
    BackendError::check_len("matmul", "out", rows * n, out.len())?;
    let out_ptr = OutPtr::new(out);
    (0..n.div_ceil(TILE_ROWS)).into_par_iter().for_each_init(
        || vec![0.0f32; TILE_ROWS * k],
        |tile, tile_index| {
            let first = tile_index * TILE_ROWS;
            let count = TILE_ROWS.min(n - first);
            for (j, w_row) in tile.chunks_exact_mut(k.max(1)).take(count).enumerate() {
                weight.dequantize_row(first + j, w_row);
            }
            for t in 0..rows {
                let x_row = &x[t * k..(t + 1) * k];
                for (j, w_row) in tile.chunks_exact(k.max(1)).take(count).enumerate() {
                    let value = dot(x_row, w_row);
                    // SAFETY: t < rows and first + j < n, so the index is inside
                    // `out[..rows * n]` (checked above); column first + j belongs
                    // to this task alone.
                    unsafe { *out_ptr.get().add(t * n + first + j) = value };
                }
            }
        },
    );
    Ok(())
}
