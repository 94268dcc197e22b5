//! Causal GQA attention over packed sequences with shared prefixes
//! (`kernels/attention.cu`). The host cuts each sequence into tiles of query rows
//! and pairs each tile with a group of query heads that share a KV head. The f32
//! kernel serves W8A8 (and head sizes the tensor-core kernels lack); W8A16 runs
//! the f16 tensor-core kernels: `attention_f16kv_d*` (v3, the default: K and V
//! rounded to f16 once per layer by `kv_to_f16`, tiles double-buffered with
//! cp.async) or `attention_mma_d*` (v2, converting K/V tiles in every block;
//! [`crate::KernelBackend::with_attention`] picks it for comparisons); on
//! compute capability 9.0 also `attention_wgmma_d{64,128}`
//! (`kernels/attention_wgmma.cu`, v4: Hopper's wgmma, K and Vᵀ tiles staged
//! by TMA), which the tuner offers there.

use tessera_backend::contract::{self, AttentionLens};
use tessera_backend::{AttentionLayout, AttentionShape, BackendError, KvRef, Qkv};

use super::{grid_yz, to_u32};
use crate::device::{TensorElement, TensorMapSpec};
use crate::{Arithmetic, Device, DeviceBuffer, KernelArg, KernelBackend, Launch};

/// (query row, head) pairs per block (`ATT_ITEMS`).
pub const ITEMS_PER_BLOCK: usize = 16;
/// Keys per shared-memory tile (`ATT_KEYS`).
pub const KEYS_PER_TILE: usize = 32;
pub const THREADS: u32 = 128;
pub const MAX_HEAD_DIM: usize = 128;
/// u32 words per tile descriptor: seq_start, row_begin, row_count, prefix_len, prefix_index.
pub const TILE_WORDS: usize = 5;

/// The kernel variant for a head dimension (`None` above [`MAX_HEAD_DIM`]).
pub fn kernel_for_head_dim(head_dim: usize) -> Option<&'static str> {
    match head_dim {
        1..=32 => Some("attention_f32_d32"),
        33..=64 => Some("attention_f32_d64"),
        65..=128 => Some("attention_f32_d128"),
        _ => None,
    }
}

/// Warps per block of the tensor-core kernel (`ATT_MMA_WARPS`), each 16 query
/// rows of one head.
pub const MMA_WARPS: usize = 8;

/// The tensor-core variant for a head dimension: multiples of 16 up to 128
/// (`None` otherwise: the f32 kernel serves those).
pub fn mma_kernel_for_head_dim(head_dim: usize) -> Option<&'static str> {
    match head_dim {
        16 => Some("attention_mma_d16"),
        32 => Some("attention_mma_d32"),
        64 => Some("attention_mma_d64"),
        128 => Some("attention_mma_d128"),
        _ => None,
    }
}

/// Dynamic shared memory of the tensor-core kernel (`AttMmaShared<D>`): Q of
/// 8 warps × 16 rows, kept for the whole key loop, then one tile of K and of V
/// (32 rows each); rows of `head_dim + 8` f16. Over 48 KiB at head_dim 128: the
/// CUDA launcher opts the kernel in.
pub fn mma_shared_bytes(head_dim: usize) -> usize {
    let row = (head_dim + 8) * 2;
    (MMA_WARPS * 16 + 2 * KEYS_PER_TILE) * row
}

/// The v3 tensor-core variant for a head dimension (as [`mma_kernel_for_head_dim`]).
pub fn f16kv_kernel_for_head_dim(head_dim: usize) -> Option<&'static str> {
    match head_dim {
        16 => Some("attention_f16kv_d16"),
        32 => Some("attention_f16kv_d32"),
        64 => Some("attention_f16kv_d64"),
        128 => Some("attention_f16kv_d128"),
        _ => None,
    }
}

/// Keys per tile of the v3 kernel (`ATT16_KEYS`).
pub const F16KV_KEYS_PER_TILE: usize = 64;

