//! The W8A16 matmul on Q8_0 weights (`kernels/matmul_w8a16.cu`): the activations
//! become f16 rows, each divided by a power of two (by `f32_to_f16_rows`, or by
//! the norm or SwiGLU kernel that produces them: `rms_norm_f16`, `swiglu_f16`),
//! and the tensor-core kernel turns the int8 weights into f16 on the fly.

use tessera_backend::{BackendError, Norm, Rows};
use tessera_gguf::QK8_0;

use super::matmul::{launch_q8_0, Q8Plan};
use super::rms_norm::norm_operands;
use super::{grid_yz, to_u32};
use crate::{Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend, Launch};

/// Output tile of the W8A16 kernel (rows × features) and its threads.
pub const TILE_ROWS: usize = 128;
pub const TILE_COLS: usize = 128;
pub const THREADS: u32 = 256;
/// Values of a row each thread of the f16 row writers keeps in registers
/// (`ROW_CACHE` in `kernels/common.cuh`).
pub const ROW_CACHE: usize = 16;

/// Activations as f16 rows on the device: f16 values `[rows, k]` in the
/// matmul's fragment-tile order ([`tile_index`]; rows padded to 16) and one f32
/// power of two per row (`2^e`, what the row was divided by). The allocation
/// holds `capacity` values and is reshaped like [`super::matmul::QuantisedRows`].
pub struct HalfRows<M> {
    pub(crate) values: M,
    pub(crate) row_scales: M,
    pub(crate) rows: usize,
    pub(crate) k: usize,
    capacity: usize,
}

impl<M> HalfRows<M> {
    pub fn alloc<D: Device<Memory = M>>(
        device: &D,
        rows: usize,
        k: usize,
    ) -> Result<HalfRows<M>, BackendError> {
        check_k(k)?;
        let capacity = padded(rows)
            .checked_mul(k)
            .ok_or_else(|| too_large(rows, k))?;
        Ok(HalfRows {
            values: device.alloc(capacity.checked_mul(2).ok_or_else(|| too_large(rows, k))?)?,
            // One scale per row of the narrowest k a reshape may ask for (32).
            row_scales: device.alloc(capacity.div_ceil(QK8_0) * 4)?,
            rows,
            k,
            capacity,
        })
    }

    /// Views the allocation as rows of `k` (as many as fit); false when not even
    /// `rows` of them fit, or `k` is not whole blocks.
    pub(crate) fn reshape(&mut self, rows: usize, k: usize) -> bool {
        if check_k(k).is_err() || rows.saturating_mul(k) > self.capacity {
            return false;
        }
        if padded(rows).saturating_mul(k) > self.capacity {
            return false;
        }
        self.rows = self.capacity / k / TILE_GROUP * TILE_GROUP;
        self.k = k;
        true
    }

    /// Reads back the f16 bits (row-major `[rows, k]`, out of the tile order)
    /// and the row scales of the first `rows` rows.
    pub fn download<D: Device<Memory = M>>(
        &self,
        device: &D,
        rows: usize,
    ) -> Result<(Vec<u16>, Vec<f32>), BackendError> {
        self.check(rows, self.k)?;
        let mut tiled = vec![0u16; padded(rows) * self.k];
        let mut scales = vec![0.0f32; rows];
        device.download(&self.values, 0, bytemuck::cast_slice_mut(&mut tiled))?;
        let mut values = vec![0u16; rows * self.k];
        for row in 0..rows {
            for c in 0..self.k {
                values[row * self.k + c] = tiled[tile_index(row, c, self.k)];
            }
        }
        device.download(&self.row_scales, 0, bytemuck::cast_slice_mut(&mut scales))?;
        Ok((values, scales))
    }

    pub(crate) fn check(&self, rows: usize, k: usize) -> Result<(), BackendError> {
        if k != self.k || rows > self.rows {
            return Err(BackendError::Invalid {
                op: "matmul",
                detail: format!(
                    "f16 activations hold {} rows of {}, {rows} rows of {k} asked",
                    self.rows, self.k
                ),
            });
        }
        Ok(())
    }
}

