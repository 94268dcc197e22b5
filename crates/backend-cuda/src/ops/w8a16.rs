//! The W8A16 matmul on Q8_0 weights (`kernels/matmul_w8a16.cu`): the activations
//! become f16 rows, each divided by a power of two (by `f32_to_f16_rows`, or by
//! the norm or SwiGLU kernel that produces them: `rms_norm_f16`, `swiglu_f16`),
//! and the tensor-core kernel turns the int8 weights into f16 on the fly. Which
//! compiled configuration runs each GEMM ([`GemmConfig`], [`GemmChoice`]) is
//! the backend's choice: a tuning table's (`crate::tuning`) or [`builtin_choice`].

use tessera_backend::{BackendError, Norm, Rows};
use tessera_gguf::QK8_0;

use super::matmul::{launch_q8_0, Q8Plan};
use super::rms_norm::norm_operands;
use super::{grid_yz, to_u32};
use crate::{Device, DeviceBuffer, DeviceWeight, KernelArg, KernelBackend, Launch};

/// Output tile of the v2 W8A16 kernel (rows × features) and its threads.
pub const TILE_ROWS: usize = 128;
pub const TILE_COLS: usize = 128;
pub const THREADS: u32 = 256;
/// Values of a row each thread of the f16 row writers keeps in registers
/// (`ROW_CACHE` in `kernels/common.cuh`).
pub const ROW_CACHE: usize = 16;

/// The order in which the row writers store f16 activations, fixed by the
/// GEMM that reads them (`F16_FRAGMENT_TILES` / `F16_WGMMA_ROWS` in
/// `kernels/common.cuh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum F16Layout {
    /// The mma.sync kernels' fragment tiles ([`tile_index`]).
    #[default]
    FragmentTiles,
    /// The wgmma kernels' rows, k permuted inside each 32-value block
    /// ([`wgmma_index`]).
    WgmmaRows,
}

impl F16Layout {
    /// The kernels' code for it.
    pub fn code(self) -> u32 {
        match self {
            F16Layout::FragmentTiles => 0,
            F16Layout::WgmmaRows => 1,
        }
    }

    /// Where the f16 of (row, c) lies in rows of `k`.
    pub fn index(self, row: usize, c: usize, k: usize) -> usize {
        match self {
            F16Layout::FragmentTiles => tile_index(row, c, k),
            F16Layout::WgmmaRows => wgmma_index(row, c, k),
        }
    }
}