/// Dynamic shared memory of the v3 kernel (`Att16Shared<D>`): Q of 8 warps ×
/// 16 rows, then two buffers of K and of V tiles (64 rows each); rows of
/// `head_dim + 8` f16. 104,448 bytes at head_dim 128.
pub fn f16kv_shared_bytes(head_dim: usize) -> usize {
    let row = (head_dim + 8) * 2;
    (MMA_WARPS * 16 + 4 * F16KV_KEYS_PER_TILE) * row
}

/// The v4 (wgmma, sm_90a) variant for a head dimension: 64 and 128 (`None`
/// otherwise: v3 serves those).
pub fn wgmma_kernel_for_head_dim(head_dim: usize) -> Option<&'static str> {
    match head_dim {
        64 => Some("attention_wgmma_d64"),
        128 => Some("attention_wgmma_d128"),
        _ => None,
    }
}

/// Threads per block of the v4 kernel (`ATTWG_THREADS`): two consumer
/// warpgroups (v3's 8 warps) and a producer warpgroup.
pub const WGMMA_THREADS: u32 = 384;
/// Slots of the v4 kernel's K/V ring (`ATTWG_STAGES`).
pub const WGMMA_STAGES: usize = 3;

/// Dynamic shared memory of the v4 kernel (`AttWgLayout<D>::SHARED_BYTES`):
/// Q staging as v3's (rounded up to 1 KiB), [`WGMMA_STAGES`] slots of a K
/// and a Vᵀ tile (64 keys × `head_dim` f16 each), the ring's mbarriers, and
/// 1 KiB to align the swizzled tiles. 134,192 bytes at head_dim 128.
pub fn wgmma_shared_bytes(head_dim: usize) -> usize {
    let q = (MMA_WARPS * 16 * (head_dim + 8) * 2).div_ceil(1024) * 1024;
    let stage = 2 * F16KV_KEYS_PER_TILE * head_dim * 2;
    q + WGMMA_STAGES * stage + 2 * WGMMA_STAGES * 8 + 1024
}

/// Which tensor-core attention W8A16 runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionKernel {
    /// `attention_f16kv_d*`.
    #[default]
    F16Kv,
    /// `attention_mma_d*`, the previous kernel (benchmarks compare them).
    Mma,
    /// `attention_wgmma_d*` (compute capability 9.0; head sizes 64 and 128,
    /// v3 at the others).
    Wgmma,
}

impl AttentionKernel {
    pub const ALL: [AttentionKernel; 3] = [
        AttentionKernel::F16Kv,
        AttentionKernel::Mma,
        AttentionKernel::Wgmma,
    ];

    /// What tuning tables call it: `f16kv`, `mma`, `wgmma`.
    pub fn name(self) -> &'static str {
        match self {
            AttentionKernel::F16Kv => "f16kv",
            AttentionKernel::Mma => "mma",
            AttentionKernel::Wgmma => "wgmma",
        }
    }

    /// The dynamic shared memory it needs at `head_dim` (0 where it falls
    /// back to another kernel or has none of its own to ask for).
    pub fn shared_bytes(self, head_dim: usize) -> usize {
        match self {
            AttentionKernel::F16Kv => f16kv_shared_bytes(head_dim),
            AttentionKernel::Mma => mma_shared_bytes(head_dim),
            AttentionKernel::Wgmma => {
                wgmma_kernel_for_head_dim(head_dim).map_or(0, |_| wgmma_shared_bytes(head_dim))
            }
        }
    }

    pub fn named(name: &str) -> Option<AttentionKernel> {
        AttentionKernel::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Query heads per block of the tensor-core kernel: the largest divisor of the
/// GQA group that also divides its 8 warps (each warp one head × 16 rows).
pub fn mma_heads_per_block(group: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|h| group.is_multiple_of(*h))
        .unwrap_or(1)
}

/// Query heads per block: the largest divisor of the GQA group that fits the
/// block's items, so each K/V tile a block loads serves all its heads.
pub fn heads_per_block(group: usize) -> usize {
    (1..=group.min(ITEMS_PER_BLOCK))
        .rev()
        .find(|h| group.is_multiple_of(*h))
        .unwrap_or(1)
}

