// matmul_w8a16.cu — out[rows, n] = x[rows, k] · wᵀ for a Q8_0 weight w [n, k], W8A16:
// the weights stay int8 in memory and are turned into f16 (q · d, rounded once, as
// llama.cpp's dequantisation for cuBLAS does) in registers, once per stage and warp;
// the activations arrive as f16 rows, each divided by a power of two 2^e (written by
// f32_to_f16_rows, rms_norm_f16 or swiglu_f16: common.cuh's write_f16_row), and
// the f32 sums are multiplied back by 2^e in the epilogue. f16 × f16 products are
// exact and accumulate in f32 on the tensor cores (mma.sync m16n8k16), so the only
// roundings are the two f16 inputs and the f32 sums: against the W8A32 reference
// (f32 activations, exact q · d) the error is a few parts in 10^4 of Σ|x·w|
// (docs/kernels.md). The per-32 scale costs nothing per output: it is applied to
// the weights, which every row of the tile reuses.
//
// Tiling: a block computes a 128 × 128 output tile with 8 warps (2 along rows ×
// 4 along features; a warp owns 64 × 32 outputs as 4 × 4 m16n8 tiles); each stage
// is one Q8_0 block (k advances 32) brought in by cp.async, three stages deep.
//
// Fragments without ldmatrix: the sum over k does not care in which order the
// 32 k of a stage meet in the two k16 mma steps, as long as A and B agree. Lane
// (g, t) = (lane / 4, lane % 4) takes the 8 consecutive k [8t, 8t + 8) of its
// rows and feeds k 8t + {0, 1, 2, 3} to the first mma (as the fragment's k 2t,
// 2t+1, 2t+8, 2t+9) and 8t + {4..7} to the second. For B that is 8 int8 bytes
// of a weight row (one 8-byte load; each half-warp reads four whole 32-byte rows,
// every bank once). The f16 activations are written by our own kernels in the
// order the mma reads them (fragment tiles, common.cuh's f16_tile_index): each
// 16-byte load is one A fragment, with no register moves, and each quarter-warp's
// loads meet every bank once.
#include "common.cuh"

#define W16_BM 128       // activation rows per block tile
#define W16_BN 128       // output features per block tile
#define W16_STAGES 3     // cp.async pipeline depth (stages of one Q8_0 block)
#define W16_THREADS 256  // 8 warps

// Activations → f16 rows for the W8A16 matmuls in `layout` (fragment tiles,
// common.cuh's f16_tile_index, for these kernels; wgmma rows for
// matmul_w8a16_wgmma.cu's): one block per row.
TESSERA_KERNEL void f32_to_f16_rows(const float* x, u32 dim, u16* out, float* row_scales, u32 layout) {
    __shared__ float scratch[WARP_SIZE];
    const u64 base = u64(blockIdx.x) * dim;
    const float* row = x + base;
    write_f16_row([&](u32 c) { return row[c]; }, blockIdx.x, dim, out, row_scales, scratch, layout);
}

struct __align__(128) W16Stage {
    u16 a[W16_BM * QK8_0];  // f16 activations: 8 fragment tiles of 16 rows (1,024 bytes each)
    i8 b[W16_BN * QK8_0];   // int8 weights, row-major, 32 bytes a row
    u16 scale[W16_BN];      // the weight rows' d (f16 bits) of this block
};

struct W16Args {
    const u16* x;
    const float* row_scales;
    const i8* wq;
    const u16* w_scales;
    u32 rows, n, k;
    u32 row0, col0;
    u32 accumulate;
};

// What one thread copies into every stage, fixed for the whole k loop: two
// 16-byte chunks of the activations' fragment tiles (a tile of 16 rows × 32 k is
// 1,024 contiguous bytes; block kb's tile of row group G starts at
// (G · k_blocks + kb) · 512 f16), one chunk of weight rows, and (threads < 128)
// one weight row's scale. Sources point at block 0 and advance by a block per
// stage; a chunk outside the matrices stays put and is zero-filled.
struct W16Copies {
    const u16* a_src[2];
    u32 a_dst[2];  // u16 index into W16Stage::a
    bool a_valid[2];
    const i8* b_src;
    u32 b_dst;  // byte index into W16Stage::b
    bool b_valid;
    const u16* scale_src;  // nullptr: no scale (thread >= 128 or column >= n)
};

