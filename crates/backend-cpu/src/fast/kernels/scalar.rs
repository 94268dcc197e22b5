//! The portable int8 tile: plain integer loops over the packed layout.

use super::{Activations, ROW_TILE};
use crate::fast::pack::{PackedBlock, GROUP_COLS};

pub(super) fn tile(
    acts: &Activations<'_>,
    row0: usize,
    rows: usize,
    packed: &[PackedBlock],
    out: &mut [[f32; GROUP_COLS]; ROW_TILE],
) {
    let (k, blocks) = (acts.k, acts.blocks);
    for (r, out_row) in out.iter_mut().enumerate().take(rows) {
        let a_row = &acts.qs[(row0 + r) * k..(row0 + r + 1) * k];
        let d_row = &acts.d[(row0 + r) * blocks..(row0 + r + 1) * blocks];
        for (c, o) in out_row.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for ((block, a), &da) in packed.iter().zip(a_row.chunks_exact(32)).zip(d_row) {
                let mut isum = 0i32;
                for (j, a_word) in a.chunks_exact(4).enumerate() {
                    let w_word = &block.qs[j * 64 + c * 4..j * 64 + c * 4 + 4];
                    for (&a, &w) in a_word.iter().zip(w_word) {
                        isum += i32::from(a as i8) * i32::from(w);
                    }
                }
                acc = (isum as f32).mul_add(block.d[c] * da, acc);
            }
            *o = acc;
        }
    }
}
