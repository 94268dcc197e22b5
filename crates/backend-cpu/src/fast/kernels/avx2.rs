//! AVX2 tile: `vpmaddubsw(|w|, sign(a, w))` then `vpmaddwd` by ones, eight
//! columns (half a packed group) per pass and four rows at a time. Pairs of
//! products never saturate: |w| ≤ 128 and |a| ≤ 127 give at most 32,512.

use std::arch::x86_64::*;

use super::{Activations, ROW_TILE};
use crate::fast::pack::{PackedBlock, GROUP_COLS};

/// # Safety
/// The CPU has AVX2 and FMA; the activations (signed) hold rows
/// `row0 .. row0 + rows` with `packed.len()` blocks each.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(
    acts: &Activations<'_>,
    row0: usize,
    rows: usize,
    packed: &[PackedBlock],
    out: &mut [[f32; GROUP_COLS]; ROW_TILE],
) {
    for half in 0..2 {
        let mut first = 0;
        while first < rows {
            let sub = &mut out[first..];
            let r0 = row0 + first;
            match rows - first {
                1 => half_tile::<1>(acts, r0, packed, half, sub),
                2 => half_tile::<2>(acts, r0, packed, half, sub),
                3 => half_tile::<3>(acts, r0, packed, half, sub),
                _ => half_tile::<4>(acts, r0, packed, half, sub),
            }
            first += 4;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn half_tile<const R: usize>(
    acts: &Activations<'_>,
    row0: usize,
    packed: &[PackedBlock],
    half: usize,
    out: &mut [[f32; GROUP_COLS]],
) {
    let (k, blocks) = (acts.k, acts.blocks);
    let a_base = acts.qs.as_ptr().add(row0 * k);
    let d_base = acts.d.as_ptr().add(row0 * blocks);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, block) in packed.iter().enumerate() {
        let mut isum = [_mm256_setzero_si256(); R];
        let a_block = a_base.add(b * 32);
        for j in 0..8 {
            let w = _mm256_load_si256(block.qs.as_ptr().add(j * 64 + half * 32).cast());
            let w_abs = _mm256_abs_epi8(w);
            for (r, sum) in isum.iter_mut().enumerate() {
                let word = std::ptr::read_unaligned(a_block.add(r * k + j * 4).cast::<i32>());
                let a = _mm256_sign_epi8(_mm256_set1_epi32(word), w);
                let pairs = _mm256_maddubs_epi16(w_abs, a);
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
            }
        }
        let dw = _mm256_load_ps(block.d.as_ptr().add(half * 8));
        for (r, (acc, sum)) in acc.iter_mut().zip(isum).enumerate() {
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*d_base.add(r * blocks + b)));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        _mm256_storeu_ps(o.as_mut_ptr().add(half * 8), acc);
    }
}
