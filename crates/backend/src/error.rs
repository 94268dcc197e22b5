//! Errors a backend reports: shape mismatches carry the op and both sizes.

use tessera_gguf::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{op}: {what} has {got} elements, expected at least {expected}")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error("tensor '{name}': type {ggml_type:?} is not supported by this backend")]
    UnsupportedType { name: String, ggml_type: GgmlType },
    #[error("tensor '{name}': {detail}")]
    Tensor { name: String, detail: String },
    #[error("device: {0}")]
    Device(String),
}

impl From<tessera_gguf::TensorError> for BackendError {
    fn from(e: tessera_gguf::TensorError) -> BackendError {
        BackendError::Tensor {
            name: e.name,
            detail: e.detail,
        }
    }
}

impl BackendError {
    /// Checks that a buffer of `got` elements can hold `expected`.
    pub fn check_len(
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    ) -> Result<(), BackendError> {
        if got < expected {
            Err(BackendError::Shape {
                op,
                what,
                expected,
                got,
            })
        } else {
            Ok(())
        }
    }
}