/// Query items each warp processes together (`ATT_SLOTS`).
pub const SLOTS_PER_WARP: usize = ITEMS_PER_BLOCK / (THREADS as usize / 32);

/// Dynamic shared memory in floats: q [16][d4], k [32][d4 + 4], v [32][d],
/// p [4 warps][32 keys][4 slots], where d4 is d rounded up to a multiple of 4
/// (rows are loaded four floats at a time).
pub fn shared_bytes(head_dim: usize) -> usize {
    let d4 = head_dim.div_ceil(4) * 4;
    4 * (ITEMS_PER_BLOCK * d4
        + KEYS_PER_TILE * (d4 + 4)
        + KEYS_PER_TILE * head_dim
        + (THREADS as usize / 32) * KEYS_PER_TILE * SLOTS_PER_WARP)
}

/// Tile descriptors: each sequence's rows in runs of `rows_per_block`, the
/// heaviest first. A tile's work is its rows times the keys they see (causal:
/// later rows see more), and blocks start in launch order, so the last wave
/// holds the lightest tiles and the device does not idle behind one long tile
/// (a long pair's last rows, or a document behind a long prefix).
pub fn tiles(layout: &AttentionLayout, prefix_lens: &[usize], rows_per_block: usize) -> Vec<u32> {
    let mut tiles: Vec<([u32; TILE_WORDS], usize)> = Vec::new();
    for seq in &layout.sequences {
        let (prefix_len, prefix_index) = match seq.prefix {
            Some(p) => (prefix_lens[p], p),
            None => (0, 0),
        };
        for first in (0..seq.len).step_by(rows_per_block) {
            let count = rows_per_block.min(seq.len - first);
            // Keys seen by the tile's rows, summed: prefix + own rows up to each.
            let work = count * (prefix_len + first) + count * (count + 1) / 2;
            tiles.push((
                [
                    seq.start as u32,
                    (seq.start + first) as u32,
                    count as u32,
                    prefix_len as u32,
                    prefix_index as u32,
                ],
                work,
            ));
        }
    }
    // Stable: tiles of equal work keep their order.
    tiles.sort_by_key(|(_, work)| std::cmp::Reverse(*work));
    tiles.into_iter().flat_map(|(tile, _)| tile).collect()
}

pub fn attention<D: Device>(
    b: &KernelBackend<D>,
    qkv: Qkv<'_, DeviceBuffer<D::Memory>>,
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, DeviceBuffer<D::Memory>>],
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    let which = b.attention_kernel(shape.head_dim);
    attention_with(b, which, qkv, shape, layout, prefixes, out)
}

