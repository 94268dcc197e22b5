//! A small GGUF v3 writer for test fixtures and generated benchmark models.
//!
//! The layout matches what llama.cpp's `gguf_write` and gguf-py's `GGUFWriter`
//! produce: header, key/values, tensor infos, zero padding to the alignment, then each
//! tensor's data followed by zero padding to the alignment.

use std::io::{self, Write};
use std::path::Path;

use crate::error::GgufError;
use crate::parse::{
    align_up, tensor_byte_size, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION,
    MAX_ARRAY_DEPTH, MAX_DIMS, MAX_KEY_LEN, MAX_TENSOR_NAME_LEN,
};
use crate::types::GgmlType;
use crate::value::{MetaArray, MetaValue};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes them as one GGUF v3 file.
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty file with the default alignment of 32.
    pub fn new() -> GgufWriter {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the data alignment and records it as `general.alignment` (u32 when it
    /// fits). A value that is not a non-zero power of two fails at write time.
    pub fn set_alignment(&mut self, alignment: u64) {
        self.alignment = alignment;
        let value = match u32::try_from(alignment) {
            Ok(a) => MetaValue::U32(a),
            Err(_) => MetaValue::U64(alignment),
        };
        self.add_metadata(ALIGNMENT_KEY, value);
    }

    /// Adds a key/value; adding a key again replaces its value in place.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: MetaValue) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// Adds a tensor; `data` must hold exactly the bytes its shape and type need.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let index = self.tensors.len() as u64;
        if name.len() as u64 > MAX_TENSOR_NAME_LEN {
            return Err(GgufError::TensorNameTooLong {
                len: name.len() as u64,
                name,
                max: MAX_TENSOR_NAME_LEN,
            });
        }
        if let Some(first) = self.tensors.iter().position(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor {
                name,
                first: first as u64,
                second: index,
            });
        }
        if dims.len() > MAX_DIMS as usize {
            return Err(GgufError::TooManyDims {
                index,
                n_dims: u32::try_from(dims.len()).unwrap_or(u32::MAX),
                name,
                max: MAX_DIMS,
            });
        }
        let expected = match tensor_byte_size(&dims, ggml_type) {
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
        if data.len() as u64 != expected {
            return Err(GgufError::TensorSizeMismatch {
                name,
                expected,
                got: data.len() as u64,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            dims,
            ggml_type,
            data,
        });
        Ok(())
    }

    /// Writes the file. Fails with `InvalidInput` when the alignment is not a power of
    /// two, `general.alignment` was set to something else by `add_metadata`, a key is
    /// longer than 65535 bytes, or arrays nest deeper than the reader accepts.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let header = self.encode_header()?;
        w.write_all(&header)?;
        let mut pos = header.len() as u64;
        for tensor in &self.tensors {
            pos = pad_to(w, pos, self.alignment)?;
            w.write_all(&tensor.data)?;
            pos += tensor.data.len() as u64;
        }
        pad_to(w, pos, self.alignment)?;
        Ok(())
    }

    /// Writes the file to `path`, replacing what is there.
    pub fn write_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut w = io::BufWriter::new(std::fs::File::create(path)?);
        self.write_to(&mut w)?;
        w.flush()
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Header, key/values and tensor infos, without the padding that follows.
    fn encode_header(&self) -> io::Result<Vec<u8>> {
        let alignment = self.alignment;
        if !alignment.is_power_of_two() {
            return Err(invalid(format!(
                "alignment {alignment} is not a non-zero power of two"
            )));
        }
        if let Some((_, value)) = self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            if value.as_u64() != Some(alignment) {
                return Err(invalid(format!(
                    "{ALIGNMENT_KEY} is {value:?} but the writer aligns to {alignment}; \
                     use set_alignment"
                )));
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            if key.len() as u64 > MAX_KEY_LEN {
                return Err(invalid(format!(
                    "key of {} bytes is longer than {MAX_KEY_LEN}",
                    key.len()
                )));
            }
            put_str(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut out, value).map_err(|()| {
                invalid(format!(
                    "arrays of key {key:?} nest deeper than {MAX_ARRAY_DEPTH}"
                ))
            })?;
        }
        let mut offset = 0u64;
        for tensor in &self.tensors {
            offset = align_up(offset, alignment)
                .ok_or_else(|| invalid("data offset overflows u64".into()))?;
            put_str(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&tensor.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += tensor.data.len() as u64;
        }
        Ok(out)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Writes zeros from `pos` up to the next multiple of `alignment`; returns the new
/// position.
fn pad_to(w: &mut impl Write, pos: u64, alignment: u64) -> io::Result<u64> {
    let padded =
        align_up(pos, alignment).ok_or_else(|| invalid("file size overflows u64".into()))?;
    // The alignment may be any power of two: write zeros in bounded chunks.
    let mut left = padded - pos;
    let zeros = [0u8; 256];
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        w.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(padded)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a value (its type id is written by the caller); `Err(())` when arrays nest
/// deeper than the reader accepts.
fn put_value(out: &mut Vec<u8>, value: &MetaValue) -> Result<(), ()> {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(array) => put_array(out, array, 1)?,
    }
    Ok(())
}

/// Encodes element type, length and elements; `Err(())` when nesting exceeds what the
/// reader accepts.
fn put_array(out: &mut Vec<u8>, array: &MetaArray, depth: usize) -> Result<(), ()> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(());
    }
    out.extend_from_slice(&array.element_type_id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, items: &[T], encode: fn(T) -> [u8; N]) {
        for &item in items {
            out.extend_from_slice(&encode(item));
        }
    }
    match array {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each(out, v, i8::to_le_bytes),
        MetaArray::U16(v) => each(out, v, u16::to_le_bytes),
        MetaArray::I16(v) => each(out, v, i16::to_le_bytes),
        MetaArray::U32(v) => each(out, v, u32::to_le_bytes),
        MetaArray::I32(v) => each(out, v, i32::to_le_bytes),
        MetaArray::U64(v) => each(out, v, u64::to_le_bytes),
        MetaArray::I64(v) => each(out, v, i64::to_le_bytes),
        MetaArray::F32(v) => each(out, v, f32::to_le_bytes),
        MetaArray::F64(v) => each(out, v, f64::to_le_bytes),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| put_str(out, s)),
        MetaArray::Array(v) => {
            for inner in v {
                put_array(out, inner, depth + 1)?;
            }
        }
    }
    Ok(())
}
