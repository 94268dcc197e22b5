//! The GGUF v3 parser: header, typed key/values and tensor infos, read through a
//! cursor that checks every length against the bytes that are actually there.
//!
//! Layout (ggml `docs/gguf.md`): magic "GGUF", version u32, tensor count u64, key/value
//! count u64, the key/values, the tensor infos, padding to `general.alignment`, then
//! the data section. All integers are little-endian; strings are a u64 byte length
//! followed by UTF-8 bytes without a terminator.

use std::collections::HashMap;
use std::fmt;

use crate::error::GgufError;
use crate::reader::TensorInfo;
use crate::types::GgmlType;
use crate::value::{type_id, MetaArray, MetaValue};

pub(crate) const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub(crate) const GGUF_VERSION: u32 = 3;
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
pub(crate) const MAX_DIMS: u32 = 4;
/// The GGUF spec caps tensor names at 64 bytes.
pub(crate) const MAX_TENSOR_NAME_LEN: u64 = 64;
/// The GGUF spec caps keys at 65535 bytes.
pub(crate) const MAX_KEY_LEN: u64 = 65_535;
/// Nested arrays deeper than this are refused, so that recursion stays shallow.
pub(crate) const MAX_ARRAY_DEPTH: usize = 8;
/// Vectors are pre-sized to at most this many entries: a count that passed the
/// bytes-remaining check may still be large in a large file, and reserving memory
/// only as entries really parse keeps a corrupt count from costing gigabytes.
const MAX_PREALLOC: u64 = 1 << 20;

/// Smallest encodings, used to bound counts by the bytes that remain.
const MIN_KV_BYTES: u64 = 8 + 4 + 1; // empty key, value type, one-byte value
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8; // empty name, no dims, type, offset

/// Everything the parser learns from a file.
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, MetaValue)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
}

/// Where in the file a read happens, for error messages; formatted only on error.
#[derive(Clone, Copy)]
enum Place<'a> {
    Header(&'static str),
    Key {
        index: u64,
    },
    OfKey {
        key: &'a str,
        field: &'static str,
    },
    Element {
        key: &'a str,
        index: u64,
    },
    TensorName {
        index: u64,
    },
    OfTensor {
        index: u64,
        name: &'a str,
        field: &'static str,
    },
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Place::Header(field) => write!(f, "header field {field}"),
            Place::Key { index } => write!(f, "key {index}"),
            Place::OfKey { key, field } => write!(f, "{field} of key {key:?}"),
            Place::Element { key, index } => write!(f, "element {index} of array {key:?}"),
            Place::TensorName { index } => write!(f, "name of tensor {index}"),
            Place::OfTensor { index, name, field } => {
                write!(f, "{field} of tensor {index} ({name:?})")
            }
        }
    }
}

/// A read position over the file's bytes; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, len: u64, place: Place<'_>) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if len <= available {
            // `len` is at most the remaining length, a usize: no truncation, no overflow.
            let end = self.pos + len as usize;
            if let Some(slice) = self.bytes.get(self.pos..end) {
                self.pos = end;
                return Ok(slice);
            }
        }
        Err(GgufError::UnexpectedEof {
            what: place.to_string(),
            offset: self.offset(),
            needed: len,
            available,
        })
    }

    fn fixed<const N: usize>(&mut self, place: Place<'_>) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, place)?);
        Ok(out)
    }

    fn u32(&mut self, place: Place<'_>) -> Result<u32, GgufError> {
        self.fixed(place).map(u32::from_le_bytes)
    }

    fn u64(&mut self, place: Place<'_>) -> Result<u64, GgufError> {
        self.fixed(place).map(u64::from_le_bytes)
    }

    /// Reads a u64 count and checks that `count` entries of at least `min_entry_bytes`
    /// each fit in what remains of the file.
    fn count(&mut self, min_entry_bytes: u64, place: Place<'_>) -> Result<u64, GgufError> {
        let offset = self.offset();
        let count = self.u64(place)?;
        let remaining = self.remaining();
        match count.checked_mul(min_entry_bytes) {
            Some(total) if total <= remaining => Ok(count),
            _ => Err(GgufError::CountTooLarge {
                what: place.to_string(),
                offset,
                count,
                min_entry_bytes,
                remaining,
            }),
        }
    }

    fn string(&mut self, max_len: u64, place: Place<'_>) -> Result<String, GgufError> {
        let offset = self.offset();
        let len = self.u64(place)?;
        if len > max_len {
            return Err(GgufError::StringTooLong {
                what: place.to_string(),
                offset,
                len,
                max: max_len,
            });
        }
        let bytes = self.take(len, place)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(GgufError::InvalidUtf8 {
                what: place.to_string(),
                offset: offset + 8 + e.valid_up_to() as u64,
            }),
        }
    }

    fn bool(&mut self, place: Place<'_>) -> Result<bool, GgufError> {
        let offset = self.offset();
        match self.fixed::<1>(place)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            got => Err(GgufError::InvalidBool {
                what: place.to_string(),
                offset,
                got,
            }),
        }
    }
}