static __device__ __forceinline__ W16Copies w16_copies(const W16Args& m) {
    const u32 tid = threadIdx.x;
    const u32 k_blocks = m.k / QK8_0;
    W16Copies c;
#pragma unroll
    for (u32 i = 0; i < 2; ++i) {
        const u32 id = tid + i * W16_THREADS;  // 8 row groups × 64 chunks of 8 f16
        const u32 group = id / 64, chunk = id % 64;
        const u32 row = m.row0 + group * 16;
        c.a_valid[i] = row < m.rows;
        c.a_src[i] = c.a_valid[i] ? m.x + u64(row / 16) * k_blocks * 512 + chunk * 8 : m.x;
        c.a_dst[i] = group * 512 + chunk * 8;
    }
    const u32 r = tid / 2, chunk = tid % 2;  // 128 rows × 2 chunks of 16 int8
    const u32 col = m.col0 + r;
    c.b_valid = col < m.n;
    c.b_src = c.b_valid ? m.wq + u64(col) * m.k + chunk * 16 : m.wq;
    c.b_dst = r * QK8_0 + chunk * 16;
    c.scale_src = tid < W16_BN && m.col0 + tid < m.n ? m.w_scales + u64(m.col0 + tid) * k_blocks : nullptr;
    return c;
}

// Issues the cp.async copies of block `kb` into `s` and returns this thread's
// weight scale for it (0 without one); the caller stores it in s.scale once the
// load has had time to land.
static __device__ __forceinline__ u16 w16_load_stage(const W16Copies& c, u32 kb, W16Stage& s) {
    const u32 k0 = kb * QK8_0;
#pragma unroll
    for (u32 i = 0; i < 2; ++i) {
        cp_async_16(&s.a[c.a_dst[i]], c.a_valid[i] ? c.a_src[i] + kb * 512 : c.a_src[i], c.a_valid[i]);
    }
    cp_async_16(&s.b[c.b_dst], c.b_valid ? c.b_src + k0 : c.b_src, c.b_valid);
    return c.scale_src != nullptr ? c.scale_src[kb] : u16(0);
}

// One stage's 32 k for the warp's 4 × 4 m16n8 tiles; acc[i][j] is tile (i, j)'s
// C fragment (rows wm + 16i + g (+8 for e >= 2), columns wn + 8j + 2t + (e & 1)).
// `a0`, `a1` point at this lane's two fragment units in the stage's first row
// group of the warp (the A registers of the mma on k 8t..8t+3 and 8t+4..7);
// `b_row` at the int8 of feature wn + g, k 8t; `scale` at feature wn + g's scale.
static __device__ __forceinline__ void w16_compute(const u16* a0, const u16* a1, const i8* b_row, const u16* scale,
                                                   float (&acc)[4][4][4]) {
    u32 b[4][4];  // b[j]: the f16 weights of k 8t..8t+7 of feature wn + 8j + g
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        u32 raw[2];
        load_8(raw, b_row + j * 8 * QK8_0);
        const u32 d = scale[j * 8];
        const u32 d2 = d | (d << 16);
        dequant_4(raw[0], d2, b[j][0], b[j][1]);
        dequant_4(raw[1], d2, b[j][2], b[j][3]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        // Rows g and g+8 of m-tile i, k pairs interleaved as the mma wants them.
        u32 first[4], second[4];
        load_16(first, a0 + i * 512);
        load_16(second, a1 + i * 512);
#ifdef TESSERA_MUTATE_F16_FRAGMENT
        // Mutation test build: A's registers 1 and 2 swapped (rows +8 and k +8
        // confused), the classic fragment-layout slip.
        const u32 f0[4] = {first[0], first[2], first[1], first[3]};
        const u32 f1[4] = {second[0], second[2], second[1], second[3]};
#else
        const u32 (&f0)[4] = first;
        const u32 (&f1)[4] = second;
#endif
        // First k half into all four tiles, then the second: an accumulator's
        // two mma are four apart, not back to back (each waits for the last).
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 b0[2] = {b[j][0], b[j][1]};
            mma_f16_m16n8k16(acc[i][j], f0, b0);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 b1[2] = {b[j][2], b[j][3]};
            mma_f16_m16n8k16(acc[i][j], f1, b1);
        }
    }
}

