//! Q8_0 against values worked out by hand from ggml's definition
//! (`quantize_row_q8_0_ref`): d = amax/127 in f32, q = roundf(x/d), d stored as f16.

mod common;

use common::Rng;
use half::f16;
use tessera_gguf::{dequantize_row_q8_0, quantize_row_q8_0, BlockQ8_0, QK8_0};

fn quantize_one(x: &[f32; QK8_0]) -> BlockQ8_0 {
    let mut out = [BlockQ8_0::default()];
    quantize_row_q8_0(x, &mut out);
    out[0]
}

#[test]
fn exact_halves_round_away_from_zero_with_unit_scale() {
    // amax = 127 gives d = 1 and id = 1 exactly, so q = round(x).
    let mut x = [0.0f32; QK8_0];
    x[..7].copy_from_slice(&[127.0, 0.5, -0.5, 1.5, -2.5, 126.5, 2.5]);
    let b = quantize_one(&x);
    assert_eq!(b.d.to_bits(), 0x3c00, "f16 1.0");
    // Away from zero: 0.5 → 1, -0.5 → -1, 2.5 → 3 (round-half-even would give 0, 0, 2).
    assert_eq!(&b.qs[..7], &[127, 1, -1, 2, -3, 127, 3]);
    assert!(b.qs[7..].iter().all(|&q| q == 0));
}

#[test]
fn exact_halves_with_scale_two() {
    // amax = 254: d = 2, id = 0.5, both exact; x*id hits .5 for odd x.
    let mut x = [0.0f32; QK8_0];
    x[..6].copy_from_slice(&[254.0, 1.0, -1.0, 3.0, -5.0, 4.0]);
    let b = quantize_one(&x);
    assert_eq!(b.d.to_bits(), 0x4000, "f16 2.0");
    assert_eq!(&b.qs[..6], &[127, 1, -1, 2, -3, 2]);
}

#[test]
fn all_zero_block_has_zero_scale_and_values() {
    let b = quantize_one(&[0.0; QK8_0]);
    assert_eq!(b.d.to_bits(), 0);
    assert_eq!(b.qs, [0; QK8_0]);
    let mut out = [1.0f32; QK8_0];
    dequantize_row_q8_0(&[b], &mut out);
    assert_eq!(out, [0.0; QK8_0]);
}

#[test]
fn negative_amax_gives_minus_127_and_positive_scale() {
    // amax = |-3|: d = 3/127 = 0.0236220..., as f16: 2^-6 * (1 + m/1024) with
    // m = round((0.0236220/2^-6 - 1) * 1024) = round(524.09) = 524 → bits 0x260c.
    let mut x = [0.0f32; QK8_0];
    x[..4].copy_from_slice(&[1.0, -3.0, -1.2, 0.3]);
    let b = quantize_one(&x);
    assert_eq!(b.d.to_bits(), (9 << 10) | 524);
    // q = round(x * 127/3): 42.33 → 42, -127, -50.8 → -51, 12.7 → 13.
    assert_eq!(&b.qs[..4], &[42, -127, -51, 13]);
    // Dequantisation uses the f16 scale: d = 1548 * 2^-16, so -127 d = -196596 / 65536.
    let mut out = [0.0f32; QK8_0];
    dequantize_row_q8_0(&[b], &mut out);
    assert_eq!(out[1], -196_596.0 / 65_536.0);
    assert_eq!(out[0], 42.0 * 1548.0 / 65_536.0);
}

#[test]
fn scale_is_rounded_to_f16_nearest_even() {
    // amax = 1: d = 1/127 = 2^-7 * 1.007874; mantissa round(8.06) = 8 → 0x2008.
    let mut x = [0.0f32; QK8_0];
    x[0] = 1.0;
    assert_eq!(quantize_one(&x).d.to_bits(), 0x2008);
    // d = 1 + 2^-11 lies halfway between f16 1.0 (even) and 1 + 2^-10 (odd): → 1.0.
    x[0] = 127.0 * (1.0 + 2f32.powi(-11));
    assert_eq!(quantize_one(&x).d.to_bits(), 0x3c00);
    // d = 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even): → even.
    x[0] = 127.0 * (1.0 + 3.0 * 2f32.powi(-11));
    assert_eq!(quantize_one(&x).d.to_bits(), 0x3c02);
}

