// matmul_q8_0.cu — out[rows, n] = x[rows, k] · wᵀ for a Q8_0 weight w [n, k], W8A8:
// the activations are first quantised to int8 blocks of 32 (quantize_q8_0, exactly
// ggml's quantize_row_q8_0_ref), then each 32-block contributes
// isum(x_q, w_q) · (d_w · d_x) to an f32 accumulator, blocks in ascending order
// (acc = fma(f32(isum), d_w · d_x, acc)) — the same operations, in the same order, as
// the CPU backend's int8 path, so results agree bit for bit.
//
// Weights are held split (as uploaded): int8 values [n, k] (16-byte aligned rows
// when k is a multiple of 32) and f16 scales [n, k/32]; activations likewise with
// f32 scales.
//
// With `accumulate` set the epilogue adds the product to what `out` holds (the
// residual stream) instead of storing it: out = out + product, one f32 add, as
// add_f32 after a plain matmul would do.
//
// Two kernels share tiling, staging and epilogue and differ in the inner product:
//   matmul_q8_0_mma  — mma.sync m16n8k32 s8 tensor-core tiles (sm_80+)
//   matmul_q8_0_dp4a — dp4a per thread (any sm_61+ GPU; the fallback)
// A block computes a 64×64 output tile with 128 threads; k advances 128 bytes (four
// Q8_0 blocks) per stage through a two-stage cp.async pipeline.
#include "common.cuh"

// Activations → int8 blocks: one warp per 32 consecutive values of the flattened
// [rows, k] matrix (k is a multiple of 32, so block b is row b / (k/32)).
TESSERA_KERNEL void quantize_q8_0(const float* x, u64 n_blocks, i8* qs, float* scales) {
    const u64 block = u64(blockIdx.x) * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (block >= n_blocks) {
        return;  // the whole warp leaves together
    }
    const u32 lane = threadIdx.x % WARP_SIZE;
    float d;
    const int q = quantize_q8_0_lane(x[block * QK8_0 + lane], d);
    qs[block * QK8_0 + lane] = i8(q);
    if (lane == 0) {
        scales[block] = d;
    }
}

#define MM_BM 64                  // activation rows per block tile
#define MM_BN 64                  // output features (weight rows) per block tile
#define MM_BK 128                 // k bytes per stage
#define MM_KB (MM_BK / QK8_0)     // Q8_0 blocks per stage
#define MM_STRIDE (MM_BK + 16)    // shared row stride: 36 words, so the 8×4 lanes of a
                                  // fragment load hit 32 different banks
#define MM_THREADS 128

struct __align__(16) MatmulStage {
    i8 a[MM_BM * MM_STRIDE];
    i8 b[MM_BN * MM_STRIDE];
    float a_scale[MM_BM * MM_KB];
    float b_scale[MM_BN * MM_KB];  // d_w as f32
};

struct MatmulArgs {
    const i8* xq;
    const float* x_scales;
    const i8* wq;
    const u16* w_scales;
    u32 rows, n, k;
    u32 row0, col0;
    u32 accumulate;  // nonzero: out += product (a residual add in the epilogue)
};

// The epilogue's write of one output: the product, or (accumulate) the old value
// plus the product — the same single f32 add as a separate residual-add kernel.
static __device__ __forceinline__ void store_output(const MatmulArgs& m, float* out, u32 row, u32 col, float value) {
    float& slot = out[u64(row) * m.n + col];
    slot = m.accumulate ? slot + value : value;
}

static __device__ __forceinline__ int load_s32(const i8* p) { return *reinterpret_cast<const int*>(p); }

// Stage `stage` (k bytes [stage·128, stage·128 + 128)) of the block's tiles into `s`:
// int8 values by cp.async (zero-filled outside the matrices), scales by plain loads.
static __device__ __forceinline__ void load_stage(const MatmulArgs& m, u32 stage, MatmulStage& s) {
    const u32 k_blocks = m.k / QK8_0;
    const u32 k0 = stage * MM_BK;
    const u32 chunks_per_row = MM_BK / 16;
    for (u32 id = threadIdx.x; id < MM_BM * chunks_per_row; id += MM_THREADS) {
        const u32 r = id / chunks_per_row, byte = (id % chunks_per_row) * 16;
        const u32 row = m.row0 + r;
        const bool valid = row < m.rows && k0 + byte < m.k;
        const i8* src = valid ? m.xq + u64(row) * m.k + k0 + byte : m.xq;
        cp_async_16(&s.a[r * MM_STRIDE + byte], src, valid);
    }
    for (u32 id = threadIdx.x; id < MM_BN * chunks_per_row; id += MM_THREADS) {
        const u32 r = id / chunks_per_row, byte = (id % chunks_per_row) * 16;
        const u32 col = m.col0 + r;
        const bool valid = col < m.n && k0 + byte < m.k;
        const i8* src = valid ? m.wq + u64(col) * m.k + k0 + byte : m.wq;
        cp_async_16(&s.b[r * MM_STRIDE + byte], src, valid);
    }
    for (u32 id = threadIdx.x; id < MM_BM * MM_KB; id += MM_THREADS) {
        const u32 r = id / MM_KB, j = id % MM_KB;
        const u32 row = m.row0 + r, kb = stage * MM_KB + j;
        s.a_scale[id] = row < m.rows && kb < k_blocks ? m.x_scales[u64(row) * k_blocks + kb] : 0.0f;
    }
    for (u32 id = threadIdx.x; id < MM_BN * MM_KB; id += MM_THREADS) {
        const u32 r = id / MM_KB, j = id % MM_KB;
        const u32 col = m.col0 + r, kb = stage * MM_KB + j;
        s.b_scale[id] = col < m.n && kb < k_blocks ? f16_to_f32(m.w_scales[u64(col) * k_blocks + kb]) : 0.0f;
    }
}

