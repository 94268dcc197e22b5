//! An opened GGUF file: its bytes (memory-mapped, static or owned), parsed metadata
//! and tensor table, and typed getters for metadata keys.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::GgufError;
use crate::parse::{parse, Parsed};
use crate::types::GgmlType;
use crate::value::{MetaArray, MetaValue};

/// One tensor's entry in the file, with its shape, type and resolved location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset in the file (data section start + the stored offset).
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    /// Product of all dimensions (1 for a tensor without dimensions).
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows: the product of `dims[1..]`.
    pub fn rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Elements per row: `dims[0]` (1 for a tensor without dimensions).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

/// Where a file's bytes live.
enum Backing {
    Mmap(Mmap),
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(map) => map,
            Backing::Static(bytes) => bytes,
            Backing::Owned(bytes) => bytes,
        }
    }
}

/// A parsed GGUF v3 file. Tensor data stays in the backing bytes and is handed out
/// as slices; every tensor's range was checked against the file size at open.
pub struct GgufFile {
    backing: Backing,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetaValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("file_size", &self.file_size())
            .field("alignment", &self.alignment)
            .field("keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`; the tensor data is never copied.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_error = |error| GgufError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io_error)?;
        // SAFETY: the map is read-only and lives as long as `self`. Like every mmap
        // reader, we rely on nobody truncating or rewriting the file while it is open
        // (a truncation would fault on access, a rewrite would change data we hand out).
        let map = unsafe { Mmap::map(&file) }.map_err(io_error)?;
        Self::from_backing(Backing::Mmap(map))
    }

    /// Parses a file embedded in the binary, e.g. with `include_bytes!`.
    pub fn from_static(bytes: &'static [u8]) -> Result<GgufFile, GgufError> {
        Self::from_backing(Backing::Static(bytes))
    }

    /// Parses a file held in memory (tests, fuzzing, downloaded bytes).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_backing(Backing::Owned(bytes))
    }

    fn from_backing(backing: Backing) -> Result<GgufFile, GgufError> {
        let Parsed {
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_index,
        } = parse(backing.bytes())?;
        Ok(GgufFile {
            backing,
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_index,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32 when the file does not set it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// All key/values in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn wrong_type(key: &str, expected: &'static str, got: String) -> GgufError {
        GgufError::WrongType {
            key: key.to_owned(),
            expected,
            got,
        }
    }

    /// Any integer type holding a non-negative value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let value = self.require(key)?;
        value
            .as_u64()
            .ok_or_else(|| Self::wrong_type(key, "an integer fitting u64", describe(value)))
    }

    /// Any integer type whose value fits `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let value = self.require(key)?;
        value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Self::wrong_type(key, "an integer fitting u32", describe(value)))
    }

    /// An f32, or an f64 rounded to f32.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match *self.require(key)? {
            MetaValue::F32(v) => Ok(v),
            MetaValue::F64(v) => Ok(v as f32),
            ref other => Err(Self::wrong_type(key, "f32 or f64", describe(other))),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let value = self.require(key)?;
        value
            .as_str()
            .ok_or_else(|| Self::wrong_type(key, "string", describe(value)))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let value = self.require(key)?;
        value
            .as_bool()
            .ok_or_else(|| Self::wrong_type(key, "bool", describe(value)))
    }

    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        match self.require(key)? {
            MetaValue::Array(MetaArray::String(items)) => Ok(items),
            other => Err(Self::wrong_type(key, "array of string", describe(other))),
        }
    }

    /// Any integer array whose values all fit `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let value = self.require(key)?;
        let expected = "an integer array with values fitting i32";
        let Some(array) = value.as_array() else {
            return Err(Self::wrong_type(key, expected, describe(value)));
        };
        match array.to_int_vec::<i32>() {
            Some(Ok(items)) => Ok(items),
            Some(Err(index)) => Err(Self::wrong_type(
                key,
                expected,
                format!("{} whose element {index} does not fit", array.type_name()),
            )),
            None => Err(Self::wrong_type(
                key,
                expected,
                array.type_name().to_owned(),
            )),
        }
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The data of `info`, a tensor of this file.
    ///
    /// # Panics
    /// When `info` describes a range outside this file, which cannot happen for an
    /// info taken from [`GgufFile::tensors`] (checked at open). See
    /// [`GgufFile::try_tensor_data`] for infos of unknown origin.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        match self.try_tensor_data(info) {
            Some(data) => data,
            None => panic!(
                "tensor {:?}: range {}+{} is outside this {}-byte file; \
                 was the TensorInfo taken from another file?",
                info.name,
                info.offset,
                info.size,
                self.file_size()
            ),
        }
    }

    /// The data of `info`, or `None` when its range lies outside this file.
    pub fn try_tensor_data(&self, info: &TensorInfo) -> Option<&[u8]> {
        let start = usize::try_from(info.offset).ok()?;
        let end = start.checked_add(usize::try_from(info.size).ok()?)?;
        self.bytes().get(start..end)
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }
}

/// A value's type, and the value itself when it is a short scalar, for errors.
fn describe(value: &MetaValue) -> String {
    match value {
        MetaValue::String(_) | MetaValue::Array(_) => value.type_name().to_owned(),
        MetaValue::U8(v) => format!("u8 {v}"),
        MetaValue::I8(v) => format!("i8 {v}"),
        MetaValue::U16(v) => format!("u16 {v}"),
        MetaValue::I16(v) => format!("i16 {v}"),
        MetaValue::U32(v) => format!("u32 {v}"),
        MetaValue::I32(v) => format!("i32 {v}"),
        MetaValue::U64(v) => format!("u64 {v}"),
        MetaValue::I64(v) => format!("i64 {v}"),
        MetaValue::F32(v) => format!("f32 {v}"),
        MetaValue::F64(v) => format!("f64 {v}"),
        MetaValue::Bool(v) => format!("bool {v}"),
    }
}