/// Activations as f16 rows on the device: f16 values `[rows, k]` in the
/// layout their writer was asked for ([`F16Layout`]; rows padded to 16) and
/// one f32 power of two per row (`2^e`, what the row was divided by). The
/// allocation holds `capacity` values and is reshaped like
/// [`super::matmul::QuantisedRows`].
pub struct HalfRows<M> {
    pub(crate) values: M,
    pub(crate) row_scales: M,
    pub(crate) rows: usize,
    pub(crate) k: usize,
    capacity: usize,
    /// What the last writer wrote (a GEMM refuses rows in another layout).
    layout: std::cell::Cell<F16Layout>,
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
            layout: std::cell::Cell::new(F16Layout::default()),
        })
    }

    /// The layout the values are in.
    pub fn layout(&self) -> F16Layout {
        self.layout.get()
    }

    /// Records that the values are now in `layout` (a writer was launched, or
    /// a timing run reads uninitialised values as if they were).
    pub(crate) fn set_layout(&self, layout: F16Layout) {
        self.layout.set(layout);
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

    /// Reads back the f16 bits (row-major `[rows, k]`, out of the layout's
    /// order) and the row scales of the first `rows` rows.
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
                values[row * self.k + c] = tiled[self.layout().index(row, c, self.k)];
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

/// Where the f16 of (row, c) lies in rows of `k` in the wgmma GEMM's order
/// (`f16_wgmma_index` in `kernels/common.cuh`, which has the why): rows one
/// after another, inside each 32-value block position `16h + 8u + 2t + e`
/// holding k `8t + 4h + 2u + e`.
pub fn wgmma_index(row: usize, c: usize, k: usize) -> usize {
    let kk = c % QK8_0;
    let (t, h, u, e) = (kk / 8, (kk / 4) % 2, (kk / 2) % 2, kk % 2);
    row * k + (c - kk) + 16 * h + 8 * u + 2 * t + e
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

/// The grid of the v2 W8A16 matmul over `rows × n` outputs.
pub fn grid(rows: usize, n: usize) -> Result<[u32; 3], BackendError> {
    Ok([
        to_u32(n.div_ceil(TILE_COLS), "matmul", "column tiles")?,
        grid_yz(rows.div_ceil(TILE_ROWS), "matmul", "row tiles")?,
        1,
    ])
}

/// Launches a row writer (`kernel` in `module`, one block per row of `k`): its
/// parameters are `inputs`, then `k`, the f16 values, the row scales and the
/// layout.
fn launch_row_writer<D: Device>(
    b: &KernelBackend<D>,
    (module, kernel): (&'static str, &'static str),
    mut inputs: Vec<KernelArg>,
    rows: usize,
    k: usize,
    into: &HalfRows<D::Memory>,
    layout: F16Layout,
) -> Result<(), BackendError> {
    into.check(rows, k)?;
    into.set_layout(layout);
    if rows == 0 {
        return Ok(());
    }
    inputs.extend([
        KernelArg::U32(to_u32(k, "matmul", "k")?),
        KernelArg::Ptr(b.device.address(&into.values)),
        KernelArg::Ptr(b.device.address(&into.row_scales)),
        KernelArg::U32(layout.code()),
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

/// `rows × k` f32 activations → f16 rows in `layout` (`f32_to_f16_rows`).
pub fn to_f16<D: Device>(
    b: &KernelBackend<D>,
    x: &DeviceBuffer<D::Memory>,
    rows: usize,
    k: usize,
    into: &HalfRows<D::Memory>,
    layout: F16Layout,
) -> Result<(), BackendError> {
    BackendError::check_len("matmul", "x", rows * k, x.len)?;
    launch_row_writer(
        b,
        ("matmul_w8a16", "f32_to_f16_rows"),
        vec![KernelArg::Ptr(b.address(x))],
        rows,
        k,
        into,
        layout,
    )
}

/// RMSNorm writing f16 rows in `layout` (`rms_norm_f16`).
pub fn rms_norm_f16<D: Device>(
    b: &KernelBackend<D>,
    x: Rows<'_, DeviceBuffer<D::Memory>>,
    norm: Norm<'_, DeviceWeight<D::Memory>>,
    into: &HalfRows<D::Memory>,
    layout: F16Layout,
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
        layout,
    )
}

/// SwiGLU of `rows × ffn` gate and up values writing f16 rows in `layout`
/// (`swiglu_f16`).
pub fn swiglu_f16<D: Device>(
    b: &KernelBackend<D>,
    gate: &DeviceBuffer<D::Memory>,
    up: &DeviceBuffer<D::Memory>,
    rows: usize,
    ffn: usize,
    into: &HalfRows<D::Memory>,
    layout: F16Layout,
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
        layout,
    )
}

/// One compiled configuration of the W8A16 GEMM: the v3 kernels
/// `matmul_w8a16_<rows>x<cols>` (`kernels/matmul_w8a16.cu`: mma.sync, 64 k per
/// stage, weights converted once per block, grouped launches, split-K), the
/// v2 kernel `matmul_q8_0_w8a16` kept as the baseline a tuning run measures
/// them against, and the Hopper kernels `matmul_w8a16_wgmma_<rows>x<cols>`
/// and `matmul_w8a16_wgmma_tma{,_persistent}_256x128`
/// (`kernels/matmul_w8a16_wgmma.cu`: wgmma, fed by cp.async or by TMA, v3's
/// launch interface plus the TMA kernels' tensor maps and the persistent
/// one's split-K factor, offered on compute capability 9.0 only).
#[derive(Debug, PartialEq, Eq)]
pub struct GemmConfig {
    /// What tuning tables and logs call it: `256x128`, ..., `v2`, `wgmma-128x128`.
    pub name: &'static str,
    pub kernel: &'static str,
    /// The kernel file (module) that defines it.
    pub module: &'static str,
    /// The block's output tile: token rows × output features.
    pub tile_rows: usize,
    pub tile_cols: usize,
    pub warps: u32,
    /// cp.async pipeline depth (stages of 64 k; v2: of 32 k).
    pub stages: usize,
    /// Grouped launches (up to [`MAX_GROUP`] weights) and split-K: v3's launch
    /// interface, which the wgmma kernels share (v2 takes one weight).
    pub grouped: bool,
    /// The activation layout it reads.
    pub layout: F16Layout,
    /// Built on wgmma (sm_90a): runs on compute capability 9.0 only.
    pub wgmma: bool,
    /// Operands staged by TMA (tensor maps after v3's parameters), a
    /// producer warpgroup beside the consumers.
    pub tma: bool,
    /// A grid of at most one block a multiprocessor, each walking tiles (and
    /// split-K shares) in the kernel's raster order; the split-K factor a
    /// parameter after the tensor maps.
    pub persistent: bool,
}

/// Weights one grouped launch takes (q, k and v).
pub const MAX_GROUP: usize = 3;

/// Every configuration: the v3 ones first in the order the kernel file
/// instantiates them, v2, then the wgmma ones.
pub const GEMM_CONFIGS: &[GemmConfig] = &[
    v3("256x128", "matmul_w8a16_256x128", 256, 128, 8, 3),
    v3("128x256", "matmul_w8a16_128x256", 128, 256, 8, 3),
    v3("128x128", "matmul_w8a16_128x128", 128, 128, 4, 3),
    v3("64x128", "matmul_w8a16_64x128", 64, 128, 4, 4),
    GemmConfig {
        name: "v2",
        kernel: "matmul_q8_0_w8a16",
        module: "matmul_w8a16",
        tile_rows: TILE_ROWS,
        tile_cols: TILE_COLS,
        warps: THREADS / 32,
        stages: 3,
        grouped: false,
        layout: F16Layout::FragmentTiles,
        wgmma: false,
        tma: false,
        persistent: false,
    },
    wgmma("wgmma-128x128", "matmul_w8a16_wgmma_128x128", 128, 6),
    wgmma("wgmma-256x128", "matmul_w8a16_wgmma_256x128", 256, 5),
    GemmConfig {
        name: "wgmma-tma-256x128",
        kernel: "matmul_w8a16_wgmma_tma_256x128",
        warps: 12,
        tma: true,
        ..wgmma("", "", 256, 5)
    },
    GemmConfig {
        name: "wgmma-tma-persistent-256x128",
        kernel: "matmul_w8a16_wgmma_tma_persistent_256x128",
        warps: 12,
        tma: true,
        persistent: true,
        ..wgmma("", "", 256, 5)
    },
];

const fn v3(
    name: &'static str,
    kernel: &'static str,
    tile_rows: usize,
    tile_cols: usize,
    warps: u32,
    stages: usize,
) -> GemmConfig {
    GemmConfig {
        name,
        kernel,
        module: "matmul_w8a16",
        tile_rows,
        tile_cols,
        warps,
        stages,
        grouped: true,
        layout: F16Layout::FragmentTiles,
        wgmma: false,
        tma: false,
        persistent: false,
    }
}

/// A wgmma configuration: two warpgroups, 128 features × `tile_rows` tokens
/// (`WgConfig` in the kernel file).
const fn wgmma(
    name: &'static str,
    kernel: &'static str,
    tile_rows: usize,
    stages: usize,
) -> GemmConfig {
    GemmConfig {
        name,
        kernel,
        module: "matmul_w8a16_wgmma",
        tile_rows,
        tile_cols: 128,
        warps: 8,
        stages,
        grouped: true,
        layout: F16Layout::WgmmaRows,
        wgmma: true,
        tma: false,
        persistent: false,
    }
}

impl GemmConfig {
    /// The configuration called `name`.
    pub fn named(name: &str) -> Option<&'static GemmConfig> {
        GEMM_CONFIGS.iter().find(|c| c.name == name)
    }

    pub fn threads(&self) -> u32 {
        self.warps * 32
    }

    /// Dynamic shared memory of a launch: per stage the activations (rows ×
    /// 64 f16), the raw weights (cols × 64 int8) and their scales (2 × cols
    /// f16); then v3's two converted-weight buffers (`W16Config::SHARED_BYTES`)
    /// or the wgmma kernels' 1,024 bytes of alignment room
    /// (`WgConfig::SHARED_BYTES`); v2 uses static shared memory only.
    pub fn shared_bytes(&self) -> usize {
        if !self.grouped {
            return 0;
        }
        let (m, n) = (self.tile_rows, self.tile_cols);
        if self.tma {
            // `WgTmaConfig`: activations and raw weights a stage, a full and
            // an empty mbarrier a stage (scales come from global memory).
            return self.stages * (m * 64 * 2 + n * 64 + 2 * 8) + 1024;
        }
        let stages = self.stages * (m * 64 * 2 + n * 64 + 2 * n * 2);
        if self.wgmma {
            stages + 1024
        } else {
            stages + 2 * (n / 4) * 512
        }
    }

    /// Whether a block's shared memory fits what `device` lets one opt in to.
    pub fn fits(&self, device: &crate::DeviceIdentity) -> bool {
        self.shared_bytes() <= device.max_shared_per_block
    }

    /// Whether `device` can run it: its shared memory fits, and a wgmma
    /// kernel needs compute capability 9.0 (sm_90a).
    pub fn runs_on(&self, device: &crate::DeviceIdentity) -> bool {
        self.fits(device) && (!self.wgmma || device.has_wgmma())
    }

    /// k stages (64 k) of a GEMM over `k`.
    pub fn k_stages(k: usize) -> usize {
        (k / QK8_0).div_ceil(2)
    }
}

/// How one GEMM runs: a configuration and its split-K factor (1: none; v2
/// always 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmChoice {
    pub config: &'static GemmConfig,
    pub split_k: usize,
}

impl std::fmt::Display for GemmChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.config.name)?;
        if self.split_k > 1 {
            write!(f, " split-k {}", self.split_k)?;
        }
        Ok(())
    }
}