fn prealloc(count: u64) -> usize {
    // Cannot truncate: the result is at most MAX_PREALLOC.
    count.min(MAX_PREALLOC) as usize
}

/// `pos` rounded up to a multiple of `alignment` (a power of two); `None` on overflow
/// or a zero alignment.
pub(crate) fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    Some(pos.checked_add(mask)? & !mask)
}

/// Bytes one element of value type `id` takes at least; `None` for an unknown id.
fn min_encoded_size(id: u32) -> Option<u64> {
    Some(match id {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 => 8,
        type_id::STRING => 8,
        type_id::ARRAY => 4 + 8,
        _ => return None,
    })
}

/// Decodes `count` little-endian values of `N` bytes each.
fn decode_all<const N: usize, T>(
    cur: &mut Cursor<'_>,
    count: u64,
    place: Place<'_>,
    decode: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    let len = count.saturating_mul(N as u64);
    let bytes = cur.take(len, place)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut raw = [0u8; N];
            raw.copy_from_slice(chunk);
            decode(raw)
        })
        .collect())
}

fn read_value(cur: &mut Cursor<'_>, key: &str) -> Result<MetaValue, GgufError> {
    let type_offset = cur.offset();
    let id = cur.u32(Place::OfKey {
        key,
        field: "value type",
    })?;
    let place = Place::OfKey {
        key,
        field: "value",
    };
    Ok(match id {
        type_id::U8 => MetaValue::U8(cur.fixed::<1>(place)?[0]),
        type_id::I8 => MetaValue::I8(i8::from_le_bytes(cur.fixed(place)?)),
        type_id::U16 => MetaValue::U16(u16::from_le_bytes(cur.fixed(place)?)),
        type_id::I16 => MetaValue::I16(i16::from_le_bytes(cur.fixed(place)?)),
        type_id::U32 => MetaValue::U32(u32::from_le_bytes(cur.fixed(place)?)),
        type_id::I32 => MetaValue::I32(i32::from_le_bytes(cur.fixed(place)?)),
        type_id::U64 => MetaValue::U64(u64::from_le_bytes(cur.fixed(place)?)),
        type_id::I64 => MetaValue::I64(i64::from_le_bytes(cur.fixed(place)?)),
        type_id::F32 => MetaValue::F32(f32::from_le_bytes(cur.fixed(place)?)),
        type_id::F64 => MetaValue::F64(f64::from_le_bytes(cur.fixed(place)?)),
        type_id::BOOL => MetaValue::Bool(cur.bool(place)?),
        type_id::STRING => MetaValue::String(cur.string(u64::MAX, place)?),
        type_id::ARRAY => MetaValue::Array(read_array(cur, key, 1)?),
        _ => {
            return Err(GgufError::UnknownValueType {
                what: format!("value type of key {key:?}"),
                offset: type_offset,
                id,
            })
        }
    })
}