// Grid (ceil(n / 128), ceil(rows / 128)), 256 threads; k a multiple of 32.
TESSERA_KERNEL void __launch_bounds__(W16_THREADS, 2)
    matmul_q8_0_w8a16(const u16* x, const float* row_scales, const i8* wq, const u16* w_scales, u32 rows, u32 n,
                      u32 k, u32 accumulate, float* out) {
    __shared__ W16Stage stages[W16_STAGES];
    const W16Args m{x, row_scales, wq, w_scales, rows, n, k, blockIdx.y * W16_BM, blockIdx.x * W16_BN, accumulate};
    const u32 warp = threadIdx.x / WARP_SIZE;
    const u32 wm = (warp / 4) * 64, wn = (warp % 4) * 32;
    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                acc[i][j][e] = 0.0f;
            }
        }
    }
    const u32 blocks = k / QK8_0;
    const W16Copies copies = w16_copies(m);
    const u32 lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
    // This lane's fragment units in the warp's first row group (f16_tile_index):
    // unit g·4 + t, its halves swapped for odd g.
    const u32 unit = (wm / 16) * 512 + (g * 4 + t) * 16;
    const u32 a0_offset = unit + 8 * (g & 1), a1_offset = unit + 8 * (1 - (g & 1));
    const u32 b_offset = (wn + g) * QK8_0 + 8 * t;
    // Prologue: the first W16_STAGES - 1 stages in flight, one group each.