/// [`attention`] with W8A16's tensor-core kernel given (W8A8 and head sizes
/// without one run the f32 kernel whatever `which` says).
pub fn attention_with<D: Device>(
    b: &KernelBackend<D>,
    which: AttentionKernel,
    qkv: Qkv<'_, DeviceBuffer<D::Memory>>,
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, DeviceBuffer<D::Memory>>],
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let lens = AttentionLens::of(qkv, out.len, |b| b.len);
    contract::check_attention(shape, layout, lens, prefixes, |b| b.len)?;
    let Qkv { q, k, v } = qkv;
    let Some(kernel) = kernel_for_head_dim(d) else {
        return Err(BackendError::Invalid {
            op: "attention",
            detail: format!("head_dim {d} is not supported (1..={MAX_HEAD_DIM})"),
        });
    };
    let group = n_heads / n_kv_heads;
    // W8A16 runs attention on the f16 tensor cores too, where the head size allows.
    let tensor_cores = b.arithmetic() == Arithmetic::W8A16;
    if tensor_cores && which == AttentionKernel::Wgmma {
        if let Some(kernel) = wgmma_kernel_for_head_dim(d) {
            return attention_f16kv(b, Staging::Wgmma(kernel), qkv, shape, layout, prefixes, out);
        }
    }
    // v3 serves head sizes v4 lacks.
    if tensor_cores && which != AttentionKernel::Mma {
        if let Some(kernel) = f16kv_kernel_for_head_dim(d) {
            return attention_f16kv(b, Staging::F16Kv(kernel), qkv, shape, layout, prefixes, out);
        }
    }
    let mma = mma_kernel_for_head_dim(d).filter(|_| tensor_cores);
    let (kernel, per_block, rows_per_block) = match mma {
        Some(kernel) => {
            let per_block = mma_heads_per_block(group);
            (kernel, per_block, 16 * (MMA_WARPS / per_block))
        }
        None => {
            let per_block = heads_per_block(group);
            (kernel, per_block, ITEMS_PER_BLOCK / per_block)
        }
    };
    let prefix_lens: Vec<usize> = prefixes.iter().map(|p| p.len).collect();
    let tile_table = tiles(layout, &prefix_lens, rows_per_block);
    if tile_table.is_empty() {
        return Ok(());
    }
    let mut prefix_addresses: Vec<u64> = prefixes
        .iter()
        .flat_map(|p| [b.address(p.k), b.address(p.v)])
        .collect();
    prefix_addresses.push(0); // never empty: a zero-byte table has no address to pass
    let prefixes_on_device = b.upload_table(&prefix_addresses)?;
    // The tiles are the same for every layer of a pass: uploaded once
    // (with_tables). The prefix K/V addresses differ per layer.
    b.with_tables(
        &[("attention tiles", bytemuck::cast_slice(&tile_table))],
        |tables| {
            let grid = grid(&tile_table, n_kv_heads * (group / per_block))?;
            // Both kernels take (q, k, v, tiles, prefixes, n_heads, n_kv_heads,
            // [d,] heads_per_block, scale, out): the f32 one also takes d, which
            // the tensor-core ones have as a template parameter.
            let mut args = vec![
                KernelArg::Ptr(b.address(q)),
                KernelArg::Ptr(b.address(k)),
                KernelArg::Ptr(b.address(v)),
                KernelArg::Ptr(tables[0]),
                KernelArg::Ptr(b.device.address(&prefixes_on_device)),
                KernelArg::U32(to_u32(n_heads, "attention", "n_heads")?),
                KernelArg::U32(to_u32(n_kv_heads, "attention", "n_kv_heads")?),
                KernelArg::U32(per_block as u32),
                KernelArg::F32(1.0 / (d as f32).sqrt()),
                KernelArg::Ptr(b.address(out)),
            ];
            let (block, shared) = if mma.is_some() {
                (MMA_WARPS as u32 * 32, mma_shared_bytes(d))
            } else {
                args.insert(7, KernelArg::U32(d as u32));
                (THREADS, shared_bytes(d))
            };
            b.device.launch(&Launch {
                module: "attention",
                kernel,
                grid,
                block: [block, 1, 1],
                shared_bytes: shared as u32,
                args,
            })
        },
    )
}

/// The grid of every attention kernel: a block per tile and head group.
fn grid(tile_table: &[u32], head_groups: usize) -> Result<[u32; 3], BackendError> {
    Ok([
        to_u32(tile_table.len() / TILE_WORDS, "attention", "tiles")?,
        grid_yz(head_groups, "attention", "head groups")?,
        1,
    ])
}

/// Rows of the f16 K/V buffers of one v3 call: each prefix's rows in order
/// (the first row of each returned), then the sequences' `tokens` rows.
pub fn f16kv_rows(prefix_lens: &[usize], tokens: usize) -> (Vec<usize>, usize) {
    let mut first = Vec::with_capacity(prefix_lens.len());
    let mut rows = 0;
    for &len in prefix_lens {
        first.push(rows);
        rows += len;
    }
    (first, rows + tokens)
}

