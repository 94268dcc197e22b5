//! Device buffers and weights. Q8_0 weights are uploaded split into an int8 plane
//! `[rows, cols]` and an f16 scale plane `[rows, cols/32]` (the file's 34-byte blocks
//! would leave the int8 values 2-byte aligned; split, every 32-value block is
//! 16-byte aligned for cp.async and 4-byte words for dp4a/mma), the same bytes in
//! all. 1-row tensors (norm weights) are held as f32.

use half::{bf16, f16};
use tessera_backend::{BackendError, HostTensor};
use tessera_gguf::{GgmlType, QK8_0};

use crate::Device;

const Q8_0_BLOCK_BYTES: usize = 2 + QK8_0;

/// `len` f32 values on the device.
pub struct DeviceBuffer<M> {
    pub(crate) memory: M,
    pub(crate) len: usize,
}

impl<M> DeviceBuffer<M> {
    /// Capacity in f32 values.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A weight tensor on the device (`rows × cols`).
pub struct DeviceWeight<M> {
    pub(crate) name: String,
    /// How `data` holds the values: Q8_0 (split planes), F32, F16 or BF16.
    pub(crate) ggml_type: GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Q8_0: the int8 values; otherwise the elements.
    pub(crate) data: M,
    /// Q8_0: the f16 scales.
    pub(crate) scales: Option<M>,
}

impl<M> DeviceWeight<M> {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn upload<D: Device<Memory = M>>(
        device: &D,
        tensor: &HostTensor,
    ) -> Result<DeviceWeight<M>, BackendError> {
        let (rows, cols) = (tensor.rows, tensor.cols);
        let bytes = tensor.bytes();
        let elements = rows * cols;
        let wrong_size = |expected: usize| BackendError::Tensor {
            name: tensor.name.clone(),
            detail: format!("expected {expected} bytes, the file holds {}", bytes.len()),
        };
        let put = |data: &[u8]| -> Result<M, BackendError> {
            let mut mem = device.alloc(data.len())?;
            device.upload(&mut mem, 0, data)?;
            Ok(mem)
        };
        let (ggml_type, data, scales) = match tensor.ggml_type {
            GgmlType::Q8_0 => {
                if !cols.is_multiple_of(QK8_0) {
                    return Err(BackendError::Tensor {
                        name: tensor.name.clone(),
                        detail: format!("Q8_0 row length {cols} is not a multiple of {QK8_0}"),
                    });
                }
                let (qs, d) = split_q8_0(bytes, elements)
                    .ok_or_else(|| wrong_size(elements / QK8_0 * Q8_0_BLOCK_BYTES))?;
                (
                    GgmlType::Q8_0,
                    put(&qs)?,
                    Some(put(bytemuck::cast_slice(&d))?),
                )
            }
            ty @ (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) => {
                let width = if ty == GgmlType::F32 { 4 } else { 2 };
                if bytes.len() != elements * width {
                    return Err(wrong_size(elements * width));
                }
                if rows == 1 && ty != GgmlType::F32 {
                    (
                        GgmlType::F32,
                        put(bytemuck::cast_slice(&to_f32(bytes, ty)))?,
                        None,
                    )
                } else {
                    (ty, put(bytes)?, None)
                }
            }
            other => {
                return Err(BackendError::UnsupportedType {
                    name: tensor.name.clone(),
                    ggml_type: other,
                })
            }
        };
        Ok(DeviceWeight {
            name: tensor.name.clone(),
            ggml_type,
            rows,
            cols,
            data,
            scales,
        })
    }
}

/// Splits Q8_0 blocks (f16 `d`, 32 × i8) into the int8 plane and the scale plane;
/// `None` when `bytes` is not exactly `elements / 32` blocks.
pub(crate) fn split_q8_0(bytes: &[u8], elements: usize) -> Option<(Vec<u8>, Vec<u16>)> {
    if bytes.len() != elements / QK8_0 * Q8_0_BLOCK_BYTES {
        return None;
    }
    let mut qs = Vec::with_capacity(elements);
    let mut d = Vec::with_capacity(elements / QK8_0);
    for block in bytes.chunks_exact(Q8_0_BLOCK_BYTES) {
        d.push(u16::from_le_bytes([block[0], block[1]]));
        qs.extend_from_slice(&block[2..]);
    }
    Some((qs, d))
}

fn to_f32(bytes: &[u8], ty: GgmlType) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| {
            let bits = u16::from_le_bytes([b[0], b[1]]);
            match ty {
                GgmlType::F16 => f16::from_bits(bits).to_f32(),
                _ => bf16::from_bits(bits).to_f32(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_split_into_aligned_planes() {
        let mut bytes = Vec::new();
        for b in 0..3u8 {
            bytes.extend_from_slice(&[b, 0x3c]);
            bytes.extend((0..32).map(|i| i as u8 + 32 * b));
        }
        let (qs, d) = split_q8_0(&bytes, 96).expect("three blocks");
        assert_eq!(d, vec![0x3c00, 0x3c01, 0x3c02]);
        assert_eq!(qs, (0..96).map(|i| i as u8).collect::<Vec<_>>());
        assert!(split_q8_0(&bytes[..67], 64).is_none());
    }
}
