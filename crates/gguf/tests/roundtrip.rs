//! Writer → reader round trips: every metadata type, large string arrays, nested
//! arrays, tensors of the types we serve, custom alignment, and the three backings.

mod common;

use std::time::Instant;

use common::{small_file, temp_path};
use tessera_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetaArray, MetaValue};

fn every_metadata_type() -> Vec<(String, MetaValue)> {
    let scalars = [
        ("t.u8", MetaValue::U8(u8::MAX)),
        ("t.i8", MetaValue::I8(i8::MIN)),
        ("t.u16", MetaValue::U16(0xbeef)),
        ("t.i16", MetaValue::I16(-12345)),
        ("t.u32", MetaValue::U32(u32::MAX)),
        ("t.i32", MetaValue::I32(i32::MIN)),
        ("t.u64", MetaValue::U64(u64::MAX)),
        ("t.i64", MetaValue::I64(i64::MIN)),
        ("t.f32", MetaValue::F32(-0.0)),
        ("t.f32_inf", MetaValue::F32(f32::INFINITY)),
        ("t.f64", MetaValue::F64(f64::MIN_POSITIVE)),
        ("t.bool_true", MetaValue::Bool(true)),
        ("t.bool_false", MetaValue::Bool(false)),
        ("t.string", MetaValue::String("Grüße, 世界 🦀".into())),
        ("t.string_empty", MetaValue::String(String::new())),
    ];
    let arrays = [
        ("a.u8", MetaArray::U8(vec![0, 1, 255])),
        ("a.i8", MetaArray::I8(vec![-128, 0, 127])),
        ("a.u16", MetaArray::U16(vec![1, 65535])),
        ("a.i16", MetaArray::I16(vec![-32768, 32767])),
        ("a.u32", MetaArray::U32(vec![u32::MAX, 0])),
        ("a.i32", MetaArray::I32(vec![-1, 151_643])),
        ("a.u64", MetaArray::U64(vec![u64::MAX])),
        ("a.i64", MetaArray::I64(vec![i64::MIN, i64::MAX])),
        ("a.f32", MetaArray::F32(vec![1.5, -2.25, f32::MAX])),
        ("a.f64", MetaArray::F64(vec![std::f64::consts::PI])),
        ("a.bool", MetaArray::Bool(vec![true, false, true])),
        (
            "a.string",
            MetaArray::String(vec!["".into(), "ä".into(), "<|im_end|>".into()]),
        ),
        ("a.empty_u32", MetaArray::U32(vec![])),
        ("a.empty_array", MetaArray::Array(vec![])),
        (
            "a.nested",
            MetaArray::Array(vec![
                MetaArray::I32(vec![1, -2]),
                MetaArray::String(vec!["x".into()]),
                MetaArray::Array(vec![MetaArray::Bool(vec![true]), MetaArray::F64(vec![])]),
                MetaArray::U8(vec![]),
            ]),
        ),
    ];
    scalars
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(
            arrays
                .into_iter()
                .map(|(k, a)| (k.to_owned(), MetaValue::Array(a))),
        )
        .collect()
}

#[test]
fn every_metadata_type_round_trips_in_file_order() {
    let entries = every_metadata_type();
    let mut w = GgufWriter::new();
    for (k, v) in &entries {
        w.add_metadata(k.clone(), v.clone());
    }
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert!(
        file.get("general.alignment").is_none(),
        "default alignment is not written"
    );
    assert_eq!(file.metadata(), entries.as_slice());
    for (k, v) in &entries {
        assert_eq!(file.get(k), Some(v), "{k}");
    }
    assert!(file.tensors().is_empty());
}

#[test]
fn vocabulary_sized_string_array_round_trips_quickly() {
    let tokens: Vec<String> = (0..151_669).map(|i| format!("tok{i}_Ġ")).collect();
    let mut w = GgufWriter::new();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaArray::String(tokens.clone())),
    );
    let bytes = w.to_bytes().unwrap();
    let start = Instant::now();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap(),
        tokens.as_slice()
    );
    println!("parsed {} strings in {elapsed:?}", tokens.len());
    // Generous even for an unoptimised build on a slow CI machine; a per-element
    // quadratic step or a byte-at-a-time read would blow well past it.
    assert!(elapsed.as_secs_f64() < 2.0, "parsing took {elapsed:?}");
}