#pragma unroll
    for (u32 kb = 0; kb < W16_STAGES - 1; ++kb) {
        if (kb < blocks) {
            const u16 scale = w16_load_stage(copies, kb, stages[kb]);
            if (threadIdx.x < W16_BN) {
                stages[kb].scale[threadIdx.x] = scale;
            }
        }
        cp_async_commit();
    }
    u32 slot = 0, refill_slot = W16_STAGES - 1;
    for (u32 kb = 0; kb < blocks; ++kb) {
        // This stage's group has landed (the newer one may be in flight), and
        // after the barrier every thread's copies are visible and every warp is
        // done with the stage computed last iteration, whose slot is refilled next.
#ifdef TESSERA_MUTATE_W16_WAIT
        // Mutation test build: waits for one group too few.
        cp_async_wait<W16_STAGES - 1>();
#else
        cp_async_wait<W16_STAGES - 2>();
#endif
        __syncthreads();
        const u32 next = kb + W16_STAGES - 1;
        W16Stage& refill = stages[refill_slot];
        u16 scale = 0;
        if (next < blocks) {
            scale = w16_load_stage(copies, next, refill);
        }
        cp_async_commit();  // possibly empty: keeps one group per iteration
        const W16Stage& s = stages[slot];
        w16_compute(s.a + a0_offset, s.a + a1_offset, s.b + b_offset, s.scale + wn + g, acc);
        // The scale's global load had the whole compute to land; nobody reads this
        // slot before the next iteration's barrier.
        if (next < blocks && threadIdx.x < W16_BN) {
            refill.scale[threadIdx.x] = scale;
        }
        slot = slot + 1 == W16_STAGES ? 0 : slot + 1;
        refill_slot = refill_slot + 1 == W16_STAGES ? 0 : refill_slot + 1;
    }
    // Epilogue: the sums times the rows' 2^e (exact), stored or added.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const u32 row = m.row0 + wm + i * 16 + g + half * 8;
            if (row >= m.rows) {
                continue;
            }
            const float scale = m.row_scales[row];
            float* out_row = out + u64(row) * m.n;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const u32 col = m.col0 + wn + j * 8 + 2 * t + e;
                    if (col < m.n) {
                        const float value = acc[i][j][half * 2 + e] * scale;
                        out_row[col] = m.accumulate ? out_row[col] + value : value;
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------ v3
//
// matmul_w8a16_<BM>x<BN>: the same arithmetic as matmul_q8_0_w8a16 (bit for bit
// the same products; the f32 sums may meet in another order), built so that the
// tensor cores, not the instruction issue, bound it:
//
// - Each warp owns 64 × 64 outputs (4 × 8 m16n8 tiles; 64 × 32 in the 64-row
//   configuration), so every A fragment feeds 8 mma and every B fragment 4.
// - A stage is 64 k (two Q8_0 blocks): one barrier per 64 k.
// - Each weight is turned into f16 once per block, not once per warp: a warp
//   converts whole B fragments (8 features × 32 k, one 8-weight unit per lane:
//   8 int8 → four f16x2 words) into a shared-memory buffer laid out as the
//   fragments themselves (lane l's 16 bytes at l · 16), from which every warp
//   that needs one loads it with one 16-byte load, bank-conflict free.
// - The conversion of stage s + 1 and the mma of stage s share one iteration
//   (two converted buffers), so the barrier that publishes one also frees the
//   other.
// - Grouped launches: up to three weights that read the same activations (q, k
//   and v; gate and up) in one grid, each block finding its weight by its column
//   tile.
// - Split-K: with gridDim.z = S > 1 each z sums its share of the k stages into
//   `partial` ([z][rows][stride] f32, already times the row scale), and
//   w8a16_splitk_reduce adds the shares in z order (deterministic) into out.
//
// Shared memory (dynamic, in this order): A stages (BM × 64 f16 each, the
// fragment-tile layout of the activations copied as is), raw weight stages
// (BN rows × 64 int8, the four 16-byte chunks of row n stored at chunk
// c ^ 2·((n >> 1) & 1) so a half-warp's 8-byte reads meet every bank once),
// two converted buffers (2 × BN/8 fragments of 512 bytes each), and the scale
// stages (2 × BN f16 bits). w8a16::Config::shared_bytes in the backend is the
// same sum.

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct W16Config {
    static constexpr int BM = BM_, BN = BN_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_;
    static constexpr int WARPS = WARPS_M * WARPS_N;
    static constexpr int THREADS = WARPS * WARP_SIZE;
    static constexpr int MT = BM / WARPS_M / 16;  // m16 tiles per warp
    static constexpr int NT = BN / WARPS_N / 8;   // n8 tiles per warp
    static constexpr int FRAGMENTS = 2 * BN / 8;  // B fragments per stage (2 blocks × BN/8)
    static constexpr u32 A_BYTES = BM * 64 * 2;
    static constexpr u32 RAW_BYTES = BN * 64;
    static constexpr u32 CONV_BYTES = FRAGMENTS * 512;
    static constexpr u32 SCALE_BYTES = 2 * BN * 2;
    static constexpr u32 A_OFFSET = 0;
    static constexpr u32 RAW_OFFSET = A_OFFSET + STAGES * A_BYTES;
    static constexpr u32 CONV_OFFSET = RAW_OFFSET + STAGES * RAW_BYTES;
    static constexpr u32 SCALE_OFFSET = CONV_OFFSET + 2 * CONV_BYTES;
    static constexpr u32 SHARED_BYTES = SCALE_OFFSET + STAGES * SCALE_BYTES;
    static constexpr int A_CHUNKS = BM * 8 / THREADS;   // 16-byte copies per thread and stage
    static constexpr int RAW_CHUNKS = BN * 4 / THREADS;  // idem, weights
    static constexpr int SCALES = 2 * BN / THREADS;      // scale loads per thread and stage
    static constexpr int CONVERSIONS = FRAGMENTS / WARPS;  // fragments per warp and stage
    static_assert(STAGES >= 3, "the loop waits for the stage after the one it computes");
    static_assert(A_CHUNKS * THREADS == BM * 8 && RAW_CHUNKS * THREADS == BN * 4, "whole copies");
    static_assert(SCALES * THREADS == 2 * BN && CONVERSIONS * WARPS == FRAGMENTS, "whole work");
    static_assert(MT * 16 * WARPS_M == BM && NT * 8 * WARPS_N == BN, "whole warp tiles");
    static_assert((BN / 8) % WARPS == 0 && THREADS % 128 == 0, "w16_thread's and w16_convert_stage's strides");
};

// What one thread copies and converts, fixed for the block's whole k loop;
// pointers are at k stage 0 of the block's weight and rows, and advance by a
// stage per stage. Thread tid's chunks i = 0, 1, ... are tid + i · THREADS in
// each copy's numbering, so within a copy the block half (A), the 16-byte
// chunk (weights) and the block half (scales) are the same for all its chunks.
template <typename C>
struct W16Thread {
    const u16* a_src;   // A chunk 0: (row group, half, chunk of 8 f16)
    const i8* raw_src;  // weight chunk 0: (feature, 16-byte chunk)
    const u16* scale_src;
    u32 a_dst, raw_dst;  // byte offsets into a stage slot, chunk 0
    u32 a_valid, raw_valid, scale_valid;  // bit i: chunk i inside the matrices
    bool a_high, raw_high, scale_high;    // in the stage's second block
    u64 a_step, raw_step;  // elements between chunk i and i + 1
    u32 scale_step;
};

template <typename C>
static __device__ __forceinline__ W16Thread<C> w16_thread(const u16* x, u32 rows, u32 k_blocks, u32 row0,
                                                          const i8* wq, const u16* ws, u32 n, u32 col0) {
    const u32 tid = threadIdx.x;
    W16Thread<C> w;
    // A: chunk id = tid + i·THREADS → row group id / 128, half (id / 64) % 2, chunk id % 64.
    const u32 a_half = (tid / 64) % 2, a_chunk = tid % 64, a_group = tid / 128;
    w.a_high = a_half == 1;
    w.a_step = u64(C::THREADS / 128) * k_blocks * 512;
    w.a_src = x + (u64(row0 / 16 + a_group) * k_blocks + a_half) * 512 + a_chunk * 8;
    w.a_dst = ((a_group * 2 + a_half) * 512 + a_chunk * 8) * 2;
    w.a_valid = 0;
#pragma unroll
    for (int i = 0; i < C::A_CHUNKS; ++i) {
        const u32 row = row0 + (a_group + u32(i) * (C::THREADS / 128)) * 16;
        w.a_valid |= u32(row < rows) << i;
    }
    // Weights: chunk id → feature id / 4, chunk id % 4 (its position swizzled by
    // the feature's bit 1, which THREADS / 4 features further does not change).
    const u32 raw_n = tid / 4, raw_c = tid % 4;
    w.raw_high = raw_c >= 2;
    w.raw_step = u64(C::THREADS / 4) * k_blocks * QK8_0;
    w.raw_src = wq + u64(col0 + raw_n) * k_blocks * QK8_0 + raw_c * 16;
    w.raw_dst = raw_n * 64 + w16_raw_chunk(raw_n, raw_c) * 16;
    w.raw_valid = 0;
#pragma unroll
    for (int i = 0; i < C::RAW_CHUNKS; ++i) {
        w.raw_valid |= u32(col0 + raw_n + u32(i) * (C::THREADS / 4) < n) << i;
    }
    // Scales: id → feature id / 2, half id % 2.
    const u32 scale_n = tid / 2, scale_half = tid % 2;
    w.scale_high = scale_half == 1;
    w.scale_step = (C::THREADS / 2) * k_blocks;
    w.scale_src = ws + u64(col0 + scale_n) * k_blocks + scale_half;
    w.scale_valid = 0;
#pragma unroll
    for (int i = 0; i < C::SCALES; ++i) {
        w.scale_valid |= u32(col0 + scale_n + u32(i) * (C::THREADS / 2) < n) << i;
    }
    return w;
}

// Issues the cp.async copies of the block's k stage `ks` into the stage slot
// at `a_slot` / `raw_slot`, and loads this thread's scales of it into `scales`
// (stored by w16_store_scales once they have had time to land). `tail`: the
// stage's second block lies beyond k. A chunk outside the matrices is zero-filled
// from its (unread) address, as cp.async with src-size 0 reads nothing.
template <typename C>
static __device__ __forceinline__ void w16_issue_stage(const W16Thread<C>& w, u32 ks, bool tail,
                                                       unsigned char* a_slot, unsigned char* raw_slot,
                                                       u16 (&scales)[C::SCALES]) {
    const u16* a_src = w.a_src + u64(ks) * 1024;
    const bool a_tail = tail && w.a_high;
#pragma unroll
    for (int i = 0; i < C::A_CHUNKS; ++i) {
        const bool valid = ((w.a_valid >> i) & 1) && !a_tail;
        cp_async_16(a_slot + w.a_dst + i * (C::THREADS / 128) * 2048, a_src + i * w.a_step, valid);
    }
    const i8* raw_src = w.raw_src + u64(ks) * 64;
    const bool raw_tail = tail && w.raw_high;
#pragma unroll
    for (int i = 0; i < C::RAW_CHUNKS; ++i) {
        const bool valid = ((w.raw_valid >> i) & 1) && !raw_tail;
        cp_async_16(raw_slot + w.raw_dst + i * (C::THREADS / 4) * 64, raw_src + i * w.raw_step, valid);
    }
    const u16* scale_src = w.scale_src + ks * 2;
    const bool scale_tail = tail && w.scale_high;
#pragma unroll
    for (int i = 0; i < C::SCALES; ++i) {
        const bool valid = ((w.scale_valid >> i) & 1) && !scale_tail;
        scales[i] = valid ? scale_src[i * w.scale_step] : u16(0);
    }
}

// Stores the scales w16_issue_stage loaded into their slot ([half][BN]).
template <typename C>
static __device__ __forceinline__ void w16_store_scales(unsigned char* scale_slot, const u16 (&scales)[C::SCALES]) {
    u16* s = reinterpret_cast<u16*>(scale_slot);
    const u32 n = threadIdx.x / 2, half = threadIdx.x % 2;
#pragma unroll
    for (int i = 0; i < C::SCALES; ++i) {
        s[half * C::BN + n + i * (C::THREADS / 2)] = scales[i];
    }
}

// The warp's share of the B fragments of the stage in `raw_slot` (scales in
// `scale_slot`), into the converted buffer `conv`. Fragment f = (half, n-tile)
// = (f / (BN/8), f % (BN/8)); the warp converts f = warp + i · WARPS, and lane
// (g, t) the 8 weights of feature 8·tile + g, k 8t..8t+7 of the half.
template <typename C>
static __device__ __forceinline__ void w16_convert_stage(const unsigned char* raw_slot, const unsigned char* scale_slot,
                                                         unsigned char* conv) {
    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
    const u32 n = warp * 8 + g;  // feature of fragment f = warp; + 8 per n-tile further
    const u32 swizzle = ((g >> 1) & 1u) << 1;  // w16_raw_chunk's, the same for n + 8j
    const u16* scale = reinterpret_cast<const u16*>(scale_slot) + n;
    const unsigned char* raw = raw_slot + n * 64 + (t % 2) * 8;
    const u32 chunk0 = ((t / 2) ^ swizzle) * 16, chunk1 = ((2 + t / 2) ^ swizzle) * 16;
#pragma unroll
    for (int i = 0; i < C::CONVERSIONS; ++i) {
        constexpr int TILES = C::BN / 8;
        const int half = (i * C::WARPS) / TILES, tile_step = (i * C::WARPS) % TILES;  // compile-time
        u32 bytes[2];
        load_8(bytes, raw + tile_step * 8 * 64 + (half ? chunk1 : chunk0));
        const u32 d = scale[half * C::BN + tile_step * 8];
        const u32 d2 = d | (d << 16);
        u32 words[4];
        dequant_4(bytes[0], d2, words[0], words[1]);
        dequant_4(bytes[1], d2, words[2], words[3]);
        store_16(conv + (warp + u32(i) * C::WARPS) * 512 + lane * 16, words);
    }
}

// One stage's 64 k for the warp's MT × NT tiles. `a` is the stage's A slot at
// the warp's first row group, `conv` its converted weights at the warp's first
// n-tile.
template <typename C>
static __device__ __forceinline__ void w16_mma_stage(const unsigned char* a, const unsigned char* conv,
                                                     float (&acc)[C::MT][C::NT][4]) {
    const u32 lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4;
    // This lane's two fragment units in a 16-row × 32-k tile (f16_tile_index):
    // unit g·4 + t, its halves swapped for odd g.
    const u32 unit = lane * 32;
    const u32 a0_offset = unit + 16 * (g & 1), a1_offset = unit + 16 * (1 - (g & 1));
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        u32 first[C::MT][4], second[C::MT][4];
#pragma unroll
        for (int i = 0; i < C::MT; ++i) {
            const unsigned char* tile = a + (i * 2 + half) * 1024;
            load_16(first[i], tile + a0_offset);
            load_16(second[i], tile + a1_offset);
#ifdef TESSERA_MUTATE_F16_FRAGMENT
            // Mutation test build: A's registers 1 and 2 swapped (rows +8 and k
            // +8 confused), the classic fragment-layout slip.
            const u32 r1 = first[i][1];
            first[i][1] = first[i][2];
            first[i][2] = r1;
#endif
        }
#pragma unroll
        for (int j = 0; j < C::NT; ++j) {
            u32 b[4];
            load_16(b, conv + (half * (C::BN / 8) + j) * 512 + lane * 16);
            const u32 b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
            // First k16 into every m-tile, then the second: an accumulator's two
            // mma are MT apart, not back to back.
#pragma unroll
            for (int i = 0; i < C::MT; ++i) {
                mma_f16_m16n8k16(acc[i][j], first[i], b0);
            }
#pragma unroll
            for (int i = 0; i < C::MT; ++i) {
                mma_f16_m16n8k16(acc[i][j], second[i], b1);
            }
        }
    }
}