/// Which f16 K/V kernel [`attention_f16kv`] launches, and so how it lays V out.
#[derive(Clone, Copy)]
enum Staging {
    /// v3: K and V rows (`[rows][kv_heads · head_dim]`).
    F16Kv(&'static str),
    /// v4: K rows as v3's, V transposed (`[kv_heads · head_dim][rows]`, rows
    /// padded to 8 so each dimension's row starts 16-byte aligned, as a
    /// tensor map's pitch must), both read through tensor maps.
    Wgmma(&'static str),
}

/// v3 and v4: K and V (the sequences' rows and every prefix's) rounded to f16
/// into one scratch buffer, then the kernel over tiles whose fifth word is
/// the prefix's first row there.
fn attention_f16kv<D: Device>(
    b: &KernelBackend<D>,
    staging: Staging,
    qkv: Qkv<'_, DeviceBuffer<D::Memory>>,
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, DeviceBuffer<D::Memory>>],
    out: &mut DeviceBuffer<D::Memory>,
) -> Result<(), BackendError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let group = n_heads / n_kv_heads;
    let per_block = mma_heads_per_block(group);
    let prefix_lens: Vec<usize> = prefixes.iter().map(|p| p.len).collect();
    let mut tile_table = tiles(layout, &prefix_lens, 16 * (MMA_WARPS / per_block));
    if tile_table.is_empty() {
        return Ok(());
    }
    let tokens = layout.total_tokens();
    let (prefix_rows, rows) = f16kv_rows(&prefix_lens, tokens);
    for tile in tile_table.chunks_mut(TILE_WORDS) {
        // A tile without a prefix reads no prefix row: 0 is as good as any.
        tile[4] = if tile[3] > 0 {
            to_u32(prefix_rows[tile[4] as usize], "attention", "prefix rows")?
        } else {
            0
        };
    }
    let kvw = n_kv_heads * d;
    let too_big = || BackendError::Invalid {
        op: "attention",
        detail: format!("{rows} K/V rows of {kvw} do not fit in memory"),
    };
    let half_bytes = rows
        .checked_mul(kvw)
        .and_then(|v| v.checked_mul(2))
        .ok_or_else(too_big)?;
    // Vᵀ's row pitch in elements (v4).
    let pitch = rows.div_ceil(8) * 8;
    let v_bytes = match staging {
        Staging::F16Kv(_) => half_bytes,
        Staging::Wgmma(_) => pitch
            .checked_mul(kvw)
            .and_then(|v| v.checked_mul(2))
            .ok_or_else(too_big)?,
    };
    b.with_kv16(half_bytes + v_bytes, |kv16| {
        let k16 = b.device.address(kv16);
        let v16 = k16 + half_bytes as u64;
        let token_row0 = rows - tokens;
        // V's conversion and the kernel are the module's (kv_to_f16_transposed
        // is v4's); K's is always attention.cu's kv_to_f16.
        let module = match staging {
            Staging::F16Kv(_) => "attention",
            Staging::Wgmma(_) => "attention_wgmma",
        };
        let convert =
            |src: &DeviceBuffer<D::Memory>, len: usize, first_row: usize, values: bool| {
                if len == 0 {
                    return Ok(());
                }
                let at = (first_row * kvw * 2) as u64;
                let (kernel, args) = match staging {
                    Staging::Wgmma(_) if values => (
                        "kv_to_f16_transposed",
                        vec![
                            KernelArg::Ptr(b.address(src)),
                            KernelArg::U32(to_u32(len / kvw, "attention", "K/V rows")?),
                            KernelArg::U32(to_u32(kvw, "attention", "K/V width")?),
                            KernelArg::Ptr(v16 + (first_row * 2) as u64),
                            KernelArg::U64(pitch as u64),
                        ],
                    ),
                    _ => (
                        "kv_to_f16",
                        vec![
                            KernelArg::Ptr(b.address(src)),
                            KernelArg::U64(len as u64),
                            KernelArg::Ptr(if values { v16 } else { k16 } + at),
                        ],
                    ),
                };
                b.device.launch(&Launch {
                    module: if values { module } else { "attention" },
                    kernel,
                    grid: super::elementwise_grid(len),
                    block: [super::ELEMENTWISE_THREADS, 1, 1],
                    shared_bytes: 0,
                    args,
                })
            };
        for (p, &first) in prefixes.iter().zip(&prefix_rows) {
            convert(p.k, p.len * kvw, first, false)?;
            convert(p.v, p.len * kvw, first, true)?;
        }
        convert(qkv.k, tokens * kvw, token_row0, false)?;
        convert(qkv.v, tokens * kvw, token_row0, true)?;
        let scale = KernelArg::F32(1.0 / (d as f32).sqrt());
        let heads = [
            KernelArg::U32(to_u32(n_heads, "attention", "n_heads")?),
            KernelArg::U32(to_u32(n_kv_heads, "attention", "n_kv_heads")?),
            KernelArg::U32(per_block as u32),
        ];
        let (kernel, threads, shared, args) = match staging {
            Staging::F16Kv(kernel) => (
                kernel,
                MMA_WARPS as u32 * 32,
                f16kv_shared_bytes(d),
                [
                    vec![
                        KernelArg::Ptr(b.address(qkv.q)),
                        KernelArg::Ptr(k16),
                        KernelArg::Ptr(v16),
                    ],
                    // The tiles' address goes in at 3.
                    vec![KernelArg::U32(to_u32(
                        token_row0,
                        "attention",
                        "prefix rows",
                    )?)],
                    heads.to_vec(),
                    vec![scale, KernelArg::Ptr(b.address(out))],
                ]
                .concat(),
            ),
            Staging::Wgmma(kernel) => {
                let map =
                    |address: u64, cols: usize, rows: usize, pitch: usize, box_rows: usize| {
                        b.device.tensor_map_2d(&TensorMapSpec {
                            address,
                            element: TensorElement::F16,
                            cols,
                            rows,
                            pitch: pitch * 2,
                            box_cols: F16KV_KEYS_PER_TILE as u32,
                            box_rows: box_rows as u32,
                            swizzle_128: true,
                        })
                    };
                // K: 64 dims × 64 keys a box; Vᵀ: 64 keys × head_dim dims.
                let k_map = map(k16, kvw, rows, kvw, F16KV_KEYS_PER_TILE)?;
                let v_map = map(v16, rows, kvw, pitch, d)?;
                (
                    kernel,
                    WGMMA_THREADS,
                    wgmma_shared_bytes(d),
                    [
                        vec![KernelArg::Ptr(b.address(qkv.q))],
                        vec![KernelArg::U32(to_u32(
                            token_row0,
                            "attention",
                            "prefix rows",
                        )?)],
                        heads.to_vec(),
                        vec![
                            scale,
                            KernelArg::Ptr(b.address(out)),
                            KernelArg::TensorMap(k_map),
                            KernelArg::TensorMap(v_map),
                        ],
                    ]
                    .concat(),
                )
            }
        };
        let tiles_at = match staging {
            Staging::F16Kv(_) => 3,
            Staging::Wgmma(_) => 1,
        };
        b.with_tables(
            &[("attention f16kv tiles", bytemuck::cast_slice(&tile_table))],
            |tables| {
                let mut args = args.clone();
                args.insert(tiles_at, KernelArg::Ptr(tables[0]));
                b.device.launch(&Launch {
                    module,
                    kernel,
                    grid: grid(&tile_table, n_kv_heads * (group / per_block))?,
                    block: [threads, 1, 1],
                    shared_bytes: shared as u32,
                    args,
                })
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_groups_divide_the_gqa_group() {
        assert_eq!(heads_per_block(1), 1);
        assert_eq!(heads_per_block(4), 4); // Qwen3-4B: 32 query heads over 8 KV heads
        assert_eq!(heads_per_block(6), 6);
        assert_eq!(heads_per_block(32), 16);
        assert_eq!(heads_per_block(17), 1);
        for group in 1..=40 {
            let h = heads_per_block(group);
            assert!(group % h == 0 && h * (ITEMS_PER_BLOCK / h) <= ITEMS_PER_BLOCK);
        }
    }

    #[test]
    fn f16kv_buffers_put_prefixes_first_and_fit_in_shared_memory() {
        assert_eq!(f16kv_shared_bytes(128), 104_448); // sizeof(Att16Shared<128>)
        assert!(f16kv_shared_bytes(128) <= 227 * 1024);
        assert_eq!(f16kv_rows(&[], 10), (vec![], 10));
        // Two prefixes of 32 and 7 rows, then 100 sequence rows: the own
        // rows start at 39, past every prefix (the kernel shifts its own-row
        // pointer back by the prefix's length and stays inside the buffer).
        assert_eq!(f16kv_rows(&[32, 7], 100), (vec![0, 32], 139));
    }

    #[test]
    fn wgmma_shared_memory_is_the_kernels_layout() {
        // AttWgLayout<128>: Q 34,816 (a whole number of KiB already), three
        // slots of 32 KiB, six mbarriers, 1 KiB of alignment.
        assert_eq!(wgmma_shared_bytes(128), 34_816 + 98_304 + 48 + 1024);
        assert_eq!(wgmma_shared_bytes(64), 18_432 + 49_152 + 48 + 1024);
        assert!(wgmma_shared_bytes(128) <= 227 * 1024);
        assert_eq!(wgmma_kernel_for_head_dim(96), None);
        assert_eq!(AttentionKernel::Wgmma.shared_bytes(96), 0);
        assert_eq!(
            AttentionKernel::named("wgmma"),
            Some(AttentionKernel::Wgmma)
        );
    }

    #[test]
    fn tensor_core_head_groups_divide_the_group_and_the_warps() {
        assert_eq!(mma_heads_per_block(4), 4); // Qwen3-4B: 32 rows × 4 heads a block
        assert_eq!(mma_heads_per_block(6), 2);
        assert_eq!(mma_heads_per_block(16), 8);
        assert_eq!(mma_heads_per_block(7), 1);
        assert_eq!(mma_kernel_for_head_dim(128), Some("attention_mma_d128"));
        assert_eq!(mma_kernel_for_head_dim(20), None);
        assert_eq!(mma_shared_bytes(128), 52_224); // the kernel's sizeof
        assert_eq!(mma_shared_bytes(16), 9_216);
    }

    #[test]
    fn tiles_cover_every_row_once_heaviest_first() {
        // A 40-row pair after an 8-token prefix, and a 10-row one without.
        let layout = AttentionLayout::packed_with_prefixes(&[40, 10], &[Some(0), None]);
        let table = tiles(&layout, &[8], 16);
        let tiles: Vec<&[u32]> = table.chunks(TILE_WORDS).collect();
        let work = |t: &[u32]| {
            let (first, count, prefix) = ((t[1] - t[0]) as usize, t[2] as usize, t[3] as usize);
            count * (prefix + first) + count * (count + 1) / 2
        };
        assert!(
            tiles.windows(2).all(|w| work(w[0]) >= work(w[1])),
            "{tiles:?}"
        );
        // The first pair's middle tile (rows 16..32: 16 rows seeing 8 + 17..32
        // keys, 520 in all) before its last (8 rows, 356) and first (264).
        assert_eq!(tiles[0], [0, 16, 16, 8, 0]);
        assert_eq!(tiles[1], [0, 32, 8, 8, 0]);
        let mut rows: Vec<u32> = tiles.iter().flat_map(|t| t[1]..t[1] + t[2]).collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..50).collect::<Vec<u32>>());
    }

    #[test]
    fn shared_memory_fits_the_static_limit_for_every_supported_head_dim() {
        assert!(shared_bytes(MAX_HEAD_DIM) <= 48 * 1024);
        assert_eq!(kernel_for_head_dim(128), Some("attention_f32_d128"));
        assert_eq!(kernel_for_head_dim(8), Some("attention_f32_d32"));
        assert_eq!(kernel_for_head_dim(256), None);
        assert_eq!(kernel_for_head_dim(0), None);
    }

    #[test]
    fn tiles_cut_sequences_and_carry_their_prefix() {
        let layout = AttentionLayout::packed_with_prefixes(&[5, 0, 3], &[Some(1), None, None]);
        let t = tiles(&layout, &[7, 40], 4);
        assert_eq!(
            t,
            vec![0, 0, 4, 40, 1, 0, 4, 1, 40, 1, 5, 5, 3, 0, 0],
            "two tiles for the first sequence, none for the empty one"
        );
    }
}
