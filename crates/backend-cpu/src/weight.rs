//! A weight tensor as the CPU backend holds it: the file's bytes, untouched
//! (Q8_0, F32, F16 or BF16), dequantised one row at a time when used.

use half::{bf16, f16};
use tessera_backend::{BackendError, HostTensor};
use tessera_gguf::{GgmlType, QK8_0};

const Q8_0_BLOCK_BYTES: usize = 2 + QK8_0;

/// A zero-copy view of a weight tensor (`rows × cols`).
#[derive(Clone, Debug)]
pub struct CpuWeight {
    tensor: HostTensor,
}

impl CpuWeight {
    pub fn new(tensor: &HostTensor) -> Result<CpuWeight, BackendError> {
        let element_bytes = match tensor.ggml_type {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => {
                if !tensor.cols.is_multiple_of(QK8_0) {
                    return Err(BackendError::Tensor {
                        name: tensor.name.clone(),
                        detail: format!(
                            "Q8_0 row length {} is not a multiple of {QK8_0}",
                            tensor.cols
                        ),
                    });
                }
                0
            }
            other => {
                return Err(BackendError::UnsupportedType {
                    name: tensor.name.clone(),
                    ggml_type: other,
                })
            }
        };
        let expected = if element_bytes == 0 {
            tensor.rows * tensor.cols / QK8_0 * Q8_0_BLOCK_BYTES
        } else {
            tensor.rows * tensor.cols * element_bytes
        };
        if tensor.bytes().len() != expected {
            return Err(BackendError::Tensor {
                name: tensor.name.clone(),
                detail: format!(
                    "expected {expected} bytes, the file holds {}",
                    tensor.bytes().len()
                ),
            });
        }
        Ok(CpuWeight {
            tensor: tensor.clone(),
        })
    }

    pub fn rows(&self) -> usize {
        self.tensor.rows
    }

    pub fn cols(&self) -> usize {
        self.tensor.cols
    }

    pub fn name(&self) -> &str {
        &self.tensor.name
    }

    pub fn ggml_type(&self) -> GgmlType {
        self.tensor.ggml_type
    }

    /// The tensor's bytes in the file's layout (for the Q8_0 fast path).
    pub fn bytes(&self) -> &[u8] {
        self.tensor.bytes()
    }

    /// Writes row `row` as f32 into `out` (`out.len() == cols`).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let cols = self.tensor.cols;
        debug_assert!(row < self.tensor.rows && out.len() == cols);
        let bytes = self.tensor.bytes();
        match self.tensor.ggml_type {
            GgmlType::F32 => {
                let src = &bytes[row * cols * 4..(row + 1) * cols * 4];
                for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            GgmlType::F16 => {
                let src = &bytes[row * cols * 2..(row + 1) * cols * 2];
                for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            GgmlType::BF16 => {
                let src = &bytes[row * cols * 2..(row + 1) * cols * 2];
                for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            GgmlType::Q8_0 => {
                let row_bytes = cols / QK8_0 * Q8_0_BLOCK_BYTES;
                let src = &bytes[row * row_bytes..(row + 1) * row_bytes];
                for (o, block) in out
                    .chunks_exact_mut(QK8_0)
                    .zip(src.chunks_exact(Q8_0_BLOCK_BYTES))
                {
                    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                    for (o, &q) in o.iter_mut().zip(&block[2..]) {
                        *o = f32::from(q as i8) * d;
                    }
                }
            }
            _ => unreachable!("CpuWeight::new admits only F32, F16, BF16 and Q8_0"),
        }
    }

    /// The whole tensor as f32 (norm weights, tests).
    pub fn to_f32(&self) -> Vec<f32> {
        let cols = self.tensor.cols;
        let mut out = vec![0.0; self.tensor.rows * cols];
        for (row, chunk) in out.chunks_exact_mut(cols.max(1)).enumerate() {
            self.dequantize_row(row, chunk);
        }
        out
    }
}