/// Fewest k stages (64 k each) a split-K share gets from the built-in choice.
pub const MIN_STAGES_PER_SPLIT: usize = 2;
/// Largest split-K factor the built-in choice and the tuner use.
pub const MAX_SPLIT_K: usize = 8;

/// The choice without a tuning table: the 64-row tile for a few rows, 128 × 128
/// up to 1,024 rows, else 256 × 128 (the fewest instructions per mma:
/// docs/kernels.md) — each falling back to the next smaller one, down to v2,
/// where the device's shared memory per block is too small (sm_86/89: 99 KiB
/// leaves 64 × 128 and v2); split-K while the grid is under one block per
/// multiprocessor and every share keeps [`MIN_STAGES_PER_SPLIT`] stages.
pub fn builtin_choice(
    device: &crate::DeviceIdentity,
    rows: usize,
    ns: &[usize],
    k: usize,
) -> GemmChoice {
    let multiprocessors = device.multiprocessors;
    let preference: &[&str] = match rows {
        0..=64 => &["64x128", "v2"],
        65..=1024 => &["128x128", "64x128", "v2"],
        _ => &["256x128", "128x128", "64x128", "v2"],
    };
    let config = preference
        .iter()
        .filter_map(|name| GemmConfig::named(name))
        .find(|c| c.runs_on(device))
        .unwrap_or(GemmConfig::named("v2").expect("v2"));
    if !config.grouped {
        return GemmChoice { config, split_k: 1 };
    }
    let blocks = column_tiles(config, ns) * rows.div_ceil(config.tile_rows).max(1);
    let stages = GemmConfig::k_stages(k);
    let mut split_k = 1;
    while split_k < MAX_SPLIT_K
        && blocks * (split_k + 1) <= multiprocessors
        && stages / (split_k + 1) >= MIN_STAGES_PER_SPLIT
    {
        split_k += 1;
    }
    GemmChoice { config, split_k }
}