template <typename C>
static __device__ __forceinline__ void w16_gemm(const u16* x, const float* row_scales, u32 rows, u32 k, u32 accumulate,
                                                const W16Group& g0, const W16Group& g1, const W16Group& g2,
                                                float* partial, u32 partial_stride) {
    DYNAMIC_SHARED(unsigned char, smem);
    require_dynamic_shared(C::SHARED_BYTES);
    // The block's group: column tiles are numbered across the groups in order.
    const u32 tiles0 = (g0.n + C::BN - 1) / C::BN, tiles1 = (g1.n + C::BN - 1) / C::BN;
    const u32 tile = blockIdx.x;
    const W16Group group = tile < tiles0 ? g0 : (tile < tiles0 + tiles1 ? g1 : g2);
    const u32 col0 = (tile < tiles0 ? tile : (tile < tiles0 + tiles1 ? tile - tiles0 : tile - tiles0 - tiles1)) * C::BN;
    const u32 row0 = blockIdx.y * C::BM;
    // This split's share of the k stages.
    const u32 k_blocks = k / QK8_0;
    const u32 total_stages = (k_blocks + 1) / 2;
    const u32 per_split = (total_stages + gridDim.z - 1) / gridDim.z;
    const u32 stage0 = blockIdx.z * per_split < total_stages ? blockIdx.z * per_split : total_stages;
    const u32 stages = per_split < total_stages - stage0 ? per_split : total_stages - stage0;
    const u32 tail_stage = k_blocks % 2 == 1 ? total_stages - 1 : ~0u;  // its second block is beyond k

    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const u32 wm = (warp / C::WARPS_N) * (C::MT * 16), wn = (warp % C::WARPS_N) * (C::NT * 8);
    const W16Thread<C> w = w16_thread<C>(x, rows, k_blocks, row0, group.wq, group.ws, group.n, col0);
    float acc[C::MT][C::NT][4];
#pragma unroll
    for (int i = 0; i < C::MT; ++i) {
#pragma unroll
        for (int j = 0; j < C::NT; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                acc[i][j][e] = 0.0f;
            }
        }
    }
    unsigned char* const a_base = smem + C::A_OFFSET;
    unsigned char* const raw_base = smem + C::RAW_OFFSET;
    unsigned char* const conv_base = smem + C::CONV_OFFSET;
    unsigned char* const scale_base = smem + C::SCALE_OFFSET;
    // Prologue: stages 0 .. STAGES-2 in flight (one group each), stage 0
    // converted.
    u16 scales[C::SCALES] = {};