/// Tensor fixtures: (name, dims, type, data), data filled with a per-tensor pattern.
fn tensor_fixtures() -> Vec<(&'static str, Vec<u64>, GgmlType, Vec<u8>)> {
    let pattern = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    vec![
        ("f32", vec![5, 3], GgmlType::F32, pattern(5 * 3 * 4, 1)),
        ("f16", vec![7], GgmlType::F16, pattern(7 * 2, 2)),
        (
            "bf16",
            vec![4, 2, 3],
            GgmlType::BF16,
            pattern(4 * 2 * 3 * 2, 3),
        ),
        ("q8_0", vec![64, 3], GgmlType::Q8_0, pattern(2 * 3 * 34, 4)),
        ("i8_4d", vec![1, 2, 3, 4], GgmlType::I8, pattern(24, 5)),
    ]
}

fn write_tensors(alignment: Option<u64>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    if let Some(a) = alignment {
        w.set_alignment(a);
    }
    w.add_metadata("general.name", MetaValue::String("fixture".into()));
    for (name, dims, ty, data) in tensor_fixtures() {
        w.add_tensor(name, dims, ty, data).unwrap();
    }
    w.to_bytes().unwrap()
}

fn check_tensors(file: &GgufFile, alignment: u64) {
    assert_eq!(file.alignment(), alignment);
    assert_eq!(file.data_offset() % alignment, 0);
    let fixtures = tensor_fixtures();
    assert_eq!(file.tensors().len(), fixtures.len());
    // Expected layout, computed from the definition: each tensor starts at the next
    // multiple of the alignment after the previous one's end.
    let mut relative = 0u64;
    for (info, (name, dims, ty, data)) in file.tensors().iter().zip(&fixtures) {
        relative = relative.div_ceil(alignment) * alignment;
        assert_eq!(info.name, *name);
        assert_eq!(&info.dims, dims);
        assert_eq!(info.ggml_type, *ty);
        assert_eq!(info.size, data.len() as u64, "{name}");
        assert_eq!(info.offset, file.data_offset() + relative, "{name}");
        assert_eq!(file.tensor_data(info), data.as_slice(), "{name}");
        assert_eq!(file.tensor(name), Some(info));
        relative += data.len() as u64;
    }
    assert_eq!(
        file.file_size(),
        file.data_offset() + relative.div_ceil(alignment) * alignment
    );
    let q8 = file.tensor("q8_0").unwrap();
    assert_eq!((q8.row_len(), q8.rows(), q8.elements()), (64, 3, 192));
    let bf16 = file.tensor("bf16").unwrap();
    assert_eq!((bf16.row_len(), bf16.rows(), bf16.size), (4, 6, 48));
}

#[test]
fn tensors_of_each_served_type_round_trip_with_sizes_and_offsets() {
    let file = GgufFile::from_bytes(write_tensors(None)).unwrap();
    check_tensors(&file, 32);
}

#[test]
fn custom_alignment_64_is_written_as_u32_and_honoured() {
    let file = GgufFile::from_bytes(write_tensors(Some(64))).unwrap();
    assert_eq!(file.get("general.alignment"), Some(&MetaValue::U32(64)));
    check_tensors(&file, 64);
}

#[test]
fn open_maps_the_file_and_matches_from_bytes_and_from_static() {
    let bytes = write_tensors(Some(64));
    let path = temp_path("open");
    std::fs::write(&path, &bytes).unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    check_tensors(&mapped, 64);
    assert_eq!(mapped.bytes(), bytes.as_slice());

    let leaked: &'static [u8] = Box::leak(bytes.clone().into_boxed_slice());
    let embedded = GgufFile::from_static(leaked).unwrap();
    check_tensors(&embedded, 64);
    assert_eq!(embedded.metadata(), mapped.metadata());
}

#[test]
fn write_file_then_open() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", MetaValue::U8(1));
    w.add_tensor("t", vec![2], GgmlType::F32, vec![0; 8])
        .unwrap();
    let path = temp_path("write_file");
    w.write_file(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(file.tensor_data(&file.tensors()[0]), &[0; 8]);
    assert_eq!(file.bytes(), w.to_bytes().unwrap().as_slice());
}

#[test]
fn open_names_the_path_when_it_fails() {
    let err = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/dir/model.gguf"),
        "{err}"
    );
}

