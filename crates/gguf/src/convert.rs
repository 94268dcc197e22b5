//! Widening little-endian F16 and BF16 tensor bytes to f32.

use half::f16;

/// Converts little-endian IEEE half-precision values to f32 (exact: every f16 is an
/// f32). The bytes need no alignment.
///
/// # Panics
/// When `bytes.len() != 2 * out.len()`.
pub fn f16_to_f32_slice(bytes: &[u8], out: &mut [f32]) {
    check_lengths("f16_to_f32_slice", bytes, out);
    for (v, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *v = f16::from_le_bytes([pair[0], pair[1]]).to_f32();
    }
}

/// Converts little-endian bfloat16 values to f32 (exact: a bf16 is the top half of
/// an f32, NaN payloads included). The bytes need no alignment.
///
/// # Panics
/// When `bytes.len() != 2 * out.len()`.
pub fn bf16_to_f32_slice(bytes: &[u8], out: &mut [f32]) {
    check_lengths("bf16_to_f32_slice", bytes, out);
    for (v, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *v = f32::from_bits(u32::from(u16::from_le_bytes([pair[0], pair[1]])) << 16);
    }
}

fn check_lengths(op: &str, bytes: &[u8], out: &[f32]) {
    assert!(
        out.len().checked_mul(2) == Some(bytes.len()),
        "{op}: {} bytes for {} outputs (need 2 bytes each)",
        bytes.len(),
        out.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_known_values() {
        // 0x3c00 = 1.0, 0xc000 = -2.0, 0x0001 = smallest subnormal 2^-24, 0x7c00 = inf.
        let bytes = [0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c];
        let mut out = [0.0f32; 4];
        f16_to_f32_slice(&bytes, &mut out);
        assert_eq!(out, [1.0, -2.0, 2.0f32.powi(-24), f32::INFINITY]);
    }

    #[test]
    fn bf16_known_values() {
        // 0x3f80 = 1.0, 0xc040 = -3.0, 0x3e20 = 0.15625, 0x7f80 = inf.
        let bytes = [0x80, 0x3f, 0x40, 0xc0, 0x20, 0x3e, 0x80, 0x7f];
        let mut out = [0.0f32; 4];
        bf16_to_f32_slice(&bytes, &mut out);
        assert_eq!(out, [1.0, -3.0, 0.15625, f32::INFINITY]);
    }

    #[test]
    fn unaligned_input_is_fine() {
        let bytes = [0xff, 0x00, 0x3c];
        let mut out = [0.0f32; 1];
        f16_to_f32_slice(&bytes[1..], &mut out);
        assert_eq!(out, [1.0]);
    }

    #[test]
    #[should_panic(expected = "3 bytes for 1 outputs")]
    fn length_mismatch_panics_with_the_facts() {
        bf16_to_f32_slice(&[0, 0, 0], &mut [0.0]);
    }
}