#pragma unroll
    for (u32 s = 0; s < C::STAGES - 1; ++s) {
        if (s < stages) {
            w16_issue_stage<C>(w, stage0 + s, stage0 + s == tail_stage, a_base + s * C::A_BYTES,
                               raw_base + s * C::RAW_BYTES, scales);
            w16_store_scales<C>(scale_base + s * C::SCALE_BYTES, scales);
        }
        cp_async_commit();
    }
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();
    if (stages > 0) {
        w16_convert_stage<C>(raw_base, scale_base, conv_base);
    }
    // Slots as rolling indices: `slot` holds stage s (computed), `convert_slot`
    // stage s + 1 (converted), `load_slot` stage s + STAGES - 1 (loaded).
    u32 slot = 0, convert_slot = 1, load_slot = C::STAGES - 1;
    const unsigned char* const a_warp = a_base + (wm / 16) * 2048;
    const unsigned char* const conv_warp = conv_base + (wn / 8) * 512;
    for (u32 s = 0; s < stages; ++s) {
        // Stage s + 1 has landed (later ones may be in flight); after the barrier
        // every thread's copies and stage s's converted weights are visible, and
        // every warp is done with stage s - 1 (its A slot, its raw slot, and the
        // converted buffer written next).
#ifdef TESSERA_MUTATE_W16_WAIT
        // Mutation test build: waits for one group too few.
        cp_async_wait<C::STAGES - 2>();
#else
        cp_async_wait<C::STAGES - 3>();
#endif
        __syncthreads();
        const u32 next = s + C::STAGES - 1;
        if (next < stages) {
            w16_issue_stage<C>(w, stage0 + next, stage0 + next == tail_stage, a_base + load_slot * C::A_BYTES,
                               raw_base + load_slot * C::RAW_BYTES, scales);
        }
        cp_async_commit();  // possibly empty: keeps one group per iteration
        const u32 buffer = s & 1;
        if (s + 1 < stages) {
#ifdef TESSERA_MUTATE_W16_BUFFER
            // Mutation test build: converts into the buffer being computed.
            const u32 convert_buffer = buffer;
#else
            const u32 convert_buffer = buffer ^ 1;
#endif
            w16_convert_stage<C>(raw_base + convert_slot * C::RAW_BYTES, scale_base + convert_slot * C::SCALE_BYTES,
                                 conv_base + convert_buffer * C::CONV_BYTES);
        }
        w16_mma_stage<C>(a_warp + slot * C::A_BYTES, conv_warp + buffer * C::CONV_BYTES, acc);
        // The scales' global loads had the whole stage to land; their slot is
        // read by the conversion two iterations on at the earliest.
        if (next < stages) {
            w16_store_scales<C>(scale_base + load_slot * C::SCALE_BYTES, scales);
        }
        slot = slot + 1 == C::STAGES ? 0 : slot + 1;
        convert_slot = convert_slot + 1 == C::STAGES ? 0 : convert_slot + 1;
        load_slot = load_slot + 1 == C::STAGES ? 0 : load_slot + 1;
    }
    // Epilogue: the sums times the rows' 2^e (exact), stored, added, or written
    // to this split's share of `partial`.
    const u32 g = lane / 4, t = lane % 4;
    const bool split = gridDim.z > 1;