/// Rows per fragment tile of the f16 layout.
pub const TILE_GROUP: usize = 16;

fn padded(rows: usize) -> usize {
    rows.div_ceil(TILE_GROUP) * TILE_GROUP
}

/// Where the f16 of (row, c) lies in rows of `k` in the W8A16 matmul's
/// fragment-tile order (`f16_tile_index` in `kernels/common.cuh`, which has the
/// why): 16-row × 32-k tiles of 512 values, by row group then block; inside,
/// 16-value units per (row % 8, k-octet), each holding the k pairs of rows r and
/// r + 8 interleaved, the unit's halves swapped for odd rows.
pub fn tile_index(row: usize, c: usize, k: usize) -> usize {
    let (r, kk) = (row % TILE_GROUP, c % QK8_0);
    let (hi, g, t, p) = (r / 8, r % 8, kk / 8, kk % 8);
    let position = ((p / 2 * 2 + hi) * 2 + p % 2) ^ (8 * (g & 1));
    ((row / TILE_GROUP) * (k / QK8_0) + c / QK8_0) * 512 + (g * 4 + t) * 16 + position
}

fn check_k(k: usize) -> Result<(), BackendError> {
    if k == 0 || !k.is_multiple_of(QK8_0) {
        return Err(BackendError::Invalid {
            op: "matmul",
            detail: format!("rows of {k} values are not whole Q8_0 blocks of {QK8_0}"),
        });
    }
    Ok(())
}

fn too_large(rows: usize, k: usize) -> BackendError {
    BackendError::Invalid {
        op: "matmul",
        detail: format!("{rows} rows of {k} f16 values do not fit in memory"),
    }
}