// The tensor-core inner product of one stage. Warp w owns output rows
// (w / 2)·32 + [0, 32) and columns (w % 2)·32 + [0, 32): 2×4 tiles of m16n8.
// acc[i][c][e] is the element of tile (i, c) at fragment position e (PTX ISA
// §9.7.14.5.10, C/D: row groupID (+8 for e ≥ 2), column 2·threadID_in_group + e%2).
struct MmaTile {
    static __device__ __forceinline__ void compute(const MatmulStage& s, u32 blocks, float (&acc)[32]) {
        const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
        const u32 group = lane / 4, in_group = lane % 4;
        const u32 wm = (warp / 2) * 32, wn = (warp % 2) * 32;
        // ldmatrix: lane l addresses row l % 8 of 8×16-byte matrix l / 8.
        const u32 mat = lane / 8, mat_row = lane % 8;
#ifdef TESSERA_MUTATE_MMA_FRAGMENT
        // Mutation test build: A's matrices 1 and 2 swapped (rows +8 and
        // columns +16 confused), the classic fragment-layout slip.
        const u32 a_row = (mat >> 1) * 8 + mat_row, a_byte = (mat & 1) * 16;
#else
        const u32 a_row = (mat & 1) * 8 + mat_row, a_byte = (mat >> 1) * 16;
#endif
        const u32 b_row = (mat >> 1) * 8 + mat_row, b_byte = (mat & 1) * 16;
        for (u32 j = 0; j < blocks; ++j) {
            // A tile i: matrices (rows 0-7, bytes 0-15), (rows 8-15, bytes 0-15),
            // (rows 0-7, bytes 16-31), (rows 8-15, bytes 16-31) = a0..a3.
            // B tiles c, c+1: (tile c, bytes 0-15), (tile c, 16-31), (tile c+1,
            // 0-15), (tile c+1, 16-31) = b[c][0], b[c][1], b[c+1][0], b[c+1][1].
            int a[2][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                ldmatrix_x4(a[i], &s.a[(wm + i * 16 + a_row) * MM_STRIDE + j * QK8_0 + a_byte]);
            }
#pragma unroll
            for (int c = 0; c < 4; c += 2) {
                int d[4];
                ldmatrix_x4(d, &s.b[(wn + c * 8 + b_row) * MM_STRIDE + j * QK8_0 + b_byte]);
                b[c][0] = d[0];
                b[c][1] = d[1];
                b[c + 1][0] = d[2];
                b[c + 1][1] = d[3];
            }
            // The block sums start at INT_BIAS, so they come out as float bits
            // (common.cuh): no conversion instruction per output.
            const int bias[4] = {INT_BIAS, INT_BIAS, INT_BIAS, INT_BIAS};
#pragma unroll
            for (int i = 0; i < 2; ++i) {
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    int d[4];
                    mma_s8_m16n8k32(d, a[i], b[c], bias);
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const u32 row = wm + i * 16 + group + (e >= 2 ? 8 : 0);
                        const u32 col = wn + c * 8 + 2 * in_group + (e & 1);
                        float& out = acc[(i * 4 + c) * 4 + e];
                        out = fmaf(unbias_to_float(d[e]), s.b_scale[col * MM_KB + j] * s.a_scale[row * MM_KB + j],
                                   out);
                    }
                }
            }
        }
    }

    static __device__ __forceinline__ void store(const MatmulArgs& m, const float (&acc)[32], float* out) {
        const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
        const u32 group = lane / 4, in_group = lane % 4;
        const u32 wm = (warp / 2) * 32, wn = (warp % 2) * 32;
#pragma unroll
        for (int t = 0; t < 32; ++t) {
            const int i = t / 16, c = (t / 4) % 4, e = t % 4;
            const u32 row = m.row0 + wm + i * 16 + group + (e >= 2 ? 8 : 0);
            const u32 col = m.col0 + wn + c * 8 + 2 * in_group + (e & 1);
            if (row < m.rows && col < m.n) {
                store_output(m, out, row, col, acc[t]);
            }
        }
    }
};

