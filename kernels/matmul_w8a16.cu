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

// Activations → f16 rows for the W8A16 matmul (fragment-tile layout,
// common.cuh's f16_tile_index): one block per row.
TESSERA_KERNEL void f32_to_f16_rows(const float* x, u32 dim, u16* out, float* row_scales) {
    __shared__ float scratch[WARP_SIZE];
    const u64 base = u64(blockIdx.x) * dim;
    const float* row = x + base;
    write_f16_row([&](u32 c) { return row[c]; }, blockIdx.x, dim, out, row_scales, scratch);
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

// Four int8 weights → two f16x2 words scaled by d2 = (d, d): bytes 0, 1 in `lo`,
// bytes 2, 3 in `hi`. The byte is biased to unsigned (x ^ 0x80 = x + 128) and
// placed under the f16 exponent of 1024, whose spacing is 1: 0x64XX = 1024 + XX;
// subtracting 1152 gives x exactly, and one rounded multiply gives f16(x · d).
static __device__ __forceinline__ void dequant_4(u32 raw, u32 d2, u32& lo, u32& hi) {
    const u32 biased = raw ^ 0x80808080u;
#ifdef TESSERA_MUTATE_PRMT_SELECTOR
    // Mutation test build: the two weights of each f16 pair swapped.
    lo = byte_perm(biased, 0x64646464u, 0x5041u);
#else
    lo = byte_perm(biased, 0x64646464u, 0x5140u);
#endif
    hi = byte_perm(biased, 0x64646464u, 0x5342u);
    const u32 magic = 0x64806480u;  // (1152, 1152)
    lo = hmul2_rn(hsub2_rn(lo, magic), d2);
    hi = hmul2_rn(hsub2_rn(hi, magic), d2);
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