/// Column tiles of a grouped launch: each weight's, summed.
fn column_tiles(config: &GemmConfig, ns: &[usize]) -> usize {
    ns.iter().map(|n| n.div_ceil(config.tile_cols)).sum()
}

/// The launch grid of a grouped GEMM (v3, wgmma): (Σ column tiles, row tiles,
/// splits); of a persistent one, one block a work unit (tile and split-K
/// share) up to one a multiprocessor.
pub fn gemm_grid(
    choice: GemmChoice,
    rows: usize,
    ns: &[usize],
    multiprocessors: usize,
) -> Result<[u32; 3], BackendError> {
    let c = choice.config;
    if c.persistent {
        let units = column_tiles(c, ns) * rows.div_ceil(c.tile_rows) * choice.split_k;
        return Ok([
            to_u32(units.min(multiprocessors).max(1), "matmul", "blocks")?,
            1,
            1,
        ]);
    }
    Ok([
        to_u32(column_tiles(c, ns), "matmul", "column tiles")?,
        grid_yz(rows.div_ceil(c.tile_rows), "matmul", "row tiles")?,
        grid_yz(choice.split_k, "matmul", "split-k")?,
    ])
}

/// The W8A16 matmuls of `weights` on the same activations: `write` turns
/// them into f16 rows (given the buffer and the layout to write), then
/// `outs[i] = x · weights[i]ᵀ`, or with `accumulate` `outs[i] += x ·
/// weights[i]ᵀ` (the residual add in the epilogue). Weights go [`MAX_GROUP`]
/// to a launch, each launch run as the backend chooses
/// ([`KernelBackend::gemm_choice`]); the rows are written in the layout those
/// choices read (where the launches of more than [`MAX_GROUP`] weights would
/// disagree, every one takes the built-in choice, which reads fragment tiles).
#[allow(clippy::too_many_arguments)]
pub fn matmuls<D: Device>(
    b: &KernelBackend<D>,
    rows: usize,
    k: usize,
    weights: &[&DeviceWeight<D::Memory>],
    accumulate: bool,
    outs: &mut [&mut DeviceBuffer<D::Memory>],
    write: impl FnOnce(&HalfRows<D::Memory>, F16Layout) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    tessera_backend::unfused::check_pairs("matmul", weights.len(), outs.len())?;
    let mut choices: Vec<GemmChoice> = weights
        .chunks(MAX_GROUP)
        .map(|group| {
            let ns: Vec<usize> = group.iter().map(|w| w.rows).collect();
            b.gemm_choice(rows, &ns, k)
        })
        .collect();
    let layout = choices
        .first()
        .map_or(F16Layout::default(), |c| c.config.layout);
    if choices.iter().any(|c| c.config.layout != layout) {
        let identity = &b.identity;
        for (choice, group) in choices.iter_mut().zip(weights.chunks(MAX_GROUP)) {
            let ns: Vec<usize> = group.iter().map(|w| w.rows).collect();
            *choice = builtin_choice(identity, rows, &ns, k);
        }
    }
    let layout = choices
        .first()
        .map_or(F16Layout::default(), |c| c.config.layout);
    b.with_halves(rows, k, |halves| {
        write(halves, layout)?;
        for ((group, out_group), choice) in weights
            .chunks(MAX_GROUP)
            .zip(outs.chunks_mut(MAX_GROUP))
            .zip(choices)
        {
            gemm_with(b, choice, halves, rows, group, accumulate, out_group)?;
        }
        Ok(())
    })
}