/// Reads an array's element type, length and elements; `depth` is 1 for a top-level
/// array.
fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetaArray, GgufError> {
    let type_offset = cur.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            what: format!("value of key {key:?}"),
            offset: type_offset,
            max: MAX_ARRAY_DEPTH,
        });
    }
    let id = cur.u32(Place::OfKey {
        key,
        field: "array element type",
    })?;
    let min_bytes = min_encoded_size(id).ok_or_else(|| GgufError::UnknownValueType {
        what: format!("array element type of key {key:?}"),
        offset: type_offset,
        id,
    })?;
    let n = cur.count(
        min_bytes,
        Place::OfKey {
            key,
            field: "array length",
        },
    )?;
    let place = Place::OfKey {
        key,
        field: "array elements",
    };
    Ok(match id {
        type_id::U8 => MetaArray::U8(cur.take(n, place)?.to_vec()),
        type_id::I8 => MetaArray::I8(decode_all(cur, n, place, i8::from_le_bytes)?),
        type_id::U16 => MetaArray::U16(decode_all(cur, n, place, u16::from_le_bytes)?),
        type_id::I16 => MetaArray::I16(decode_all(cur, n, place, i16::from_le_bytes)?),
        type_id::U32 => MetaArray::U32(decode_all(cur, n, place, u32::from_le_bytes)?),
        type_id::I32 => MetaArray::I32(decode_all(cur, n, place, i32::from_le_bytes)?),
        type_id::U64 => MetaArray::U64(decode_all(cur, n, place, u64::from_le_bytes)?),
        type_id::I64 => MetaArray::I64(decode_all(cur, n, place, i64::from_le_bytes)?),
        type_id::F32 => MetaArray::F32(decode_all(cur, n, place, f32::from_le_bytes)?),
        type_id::F64 => MetaArray::F64(decode_all(cur, n, place, f64::from_le_bytes)?),
        type_id::BOOL => {
            let mut items = Vec::with_capacity(prealloc(n));
            for index in 0..n {
                items.push(cur.bool(Place::Element { key, index })?);
            }
            MetaArray::Bool(items)
        }
        type_id::STRING => {
            let mut items = Vec::with_capacity(prealloc(n));
            for index in 0..n {
                items.push(cur.string(u64::MAX, Place::Element { key, index })?);
            }
            MetaArray::String(items)
        }
        _ => {
            // type_id::ARRAY: min_encoded_size has refused every other id.
            let mut items = Vec::with_capacity(prealloc(n));
            for _ in 0..n {
                items.push(read_array(cur, key, depth + 1)?);
            }
            MetaArray::Array(items)
        }
    })
}

/// The alignment a file declares: `general.alignment` when present (any unsigned
/// integer type), else 32. Must be a non-zero power of two.
fn declared_alignment(
    key_index: &HashMap<String, usize>,
    metadata: &[(String, MetaValue)],
) -> Result<u64, GgufError> {
    let Some(value) = key_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let alignment = value.as_u64().ok_or_else(|| GgufError::WrongType {
        key: ALIGNMENT_KEY.to_owned(),
        expected: "an unsigned integer",
        got: value.type_name().to_owned(),
    })?;
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { value: alignment });
    }
    Ok(alignment)
}

/// A tensor info as stored, before its shape and offset are checked.
struct RawTensorInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    relative_offset: u64,
}

fn read_tensor_info(cur: &mut Cursor<'_>, index: u64) -> Result<RawTensorInfo, GgufError> {
    let name = cur.string(MAX_TENSOR_NAME_LEN, Place::TensorName { index })?;
    let at = |field| Place::OfTensor {
        index,
        name: &name,
        field,
    };
    let n_dims = cur.u32(at("dimension count"))?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            index,
            name,
            n_dims,
            max: MAX_DIMS,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(at("dimensions"))?);
    }
    let id = cur.u32(at("type"))?;
    let relative_offset = cur.u64(at("data offset"))?;
    let Some(ggml_type) = GgmlType::from_id(id) else {
        return Err(GgufError::UnknownTensorType { index, name, id });
    };
    Ok(RawTensorInfo {
        name,
        dims,
        ggml_type,
        relative_offset,
    })
}

