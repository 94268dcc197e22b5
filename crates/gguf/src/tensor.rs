//! A weight tensor as it lies in a GGUF file: zero-copy, kept alive by the
//! file. What the model crate hands to a backend's `upload_weight`; it lives
//! with the file format so that the model needs no compute API.

use std::sync::Arc;

use crate::{GgmlType, GgufFile, GgufWriter};

/// A tensor that cannot be viewed as asked: its name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor '{name}': {detail}")]
pub struct TensorError {
    pub name: String,
    pub detail: String,
}

/// A 1-D or 2-D tensor of a GGUF file, viewed as `rows × cols` (cols contiguous).
#[derive(Clone)]
pub struct HostTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    pub rows: usize,
    pub cols: usize,
    file: Arc<GgufFile>,
    index: usize,
}

impl std::fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTensor")
            .field("name", &self.name)
            .field("ggml_type", &self.ggml_type)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl HostTensor {
    /// Looks a tensor up by name; `None` when the file has no such tensor.
    pub fn from_gguf(file: &Arc<GgufFile>, name: &str) -> Result<Option<HostTensor>, TensorError> {
        let Some(index) = file.tensors().iter().position(|t| t.name == name) else {
            return Ok(None);
        };
        let info = &file.tensors()[index];
        if info.dims.len() > 2 && info.dims[2..].iter().any(|&d| d != 1) {
            return Err(TensorError {
                name: name.to_string(),
                detail: format!("expected at most 2 dimensions, got {:?}", info.dims),
            });
        }
        let to_usize = |v: u64| {
            usize::try_from(v).map_err(|_| TensorError {
                name: name.to_string(),
                detail: format!("dimension {v} does not fit in memory"),
            })
        };
        let cols = to_usize(info.row_len())?;
        let rows = to_usize(info.rows())?;
        Ok(Some(HostTensor {
            name: name.to_string(),
            ggml_type: info.ggml_type,
            rows,
            cols,
            file: Arc::clone(file),
            index,
        }))
    }

    /// A `rows × cols` tensor of `ggml_type` from its bytes in the file layout,
    /// held in a one-tensor GGUF in memory (tests, benchmarks, the parity kit);
    /// an error when the bytes do not match the shape.
    pub fn in_memory(
        name: &str,
        ggml_type: GgmlType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<HostTensor, TensorError> {
        let fail = |detail: String| TensorError {
            name: name.to_string(),
            detail,
        };
        let mut writer = GgufWriter::new();
        writer
            .add_tensor(name, vec![cols as u64, rows as u64], ggml_type, bytes)
            .map_err(|e| fail(e.to_string()))?;
        let mut file = Vec::new();
        writer
            .write_to(&mut file)
            .map_err(|e| fail(e.to_string()))?;
        let file = Arc::new(GgufFile::from_bytes(file).map_err(|e| fail(e.to_string()))?);
        HostTensor::from_gguf(&file, name)?.ok_or_else(|| fail("not written".into()))
    }

    /// The tensor's bytes in the file's layout.
    pub fn bytes(&self) -> &[u8] {
        self.file.tensor_data(&self.file.tensors()[self.index])
    }

    /// Checks the tensor's shape.
    pub fn expect_shape(&self, rows: usize, cols: usize) -> Result<(), TensorError> {
        if self.rows == rows && self.cols == cols {
            Ok(())
        } else {
            Err(TensorError {
                name: self.name.clone(),
                detail: format!(
                    "expected shape [{rows}, {cols}] (rows × cols), got [{}, {}]",
                    self.rows, self.cols
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_tensors_keep_shape_and_bytes_and_reject_wrong_sizes() {
        let bytes: Vec<u8> = (0..6u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let t = HostTensor::in_memory("w", GgmlType::F32, 2, 3, bytes.clone()).expect("tensor");
        assert_eq!((t.rows, t.cols, t.ggml_type), (2, 3, GgmlType::F32));
        assert_eq!(t.bytes(), &bytes[..]);
        let err = HostTensor::in_memory("w", GgmlType::F32, 2, 4, bytes).expect_err("short");
        assert!(err.to_string().contains("'w'"), "{err}");
    }
}