// The dp4a inner product: thread (tx, ty) = (tid % 16, tid / 16) owns rows ty + 8r
// (r < 8) and columns tx + 16c (c < 4); acc[r·4 + c].
struct Dp4aTile {
    static __device__ __forceinline__ void compute(const MatmulStage& s, u32 blocks, float (&acc)[32]) {
        const u32 tx = threadIdx.x % 16, ty = threadIdx.x / 16;
        for (u32 j = 0; j < blocks; ++j) {
            int isum[32];
#pragma unroll
            for (int t = 0; t < 32; ++t) {
                isum[t] = INT_BIAS;  // read back by unbias_to_float
            }
#pragma unroll
            for (int w = 0; w < QK8_0 / 4; ++w) {
                const u32 kbyte = j * QK8_0 + 4 * w;
                int av[8], bv[4];
#pragma unroll
                for (int r = 0; r < 8; ++r) {
                    av[r] = load_s32(&s.a[(ty + 8 * r) * MM_STRIDE + kbyte]);
                }
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    bv[c] = load_s32(&s.b[(tx + 16 * c) * MM_STRIDE + kbyte]);
                }
#pragma unroll
                for (int r = 0; r < 8; ++r) {
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        isum[r * 4 + c] = dot4_s8(av[r], bv[c], isum[r * 4 + c]);
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < 8; ++r) {
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    const u32 row = ty + 8 * r, col = tx + 16 * c;
                    float& out = acc[r * 4 + c];
                    out = fmaf(unbias_to_float(isum[r * 4 + c]), s.b_scale[col * MM_KB + j] * s.a_scale[row * MM_KB + j],
                               out);
                }
            }
        }
    }

    static __device__ __forceinline__ void store(const MatmulArgs& m, const float (&acc)[32], float* out) {
        const u32 tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
        for (int r = 0; r < 8; ++r) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const u32 row = m.row0 + ty + 8 * r, col = m.col0 + tx + 16 * c;
                if (row < m.rows && col < m.n) {
                    store_output(m, out, row, col, acc[r * 4 + c]);
                }
            }
        }
    }
};

// Grid (ceil(n / 64), ceil(rows / 64)), 128 threads.
template <typename Tile>
static __device__ __forceinline__ void matmul_q8_0(const MatmulArgs& m, float* out) {
    __shared__ MatmulStage stages[2];
    float acc[32];
#pragma unroll
    for (int t = 0; t < 32; ++t) {
        acc[t] = 0.0f;
    }
    const u32 k_blocks = m.k / QK8_0;
    const u32 n_stages = (m.k + MM_BK - 1) / MM_BK;
    load_stage(m, 0, stages[0]);
    cp_async_commit();
    for (u32 stage = 0; stage < n_stages; ++stage) {
        if (stage + 1 < n_stages) {
            load_stage(m, stage + 1, stages[(stage + 1) % 2]);
        }
        // Every thread commits a group per iteration (empty at the end), so
        // "all but the newest group" is always this stage's.
        cp_async_commit();
#ifdef TESSERA_MUTATE_CP_ASYNC_WAIT
        // Mutation test build: waits for one group too few, so the stage about to
        // be read may not have landed.
        cp_async_wait<2>();
#else
        cp_async_wait<1>();
#endif
        __syncthreads();
        const u32 left = k_blocks - stage * MM_KB;
        Tile::compute(stages[stage % 2], left < MM_KB ? left : MM_KB, acc);
        __syncthreads();
    }
    Tile::store(m, acc, out);
}

TESSERA_KERNEL void __launch_bounds__(MM_THREADS)
    matmul_q8_0_mma(const i8* xq, const float* x_scales, const i8* wq, const u16* w_scales, u32 rows, u32 n, u32 k,
                    u32 accumulate, float* out) {
    const MatmulArgs m{xq, x_scales, wq, w_scales, rows, n, k, blockIdx.y * MM_BM, blockIdx.x * MM_BN, accumulate};
    matmul_q8_0<MmaTile>(m, out);
}

TESSERA_KERNEL void __launch_bounds__(MM_THREADS)
    matmul_q8_0_dp4a(const i8* xq, const float* x_scales, const i8* wq, const u16* w_scales, u32 rows, u32 n, u32 k,
                     u32 accumulate, float* out) {
    const MatmulArgs m{xq, x_scales, wq, w_scales, rows, n, k, blockIdx.y * MM_BM, blockIdx.x * MM_BN, accumulate};
    matmul_q8_0<Dp4aTile>(m, out);
}