/// Checks shape, alignment and bounds of one tensor and resolves its absolute offset.
fn resolve_tensor(
    raw: RawTensorInfo,
    alignment: u64,
    data_offset: u64,
    file_size: u64,
) -> Result<TensorInfo, GgufError> {
    let RawTensorInfo {
        name,
        dims,
        ggml_type,
        relative_offset,
    } = raw;
    if relative_offset % alignment != 0 {
        return Err(GgufError::MisalignedTensor {
            name,
            offset: relative_offset,
            alignment,
        });
    }
    let size = match tensor_byte_size(&dims, ggml_type) {
        Ok(size) => size,
        Err(reason) => {
            return Err(GgufError::BadShape {
                name,
                dims,
                ggml_type: ggml_type.name(),
                reason,
            })
        }
    };
    let offset = data_offset.checked_add(relative_offset);
    match offset.and_then(|o| o.checked_add(size)) {
        Some(end) if end <= file_size => Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset: end - size,
            size,
        }),
        _ => Err(GgufError::TensorOutOfBounds {
            name,
            offset: offset.unwrap_or(u64::MAX),
            size,
            file_size,
        }),
    }
}

/// Bytes of a tensor of shape `dims`, or why the shape is invalid: ggml keeps
/// dimensions and element counts in `int64_t`, and needs whole blocks per row.
pub(crate) fn tensor_byte_size(dims: &[u64], ggml_type: GgmlType) -> Result<u64, String> {
    let limit = i64::MAX as u64;
    let mut elements: u64 = 1;
    for &dim in dims {
        elements = elements
            .checked_mul(dim)
            .filter(|&e| e <= limit)
            .ok_or_else(|| format!("element count exceeds {limit}"))?;
    }
    let row_len = dims.first().copied().unwrap_or(1);
    let block = ggml_type.block_size();
    if row_len % block != 0 {
        return Err(format!(
            "row length {row_len} is not a multiple of the block size {block}"
        ));
    }
    ggml_type
        .byte_size(elements)
        .ok_or_else(|| format!("byte size of {elements} elements overflows u64"))
}

/// Parses a whole GGUF v3 file held in `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor { bytes, pos: 0 };
    let magic = cur.fixed::<4>(Place::Header("magic"))?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { got: magic });
    }
    let version = cur.u32(Place::Header("version"))?;
    if version != GGUF_VERSION {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count_offset = cur.offset();
    let tensor_count = cur.u64(Place::Header("tensor count"))?;
    let kv_count = cur.count(MIN_KV_BYTES, Place::Header("key/value count"))?;

    let mut metadata = Vec::with_capacity(prealloc(kv_count));
    let mut key_index = HashMap::with_capacity(prealloc(kv_count));
    for index in 0..kv_count {
        let key_offset = cur.offset();
        let key = cur.string(MAX_KEY_LEN, Place::Key { index })?;
        let value = read_value(&mut cur, &key)?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_offset,
            });
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    let alignment = declared_alignment(&key_index, &metadata)?;

    // The tensor count is checked here, against the bytes left after the metadata.
    let remaining = cur.remaining();
    if tensor_count
        .checked_mul(MIN_TENSOR_INFO_BYTES)
        .is_none_or(|total| total > remaining)
    {
        return Err(GgufError::CountTooLarge {
            what: Place::Header("tensor count").to_string(),
            offset: tensor_count_offset,
            count: tensor_count,
            min_entry_bytes: MIN_TENSOR_INFO_BYTES,
            remaining,
        });
    }
    let mut raw_tensors = Vec::with_capacity(prealloc(tensor_count));
    let mut tensor_index = HashMap::with_capacity(prealloc(tensor_count));
    for index in 0..tensor_count {
        let raw = read_tensor_info(&mut cur, index)?;
        if let Some(&first) = tensor_index.get(&raw.name) {
            return Err(GgufError::DuplicateTensor {
                name: raw.name,
                first: first as u64,
                second: index,
            });
        }
        tensor_index.insert(raw.name.clone(), raw_tensors.len());
        raw_tensors.push(raw);
    }

    let data_offset =
        align_up(cur.offset(), alignment).ok_or(GgufError::BadAlignment { value: alignment })?;
    let file_size = bytes.len() as u64;
    let tensors = raw_tensors
        .into_iter()
        .map(|raw| resolve_tensor(raw, alignment, data_offset, file_size))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}
