//! AVX-512 VNNI tile: `vpdpbusd` on 512-bit vectors, one vector = the 16
//! columns' sums. Activations arrive biased (a + 128, unsigned), so the integer
//! accumulator starts at `corr = −128 · Σw` of each column.

use std::arch::x86_64::*;

use super::{Activations, ROW_TILE};
use crate::fast::pack::{PackedBlock, GROUP_COLS};

/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; the activations hold rows
/// `row0 .. row0 + rows` with `packed.len()` blocks each.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile(
    acts: &Activations<'_>,
    row0: usize,
    rows: usize,
    packed: &[PackedBlock],
    out: &mut [[f32; GROUP_COLS]; ROW_TILE],
) {
    match rows {
        1 => rows_tile::<1>(acts, row0, packed, out),
        2 => rows_tile::<2>(acts, row0, packed, out),
        3 => rows_tile::<3>(acts, row0, packed, out),
        4 => rows_tile::<4>(acts, row0, packed, out),
        5 => rows_tile::<5>(acts, row0, packed, out),
        6 => rows_tile::<6>(acts, row0, packed, out),
        7 => rows_tile::<7>(acts, row0, packed, out),
        _ => rows_tile::<8>(acts, row0, packed, out),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_tile<const R: usize>(
    acts: &Activations<'_>,
    row0: usize,
    packed: &[PackedBlock],
    out: &mut [[f32; GROUP_COLS]; ROW_TILE],
) {
    let (k, blocks) = (acts.k, acts.blocks);
    let a_base = acts.qs.as_ptr().add(row0 * k);
    let d_base = acts.d.as_ptr().add(row0 * blocks);
    let mut acc = [_mm512_setzero_ps(); R];
    for (b, block) in packed.iter().enumerate() {
        let corr = _mm512_load_si512(block.corr.as_ptr().cast());
        let mut isum = [corr; R];
        let a_block = a_base.add(b * 32);
        for j in 0..8 {
            let w = _mm512_load_si512(block.qs.as_ptr().add(j * 64).cast());
            for (r, sum) in isum.iter_mut().enumerate() {
                let word = std::ptr::read_unaligned(a_block.add(r * k + j * 4).cast::<i32>());
                *sum = _mm512_dpbusd_epi32(*sum, _mm512_set1_epi32(word), w);
            }
        }
        let dw = _mm512_load_ps(block.d.as_ptr());
        for (r, (acc, sum)) in acc.iter_mut().zip(isum).enumerate() {
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*d_base.add(r * blocks + b)));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), acc);
    }
}