/// One launch (v2: one per weight) of at most [`MAX_GROUP`] weights as `choice`
/// says, then the split-K reduction when it splits.
pub fn gemm_with<D: Device>(
    b: &KernelBackend<D>,
    choice: GemmChoice,
    x: &HalfRows<D::Memory>,
    rows: usize,
    weights: &[&DeviceWeight<D::Memory>],
    accumulate: bool,
    outs: &mut [&mut DeviceBuffer<D::Memory>],
) -> Result<(), BackendError> {
    if weights.len() != outs.len() || weights.len() > MAX_GROUP {
        return Err(BackendError::Invalid {
            op: "matmul",
            detail: format!(
                "one launch takes 1 to {MAX_GROUP} weights with an output each, not {} and {}",
                weights.len(),
                outs.len()
            ),
        });
    }
    let mut operands = Vec::with_capacity(weights.len());
    for (weight, out) in weights.iter().zip(outs.iter()) {
        x.check(rows, weight.cols)?;
        BackendError::check_len("matmul", "out", rows * weight.rows, out.len)?;
        let Some(scales) = &weight.scales else {
            return Err(BackendError::Invalid {
                op: "matmul",
                detail: format!(
                    "the W8A16 matmul needs a Q8_0 weight, '{}' is not",
                    weight.name
                ),
            });
        };
        operands.push((*weight, scales));
    }
    if x.layout() != choice.config.layout {
        return Err(BackendError::Invalid {
            op: "matmul",
            detail: format!(
                "{} reads f16 rows as {:?}, they were written as {:?}",
                choice.config.name,
                choice.config.layout,
                x.layout()
            ),
        });
    }
    let ns: Vec<usize> = weights.iter().map(|w| w.rows).collect();
    let total: usize = ns.iter().sum();
    if rows == 0 || total == 0 {
        return Ok(());
    }
    if !choice.config.grouped {
        for (weight, out) in weights.iter().zip(outs.iter_mut()) {
            launch_v2(b, x, rows, weight, accumulate, out)?;
        }
        return Ok(());
    }
    let split_k = choice.split_k.max(1);
    let choice = GemmChoice { split_k, ..choice };
    let launch = |partial: u64| -> Result<(), BackendError> {
        let mut args = vec![
            KernelArg::Ptr(b.device.address(&x.values)),
            KernelArg::Ptr(b.device.address(&x.row_scales)),
            KernelArg::U32(to_u32(rows, "matmul", "rows")?),
            KernelArg::U32(to_u32(x.k, "matmul", "k")?),
            KernelArg::U32(u32::from(accumulate)),
        ];
        for g in 0..MAX_GROUP {
            match (operands.get(g), outs.get(g)) {
                (Some((weight, scales)), Some(out)) => args.extend([
                    KernelArg::Ptr(b.device.address(&weight.data)),
                    KernelArg::Ptr(b.device.address(scales)),
                    KernelArg::Ptr(b.address(out)),
                    KernelArg::U32(to_u32(weight.rows, "matmul", "n")?),
                ]),
                _ => args.extend([
                    KernelArg::Ptr(0),
                    KernelArg::Ptr(0),
                    KernelArg::Ptr(0),
                    KernelArg::U32(0),
                ]),
            }
        }
        args.extend([
            KernelArg::Ptr(partial),
            KernelArg::U32(to_u32(total, "matmul", "n")?),
        ]);
        if choice.config.tma {
            args.extend(tensor_maps(b, choice.config, x, rows, &operands)?);
        }
        if choice.config.persistent {
            args.push(KernelArg::U32(to_u32(split_k, "matmul", "split-k")?));
        }
        b.device.launch(&Launch {
            module: choice.config.module,
            kernel: choice.config.kernel,
            grid: gemm_grid(choice, rows, &ns, b.identity.multiprocessors)?,
            block: [choice.config.threads(), 1, 1],
            shared_bytes: to_u32(choice.config.shared_bytes(), "matmul", "shared memory")?,
            args,
        })
    };
    if split_k == 1 {
        return launch(0);
    }
    let partial_len = split_k
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(total))
        .ok_or_else(|| BackendError::Invalid {
            op: "matmul",
            detail: format!("split-k {split_k} of {rows} × {total} outputs does not fit in memory"),
        })?;
    b.with_partials(partial_len * 4, |partial| {
        let address = b.device.address(partial);
        launch(address)?;
        let mut col_base = 0;
        for (n, out) in ns.iter().zip(outs.iter()) {
            reduce_split(
                b, address, split_k, rows, total, col_base, *n, accumulate, out,
            )?;
            col_base += n;
        }
        Ok(())
    })
}

