//! ggml's Q8_0 quantisation: blocks of 32 signed 8-bit values sharing one f16 scale.
//!
//! Layout per ggml `ggml-common.h` (`block_q8_0`): `ggml_half d; int8_t qs[QK8_0];`,
//! 34 bytes, little-endian scale first. A value is `qs[j] * d`.

use half::f16;

/// Elements per Q8_0 block (ggml's `QK8_0`).
pub const QK8_0: usize = 32;

/// One Q8_0 block, laid out exactly as ggml's `block_q8_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quantised values.
    pub qs: [i8; QK8_0],
}

const BLOCK_BYTES: usize = 34;
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == BLOCK_BYTES);
const _: () = assert!(std::mem::align_of::<BlockQ8_0>() == 2);

impl BlockQ8_0 {
    /// Views bytes as blocks without copying; `None` when the length is not a multiple
    /// of 34, the pointer is not 2-aligned, or the host is big-endian (the scale is
    /// stored little-endian).
    pub fn slice_from_bytes(bytes: &[u8]) -> Option<&[BlockQ8_0]> {
        if cfg!(target_endian = "big") {
            return None;
        }
        // Checks the length and the alignment.
        bytemuck::try_cast_slice(bytes).ok()
    }

    /// The blocks' bytes in memory order (the GGUF layout on little-endian hosts).
    pub fn as_bytes(blocks: &[BlockQ8_0]) -> &[u8] {
        bytemuck::cast_slice(blocks)
    }

    /// Decodes block `i` of `bytes` without any alignment requirement; `None` when the
    /// block lies outside `bytes`.
    pub fn read(bytes: &[u8], i: usize) -> Option<BlockQ8_0> {
        let start = i.checked_mul(BLOCK_BYTES)?;
        let raw = bytes.get(start..start.checked_add(BLOCK_BYTES)?)?;
        let (scale, values) = raw.split_at(2);
        let mut block = BlockQ8_0 {
            d: f16::from_le_bytes([scale[0], scale[1]]),
            qs: [0; QK8_0],
        };
        for (q, &byte) in block.qs.iter_mut().zip(values) {
            *q = byte as i8;
        }
        Some(block)
    }

    /// Appends the block's 34 bytes in GGUF (little-endian) order.
    pub fn write_le(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend(self.qs.iter().map(|&q| q as u8));
    }
}

/// Exactly ggml's `quantize_row_q8_0_ref`: per block, `amax` = largest |x|,
/// `d = amax / 127` in f32, `id = if d != 0 { 1 / d } else { 0 }`,
/// `q = roundf(x * id)` (halves away from zero), and `d` stored as f16
/// (round-to-nearest-even, as ggml's `GGML_FP32_TO_FP16`).
///
/// # Panics
/// When `x.len() != 32 * out.len()`.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        QK8_0 * out.len(),
        "quantize_row_q8_0: {} inputs for {} blocks",
        x.len(),
        out.len()
    );
    for (block, values) in out.iter_mut().zip(x.chunks_exact(QK8_0)) {
        // ggml's MAX(a, b) is `a > b ? a : b`; written the same way so that NaN
        // inputs propagate exactly as they do there (f32::max would skip them).
        let amax = values.iter().fold(
            0.0f32,
            |amax, &v| if amax > v.abs() { amax } else { v.abs() },
        );
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f16::from_f32(d);
        for (q, &v) in block.qs.iter_mut().zip(values) {
            // `as` saturates; |v * id| <= 127 up to rounding, which round() keeps.
            *q = (v * id).round() as i8;
        }
    }
}

/// `x = q * f32(d)`, as ggml's `dequantize_row_q8_0`.
///
/// # Panics
/// When `out.len() != 32 * blocks.len()`.
pub fn dequantize_row_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        out.len(),
        QK8_0 * blocks.len(),
        "dequantize_row_q8_0: {} outputs for {} blocks",
        out.len(),
        blocks.len()
    );
    for (block, values) in blocks.iter().zip(out.chunks_exact_mut(QK8_0)) {
        let d = block.d.to_f32();
        for (v, &q) in values.iter_mut().zip(&block.qs) {
            *v = f32::from(q) * d;
        }
    }
}