#[test]
fn typed_getters_convert_where_documented_and_name_the_facts_otherwise() {
    let mut w = GgufWriter::new();
    w.add_metadata("u64_small", MetaValue::U64(7));
    w.add_metadata("u64_big", MetaValue::U64(1 << 40));
    w.add_metadata("negative", MetaValue::I32(-3));
    w.add_metadata("f64", MetaValue::F64(0.25));
    w.add_metadata("name", MetaValue::String("qwen3".into()));
    w.add_metadata("yes", MetaValue::Bool(true));
    w.add_metadata("u8s", MetaValue::Array(MetaArray::U8(vec![1, 2])));
    w.add_metadata("u64s", MetaValue::Array(MetaArray::U64(vec![1, 1 << 31])));
    w.add_metadata("f32s", MetaValue::Array(MetaArray::F32(vec![1.0])));
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();

    assert_eq!(file.get_u32("u64_small").unwrap(), 7);
    assert_eq!(file.get_u64("u64_big").unwrap(), 1 << 40);
    assert_eq!(file.get_f32("f64").unwrap(), 0.25);
    assert_eq!(file.get_str("name").unwrap(), "qwen3");
    assert!(file.get_bool("yes").unwrap());
    assert_eq!(file.get_i32_array("u8s").unwrap(), vec![1, 2]);

    let err = file.get_u32("u64_big").unwrap_err();
    assert!(
        matches!(&err, GgufError::WrongType { key, .. } if key == "u64_big"),
        "{err:?}"
    );
    assert!(err.to_string().contains("1099511627776"), "{err}");
    let err = file.get_u64("negative").unwrap_err();
    assert!(err.to_string().contains("i32 -3"), "{err}");
    let err = file.get_f32("name").unwrap_err();
    assert!(err.to_string().contains("string"), "{err}");
    let err = file.get_i32_array("u64s").unwrap_err();
    assert!(err.to_string().contains("element 1"), "{err}");
    let err = file.get_i32_array("f32s").unwrap_err();
    assert!(err.to_string().contains("array of f32"), "{err}");
    let err = file.get_str_array("u8s").unwrap_err();
    assert!(err.to_string().contains("array of u8"), "{err}");
    let err = file.get_str("missing").unwrap_err();
    assert!(
        matches!(&err, GgufError::MissingKey { key } if key == "missing"),
        "{err:?}"
    );
}

#[test]
fn writer_refuses_what_the_reader_would_refuse() {
    let mut w = GgufWriter::new();
    let err = w
        .add_tensor("short", vec![4], GgmlType::F32, vec![0; 15])
        .unwrap_err();
    assert!(matches!(
        err,
        GgufError::TensorSizeMismatch {
            expected: 16,
            got: 15,
            ..
        }
    ));
    let err = w
        .add_tensor("q", vec![16, 2], GgmlType::Q8_0, vec![0; 34])
        .unwrap_err();
    assert!(err.to_string().contains("row length 16"), "{err}");
    let err = w
        .add_tensor("5d", vec![1; 5], GgmlType::F32, vec![0; 4])
        .unwrap_err();
    assert!(matches!(err, GgufError::TooManyDims { n_dims: 5, .. }));
    let err = w
        .add_tensor("n".repeat(65), vec![1], GgmlType::F32, vec![0; 4])
        .unwrap_err();
    assert!(matches!(err, GgufError::TensorNameTooLong { len: 65, .. }));
    w.add_tensor("n".repeat(64), vec![1], GgmlType::F32, vec![0; 4])
        .unwrap();
    w.add_tensor("t", vec![1], GgmlType::F32, vec![0; 4])
        .unwrap();
    let err = w
        .add_tensor("t", vec![1], GgmlType::F32, vec![0; 4])
        .unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::DuplicateTensor {
                first: 1,
                second: 2,
                ..
            }
        ),
        "{err:?}"
    );

    let mut w = GgufWriter::new();
    w.set_alignment(48);
    let err = w.to_bytes().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("48"), "{err}");

    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", MetaValue::U32(64));
    assert!(
        w.to_bytes().is_err(),
        "general.alignment disagreeing with the layout"
    );

    let mut deep = MetaArray::U8(vec![1]);
    for _ in 0..8 {
        deep = MetaArray::Array(vec![deep]);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("deep", MetaValue::Array(deep));
    assert!(
        w.to_bytes().is_err(),
        "nesting deeper than the reader accepts"
    );
}

#[test]
fn add_metadata_twice_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", MetaValue::U8(1));
    w.add_metadata("b", MetaValue::U8(2));
    w.add_metadata("a", MetaValue::U8(3));
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let keys: Vec<_> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(keys, vec![("a", MetaValue::U8(3)), ("b", MetaValue::U8(2))]);
}

#[test]
fn small_fixture_parses() {
    let file = GgufFile::from_bytes(small_file()).unwrap();
    assert_eq!(file.get_str("general.architecture").unwrap(), "qwen3");
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        vec![1, 2, 3]
    );
    let last = file.tensors().last().unwrap();
    assert_eq!(
        last.offset + last.size,
        file.file_size(),
        "fixture ends at its last tensor"
    );
}