#pragma unroll
    for (int i = 0; i < C::MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const u32 row = row0 + wm + i * 16 + g + h * 8;
            if (row >= rows) {
                continue;
            }
            const float scale = row_scales[row];
            float* out_row = split ? partial + (u64(blockIdx.z) * rows + row) * partial_stride + group.col_base
                                   : group.out + u64(row) * group.n;
#pragma unroll
            for (int j = 0; j < C::NT; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const u32 col = col0 + wn + j * 8 + 2 * t + e;
                    if (col < group.n) {
                        const float value = acc[i][j][h * 2 + e] * scale;
                        out_row[col] = (!split && accumulate) ? out_row[col] + value : value;
                    }
                }
            }
        }
    }
}

#define W16_CALL(C)                                                                                        \
    w16_gemm<C>(x, row_scales, rows, k, accumulate, W16Group{wq0, ws0, out0, n0, 0}, W16Group{wq1, ws1, out1, n1, n0}, \
                W16Group{wq2, ws2, out2, n2, n0 + n1}, partial, partial_stride)

// Grid (Σ ceil(n_g / BN), ceil(rows / BM), splits); C::THREADS threads;
// C::SHARED_BYTES of dynamic shared memory; k a multiple of 32.
using W16_128x128 = W16Config<128, 128, 2, 2, 3>;
using W16_256x128 = W16Config<256, 128, 4, 2, 3>;
using W16_128x256 = W16Config<128, 256, 2, 4, 3>;
using W16_64x128 = W16Config<64, 128, 1, 4, 4>;

