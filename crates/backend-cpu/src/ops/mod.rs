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

/// An output slice's pointer shared by parallel tasks that each write their
/// own disjoint elements (the matmuls' column groups): the one place the CPU
/// backend lets several threads write one slice.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements of one slice that outlives the
// parallel loop; `OutPtr::new` borrows it mutably, so nothing else reads it.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(crate) fn new(out: &mut [f32]) -> OutPtr {
        OutPtr(out.as_mut_ptr())
    }

    // A method (not a field access) so closures capture the whole Send + Sync wrapper.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

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
