//! One module per op family, the same stems as the CUDA kernels and WGSL shaders.

pub mod add;
pub mod attention;
pub mod copy;
pub mod embedding;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod score_head;
pub mod swiglu;

/// Dot product with eight independent partial sums (so the compiler can
/// vectorise it) combined in a fixed order: deterministic for a given length.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (ca, cb) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in a_rest.iter().zip(b_rest) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