/// Threads of a row writer over rows of `width`: enough that each thread keeps
/// at most [`ROW_CACHE`] values in registers, in whole warps, 32 to 1,024.
pub fn row_writer_threads(width: usize) -> u32 {
    (width.div_ceil(ROW_CACHE).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// The grid of the W8A16 matmul over `rows × n` outputs.
pub fn grid(rows: usize, n: usize) -> Result<[u32; 3], BackendError> {
    Ok([
        to_u32(n.div_ceil(TILE_COLS), "matmul", "column tiles")?,
        grid_yz(rows.div_ceil(TILE_ROWS), "matmul", "row tiles")?,
        1,
    ])
}

/// Launches a row writer (`kernel` in `module`, one block per row of `k`): its
/// parameters are `inputs`, then `k`, the f16 values and the row scales.
fn launch_row_writer<D: Device>(
    b: &KernelBackend<D>,
    (module, kernel): (&'static str, &'static str),
    mut inputs: Vec<KernelArg>,
    rows: usize,
    k: usize,
    into: &HalfRows<D::Memory>,
) -> Result<(), BackendError> {
    into.check(rows, k)?;
    if rows == 0 {
        return Ok(());
    }
    inputs.extend([
        KernelArg::U32(to_u32(k, "matmul", "k")?),
        KernelArg::Ptr(b.device.address(&into.values)),
        KernelArg::Ptr(b.device.address(&into.row_scales)),
    ]);
    b.device.launch(&Launch {
        module,
        kernel,
        grid: [to_u32(rows, "matmul", "rows")?, 1, 1],
        block: [row_writer_threads(k), 1, 1],
        shared_bytes: 0,
        args: inputs,
    })
}

/// `rows × k` f32 activations → f16 rows (`f32_to_f16_rows`).
pub fn to_f16<D: Device>(
    b: &KernelBackend<D>,
    x: &DeviceBuffer<D::Memory>,
    rows: usize,
    k: usize,
    into: &HalfRows<D::Memory>,
) -> Result<(), BackendError> {
    BackendError::check_len("matmul", "x", rows * k, x.len)?;
    launch_row_writer(
        b,
        ("matmul_w8a16", "f32_to_f16_rows"),
        vec![KernelArg::Ptr(b.address(x))],
        rows,
        k,
        into,
    )
}

/// RMSNorm writing f16 rows (`rms_norm_f16`).
pub fn rms_norm_f16<D: Device>(
    b: &KernelBackend<D>,
    x: Rows<'_, DeviceBuffer<D::Memory>>,
    norm: Norm<'_, DeviceWeight<D::Memory>>,
    into: &HalfRows<D::Memory>,
) -> Result<(), BackendError> {
    let (x, rows, dim, w, eps) = norm_operands(x, norm)?;
    launch_row_writer(
        b,
        ("rms_norm", "rms_norm_f16"),
        vec![
            KernelArg::Ptr(b.address(x)),
            KernelArg::Ptr(b.device.address(w)),
            KernelArg::F32(eps),
        ],
        rows,
        dim,
        into,
    )
}

/// SwiGLU of `rows × ffn` gate and up values writing f16 rows (`swiglu_f16`).
pub fn swiglu_f16<D: Device>(
    b: &KernelBackend<D>,
    gate: &DeviceBuffer<D::Memory>,
    up: &DeviceBuffer<D::Memory>,
    rows: usize,
    ffn: usize,
    into: &HalfRows<D::Memory>,
) -> Result<(), BackendError> {
    BackendError::check_len("swiglu", "gate", rows * ffn, gate.len)?;
    BackendError::check_len("swiglu", "up", rows * ffn, up.len)?;
    launch_row_writer(
        b,
        ("swiglu", "swiglu_f16"),
        vec![
            KernelArg::Ptr(b.address(gate)),
            KernelArg::Ptr(b.address(up)),
        ],
        rows,
        ffn,
        into,
    )
}

/// The W8A16 matmul on f16 rows: `out = x · wᵀ`, or with `accumulate`
/// `out += x · wᵀ` (the residual add in the epilogue).
pub fn matmul_half<D: Device>(
    b: &KernelBackend<D>,
    x: &HalfRows<D::Memory>,
    rows: usize,
    weight: &DeviceWeight<D::Memory>,
    accumulate: bool,
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    x.check(rows, weight.cols)?;
    let plan = Q8Plan {
        kernel: ("matmul_w8a16", "matmul_q8_0_w8a16"),
        grid: grid(rows, weight.rows)?,
        threads: THREADS,
    };
    launch_q8_0(
        b,
        plan,
        (&x.values, &x.row_scales),
        rows,
        weight,
        accumulate,
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_order_is_a_permutation_with_fragments_in_register_order() {
        let (rows, k) = (32, 64);
        let mut seen = vec![false; rows * k];
        for row in 0..rows {
            for c in 0..k {
                let i = tile_index(row, c, k);
                assert!(!seen[i], "({row}, {c}) collides");
                seen[i] = true;
            }
        }
        // Lane (g = 3, t = 1) of row group 0, block 0: its unit (13) has the
        // halves swapped (odd g); the first 16 bytes after the swap are the mma
        // registers a0..a3 on k 8..11: (row 3, k 8-9), (row 11, k 8-9),
        // (row 3, k 10-11), (row 11, k 10-11).
        let unit = 13 * 16;
        let first: Vec<usize> = [
            (3, 8),
            (3, 9),
            (11, 8),
            (11, 9),
            (3, 10),
            (3, 11),
            (11, 10),
            (11, 11),
        ]
        .iter()
        .map(|&(r, c)| tile_index(r, c, k))
        .collect();
        assert_eq!(first, (unit + 8..unit + 16).collect::<Vec<_>>());
        // Block 1 of row group 1 starts after group 0's two blocks.
        assert_eq!(tile_index(16, 32, k), (2 + 1) * 512);
    }

    #[test]
    fn grids_and_row_writers_cover_the_4b_shapes() {
        assert_eq!(grid(1, 1).unwrap(), [1, 1, 1]);
        assert_eq!(grid(129, 128).unwrap(), [1, 2, 1]);
        assert_eq!(grid(16_384, 9_728).unwrap(), [76, 128, 1]);
        assert_eq!(row_writer_threads(32), 32);
        assert_eq!(row_writer_threads(2560), 160);
        assert_eq!(row_writer_threads(9728), 608);
        assert_eq!(row_writer_threads(1 << 20), 1024);
    }
}
