//! `out = x · wᵀ` (`kernels/matmul_q8_0.cu`, `kernels/matmul_dense.cu`). Q8_0
//! weights in W8A8: the activations are quantised to int8 blocks, then the int8
//! kernel of the device's path (mma.sync or dp4a) runs on 64×64 output tiles; in
//! W8A16 they become f16 rows for `kernels/matmul_w8a16.cu` (`ops::w8a16`).
//! F32/F16/BF16 weights: an f32 tiled kernel.

use tessera_backend::BackendError;
use tessera_gguf::{GgmlType, QK8_0};

use super::{grid_yz, to_u32, w8a16};
use crate::{
    Arithmetic, Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend, Launch, MatmulPath,
};

/// Output tile of the matmul kernels (rows × features), both families.
pub const TILE_ROWS: usize = 64;
pub const TILE_COLS: usize = 64;
pub const Q8_0_THREADS: u32 = 128;
pub const DENSE_THREADS: u32 = 256;
/// Warps per block of the quantisation kernel: one Q8_0 block each.
pub const QUANTIZE_WARPS: usize = 8;

/// Activations quantised to Q8_0 blocks on the device: int8 values `[rows, k]`,
/// f32 scales `[rows, k/32]`. The allocation holds `capacity` values and can be
/// reshaped to any `rows × k` that fits (the backend keeps one and reuses it).
pub struct QuantisedRows<M> {
    pub(crate) qs: M,
    pub(crate) scales: M,
    pub(crate) rows: usize,
    pub(crate) k: usize,
    capacity: usize,
}

impl<M> QuantisedRows<M> {
    pub fn alloc<D: Device<Memory = M>>(
        device: &D,
        rows: usize,
        k: usize,
    ) -> Result<QuantisedRows<M>, BackendError> {
        if !k.is_multiple_of(QK8_0) {
            return Err(BackendError::Invalid {
                op: "matmul",
                detail: format!("rows of {k} values cannot be quantised in blocks of {QK8_0}"),
            });
        }
        Ok(QuantisedRows {
            qs: device.alloc(rows * k)?,
            scales: device.alloc(rows * k / QK8_0 * 4)?,
            rows,
            k,
            capacity: rows * k,
        })
    }

    /// Views the allocation as rows of `k` (as many as fit); false when not even
    /// `rows` of them fit, or `k` is not whole blocks.
    pub(crate) fn reshape(&mut self, rows: usize, k: usize) -> bool {
        if k == 0 || !k.is_multiple_of(QK8_0) || rows.saturating_mul(k) > self.capacity {
            return false;
        }
        self.rows = self.capacity / k;
        self.k = k;
        true
    }

    /// Reads back the int8 values and the scales of the first `rows` rows (tests,
    /// debugging).
    pub fn download<D: Device<Memory = M>>(
        &self,
        device: &D,
        rows: usize,
    ) -> Result<(Vec<i8>, Vec<f32>), BackendError> {
        self.check(rows, self.k)?;
        let mut qs = vec![0u8; rows * self.k];
        let mut scales = vec![0.0f32; rows * self.k / QK8_0];
        device.download(&self.qs, 0, &mut qs)?;
        device.download(&self.scales, 0, bytemuck::cast_slice_mut(&mut scales))?;
        Ok((qs.into_iter().map(|q| q as i8).collect(), scales))
    }

    pub(crate) fn check(&self, rows: usize, k: usize) -> Result<(), BackendError> {
        if k != self.k || rows > self.rows {
            return Err(BackendError::Invalid {
                op: "matmul",
                detail: format!(
                    "quantised activations hold {} rows of {}, {rows} rows of {k} asked",
                    self.rows, self.k
                ),
            });
        }
        Ok(())
    }
}

/// The grid of a matmul over `rows × n` outputs.
pub fn matmul_grid(rows: usize, n: usize) -> Result<[u32; 3], BackendError> {
    Ok([
        to_u32(n.div_ceil(TILE_COLS), "matmul", "column tiles")?,
        grid_yz(rows.div_ceil(TILE_ROWS), "matmul", "row tiles")?,
        1,
    ])
}

/// The grid of the quantisation kernel over `blocks` Q8_0 blocks.
pub fn quantize_grid(blocks: usize) -> Result<[u32; 3], BackendError> {
    Ok([
        to_u32(
            blocks.div_ceil(QUANTIZE_WARPS),
            "matmul",
            "quantisation blocks",
        )?,
        1,
        1,
    ])
}

/// Quantises `rows × k` activations (`quantize_q8_0`).
pub fn quantize<D: Device>(
    b: &KernelBackend<D>,
    x: &DeviceBuffer<D::Memory>,
    rows: usize,
    k: usize,
    into: &QuantisedRows<D::Memory>,
) -> Result<(), BackendError> {
    BackendError::check_len("matmul", "x", rows * k, x.len)?;
    into.check(rows, k)?;
    let blocks = rows * k / QK8_0;
    launch_quantising(
        b,
        ("matmul_q8_0", "quantize_q8_0"),
        vec![KernelArg::Ptr(b.address(x))],
        blocks,
        into,
    )
}

/// Launches a kernel that writes `blocks` Q8_0 blocks into `into`, one warp per
/// block (`quantize_q8_0`, `swiglu_q8_0`): its parameters are `inputs`, then the
/// block count, the int8 values and the scales.
pub(crate) fn launch_quantising<D: Device>(
    b: &KernelBackend<D>,
    (module, kernel): (&'static str, &'static str),
    mut inputs: Vec<KernelArg>,
    blocks: usize,
    into: &QuantisedRows<D::Memory>,
) -> Result<(), BackendError> {
    if blocks == 0 {
        return Ok(());
    }
    inputs.extend([
        KernelArg::U64(blocks as u64),
        KernelArg::Ptr(b.device.address(&into.qs)),
        KernelArg::Ptr(b.device.address(&into.scales)),
    ]);
    b.device.launch(&Launch {
        module,
        kernel,
        grid: quantize_grid(blocks)?,
        block: [(QUANTIZE_WARPS * 32) as u32, 1, 1],
        shared_bytes: 0,
        args: inputs,
    })
}