#[test]
fn each_block_of_a_row_has_its_own_scale() {
    let mut x = vec![0.0f32; 2 * QK8_0];
    x[0] = 127.0;
    x[1] = 64.0;
    x[QK8_0] = -254.0;
    x[QK8_0 + 1] = 64.0;
    let mut blocks = [BlockQ8_0::default(); 2];
    quantize_row_q8_0(&x, &mut blocks);
    assert_eq!(
        (blocks[0].d.to_bits(), blocks[0].qs[0], blocks[0].qs[1]),
        (0x3c00, 127, 64)
    );
    assert_eq!(
        (blocks[1].d.to_bits(), blocks[1].qs[0], blocks[1].qs[1]),
        (0x4000, -127, 32)
    );
    let mut out = vec![0.0f32; 2 * QK8_0];
    dequantize_row_q8_0(&blocks, &mut out);
    assert_eq!(
        (out[0], out[1], out[QK8_0], out[QK8_0 + 1]),
        (127.0, 64.0, -254.0, 64.0)
    );
}

#[test]
fn round_trip_error_is_within_half_a_step_plus_scale_rounding() {
    let mut rng = Rng::new(0x5eed);
    let x: Vec<f32> = (0..QK8_0 * 33).map(|_| rng.f32_in(-3.0, 3.0)).collect();
    let mut blocks = vec![BlockQ8_0::default(); 33];
    quantize_row_q8_0(&x, &mut blocks);
    let mut y = vec![0.0f32; x.len()];
    dequantize_row_q8_0(&blocks, &mut y);
    for (chunk_x, (chunk_y, block)) in x.chunks(QK8_0).zip(y.chunks(QK8_0).zip(&blocks)) {
        let amax = chunk_x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // Half a quantisation step, plus |q| <= 127 times the f16 scale error (2^-11 d).
        let bound = amax / 127.0 * 0.5 + amax * 2f32.powi(-11) * 1.01;
        for (a, b) in chunk_x.iter().zip(chunk_y) {
            assert!(
                (a - b).abs() <= bound,
                "{a} vs {b}, bound {bound}, d {}",
                block.d
            );
        }
    }
}

#[test]
fn block_views_and_reads_agree_with_the_byte_layout() {
    let mut bytes = [0u8; 1 + 2 * 34];
    // Block 1 at byte 1 + 34: scale 1.0 (0x3c00 little-endian), qs = -1, 0, 1, ...
    bytes[35..37].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
    for j in 0..QK8_0 {
        bytes[37 + j] = (j as i8 - 1) as u8;
    }
    let unaligned = &bytes[1..];
    let block = BlockQ8_0::read(unaligned, 1).unwrap();
    assert_eq!(block.d, f16::from_f32(1.0));
    assert_eq!(&block.qs[..3], &[-1, 0, 1]);
    assert_eq!(BlockQ8_0::read(unaligned, 2), None);
    assert_eq!(BlockQ8_0::read(unaligned, usize::MAX), None);

    // A zero-copy view needs 2-byte alignment and whole blocks.
    let aligned = if unaligned.as_ptr() as usize % 2 == 0 {
        unaligned
    } else {
        &bytes[..68]
    };
    let view = BlockQ8_0::slice_from_bytes(aligned).expect("aligned whole blocks");
    assert_eq!(view.len(), 2);
    assert_eq!(BlockQ8_0::as_bytes(view), aligned);
    assert_eq!(BlockQ8_0::slice_from_bytes(&aligned[..67]), None);
    let odd = if bytes.as_ptr() as usize % 2 == 0 {
        &bytes[1..]
    } else {
        &bytes[..68]
    };
    assert_eq!(BlockQ8_0::slice_from_bytes(odd), None, "misaligned pointer");

    let blocks = [block, BlockQ8_0::default()];
    let as_bytes = BlockQ8_0::as_bytes(&blocks);
    assert_eq!(as_bytes.len(), 68);
    assert_eq!(BlockQ8_0::read(as_bytes, 0), Some(block));
    let mut written = Vec::new();
    block.write_le(&mut written);
    assert_eq!(written, &as_bytes[..34]);
}

#[test]
fn nan_and_infinite_inputs_do_not_panic() {
    let mut x = [0.5f32; QK8_0];
    x[3] = f32::NAN;
    x[9] = f32::INFINITY;
    let _ = quantize_one(&x);
    x[0] = f32::NAN;
    let _ = quantize_one(&x);
}