/// The TMA kernels' tensor maps: the f16 activations (`rows` × k, boxes of
/// 64 k × the tile's tokens, 128-byte swizzle: the layout wgmma reads) and
/// each weight's int8 rows (n × k, boxes of 64 k × 128 features), the first
/// weight's standing in for absent ones (never read: they have no tiles).
fn tensor_maps<D: Device>(
    b: &KernelBackend<D>,
    config: &GemmConfig,
    x: &HalfRows<D::Memory>,
    rows: usize,
    operands: &[(&DeviceWeight<D::Memory>, &D::Memory)],
) -> Result<Vec<KernelArg>, BackendError> {
    use crate::device::{TensorElement, TensorMapSpec};
    let k = x.k;
    let mut maps = vec![KernelArg::TensorMap(b.device.tensor_map_2d(
        &TensorMapSpec {
            address: b.device.address(&x.values),
            element: TensorElement::F16,
            cols: k,
            rows,
            pitch: k * 2,
            box_cols: 64,
            box_rows: to_u32(config.tile_rows, "matmul", "tile rows")?,
            swizzle_128: true,
        },
    )?)];
    for g in 0..MAX_GROUP {
        let (weight, _) =
            operands
                .get(g)
                .or(operands.first())
                .ok_or_else(|| BackendError::Invalid {
                    op: "matmul",
                    detail: "a launch without weights".into(),
                })?;
        maps.push(KernelArg::TensorMap(b.device.tensor_map_2d(
            &TensorMapSpec {
                address: b.device.address(&weight.data),
                element: TensorElement::U8,
                cols: k,
                rows: weight.rows,
                pitch: k,
                box_cols: 64,
                box_rows: to_u32(config.tile_cols, "matmul", "tile columns")?,
                swizzle_128: false,
            },
        )?));
    }
    Ok(maps)
}

