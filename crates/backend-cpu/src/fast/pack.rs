//! Weight rows of a Q8_0 tensor re-laid-out for the int8 kernels: 16 output
//! columns interleaved four bytes at a time, so one 64-byte vector holds the
//! same four inputs of 16 columns and a broadcast activation word feeds all of
//! them. Packed per task into a per-thread scratch (L1/L2-sized), never stored.

use half::f16;
use tessera_gguf::QK8_0;

use super::Isa;

/// Output columns per packed group (one 512-bit vector of i32 sums).
pub(crate) const GROUP_COLS: usize = 16;

const BLOCK_BYTES: usize = 2 + QK8_0;

/// One Q8_0 block (32 inputs) of 16 weight rows.
///
/// `qs[j * 64 + c * 4 + i]` is input `4j + i` of column `c`; `d[c]` the column's
/// scale; `corr[c] = −128 · Σ qs` (the kernels that bias activations to u8 add
/// it back). Columns past the tensor's end are zero.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct PackedBlock {
    pub qs: [i8; QK8_0 * GROUP_COLS],
    pub d: [f32; GROUP_COLS],
    pub corr: [i32; GROUP_COLS],
}

const _: () = assert!(std::mem::size_of::<PackedBlock>() == 640);

const EMPTY: PackedBlock = PackedBlock {
    qs: [0; QK8_0 * GROUP_COLS],
    d: [0.0; GROUP_COLS],
    corr: [0; GROUP_COLS],
};

/// Packs column group `group` (weight rows `16·group ..`) of an `n × k` Q8_0
/// tensor's bytes into `out` (resized to `k / 32` blocks), with gathers where
/// the CPU has them; every variant writes the same bytes.
pub(crate) fn pack_group(
    isa: Isa,
    bytes: &[u8],
    n: usize,
    k: usize,
    group: usize,
    out: &mut Vec<PackedBlock>,
) {
    let blocks = k / QK8_0;
    let row_bytes = blocks * BLOCK_BYTES;
    assert!(bytes.len() >= n * row_bytes && group * GROUP_COLS < n);
    // The gathers index rows with i32 byte offsets.
    let offsets_fit = row_bytes * GROUP_COLS < i32::MAX as usize;
    out.resize(blocks, EMPTY);
    let first = group * GROUP_COLS;
    let cols = GROUP_COLS.min(n - first);
    let rows = &bytes[first * row_bytes..(first + cols) * row_bytes];
    match isa {
        // SAFETY: the features are present (checked when the backend was built);
        // `rows` holds `cols` rows of `row_bytes`, `out` `blocks` blocks.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if offsets_fit => unsafe { simd::pack_avx512(rows, row_bytes, cols, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni if offsets_fit => unsafe {
            simd::pack_avx2(rows, row_bytes, cols, out)
        },
        _ => pack_scalar(rows, row_bytes, cols, out),
    }
}

