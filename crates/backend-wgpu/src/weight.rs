//! Weights on the device, uploaded once. Q8_0 matrices are repacked from the
//! file's 34-byte blocks (2-byte scale, then 32 quants: not 4-byte aligned)
//! into 4-byte quant words plus f16 scales two to a word; F32, F16 and BF16
//! tensors, and Q8_0 vectors (norm weights), are widened to f32. A tensor
//! larger than one storage binding is split by rows into parts.

use half::{bf16, f16};
use tessera_backend::{BackendError, HostTensor};
use tessera_gguf::{GgmlType, QK8_0};

use crate::context::Context;

const Q8_0_BLOCK_BYTES: usize = 2 + QK8_0;

/// How the values of a weight are stored on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// Quant words (8 per block of 32) and f16 scales (2 per word).
    Q8_0,
    F32,
}

/// Rows `[row0, row0 + rows)` of a weight, in buffers of their own.
#[derive(Debug)]
pub(crate) struct WeightPart {
    pub row0: usize,
    pub rows: usize,
    /// Quant words (Q8_0) or f32 values.
    pub data: wgpu::Buffer,
    /// Packed f16 scales (Q8_0 only).
    pub scales: Option<wgpu::Buffer>,
}

impl WeightPart {
    /// The part's buffers in shader binding order.
    pub fn bindings(&self) -> Vec<&wgpu::Buffer> {
        std::iter::once(&self.data).chain(&self.scales).collect()
    }
}

/// A weight tensor (`rows × cols`) on the device.
#[derive(Debug)]
pub struct WgpuWeight {
    name: String,
    rows: usize,
    cols: usize,
    format: WeightFormat,
    pub(crate) parts: Vec<WeightPart>,
}

impl WgpuWeight {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// How many bindings the tensor is split over.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// The preprocessor flags of shaders reading this weight.
    pub(crate) fn flags(&self) -> &'static [&'static str] {
        match self.format {
            WeightFormat::Q8_0 => &["q8_0"],
            WeightFormat::F32 => &[],
        }
    }

    /// The part holding `row` and the row's index inside it.
    pub(crate) fn locate(&self, row: usize) -> Option<(&WeightPart, usize)> {
        self.parts
            .iter()
            .find(|p| (p.row0..p.row0 + p.rows).contains(&row))
            .map(|p| (p, row - p.row0))
    }

    pub(crate) fn upload(ctx: &Context, tensor: &HostTensor) -> Result<WgpuWeight, BackendError> {
        let (rows, cols) = (tensor.rows, tensor.cols);
        let bad = |detail: String| BackendError::Tensor {
            name: tensor.name.clone(),
            detail,
        };
        let bytes = tensor.bytes();
        let element_bytes = match tensor.ggml_type {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => {
                if !cols.is_multiple_of(QK8_0) {
                    return Err(bad(format!(
                        "Q8_0 row length {cols} is not a multiple of {QK8_0}"
                    )));
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
        let row_bytes = if element_bytes == 0 {
            cols / QK8_0 * Q8_0_BLOCK_BYTES
        } else {
            cols * element_bytes
        };
        if bytes.len() != rows * row_bytes {
            return Err(bad(format!(
                "expected {} bytes, the file holds {}",
                rows * row_bytes,
                bytes.len()
            )));
        }
        // Vectors (norm weights) are read element-wise by every shader: f32.
        let format = if tensor.ggml_type == GgmlType::Q8_0 && rows > 1 {
            WeightFormat::Q8_0
        } else {
            WeightFormat::F32
        };
        // Device bytes per row in the largest buffer of a part.
        let device_row_bytes = match format {
            WeightFormat::Q8_0 => cols,
            WeightFormat::F32 => cols * 4,
        } as u64;
        let rows_per_part = ctx
            .weight_part_bytes
            .checked_div(device_row_bytes)
            .map_or(rows.max(1), |n| n as usize);
        if rows_per_part == 0 {
            return Err(bad(format!(
                "one row takes {device_row_bytes} bytes; a weight part holds at most {}",
                ctx.weight_part_bytes
            )));
        }
        let mut parts = Vec::new();
        let mut row0 = 0;
        loop {
            let n = rows_per_part.min(rows - row0);
            let src = &bytes[row0 * row_bytes..(row0 + n) * row_bytes];
            let label = format!("{} rows {row0}..{}", tensor.name, row0 + n);
            let part = match format {
                WeightFormat::Q8_0 => {
                    let (quants, scales) = repack_q8_0(src);
                    WeightPart {
                        row0,
                        rows: n,
                        data: ctx.storage_init(&label, &quants)?,
                        scales: Some(ctx.storage_init(&label, &scales)?),
                    }
                }
                WeightFormat::F32 => {
                    let values = widen(tensor.ggml_type, src, n * cols);
                    let words: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
                    WeightPart {
                        row0,
                        rows: n,
                        data: ctx.storage_init(&label, &words)?,
                        scales: None,
                    }
                }
            };
            parts.push(part);
            row0 += n;
            if row0 >= rows {
                break;
            }
        }
        Ok(WgpuWeight {
            name: tensor.name.clone(),
            rows,
            cols,
            format,
            parts,
        })
    }
}

/// Q8_0 blocks → (quant words: 8 per block, little-endian bytes in order;
/// scales: the f16 bits of blocks 2i and 2i+1 in the low and high half of word i).
fn repack_q8_0(blocks: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let n_blocks = blocks.len() / Q8_0_BLOCK_BYTES;
    let mut quants = Vec::with_capacity(n_blocks * 8);
    let mut scales = vec![0u32; n_blocks.div_ceil(2)];
    for (i, block) in blocks.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
        let d = u32::from(u16::from_le_bytes([block[0], block[1]]));
        scales[i / 2] |= d << (16 * (i % 2));
        quants.extend(
            block[2..]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    (quants, scales)
}

/// `count` values of a tensor's bytes as f32 (exact for every admitted type).
fn widen(ty: GgmlType, bytes: &[u8], count: usize) -> Vec<f32> {
    match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        GgmlType::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => {
            let mut out = Vec::with_capacity(count);
            for block in bytes.chunks_exact(Q8_0_BLOCK_BYTES) {
                let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
            out
        }
        _ => unreachable!("upload admits only F32, F16, BF16 and Q8_0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_repack_keeps_quant_bytes_in_order_and_pairs_scales() {
        let mut blocks = Vec::new();
        for b in 0..3u8 {
            blocks.extend_from_slice(&[b, 0x3c]);
            blocks.extend((0..32).map(|i| i + 32 * b));
        }
        let (quants, scales) = repack_q8_0(&blocks);
        assert_eq!(quants.len(), 24);
        assert_eq!(quants[0], u32::from_le_bytes([0, 1, 2, 3]));
        assert_eq!(quants[8], u32::from_le_bytes([32, 33, 34, 35]));
        assert_eq!(scales, vec![0x3c01_3c00, 0x0000_3c02]);
    }
}