/// Threads of the split-K reduction (one output each).
pub const REDUCE_THREADS: u32 = 256;

/// `out (+)= Σ_z partial[z][row][col_base + col]` for one group's `rows × n`.
#[allow(clippy::too_many_arguments)]
fn reduce_split<D: Device>(
    b: &KernelBackend<D>,
    partial: u64,
    split_k: usize,
    rows: usize,
    stride: usize,
    col_base: usize,
    n: usize,
    accumulate: bool,
    out: &DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    if n == 0 {
        return Ok(());
    }
    b.device.launch(&Launch {
        module: "matmul_w8a16",
        kernel: "w8a16_splitk_reduce",
        grid: [
            to_u32(
                n.div_ceil(REDUCE_THREADS as usize),
                "matmul",
                "column blocks",
            )?,
            rows.min(65_535) as u32,
            1,
        ],
        block: [REDUCE_THREADS, 1, 1],
        shared_bytes: 0,
        args: vec![
            KernelArg::Ptr(partial),
            KernelArg::U32(to_u32(split_k, "matmul", "split-k")?),
            KernelArg::U32(to_u32(rows, "matmul", "rows")?),
            KernelArg::U32(to_u32(stride, "matmul", "n")?),
            KernelArg::U32(to_u32(col_base, "matmul", "n")?),
            KernelArg::U32(to_u32(n, "matmul", "n")?),
            KernelArg::U32(u32::from(accumulate)),
            KernelArg::Ptr(b.address(out)),
        ],
    })
}