TESSERA_KERNEL void __launch_bounds__(128, 2) matmul_w8a16_128x128(W16_PARAMS) { W16_CALL(W16_128x128); }
TESSERA_KERNEL void __launch_bounds__(256, 1) matmul_w8a16_256x128(W16_PARAMS) { W16_CALL(W16_256x128); }
TESSERA_KERNEL void __launch_bounds__(256, 1) matmul_w8a16_128x256(W16_PARAMS) { W16_CALL(W16_128x256); }
TESSERA_KERNEL void __launch_bounds__(128, 2) matmul_w8a16_64x128(W16_PARAMS) { W16_CALL(W16_64x128); }

// out[row, col] (+)= Σ_z partial[z][row][col_base + col], z in order: the
// split-K shares of one group. Grid (ceil(n / 256), min(rows, 65,535)), 256
// threads; rows beyond the grid's y in steps of gridDim.y.
TESSERA_KERNEL void w8a16_splitk_reduce(const float* partial, u32 splits, u32 rows, u32 stride, u32 col_base, u32 n,
                                        u32 accumulate, float* out) {
    const u32 col = blockIdx.x * 256 + threadIdx.x;
    if (col >= n) {
        return;
    }
    for (u32 row = blockIdx.y; row < rows; row += gridDim.y) {
        float sum = 0.0f;
        for (u32 z = 0; z < splits; ++z) {
            sum += partial[(u64(z) * rows + row) * stride + col_base + col];
        }
        float* o = out + u64(row) * n + col;
        *o = accumulate ? *o + sum : sum;
    }
}
