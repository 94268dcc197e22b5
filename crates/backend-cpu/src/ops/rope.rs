//! Rotary position embedding, NeoX layout (dimension `i` pairs with `i + d/2`),
//! computed the way Hugging Face's Qwen3 does: inv_freq and angles in f32.

use rayon::prelude::*;
use tessera_backend::BackendError;

pub fn rope(
    x: &mut [f32],
    positions: &[u32],
    heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), BackendError> {
    if !head_dim.is_multiple_of(2) {
        return Err(BackendError::Invalid {
            op: "rope",
            detail: format!("head_dim {head_dim} is odd"),
        });
    }
    let width = heads * head_dim;
    BackendError::check_len("rope", "x", positions.len() * width, x.len())?;
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    x[..positions.len() * width]
        .par_chunks_mut(width.max(1))
        .zip(positions.par_iter())
        .for_each(|(token, &pos)| {
            let (sin, cos): (Vec<f32>, Vec<f32>) =
                inv_freq.iter().map(|&f| (pos as f32 * f).sin_cos()).unzip();
            for head in token.chunks_exact_mut(head_dim) {
                let (lo, hi) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (lo[i], hi[i]);
                    lo[i] = a * cos[i] - b * sin[i];
                    hi[i] = b * cos[i] + a * sin[i];
                }
            }
        });
    Ok(())
}