/// The v2 kernel on one weight.
fn launch_v2<D: Device>(
    b: &KernelBackend<D>,
    x: &HalfRows<D::Memory>,
    rows: usize,
    weight: &DeviceWeight<D::Memory>,
    accumulate: bool,
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
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
    fn the_wgmma_order_permutes_pairs_inside_each_block_as_the_a_fragment_reads() {
        let (rows, k) = (3, 96);
        let mut seen = vec![false; rows * k];
        for row in 0..rows {
            for c in 0..k {
                let i = wgmma_index(row, c, k);
                // The row and its 32-value block stay where they are.
                assert_eq!(i / QK8_0, (row * k + c) / QK8_0, "({row}, {c})");
                assert!(!seen[i], "({row}, {c}) collides");
                seen[i] = true;
            }
        }
        // wgmma reads k16 step h of a block at positions 16h..16h+15; thread t
        // of the A fragment has that step's k 2t, 2t+1 and 2t+8, 2t+9, which
        // must hold k 8t+4h+{0,1} and 8t+4h+{2,3} (the int8 it converts).
        for h in 0..2 {
            for t in 0..4 {
                for e in 0..2 {
                    assert_eq!(wgmma_index(0, 8 * t + 4 * h + e, k), 16 * h + 2 * t + e);
                    assert_eq!(
                        wgmma_index(0, 8 * t + 4 * h + 2 + e, k),
                        16 * h + 8 + 2 * t + e
                    );
                }
            }
        }
        assert_eq!(F16Layout::WgmmaRows.index(2, 33, k), wgmma_index(2, 33, k));
        assert_eq!(
            F16Layout::FragmentTiles.index(2, 33, k),
            tile_index(2, 33, k)
        );
    }

    #[test]
    fn wgmma_configurations_read_wgmma_rows_and_fit_sm90() {
        for c in GEMM_CONFIGS {
            assert_eq!(c.wgmma, c.layout == F16Layout::WgmmaRows, "{}", c.name);
            assert_eq!(c.wgmma, c.module == "matmul_w8a16_wgmma", "{}", c.name);
        }
        // WgConfig::SHARED_BYTES of the kernel file: 148 and 203.5 KiB.
        let shared = |name| GemmConfig::named(name).unwrap().shared_bytes();
        assert_eq!(shared("wgmma-128x128"), 151_552);
        assert_eq!(shared("wgmma-256x128"), 208_384);
        // WgTmaConfig::SHARED_BYTES: no scale slots, two mbarriers a stage.
        assert_eq!(shared("wgmma-tma-256x128"), 205_904);
        // The persistent one holds the same ring.
        assert_eq!(shared("wgmma-tma-persistent-256x128"), 205_904);
        assert_eq!(
            GemmConfig::named("wgmma-tma-256x128").unwrap().threads(),
            384
        );
        assert!(shared("wgmma-256x128") <= 227 * 1024);
    }

    #[test]
    fn a_persistent_grid_holds_a_block_a_unit_up_to_one_a_multiprocessor() {
        let persistent = |split_k| GemmChoice {
            config: GemmConfig::named("wgmma-tma-persistent-256x128").unwrap(),
            split_k,
        };
        // o at 4,096 tokens: 20 × 16 units on 132 multiprocessors.
        assert_eq!(
            gemm_grid(persistent(1), 4096, &[2560], 132).unwrap(),
            [132, 1, 1]
        );
        // At 256 tokens, 20 units (× 3 split shares: 60).
        assert_eq!(
            gemm_grid(persistent(1), 256, &[2560], 132).unwrap(),
            [20, 1, 1]
        );
        assert_eq!(
            gemm_grid(persistent(3), 256, &[2560], 132).unwrap(),
            [60, 1, 1]
        );
        // q, k and v in one launch: 20 + 8 + 8 feature tiles.
        assert_eq!(
            gemm_grid(persistent(1), 200, &[2560, 1024, 1024], 132).unwrap(),
            [36, 1, 1]
        );
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
