//! The corruption battery: broken files must give an error that names the problem,
//! and no input at all may panic, read out of bounds or allocate from a bogus count.

mod common;

use common::{small_file, temp_path, Raw, Rng};
use tessera_gguf::{GgufError, GgufFile, MetaValue};

const F32: u32 = 0;
const Q8_0: u32 = 8;

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes)
}

fn err_of(bytes: Vec<u8>) -> GgufError {
    match parse(bytes) {
        Ok(file) => panic!("expected an error, parsed {file:?}"),
        Err(e) => e,
    }
}

/// A file built by hand with one string key and one tensor info, then `data` zero
/// bytes in the data section.
fn one_tensor_file(name: &str, dims: &[u64], type_id: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut raw = Raw::header(3, 1, 1);
    raw.kv_str("general.architecture", "qwen3");
    raw.tensor_info(name, dims, type_id, offset)
        .pad(32)
        .zeros(data);
    raw.build()
}

#[test]
fn hand_built_reference_file_is_valid() {
    let file = parse(one_tensor_file("w", &[4, 2], F32, 0, 32)).unwrap();
    let info = &file.tensors()[0];
    assert_eq!((info.offset % 32, info.size), (0, 32));
}

#[test]
fn bad_magic() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"GGML");
    let err = err_of(bytes);
    assert!(
        matches!(err, GgufError::BadMagic { got } if &got == b"GGML"),
        "{err:?}"
    );
}

#[test]
fn versions_other_than_3_are_refused_by_number() {
    for version in [1u32, 2, 4, u32::MAX] {
        let mut bytes = small_file();
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let err = err_of(bytes);
        assert!(matches!(err, GgufError::UnsupportedVersion { version: v } if v == version));
        assert!(
            err.to_string().contains(&format!("version {version}")),
            "{err}"
        );
    }
}