/// The int8 matmul on already-quantised activations: `out = x · wᵀ`, or with
/// `accumulate` `out += x · wᵀ` (the residual add in the epilogue).
pub fn matmul_quantised<D: Device>(
    b: &KernelBackend<D>,
    x: &QuantisedRows<D::Memory>,
    rows: usize,
    weight: &DeviceWeight<D::Memory>,
    accumulate: bool,
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    x.check(rows, weight.cols)?;
    let kernel = match b.device.matmul_path() {
        MatmulPath::Mma => "matmul_q8_0_mma",
        MatmulPath::Dp4a => "matmul_q8_0_dp4a",
    };
    let plan = Q8Plan {
        kernel: ("matmul_q8_0", kernel),
        grid: matmul_grid(rows, weight.rows)?,
        threads: Q8_0_THREADS,
    };
    launch_q8_0(b, plan, (&x.qs, &x.scales), rows, weight, accumulate, out)
}

/// Which Q8_0 matmul kernel runs and how it is laid out.
pub(crate) struct Q8Plan {
    pub kernel: (&'static str, &'static str),
    pub grid: [u32; 3],
    pub threads: u32,
}

/// Launches a matmul on a Q8_0 weight whose parameters are (activation values,
/// activation scales, weight int8 plane, weight scales, rows, n, k, accumulate,
/// out) — both arithmetics' kernels (`matmul_q8_0_*`, `matmul_q8_0_w8a16`).
pub(crate) fn launch_q8_0<D: Device>(
    b: &KernelBackend<D>,
    plan: Q8Plan,
    (values, scales): (&D::Memory, &D::Memory),
    rows: usize,
    weight: &DeviceWeight<D::Memory>,
    accumulate: bool,
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    let (n, k) = (weight.rows, weight.cols);
    BackendError::check_len("matmul", "out", rows * n, out.len)?;
    let Some(weight_scales) = &weight.scales else {
        return Err(BackendError::Invalid {
            op: "matmul",
            detail: format!(
                "{} needs a Q8_0 weight, '{}' is not",
                plan.kernel.1, weight.name
            ),
        });
    };
    if rows == 0 || n == 0 {
        return Ok(());
    }
    b.device.launch(&Launch {
        module: plan.kernel.0,
        kernel: plan.kernel.1,
        grid: plan.grid,
        block: [plan.threads, 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.device.address(values)),
            KernelArg::Ptr(b.device.address(scales)),
            KernelArg::Ptr(b.device.address(&weight.data)),
            KernelArg::Ptr(b.device.address(weight_scales)),
            KernelArg::U32(to_u32(rows, "matmul", "rows")?),
            KernelArg::U32(to_u32(n, "matmul", "n")?),
            KernelArg::U32(to_u32(k, "matmul", "k")?),
            KernelArg::U32(u32::from(accumulate)),
            KernelArg::Ptr(b.address(out)),
        ],
    })
}

pub fn matmul<D: Device>(
    b: &KernelBackend<D>,
    x: &DeviceBuffer<D::Memory>,
    rows: usize,
    weight: &DeviceWeight<D::Memory>,
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    let (n, k) = (weight.rows, weight.cols);
    BackendError::check_len("matmul", "x", rows * k, x.len)?;
    BackendError::check_len("matmul", "out", rows * n, out.len)?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let kernel = match weight.ggml_type {
        GgmlType::Q8_0 if b.arithmetic() == Arithmetic::W8A16 => {
            return w8a16::matmuls(
                b,
                rows,
                k,
                &[weight],
                false,
                &mut [out],
                |halves, layout| w8a16::to_f16(b, x, rows, k, halves, layout),
            );
        }
        GgmlType::Q8_0 => {
            return b.with_quantised(rows, k, |quantised| {
                quantize(b, x, rows, k, quantised)?;
                matmul_quantised(b, quantised, rows, weight, false, out)
            });
        }
        GgmlType::F32 => "matmul_f32",
        GgmlType::F16 => "matmul_f16",
        GgmlType::BF16 => "matmul_bf16",
        other => {
            return Err(BackendError::UnsupportedType {
                name: weight.name.clone(),
                ggml_type: other,
            })
        }
    };
    b.device.launch(&Launch {
        module: "matmul_dense",
        kernel,
        grid: matmul_grid(rows, n)?,
        block: [DENSE_THREADS, 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.device.address(&weight.data)),
            KernelArg::U32(to_u32(rows, "matmul", "rows")?),
            KernelArg::U32(to_u32(n, "matmul", "n")?),
            KernelArg::U32(to_u32(k, "matmul", "k")?),
            KernelArg::Ptr(b.address(out)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_awkward_shapes() {
        assert_eq!(matmul_grid(1, 1).unwrap(), [1, 1, 1]);
        assert_eq!(matmul_grid(65, 127).unwrap(), [2, 2, 1]);
        // The 4B model's widest projection at 16,384 tokens.
        assert_eq!(matmul_grid(16_384, 9_728).unwrap(), [152, 256, 1]);
        assert!(matmul_grid(65_536 * 64 + 1, 8).is_err());
        assert_eq!(quantize_grid(9).unwrap(), [2, 1, 1]);
    }
}
