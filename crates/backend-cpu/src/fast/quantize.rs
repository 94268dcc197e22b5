//! Activation rows to int8 blocks of 32, bit-identical to ggml's
//! `quantize_row_q8_0_ref` (`tessera_gguf::quantize_row_q8_0`) for finite
//! inputs: `d = amax / 127`, `q = round(x · (1/d))` with halves away from zero,
//! `d` rounded to f16. The SIMD variants round with
//! `trunc(v + copysign(pred(0.5), v))`, which equals `roundf(v)` for |v| < 2²³.
//! The scale is kept as the f32 value of its f16.

use half::f16;
use tessera_gguf::{quantize_row_q8_0, BlockQ8_0, QK8_0};

use super::Isa;

/// Quantises one row: `qs` gets `x.len()` bytes (q, or q + 128 when `biased`),
/// `d` one scale per block.
pub(crate) fn quantize_row(isa: Isa, x: &[f32], qs: &mut [u8], d: &mut [f32], biased: bool) {
    debug_assert!(x.len() == qs.len() && x.len() == d.len() * QK8_0);
    match isa {
        // SAFETY: the variant's features are present (checked by the caller of the
        // matmul) and the lengths are as asserted.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { simd::quantize_row_avx512(x, qs, d, biased) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => unsafe { simd::quantize_row_avx2(x, qs, d, biased) },
        _ => quantize_row_scalar(x, qs, d, biased),
    }
}

fn quantize_row_scalar(x: &[f32], qs: &mut [u8], d: &mut [f32], biased: bool) {
    let flip = if biased { 0x80 } else { 0 };
    let mut block = [BlockQ8_0::default()];
    for ((x, qs), d) in x.chunks_exact(QK8_0).zip(qs.chunks_exact_mut(QK8_0)).zip(d) {
        quantize_row_q8_0(x, &mut block);
        for (q, &v) in qs.iter_mut().zip(&block[0].qs) {
            *q = (v as u8) ^ flip;
        }
        *d = block[0].d.to_f32();
    }
}

/// The block's scale: exactly ggml's `d` and `1/d` from its largest |x|.
#[inline(always)]
fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// The largest f32 below 0.5.
const JUST_UNDER_HALF: u32 = 0x3eff_ffff;

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{f16, scales, JUST_UNDER_HALF, QK8_0};

    const TRUNCATE: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;

    /// # Safety
    /// The CPU has AVX2; `qs.len() == x.len() == 32 · d.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_row_avx2(x: &[f32], qs: &mut [u8], d: &mut [f32], biased: bool) {
        let sign = _mm256_set1_ps(-0.0);
        let half = _mm256_set1_ps(f32::from_bits(JUST_UNDER_HALF));
        let flip = _mm256_set1_epi8(if biased { -128 } else { 0 });
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for ((x, qs), d) in x.chunks_exact(QK8_0).zip(qs.chunks_exact_mut(QK8_0)).zip(d) {
            let p = x.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let abs = v.map(|v| _mm256_andnot_ps(sign, v));
            let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            let (scale, inverse) = scales(_mm_cvtss_f32(m));
            *d = f16::from_f32(scale).to_f32();
            let inverse = _mm256_set1_ps(inverse);
            let q = v.map(|v| {
                let s = _mm256_mul_ps(v, inverse);
                let nudged = _mm256_add_ps(s, _mm256_or_ps(_mm256_and_ps(s, sign), half));
                _mm256_cvttps_epi32(_mm256_round_ps::<TRUNCATE>(nudged))
            });
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(bytes, order);
            _mm256_storeu_si256(qs.as_mut_ptr().cast(), _mm256_xor_si256(bytes, flip));
        }
    }

    /// # Safety
    /// The CPU has AVX-512 F; `qs.len() == x.len() == 32 · d.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_row_avx512(
        x: &[f32],
        qs: &mut [u8],
        d: &mut [f32],
        biased: bool,
    ) {
        let sign = _mm512_set1_epi32(i32::MIN);
        let half = _mm512_set1_epi32(JUST_UNDER_HALF as i32);
        let flip = _mm_set1_epi8(if biased { -128 } else { 0 });
        for ((x, qs), d) in x.chunks_exact(QK8_0).zip(qs.chunks_exact_mut(QK8_0)).zip(d) {
            let v = [
                _mm512_loadu_ps(x.as_ptr()),
                _mm512_loadu_ps(x.as_ptr().add(16)),
            ];
            let m = _mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1]));
            let (scale, inverse) = scales(_mm512_reduce_max_ps(m));
            *d = f16::from_f32(scale).to_f32();
            let inverse = _mm512_set1_ps(inverse);
            for (i, v) in v.into_iter().enumerate() {
                let s = _mm512_mul_ps(v, inverse);
                let bits = _mm512_castps_si512(s);
                let nudge = _mm512_or_si512(_mm512_and_si512(bits, sign), half);
                let nudged = _mm512_add_ps(s, _mm512_castsi512_ps(nudge));
                let q = _mm512_cvttps_epi32(_mm512_roundscale_ps::<TRUNCATE>(nudged));
                let bytes = _mm_xor_si128(_mm512_cvtepi32_epi8(q), flip);
                _mm_storeu_si128(qs.as_mut_ptr().add(16 * i).cast(), bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks built to hit the rounding edge cases: exact halves of both signs,
    /// the largest float below a half, an all-zero block, subnormal-sized
    /// scales, then random blocks over many magnitudes.
    fn awkward_rows() -> Vec<f32> {
        let mut x = Vec::new();
        let under_half = f32::from_bits(JUST_UNDER_HALF);
        let mut edge = vec![127.0f32, -0.5, 0.5, 1.5, -2.5, 126.5, -126.5, under_half];
        edge.extend([
            -under_half,
            3.0 + under_half,
            -0.0,
            0.0,
            64.5,
            -64.5,
            99.5,
            1e-3,
        ]);
        edge.extend(edge.clone());
        x.extend(&edge);
        x.extend([0.0f32; 32]);
        x.extend((0..32).map(|i| (i as f32 - 15.5) * 1e-6));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for block in 0..61 {
            let magnitude = 10f32.powi(block % 9 - 5);
            x.extend((0..32).map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * magnitude
            }));
        }
        x
    }

    #[test]
    fn simd_quantisers_match_ggml_bit_for_bit() {
        let x = awkward_rows();
        let blocks = x.len() / QK8_0;
        for biased in [false, true] {
            let (mut want_q, mut want_d) = (vec![0u8; x.len()], vec![0.0f32; blocks]);
            quantize_row_scalar(&x, &mut want_q, &mut want_d, biased);
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                let (mut q, mut d) = (vec![0u8; x.len()], vec![0.0f32; blocks]);
                quantize_row(isa, &x, &mut q, &mut d, biased);
                assert_eq!(q, want_q, "{} (biased {biased}): values", isa.name());
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&d), bits(&want_d), "{}: scales", isa.name());
            }
        }
        // The first block has d = 1: halves went away from zero.
        let mut d = [0.0f32; 1];
        let mut q = [0u8; 32];
        quantize_row_scalar(&x[..32], &mut q, &mut d, false);
        assert_eq!(d[0], 1.0);
        assert_eq!(
            &q[..8].iter().map(|&b| b as i8).collect::<Vec<_>>(),
            &[127, -1, 1, 2, -3, 127, -127, 0]
        );
    }
}