#[test]
fn every_strict_prefix_of_a_valid_file_is_an_error() {
    let bytes = small_file();
    assert!(parse(bytes.clone()).is_ok());
    for len in 0..bytes.len() {
        assert!(
            parse(bytes[..len].to_vec()).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
    let err = err_of(bytes[..10].to_vec());
    assert!(
        matches!(
            err,
            GgufError::UnexpectedEof {
                offset: 8,
                needed: 8,
                available: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("tensor count"), "{err}");
}

#[test]
fn tensor_data_past_the_end_of_the_file() {
    let mut bytes = small_file();
    bytes.pop();
    let err = err_of(bytes);
    assert!(
        matches!(&err, GgufError::TensorOutOfBounds { name, size: 32, .. } if name == "output_norm.weight"),
        "{err:?}"
    );
    // An offset near u64::MAX must not overflow into a small number.
    let err = err_of(one_tensor_file("w", &[8], F32, !31u64, 32));
    assert!(
        matches!(err, GgufError::TensorOutOfBounds { .. }),
        "{err:?}"
    );
    let err = err_of(one_tensor_file("w", &[8], F32, 1 << 40, 32));
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn absurd_tensor_and_kv_counts() {
    for count in [u64::MAX, 1 << 40, 1 << 20] {
        let mut bytes = small_file();
        bytes[8..16].copy_from_slice(&count.to_le_bytes());
        let err = err_of(bytes);
        assert!(
            matches!(err, GgufError::CountTooLarge { count: c, offset: 8, .. } if c == count),
            "{err:?}"
        );
        assert!(err.to_string().contains("tensor count"), "{err}");

        let mut bytes = small_file();
        bytes[16..24].copy_from_slice(&count.to_le_bytes());
        let err = err_of(bytes);
        assert!(
            matches!(err, GgufError::CountTooLarge { offset: 16, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn absurd_array_and_string_lengths() {
    for len in [u64::MAX, 1 << 40, (1 << 32) + 1] {
        // Array length.
        let mut raw = Raw::header(3, 0, 1);
        raw.str(b"arr").u32(9).u32(4).u64(len).u32(1);
        let err = err_of(raw.build());
        assert!(
            matches!(err, GgufError::CountTooLarge { count, .. } if count == len),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("array length of key \"arr\""),
            "{err}"
        );

        // String value length.
        let mut raw = Raw::header(3, 0, 1);
        raw.str(b"s").u32(8).u64(len).bytes(b"abc");
        let err = err_of(raw.build());
        assert!(
            matches!(err, GgufError::UnexpectedEof { needed, .. } if needed == len),
            "{err:?}"
        );

        // Key length (capped at 65535 bytes).
        let mut raw = Raw::header(3, 0, 1);
        raw.u64(len).bytes(b"key").zeros(16);
        let err = err_of(raw.build());
        assert!(
            matches!(err, GgufError::StringTooLong { offset: 24, .. }),
            "{err:?}"
        );

        // Length of a string inside a string array.
        let mut raw = Raw::header(3, 0, 1);
        raw.str(b"tokens")
            .u32(9)
            .u32(8)
            .u64(2)
            .str(b"ok")
            .u64(len)
            .bytes(b"x");
        let err = err_of(raw.build());
        assert!(
            err.to_string().contains("element 1 of array \"tokens\""),
            "{err}"
        );

        // Tensor dimension so large that the element count overflows.
        let err = err_of(one_tensor_file("w", &[len, len], F32, 0, 0));
        assert!(matches!(err, GgufError::BadShape { .. }), "{err:?}");
    }
}

#[test]
fn too_many_dims() {
    let err = err_of(one_tensor_file("w", &[1, 1, 1, 1, 1], F32, 0, 32));
    assert!(
        matches!(
            err,
            GgufError::TooManyDims {
                n_dims: 5,
                max: 4,
                index: 0,
                ..
            }
        ),
        "{err:?}"
    );
    let mut raw = Raw::header(3, 1, 0);
    raw.str(b"w").u32(u32::MAX).zeros(32);
    assert!(matches!(err_of(raw.build()), GgufError::TooManyDims { .. }));
}

#[test]
fn unknown_tensor_type_names_tensor_and_id() {
    for id in [4u32, 31, 41, 1000, u32::MAX] {
        let err = err_of(one_tensor_file("blk.0.attn_q.weight", &[32], id, 0, 64));
        assert!(
            matches!(&err, GgufError::UnknownTensorType { index: 0, name, id: got } if name == "blk.0.attn_q.weight" && *got == id),
            "{err:?}"
        );
        assert!(err.to_string().contains(&format!("type id {id}")), "{err}");
    }
}

#[test]
fn row_length_must_be_whole_blocks() {
    let err = err_of(one_tensor_file("q", &[16, 4], Q8_0, 0, 68));
    assert!(
        err.to_string()
            .contains("row length 16 is not a multiple of the block size 32"),
        "{err}"
    );
}

#[test]
fn misaligned_tensor_offset() {
    let err = err_of(one_tensor_file("w", &[4], F32, 16, 64));
    assert!(
        matches!(
            err,
            GgufError::MisalignedTensor {
                offset: 16,
                alignment: 32,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn alignment_must_be_a_non_zero_power_of_two_integer() {
    for value in [0u32, 3, 48, 100] {
        let mut raw = Raw::header(3, 0, 1);
        raw.kv_u32("general.alignment", value);
        let err = err_of(raw.build());
        assert!(matches!(err, GgufError::BadAlignment { value: v } if v == u64::from(value)));
    }
    let mut raw = Raw::header(3, 0, 1);
    raw.kv_str("general.alignment", "32");
    let err = err_of(raw.build());
    assert!(matches!(err, GgufError::WrongType { .. }), "{err:?}");
    // 2^63 is a power of two, but the data section then starts far past the end.
    let mut raw = Raw::header(3, 1, 1);
    raw.str(b"general.alignment")
        .u32(10)
        .u64(1 << 63)
        .tensor_info("w", &[1], F32, 0);
    assert!(parse(raw.build()).is_err());
}

#[test]
fn duplicates_are_refused() {
    let mut raw = Raw::header(3, 2, 0);
    raw.tensor_info("w", &[8], F32, 0)
        .tensor_info("w", &[8], F32, 32)
        .pad(32)
        .zeros(64);
    let err = err_of(raw.build());
    assert!(
        matches!(&err, GgufError::DuplicateTensor { name, first: 0, second: 1 } if name == "w")
    );

    let mut raw = Raw::header(3, 0, 2);
    raw.kv_u32("k", 1).kv_str("k", "again");
    let err = err_of(raw.build());
    assert!(
        matches!(&err, GgufError::DuplicateKey { key, offset: 41 } if key == "k"),
        "{err:?}"
    );
}

#[test]
fn invalid_utf8_is_named_with_key_or_tensor_index() {
    let mut raw = Raw::header(3, 0, 2);
    raw.kv_u32("ok", 1).str(b"bad\xffkey").u32(4).u32(1);
    let err = err_of(raw.build());
    assert!(
        matches!(err, GgufError::InvalidUtf8 { offset: 53, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("key 1"), "{err}");

    let mut raw = Raw::header(3, 0, 1);
    raw.str(b"s").u32(8).str(b"\xc3(");
    assert!(err_of(raw.build())
        .to_string()
        .contains("value of key \"s\""));

    let mut raw = Raw::header(3, 1, 0);
    raw.str(b"\xe2\x82")
        .u32(1)
        .u64(8)
        .u32(F32)
        .u64(0)
        .pad(32)
        .zeros(32);
    assert!(err_of(raw.build()).to_string().contains("name of tensor 0"));
}

#[test]
fn other_malformed_metadata() {
    let mut raw = Raw::header(3, 0, 1);
    raw.str(b"k").u32(13).u64(0);
    let err = err_of(raw.build());
    assert!(
        matches!(err, GgufError::UnknownValueType { id: 13, .. }),
        "{err:?}"
    );

    let mut raw = Raw::header(3, 0, 1);
    raw.str(b"k").u32(9).u32(99).u64(0);
    let err = err_of(raw.build());
    assert!(
        matches!(err, GgufError::UnknownValueType { id: 99, .. }),
        "{err:?}"
    );

    let mut raw = Raw::header(3, 0, 1);
    raw.str(b"b").u32(7).u8(2);
    assert!(matches!(
        err_of(raw.build()),
        GgufError::InvalidBool { got: 2, .. }
    ));

    // Arrays of arrays nested past the limit, e.g. a bomb of many levels.
    let mut raw = Raw::header(3, 0, 1);
    raw.str(b"deep").u32(9);
    for _ in 0..10_000 {
        raw.u32(9).u64(1);
    }
    raw.u32(0).u64(0);
    let err = err_of(raw.build());
    assert!(
        matches!(err, GgufError::NestingTooDeep { max: 8, .. }),
        "{err:?}"
    );

    // Tensor names are capped at 64 bytes, like the GGUF spec says.
    let err = err_of(one_tensor_file(&"n".repeat(65), &[8], F32, 0, 32));
    assert!(
        matches!(
            err,
            GgufError::StringTooLong {
                len: 65,
                max: 64,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn empty_and_tiny_inputs() {
    assert!(matches!(
        err_of(Vec::new()),
        GgufError::UnexpectedEof { .. }
    ));
    let path = temp_path("empty");
    std::fs::write(&path, b"").unwrap();
    let result = GgufFile::open(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(result.is_err());
    // Header only, nothing else: a valid, empty GGUF file.
    let file = parse(Raw::header(3, 0, 0).build()).unwrap();
    assert!(file.metadata().is_empty() && file.tensors().is_empty());
}

/// Values that tend to break length and offset arithmetic.
const INTERESTING: [u64; 10] = [
    0,
    1,
    31,
    32,
    64,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 63,
    u64::MAX,
];

/// Touches everything a successful parse exposes, to catch lazily wrong state.
fn exercise(file: &GgufFile) {
    for (key, value) in file.metadata() {
        // Identity, not equality: a NaN value is not equal to itself.
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = (value.as_u64(), value.as_f64(), value.type_name());
        let _ = (
            file.get_u32(key),
            file.get_str_array(key),
            file.get_i32_array(key),
        );
        if let MetaValue::Array(a) = value {
            let _ = a.len();
        }
    }
    for info in file.tensors() {
        let data = file.tensor_data(info);
        assert_eq!(data.len() as u64, info.size);
        assert_eq!((info.offset - file.data_offset()) % file.alignment(), 0);
        assert!(info.offset + info.size <= file.file_size());
    }
}

#[test]
fn thousands_of_mutations_never_panic() {
    let original = small_file();
    let mut rng = Rng::new(0x6767_5546);
    let (mut ok, mut err) = (0, 0);
    for variant in 0..4000 {
        let mut bytes = original.clone();
        if variant % 2 == 0 {
            // Flip 1–4 random bytes.
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 + rng.below(255) as u8;
            }
        } else {
            // Overwrite an 8-byte window with a value that stresses arithmetic.
            let at = rng.below(bytes.len() - 8);
            let value = INTERESTING[rng.below(INTERESTING.len())];
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        if variant % 7 == 0 {
            bytes.truncate(rng.below(bytes.len() + 1));
        }
        match parse(bytes) {
            Ok(file) => {
                exercise(&file);
                ok += 1;
            }
            Err(e) => {
                let _ = e.to_string();
                err += 1;
            }
        }
    }
    println!("mutations: {ok} parsed, {err} refused");
    assert!(err > 1000, "most mutations should be caught ({err} were)");
}