fn pack_scalar(rows: &[u8], row_bytes: usize, cols: usize, out: &mut [PackedBlock]) {
    for (b, packed) in out.iter_mut().enumerate() {
        if cols < GROUP_COLS {
            *packed = EMPTY;
        }
        for c in 0..cols {
            let start = c * row_bytes + b * BLOCK_BYTES;
            let src = &rows[start..start + BLOCK_BYTES];
            packed.d[c] = f16::from_le_bytes([src[0], src[1]]).to_f32();
            let qs: &[u8; QK8_0] = src[2..].try_into().expect("34-byte block");
            let sum: i32 = qs.iter().map(|&q| i32::from(q as i8)).sum();
            packed.corr[c] = -128 * sum;
            for (j, word) in qs.chunks_exact(4).enumerate() {
                let word = [word[0] as i8, word[1] as i8, word[2] as i8, word[3] as i8];
                packed.qs[j * 64 + c * 4..j * 64 + c * 4 + 4].copy_from_slice(&word);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{PackedBlock, BLOCK_BYTES, GROUP_COLS};

    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `rows` holds `cols` (1..=16) rows of
    /// `row_bytes` (`16 · row_bytes < 2³¹`), `out` one block per 34 bytes of a row.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn pack_avx512(
        rows: &[u8],
        row_bytes: usize,
        cols: usize,
        out: &mut [PackedBlock],
    ) {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(row_bytes as i32));
        let mask: __mmask16 = if cols == GROUP_COLS {
            !0
        } else {
            (1 << cols) - 1
        };
        let zero = _mm512_setzero_si512();
        let bias = _mm512_set1_epi8(-128);
        for (b, packed) in out.iter_mut().enumerate() {
            let base = rows.as_ptr().add(b * BLOCK_BYTES);
            // The scale is the low half of the block's first word.
            let head = _mm512_mask_i32gather_epi32::<1>(zero, mask, offsets, base.cast());
            let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
            _mm512_store_ps(packed.d.as_mut_ptr(), d);
            let mut biased_sum = zero;
            for j in 0..8 {
                let word = base.add(2 + 4 * j).cast();
                let w = _mm512_mask_i32gather_epi32::<1>(zero, mask, offsets, word);
                _mm512_store_si512(packed.qs.as_mut_ptr().add(64 * j).cast(), w);
                // 128 · Σw per column: the unsigned operand is 0x80 in every byte.
                biased_sum = _mm512_dpbusd_epi32(biased_sum, bias, w);
            }
            _mm512_store_si512(
                packed.corr.as_mut_ptr().cast(),
                _mm512_sub_epi32(zero, biased_sum),
            );
        }
    }

    /// # Safety
    /// The CPU has AVX2 and F16C; otherwise as `pack_avx512`.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn pack_avx2(
        rows: &[u8],
        row_bytes: usize,
        cols: usize,
        out: &mut [PackedBlock],
    ) {
        let zero = _mm256_setzero_si256();
        let ones_u8 = _mm256_set1_epi8(1);
        let ones_i16 = _mm256_set1_epi16(1);
        let low_halves = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
        for half in 0..2 {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let lanes = _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * half as i32));
            let offsets = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(row_bytes as i32));
            // A lane gathers when its column exists (mask: top bit set).
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32), lanes);
            for (b, packed) in out.iter_mut().enumerate() {
                let base = rows.as_ptr().add(b * BLOCK_BYTES).cast::<i32>();
                let head = _mm256_mask_i32gather_epi32::<1>(zero, base, offsets, mask);
                let halves = _mm256_shuffle_epi8(head, low_halves);
                let halves = _mm256_permute4x64_epi64::<0b1000>(halves);
                let d = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
                _mm256_store_ps(packed.d.as_mut_ptr().add(8 * half), d);
                let mut sum = zero;
                for j in 0..8 {
                    let word = rows.as_ptr().add(b * BLOCK_BYTES + 2 + 4 * j).cast::<i32>();
                    let w = _mm256_mask_i32gather_epi32::<1>(zero, word, offsets, mask);
                    _mm256_store_si256(packed.qs.as_mut_ptr().add(64 * j + 32 * half).cast(), w);
                    let pairs = _mm256_maddubs_epi16(ones_u8, w);
                    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, ones_i16));
                }
                let corr = _mm256_mullo_epi32(sum, _mm256_set1_epi32(-128));
                _mm256_store_si256(packed.corr.as_mut_ptr().add(8 * half).cast(), corr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packer_writes_the_same_bytes() {
        let (n, k) = (37, 96);
        let row_bytes = k / QK8_0 * BLOCK_BYTES;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..n * row_bytes)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Keep scales finite, moderate f16 values.
                if i % BLOCK_BYTES == 1 {
                    0x1c + (state % 16) as u8
                } else {
                    (state >> 24) as u8
                }
            })
            .collect();
        for group in 0..n.div_ceil(GROUP_COLS) {
            let mut want = Vec::new();
            pack_group(Isa::Scalar, &bytes, n, k, group, &mut want);
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                let mut got = Vec::new();
                pack_group(isa, &bytes, n, k, group, &mut got);
                for (b, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.qs, w.qs, "{} group {group} block {b}: values", isa.name());
                    assert_eq!(
                        g.corr,
                        w.corr,
                        "{} group {group} block {b}: sums",
                        isa.name()
                    );
                    let bits = |d: &[f32; GROUP_COLS]| d.map(f32::to_bits);
                    assert_eq!(
                        bits(&g.d),
                        bits(&w.d),
                        "{} group {group} block {b}",
                        isa.name()
                    );
                }
            }
        }
    }
}
