//! Rotary position embedding, NeoX layout (dimension `i` pairs with `i + d/2`),
//! computed the way Hugging Face's Qwen3 does: inv_freq and angles in f32.

use rayon::prelude::*;
use tessera_backend::{contract, BackendError};

pub fn rope(
    x: &mut [f32],
    positions: &[u32],
    heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), BackendError> {
    contract::check_rope(x.len(), positions, heads, head_dim)?;
    let width = heads * head_dim;
    let half = head_dim / 2;
    let inv_freq = contract::rope_inv_freq(theta, head_dim);
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
