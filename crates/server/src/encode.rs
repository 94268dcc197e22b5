//! Small encodings the response shapes share: milliseconds for log fields and
//! timings, f32 vectors in base64.

use base64::Engine as _;

/// Milliseconds rounded to the microsecond, for log fields (`0.023`, not
/// `0.022954000000000002`).
pub(crate) fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// A vector's little-endian f32 bytes in base64, as OpenAI sends them.
pub fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0f32 = 0x3f800000 → bytes 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn millis_keep_microseconds() {
        assert_eq!(millis(std::time::Duration::from_nanos(22_954_000)), 22.954);
        assert_eq!(millis(std::time::Duration::from_nanos(1_499)), 0.001);
    }
}
