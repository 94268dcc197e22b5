// matmul_w8a16_wgmma.cu — the W8A16 GEMM on Hopper's warpgroup mma (wgmma, sm_90a):
// out[rows, n] = x[rows, k] · wᵀ for a Q8_0 weight w [n, k], the same arithmetic
// and results contract as matmul_w8a16.cu's v3 (f16 q · d from the int8 weights,
// f16 activation rows divided by 2^e, f32 sums times 2^e; grouped launches of up
// to three weights; split-K shares added by w8a16_splitk_reduce), so the host
// launches it with v3's parameter list.
//
// wgmma takes its A operand from registers and its B operand from shared
// memory. The kernel computes outᵀ = w · xᵀ: the weights, turned into f16 in
// registers, are A (64 features a warpgroup, the m64 of the instruction) and
// the activations are B (the block's tokens, the instruction's N, read by
// descriptor from shared memory with the 128-byte swizzle). A block is two
// warpgroups (256 threads): 128 features × BN tokens, each warpgroup 64 × BN
// with BN / 2 f32 accumulators a thread.
//
// k goes 64 a stage (two Q8_0 blocks, four k16 wgmma). Thread (g, t) of warp w
// builds its A registers from 8 consecutive int8 of each block of features
// 16w + g and 16w + g + 8 (one 8-byte shared load each, converted by
// dequant_4): for k16 step h of a block it holds k 8t + 4h + {0, 1, 2, 3},
// where the instruction's fragment wants k 2t, 2t+1, 2t+8, 2t+9. The
// activation rows are written in the matching order ("wgmma rows",
// common.cuh's f16_wgmma_index: the permutation stays inside each 32-k block
// and moves 4-byte pairs), so a stage's 64 k of a token row are 128
// contiguous bytes copied as eight 16-byte chunks.
//
// Pipeline (cp.async, all threads copy): STAGES slots, each the activations
// (BN rows × 128 bytes, chunk c of row n at chunk c ^ (n % 8) of its
// 1,024-byte atom: the 128-byte swizzle), the raw int8 weights (128 rows × 64
// bytes, w16_raw_chunk's order) and their scales. Iteration s waits for stage
// s, issues the copies of stage s + STAGES - 2 into the slot of stage s - 2,
// converts stage s's weights into one of two A register sets, issues its four
// wgmma (one commit group) and waits until only that group is in flight: stage
// s - 1's wgmma are then done with their A registers (the other set, which
// stage s + 1 converts into) and, after the next barrier, their shared memory
// (the slot stage s + 1's iteration refills). The TMA configuration at the end
// of the file stages the same slots with the tensor memory accelerator, and
// its persistent variant after it walks several tiles a block.
#include "common.cuh"

template <int BN_, int STAGES_>
struct WgConfig {
    static constexpr int BM = 128;  // features per block: two warpgroups × 64
    static constexpr int BN = BN_;  // tokens per block: the wgmma's N
    static constexpr int STAGES = STAGES_;
    static constexpr int THREADS = 256;
    static constexpr int ACC = BN / 2;           // f32 accumulators a thread
    static constexpr u32 B_BYTES = BN * 128;     // a stage's activations: BN rows × 64 f16
    static constexpr u32 RAW_BYTES = BM * 64;    // a stage's int8 weights
    static constexpr u32 SCALE_BYTES = 2 * BM * 2;  // [block half][feature] f16 bits
    static constexpr u32 B_OFFSET = 0;
    static constexpr u32 RAW_OFFSET = B_OFFSET + STAGES * B_BYTES;
    static constexpr u32 SCALE_OFFSET = RAW_OFFSET + STAGES * RAW_BYTES;
    // The layout, plus up to 1,024 bytes to align it: the swizzle is a function
    // of the shared address, its atoms 1,024 bytes.
    static constexpr u32 SHARED_BYTES = SCALE_OFFSET + STAGES * SCALE_BYTES + 1024;
    static constexpr int B_CHUNKS = BN * 8 / THREADS;    // 16-byte copies a thread and stage
    static constexpr int RAW_CHUNKS = BM * 4 / THREADS;  // idem, weights
    static_assert(STAGES >= 4, "the slot refilled is the one two stages back");
    static_assert(B_CHUNKS * THREADS == BN * 8 && RAW_CHUNKS * THREADS == BM * 4, "whole copies");
    static_assert(2 * BM == THREADS, "one scale a thread and stage");
    static_assert(BN == 128 || BN == 256, "the wgmma shapes wrapped in common.cuh");
};

// What one thread copies into every stage, fixed for the block's k loop (as
// matmul_w8a16.cu's W16Thread): sources at k stage 0, advancing 64 k a stage.
struct WgThread {
    const u16* b_src;  // activation chunk 0: token row tid / 8, 16-byte chunk tid % 8
    const i8* raw_src;  // weight chunk 0: feature tid / 4, 16-byte chunk tid % 4
    const u16* scale_src;  // feature tid / 2, block half tid % 2
    u32 b_dst, raw_dst;    // byte offsets into a slot, chunk 0
    u32 b_valid, raw_valid;  // bit i: chunk i inside the matrices
    bool scale_valid;
    bool b_high, raw_high, scale_high;  // in the stage's second block
    u64 b_step, raw_step;  // elements between chunk i and i + 1
};

template <typename C>
static __device__ __forceinline__ WgThread wg_thread(const u16* x, u32 rows, u32 k, u32 row0, const i8* wq,
                                                    const u16* ws, u32 n, u32 col0) {
    const u32 tid = threadIdx.x;
    const u32 k_blocks = k / QK8_0;
    WgThread w;
    // Activations: chunk i is token tid / 8 + 32 i; its row within the
    // 1,024-byte atom (token % 8) is the same for every i.
    const u32 b_n = tid / 8, b_c = tid % 8;
    w.b_high = b_c >= 4;
    w.b_step = u64(32) * k;
    w.b_src = x + u64(row0 + b_n) * k + b_c * 8;
#ifdef TESSERA_MUTATE_WGMMA_B_SWIZZLE
    // Mutation test build: chunks stored unswizzled under a 128-byte swizzle
    // descriptor.
    const u32 b_chunk = b_c;
#else
    const u32 b_chunk = b_c ^ (b_n % 8);
#endif
    w.b_dst = (b_n / 8) * 1024 + (b_n % 8) * 128 + b_chunk * 16;
    w.b_valid = 0;
#pragma unroll
    for (int i = 0; i < C::B_CHUNKS; ++i) {
        w.b_valid |= u32(row0 + b_n + 32 * u32(i) < rows) << i;
    }
    // Weights: chunk i is feature tid / 4 + 64 i (its swizzle the same).
    const u32 raw_n = tid / 4, raw_c = tid % 4;
    w.raw_high = raw_c >= 2;
    w.raw_step = u64(64) * k;
    w.raw_src = wq + u64(col0 + raw_n) * k + raw_c * 16;
    w.raw_dst = raw_n * 64 + w16_raw_chunk(raw_n, raw_c) * 16;
    w.raw_valid = 0;
#pragma unroll
    for (int i = 0; i < C::RAW_CHUNKS; ++i) {
        w.raw_valid |= u32(col0 + raw_n + 64 * u32(i) < n) << i;
    }
    const u32 scale_n = tid / 2, scale_half = tid % 2;
    w.scale_high = scale_half == 1;
    w.scale_src = ws + u64(col0 + scale_n) * k_blocks + scale_half;
    w.scale_valid = col0 + scale_n < n;
    return w;
}

// Issues the cp.async copies of k stage `ks` into the slot at `b_slot` /
// `raw_slot` and returns this thread's scale of it (0 where there is none),
// stored by the caller once it has had time to land. `tail`: the stage's
// second block lies beyond k; `live` false: the stage lies beyond the block's
// share (the padding stage, all zeros). Chunks outside the matrices are
// zero-filled from their (unread) address.
template <typename C>
static __device__ __forceinline__ u16 wg_issue_stage(const WgThread& w, u32 ks, bool tail, bool live,
                                                     unsigned char* b_slot, unsigned char* raw_slot) {
    const u16* b_src = w.b_src + u64(ks) * 64;
    const bool b_tail = (tail && w.b_high) || !live;
#pragma unroll
    for (int i = 0; i < C::B_CHUNKS; ++i) {
        const bool valid = ((w.b_valid >> i) & 1) && !b_tail;
        cp_async_16(b_slot + w.b_dst + i * 4096, b_src + i * w.b_step, valid);
    }
    const i8* raw_src = w.raw_src + u64(ks) * 64;
    const bool raw_tail = (tail && w.raw_high) || !live;
#pragma unroll
    for (int i = 0; i < C::RAW_CHUNKS; ++i) {
        const bool valid = ((w.raw_valid >> i) & 1) && !raw_tail;
        cp_async_16(raw_slot + w.raw_dst + i * 64 * 64, raw_src + i * w.raw_step, valid);
    }
    const bool scale_valid = live && w.scale_valid && !(tail && w.scale_high);
    return scale_valid ? w.scale_src[ks * 2] : u16(0);
}

// Stores the scale wg_issue_stage returned into its slot ([half][feature]).
template <typename C>
static __device__ __forceinline__ void wg_store_scale(unsigned char* scale_slot, u16 scale) {
    reinterpret_cast<u16*>(scale_slot)[(threadIdx.x % 2) * C::BM + threadIdx.x / 2] = scale;
}

// This thread's A registers of a stage: a[2b + h] is the fragment of k16 step
// h of block b for rows (features) 16·warp + g and + 8: registers 0 and 2 row
// g's k pairs (8t + 4h, +1) and (8t + 4h + 2, +3), registers 1 and 3 row
// g + 8's (PTX ISA §9.7.15, wgmma's A in registers: mma.m16n8k16's A layout
// per warp of the warpgroup). scale[b][r]: the d (f16 bits) of feature
// 16·warp + g + 8r in block b. `swizzled`: the raw rows are in w16_raw_chunk's
// order (cp.async), else as they are (the TMA box).
template <bool swizzled>
static __device__ __forceinline__ void wg_convert(const unsigned char* raw_slot, const u16 (&scale)[2][2],
                                                  u32 (&a)[4][4]) {
    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
#pragma unroll
    for (int b = 0; b < 2; ++b) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const u32 f = warp * 16 + g + 8 * r;
            const u32 chunk = swizzled ? w16_raw_chunk(f, 2 * b + t / 2) : 2 * b + t / 2;
            u32 bytes[2];
            load_8(bytes, raw_slot + f * 64 + chunk * 16 + (t % 2) * 8);
            const u32 d = scale[b][r];
            const u32 d2 = d | (d << 16);
            u32 lo0, hi0, lo1, hi1;
            dequant_4(bytes[0], d2, lo0, hi0);
            dequant_4(bytes[1], d2, lo1, hi1);
#ifdef TESSERA_MUTATE_WGMMA_A_FRAGMENT
            // Mutation test build: registers 1 and 2 swapped (rows + 8 and k + 8
            // confused), the classic fragment-layout slip.
            const int lo_reg = r == 0 ? 0 : 2, hi_reg = r == 0 ? 1 : 3;
#else
            const int lo_reg = r, hi_reg = 2 + r;
#endif
            a[2 * b][lo_reg] = lo0;
            a[2 * b][hi_reg] = hi0;
            a[2 * b + 1][lo_reg] = lo1;
            a[2 * b + 1][hi_reg] = hi1;
        }
    }
}

// This thread's scales of a stage from the slot's [half][feature] plane.
template <typename C>
static __device__ __forceinline__ void wg_slot_scales(const unsigned char* scale_slot, u16 (&scale)[2][2]) {
    const u32 f = threadIdx.x / WARP_SIZE * 16 + threadIdx.x % WARP_SIZE / 4;
    const u16* plane = reinterpret_cast<const u16*>(scale_slot);
#pragma unroll
    for (int b = 0; b < 2; ++b) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            scale[b][r] = plane[b * C::BM + f + 8 * r];
        }
    }
}

template <int BN>
static __device__ __forceinline__ void wg_mma(float (&d)[BN / 2], const u32 (&a)[4], u64 desc) {
    if constexpr (BN == 128) {
        wgmma_m64n128k16_f16(d, a, desc, true);
    } else {
        wgmma_m64n256k16_f16(d, a, desc, true);
    }
}

// A stage's four k16 wgmma on the activations at shared address `b_address`,
// committed as one group. K-major B, 128-byte swizzle: rows of 128 bytes,
// 8-row atoms 1,024 bytes apart (the stride offset); k16 step `step` starts
// 32 bytes in.
template <typename C>
static __device__ __forceinline__ void wg_mma_stage(u32 b_address, u32 (&a)[4][4], float (&acc)[C::ACC]) {
    u64 desc[4];
#pragma unroll
    for (u32 step = 0; step < 4; ++step) {
        desc[step] = gmma_desc(b_address + step * 32, 16, 1024, 1);
    }
    // Every input of the four wgmma is computed before the fence: ptxas
    // serialises wgmma whose inputs are defined between the fence and them.
    wgmma_fence_operands(a);
    wgmma_fence_operands(desc);
    wgmma_fence_operands(acc);
    wgmma_fence();
#pragma unroll
    for (u32 step = 0; step < 4; ++step) {
        wg_mma<C::BN>(acc, a[step], desc[step]);
    }
    wgmma_commit();
}

// Where a block's stages lie and which of them it computes.
struct WgPlan {
    unsigned char* smem;  // 1,024-byte aligned
    u32 smem_address;     // its shared address
    W16Group group;       // the block's weight
    u32 group_index;      // which of the launch's (0, 1, 2)
    u32 row0, col0;       // its first token and feature
    u32 split, splits;    // its split-K share, of how many
    u32 stage0, stages, tail_stage;
    // `stages` rounded up to even: the loop runs two stages an iteration, with
    // no branch around the second (a branch joining the accumulators costs
    // register moves, which ptxas answers by serialising the wgmma); an odd
    // count's last stage is all zeros and adds exactly nothing.
    u32 padded;
};

// A place in the output: its weight (feature tiles are numbered across the
// groups in order), feature tile `tile`, token tile `row_tile` and split-K
// share `split` of `splits`; the shared memory of `p` is kept.
template <typename C>
static __device__ __forceinline__ void wg_place(WgPlan& p, u32 k, const W16Group& g0, const W16Group& g1,
                                                const W16Group& g2, u32 tile, u32 row_tile, u32 split, u32 splits) {
    const u32 tiles0 = (g0.n + C::BM - 1) / C::BM, tiles1 = (g1.n + C::BM - 1) / C::BM;
    p.group_index = tile < tiles0 ? 0 : (tile < tiles0 + tiles1 ? 1 : 2);
    p.group = p.group_index == 0 ? g0 : (p.group_index == 1 ? g1 : g2);
    p.col0 = (tile < tiles0 ? tile : (tile < tiles0 + tiles1 ? tile - tiles0 : tile - tiles0 - tiles1)) * C::BM;
    p.row0 = row_tile * C::BN;
    p.split = split;
    p.splits = splits;
    const u32 k_blocks = k / QK8_0;
    const u32 total_stages = (k_blocks + 1) / 2;
    const u32 per_split = (total_stages + splits - 1) / splits;
    p.stage0 = split * per_split < total_stages ? split * per_split : total_stages;
    p.stages = per_split < total_stages - p.stage0 ? per_split : total_stages - p.stage0;
    p.tail_stage = k_blocks % 2 == 1 ? total_stages - 1 : ~0u;
    // At least two: the k loop below runs at least once (no path around it
    // joins the accumulators either); an empty split share's two stages are
    // zeros, so its partial sums are too.
    p.padded = p.stages < 2 ? 2 : p.stages + (p.stages & 1);
}

// The block's shared memory, 1,024-byte aligned (the swizzle is a function
// of the shared address, its atoms 1,024 bytes).
template <typename C>
static __device__ __forceinline__ WgPlan wg_shared() {
    DYNAMIC_SHARED(unsigned char, smem_raw);
    require_dynamic_shared(C::SHARED_BYTES);
    const u32 raw_address = shared_address(smem_raw);
    const u32 pad = (1024 - raw_address % 1024) % 1024;
    WgPlan p;
    p.smem = smem_raw + pad;
    p.smem_address = raw_address + pad;
    return p;
}

// The block's place in a grid of one block a tile and split-K share:
// (feature tiles, token tiles, splits).
template <typename C>
static __device__ __forceinline__ WgPlan wg_plan(u32 k, const W16Group& g0, const W16Group& g1, const W16Group& g2) {
    WgPlan p = wg_shared<C>();
    wg_place<C>(p, k, g0, g1, g2, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.z);
    return p;
}

// One iteration of the k loop (stage s; see the top of the file). `a` is one
// of the two A register sets (alternating: the caller unrolls by two so each
// is a fixed set of registers).
template <typename C>
static __device__ __forceinline__ void wg_iteration(const WgThread& w, const WgPlan& p, u32 s, u32 (&a)[4][4],
                                                    float (&acc)[C::ACC]) {
    cp_async_wait<C::STAGES - 3>();
    fence_proxy_async();  // the landed copies, for the wgmma's async proxy
    __syncthreads();
    const u32 next = s + C::STAGES - 2;
    const u32 load_slot = next % C::STAGES;
    u16 scale = 0;
    if (next < p.padded) {
        scale = wg_issue_stage<C>(w, p.stage0 + next, p.stage0 + next == p.tail_stage, next < p.stages,
                                  p.smem + C::B_OFFSET + load_slot * C::B_BYTES,
                                  p.smem + C::RAW_OFFSET + load_slot * C::RAW_BYTES);
    }
    cp_async_commit();  // possibly empty: one group per iteration
    const u32 slot = s % C::STAGES;
    u16 scales[2][2];
    wg_slot_scales<C>(p.smem + C::SCALE_OFFSET + slot * C::SCALE_BYTES, scales);
    wg_convert<true>(p.smem + C::RAW_OFFSET + slot * C::RAW_BYTES, scales, a);
    wg_mma_stage<C>(p.smem_address + C::B_OFFSET + slot * C::B_BYTES, a, acc);
#ifdef TESSERA_MUTATE_WGMMA_RING_WAIT
    // Mutation test build: two groups left in flight, so the slot refilled next
    // iteration may still be read by stage s - 1's wgmma.
    wgmma_wait<2>();
#else
    wgmma_wait<1>();
#endif
    wgmma_fence_operands(acc);
    // The scale's global load had the whole stage to land; its slot is read
    // by the conversion of stage `next`, after a barrier.
    if (next < p.padded) {
        wg_store_scale<C>(p.smem + C::SCALE_OFFSET + load_slot * C::SCALE_BYTES, scale);
    }
}

// Epilogue: acc[4j + 2h + e] is feature 16·warp + g + 8h, token 8j + 2t + e;
// the sums times the token's 2^e (exact), stored, added, or written to this
// split's share of `partial`.
template <typename C>
static __device__ __forceinline__ void wg_epilogue(const float (&acc)[C::ACC], u32 rows, u32 row0, u32 col0,
                                                   const W16Group& group, u32 split_index, u32 splits,
                                                   const float* row_scales, u32 accumulate, float* partial,
                                                   u32 partial_stride) {
    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
    const bool split = splits > 1;
#pragma unroll
    for (int j = 0; j < C::BN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const u32 row = row0 + 8 * j + 2 * t + e;
            if (row >= rows) {
                continue;
            }
            const float scale = row_scales[row];
            float* out_row = split ? partial + (u64(split_index) * rows + row) * partial_stride + group.col_base
                                   : group.out + u64(row) * group.n;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const u32 col = col0 + warp * 16 + g + 8 * h;
                if (col < group.n) {
                    const float value = acc[4 * j + 2 * h + e] * scale;
                    out_row[col] = (!split && accumulate) ? out_row[col] + value : value;
                }
            }
        }
    }
}

template <typename C>
static __device__ __forceinline__ void wg_gemm(const u16* x, const float* row_scales, u32 rows, u32 k, u32 accumulate,
                                               const W16Group& g0, const W16Group& g1, const W16Group& g2,
                                               float* partial, u32 partial_stride) {
    const WgPlan p = wg_plan<C>(k, g0, g1, g2);
    const W16Group& group = p.group;
    const u32 row0 = p.row0, col0 = p.col0, stage0 = p.stage0;

    const WgThread w = wg_thread<C>(x, rows, k, row0, group.wq, group.ws, group.n, col0);
    float acc[C::ACC];
#pragma unroll
    for (int i = 0; i < C::ACC; ++i) {
        acc[i] = 0.0f;
    }
    // Prologue: stages 0 .. STAGES - 3 in flight, one group each.
#pragma unroll
    for (u32 s = 0; s < C::STAGES - 2; ++s) {
        if (s < p.padded) {
            const u16 scale = wg_issue_stage<C>(w, stage0 + s, stage0 + s == p.tail_stage, s < p.stages,
                                                p.smem + C::B_OFFSET + s * C::B_BYTES,
                                                p.smem + C::RAW_OFFSET + s * C::RAW_BYTES);
            wg_store_scale<C>(p.smem + C::SCALE_OFFSET + s * C::SCALE_BYTES, scale);
        }
        cp_async_commit();
    }
    u32 a0[4][4], a1[4][4];
    u32 s = 0;
    do {
        wg_iteration<C>(w, p, s, a0, acc);
        wg_iteration<C>(w, p, s + 1, a1, acc);
        s += 2;
    } while (s < p.padded);
    wgmma_wait<0>();
    wgmma_fence_operands(acc);

    wg_epilogue<C>(acc, rows, row0, col0, group, p.split, p.splits, row_scales, accumulate, partial,
                   partial_stride);
}

#define WG_CALL(C)                                                                                        \
    wg_gemm<C>(x, row_scales, rows, k, accumulate, W16Group{wq0, ws0, out0, n0, 0}, W16Group{wq1, ws1, out1, n1, n0}, \
               W16Group{wq2, ws2, out2, n2, n0 + n1}, partial, partial_stride)

// Grid (Σ ceil(n_g / 128), ceil(rows / BN), splits); 256 threads;
// C::SHARED_BYTES of dynamic shared memory; k a multiple of 32.
using Wg128 = WgConfig<128, 6>;
using Wg256 = WgConfig<256, 5>;

TESSERA_KERNEL void __launch_bounds__(256, 1) matmul_w8a16_wgmma_128x128(W16_PARAMS) { WG_CALL(Wg128); }
TESSERA_KERNEL void __launch_bounds__(256, 1) matmul_w8a16_wgmma_256x128(W16_PARAMS) { WG_CALL(Wg256); }

// ------------------------------------------------------------------ TMA
//
// matmul_w8a16_wgmma_tma_<BN>x128: the same GEMM with its operands staged by
// the tensor memory accelerator. A producer warpgroup (warps 8-11: registers
// are allocated per warpgroup, and it hands most of its own to the consumers
// with setmaxnreg; one lane issues)
// waits until a slot is free (its `empty` mbarrier: one arrival per consumer
// warp once that warp's wgmma reading it have completed), declares the slot's
// bytes on its `full` mbarrier (arrive.expect_tx) and issues two TMA boxes:
// the activations (64 k × BN tokens, the tensor map's 128-byte swizzle, the
// layout the wgmma descriptor reads) and the raw weights (64 k × 128 features,
// row-major). Elements outside the tensors arrive as zeros — the tail block,
// the padding stage, the rows past the last — and still count as bytes. The
// two consumer warpgroups wait on `full` by phase parity, read their scales
// from global memory, convert, issue the stage's wgmma, and once the previous
// stage's group has completed free its slot. No block barrier in the loop.

template <int BN_, int STAGES_>
struct WgTmaConfig : WgConfig<BN_, STAGES_> {
    using Base = WgConfig<BN_, STAGES_>;
    static constexpr int THREADS = Base::THREADS + 128;  // + the producer warpgroup
    // Registers per thread after setmaxnreg: 128 · 40 + 256 · 232 ≤ 65,536.
    static constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;
    static constexpr u32 STAGE_BYTES = Base::B_BYTES + Base::RAW_BYTES;  // a full phase's transactions
    static constexpr u32 BAR_OFFSET = Base::RAW_OFFSET + Base::STAGES * Base::RAW_BYTES;  // full[], then empty[]
    static constexpr u32 SHARED_BYTES = BAR_OFFSET + 2 * Base::STAGES * 8 + 1024;
    static constexpr u32 CONSUMER_WARPS = Base::THREADS / WARP_SIZE;
};

// A consumer thread's scales of k stage `ks` straight from global memory
// (the [feature][block] plane; 0 past n or k).
template <typename C>
static __device__ __forceinline__ void wg_global_scales(const WgPlan& p, u32 k_blocks, u32 ks, u16 (&scale)[2][2]) {
    const u32 f = p.col0 + threadIdx.x / WARP_SIZE * 16 + threadIdx.x % WARP_SIZE / 4;
#pragma unroll
    for (int b = 0; b < 2; ++b) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const u32 block = 2 * ks + b, feature = f + 8 * r;
            scale[b][r] = block < k_blocks && feature < p.group.n ? p.group.ws[u64(feature) * k_blocks + block] : u16(0);
        }
    }
}

// A consumer's stage `s` of its tile, the ring's stage `r` (stages the block
// has passed through it, every tile before this one's included: slot r %
// STAGES, phase r / STAGES).
template <typename C>
static __device__ __forceinline__ void wg_tma_stage(const WgPlan& p, u32 k_blocks, u32 s, u32 r, u32 (&a)[4][4],
                                                    float (&acc)[C::ACC]) {
    u64* full = reinterpret_cast<u64*>(p.smem + C::BAR_OFFSET);
    u64* empty = full + C::STAGES;
    const u32 slot = r % C::STAGES;
    u16 scales[2][2];
    wg_global_scales<C>(p, k_blocks, p.stage0 + s, scales);
#ifdef TESSERA_MUTATE_MBARRIER_PARITY
    // Mutation test build: waits for the other phase (the one already past).
    mbarrier_wait(&full[slot], ((r / C::STAGES) & 1) ^ 1);
#else
    mbarrier_wait(&full[slot], (r / C::STAGES) & 1);
#endif
    wg_convert<false>(p.smem + C::RAW_OFFSET + slot * C::RAW_BYTES, scales, a);
    wg_mma_stage<C>(p.smem_address + C::B_OFFSET + slot * C::B_BYTES, a, acc);
#ifdef TESSERA_MUTATE_TMA_EMPTY_ARRIVE
    // Mutation test build: stage s - 1's slot freed before its wgmma are
    // waited for.
    if (s >= 1 && threadIdx.x % WARP_SIZE == 0) {
        mbarrier_arrive(&empty[(r - 1) % C::STAGES]);
    }
    wgmma_wait<1>();
#else
    wgmma_wait<1>();
    // Stage s - 1's wgmma (this warp's share) are done: its slot is free.
    // (The tile's last slot is freed after its final wait.)
    if (s >= 1 && threadIdx.x % WARP_SIZE == 0) {
        mbarrier_arrive(&empty[(r - 1) % C::STAGES]);
    }
#endif
    wgmma_fence_operands(acc);
}

// The producer's stage `s` of a tile, the ring's stage `r` (as wg_tma_stage):
// once the slot's previous stage is freed, its bytes declared and its two
// boxes issued.
template <typename C>
static __device__ __forceinline__ void wg_tma_issue(const WgPlan& p, const TensorMap* x_map, const TensorMap* w_map,
                                                    u32 k, u32 s, u32 r) {
    u64* full = reinterpret_cast<u64*>(p.smem + C::BAR_OFFSET);
    u64* empty = full + C::STAGES;
    const u32 slot = r % C::STAGES;
    if (r >= C::STAGES) {
        mbarrier_wait(&empty[slot], ((r / C::STAGES) - 1) & 1);
    }
#ifdef TESSERA_MUTATE_TMA_EXPECT_TX
    // Mutation test build: the weights' bytes left out of the phase.
    mbarrier_arrive_expect_tx(&full[slot], C::B_BYTES);
#else
    mbarrier_arrive_expect_tx(&full[slot], C::STAGE_BYTES);
#endif
    // The padding stage reads past k (zeros), not the next share's.
    const int k0 = s < p.stages ? int((p.stage0 + s) * 64) : int(k);
    tma_load_2d(p.smem + C::B_OFFSET + slot * C::B_BYTES, x_map, k0, int(p.row0), &full[slot]);
    tma_load_2d(p.smem + C::RAW_OFFSET + slot * C::RAW_BYTES, w_map, k0, int(p.col0), &full[slot]);
}

// The ring's barriers initialised, before any thread of the block uses them.
template <typename C>
static __device__ __forceinline__ void wg_tma_init(const WgPlan& p) {
    u64* full = reinterpret_cast<u64*>(p.smem + C::BAR_OFFSET);
    u64* empty = full + C::STAGES;
    if (threadIdx.x == 0) {
        for (int i = 0; i < C::STAGES; ++i) {
            mbarrier_init(&full[i], 1);
            mbarrier_init(&empty[i], C::CONSUMER_WARPS);
        }
        fence_mbarrier_init();
    }
    __syncthreads();
}

template <typename C>
static __device__ __forceinline__ void wg_gemm_tma(const TensorMap* x_map, const TensorMap* w_map0,
                                                   const TensorMap* w_map1, const TensorMap* w_map2,
                                                   const float* row_scales, u32 rows, u32 k, u32 accumulate,
                                                   const W16Group& g0, const W16Group& g1, const W16Group& g2,
                                                   float* partial, u32 partial_stride) {
    const WgPlan p = wg_plan<C>(k, g0, g1, g2);
    if (p.row0 >= rows || p.col0 >= p.group.n) {
        return;  // an empty tile (the whole block): nothing to copy or store
    }
    const u32 k_blocks = k / QK8_0;
    wg_tma_init<C>(p);
    const u32 warp = threadIdx.x / WARP_SIZE;
    if (warp >= C::CONSUMER_WARPS) {
        // The producer: one lane issues every copy.
        setmaxnreg_dec<C::PRODUCER_REGS>();
        if (threadIdx.x == C::CONSUMER_WARPS * WARP_SIZE) {
            // The maps stay where the launch put them (parameter space): TMA
            // reads a tensor map there or in global memory, not a copy.
            const TensorMap* w_map = p.group_index == 0 ? w_map0 : (p.group_index == 1 ? w_map1 : w_map2);
            for (u32 s = 0; s < p.padded; ++s) {
                wg_tma_issue<C>(p, x_map, w_map, k, s, s);
            }
        }
        return;
    }
    setmaxnreg_inc<C::CONSUMER_REGS>();
    float acc[C::ACC];
#pragma unroll
    for (int i = 0; i < C::ACC; ++i) {
        acc[i] = 0.0f;
    }
    u32 a0[4][4], a1[4][4];
    u32 s = 0;
    do {
        wg_tma_stage<C>(p, k_blocks, s, s, a0, acc);
        wg_tma_stage<C>(p, k_blocks, s + 1, s + 1, a1, acc);
        s += 2;
    } while (s < p.padded);
    wgmma_wait<0>();
    wgmma_fence_operands(acc);
    wg_epilogue<C>(acc, rows, p.row0, p.col0, p.group, p.split, p.splits, row_scales, accumulate, partial,
                   partial_stride);
}

// Grid as the cp.async kernels; 384 threads (two consumer warpgroups and the
// producer warpgroup); C::SHARED_BYTES of dynamic shared memory. Besides v3's
// parameters: tensor maps of the activations (f16 [rows][k], box 64 × BN,
// 128-byte swizzle) and of each group's int8 weights ([n][k], box 64 × 128).
using WgTma256 = WgTmaConfig<256, 5>;

TESSERA_KERNEL void __launch_bounds__(384, 1)
    matmul_w8a16_wgmma_tma_256x128(W16_PARAMS, const __grid_constant__ TensorMap x_map,
                                   const __grid_constant__ TensorMap w_map0, const __grid_constant__ TensorMap w_map1,
                                   const __grid_constant__ TensorMap w_map2) {
    (void)x;
    wg_gemm_tma<WgTma256>(&x_map, &w_map0, &w_map1, &w_map2, row_scales, rows, k, accumulate, W16Group{wq0, ws0, out0, n0, 0},
                          W16Group{wq1, ws1, out1, n1, n0}, W16Group{wq2, ws2, out2, n2, n0 + n1}, partial,
                          partial_stride);
}

// ------------------------------------------------------------------ persistent
//
// matmul_w8a16_wgmma_tma_persistent_256x128: the TMA configuration with a
// grid of at most one block a multiprocessor, each block walking work units
// (a 128-feature × BN-token tile and, when split, its k share): unit
// blockIdx.x, then every gridDim.x-th after it. The mbarrier ring is
// initialised once and runs on across units — the producer and consumers
// each count the ring's stages over all their units (slot r % STAGES, phase
// r / STAGES) — so the producer fills the next unit's slots while the
// consumers run this unit's epilogue: they free its last slot after their
// final wgmma wait, before their stores.
//
// Raster order: the grid works on consecutive units at a time, so units are
// numbered so that neighbours share operands in L2. Splits are outermost (a
// share's units read the same k range); inside them, token tiles go in bands
// of RASTER_ROWS, walked feature tile by feature tile, each feature tile
// across the band's token tiles (the weights are the operand a band re-reads
// least: one weight tile serves RASTER_ROWS units in a row). A wave of W
// units reads about RASTER_ROWS activation tiles (BN × k f16: four weight
// tiles' bytes) and W / RASTER_ROWS weight tiles (128 × k int8), least near
// RASTER_ROWS = sqrt(W / 4) ≈ 6 at W = 132; 8 divides M = 4,096's 16 token
// tiles. At W = 132: 8 · 4 + 16.5 = 48.5 weight tiles' bytes, against 82.8 for
// the non-persistent grid's order (feature tiles fastest) over gate/up's 76
// feature tiles (1.7 token tiles · 4 + 76) and 46.4 over o/down's 20 (the same).
constexpr u32 RASTER_ROWS = 8;

// A launch's tiles: feature tiles (over the groups) and token tiles.
struct WgTiles {
    u32 cols, rows;
};

template <typename C>
static __device__ __forceinline__ WgTiles wg_tiles(u32 rows, const W16Group& g0, const W16Group& g1,
                                                   const W16Group& g2) {
    return WgTiles{(g0.n + C::BM - 1) / C::BM + (g1.n + C::BM - 1) / C::BM + (g2.n + C::BM - 1) / C::BM,
                   (rows + C::BN - 1) / C::BN};
}

// Unit `unit`'s place (feature tile over the groups, token tile, split).
template <typename C>
static __device__ __forceinline__ void wg_unit(WgPlan& p, u32 unit, const WgTiles& tiles, u32 k, const W16Group& g0,
                                               const W16Group& g1, const W16Group& g2, u32 splits) {
    const u32 per_split = tiles.cols * tiles.rows;
    const u32 split = unit / per_split, t = unit % per_split;
    const u32 band_units = RASTER_ROWS * tiles.cols;
    const u32 first_row = t / band_units * RASTER_ROWS;
    const u32 band_rows = tiles.rows - first_row < RASTER_ROWS ? tiles.rows - first_row : RASTER_ROWS;
    const u32 local = t % band_units;
#ifdef TESSERA_MUTATE_PERSISTENT_RASTER
    // Mutation test build: the band's feature tile from its full height, so a
    // short last band computes some tiles twice and others never.
    const u32 col_tile = local / RASTER_ROWS;
#else
    const u32 col_tile = local / band_rows;
#endif
    wg_place<C>(p, k, g0, g1, g2, col_tile, first_row + local % band_rows, split, splits);
}

template <typename C>
static __device__ __forceinline__ void wg_gemm_persistent(const TensorMap* x_map, const TensorMap* w_map0,
                                                          const TensorMap* w_map1, const TensorMap* w_map2,
                                                          const float* row_scales, u32 rows, u32 k, u32 accumulate,
                                                          const W16Group& g0, const W16Group& g1,
                                                          const W16Group& g2, float* partial, u32 partial_stride,
                                                          u32 splits) {
    WgPlan p = wg_shared<C>();
    const WgTiles tiles = wg_tiles<C>(rows, g0, g1, g2);
    const u32 units = tiles.cols * tiles.rows * splits;
    const u32 k_blocks = k / QK8_0;
    wg_tma_init<C>(p);
    u64* empty = reinterpret_cast<u64*>(p.smem + C::BAR_OFFSET) + C::STAGES;
    const u32 warp = threadIdx.x / WARP_SIZE;
    if (warp >= C::CONSUMER_WARPS) {
        setmaxnreg_dec<C::PRODUCER_REGS>();
        if (threadIdx.x == C::CONSUMER_WARPS * WARP_SIZE) {
            u32 r = 0;  // the ring's stages so far, every unit's
            for (u32 unit = blockIdx.x; unit < units; unit += gridDim.x) {
                wg_unit<C>(p, unit, tiles, k, g0, g1, g2, splits);
                const TensorMap* w_map = p.group_index == 0 ? w_map0 : (p.group_index == 1 ? w_map1 : w_map2);
#ifdef TESSERA_MUTATE_PERSISTENT_RING_PHASE
                // Mutation test build: the ring counted from zero again each
                // unit (the phase bits reset, the empty waits of the first
                // STAGES stages skipped).
                r = 0;
#endif
                for (u32 s = 0; s < p.padded; ++s, ++r) {
                    wg_tma_issue<C>(p, x_map, w_map, k, s, r);
                }
            }
        }
        return;
    }
    setmaxnreg_inc<C::CONSUMER_REGS>();
    u32 r = 0;
    for (u32 unit = blockIdx.x; unit < units; unit += gridDim.x) {
        wg_unit<C>(p, unit, tiles, k, g0, g1, g2, splits);
        float acc[C::ACC];
#pragma unroll
        for (int i = 0; i < C::ACC; ++i) {
            acc[i] = 0.0f;
        }
        u32 a0[4][4], a1[4][4];
        u32 s = 0;
        do {
            wg_tma_stage<C>(p, k_blocks, s, r + s, a0, acc);
            wg_tma_stage<C>(p, k_blocks, s + 1, r + s + 1, a1, acc);
            s += 2;
        } while (s < p.padded);
        wgmma_wait<0>();
        wgmma_fence_operands(acc);
        r += p.padded;
        // The unit's last slot is free: the producer may refill the whole
        // ring with the next unit's stages while the stores below run.
        if (threadIdx.x % WARP_SIZE == 0) {
            mbarrier_arrive(&empty[(r - 1) % C::STAGES]);
        }
        wg_epilogue<C>(acc, rows, p.row0, p.col0, p.group, p.split, p.splits, row_scales, accumulate, partial,
                       partial_stride);
    }
}

// Grid (at most the units, one block a multiprocessor: the host's choice), 384
// threads, the TMA kernel's shared memory and parameters, then the split-K
// factor (the grid no longer carries it).
TESSERA_KERNEL void __launch_bounds__(384, 1)
    matmul_w8a16_wgmma_tma_persistent_256x128(W16_PARAMS, const __grid_constant__ TensorMap x_map,
                                              const __grid_constant__ TensorMap w_map0,
                                              const __grid_constant__ TensorMap w_map1,
                                              const __grid_constant__ TensorMap w_map2, u32 splits) {
    (void)x;
    wg_gemm_persistent<WgTma256>(&x_map, &w_map0, &w_map1, &w_map2, row_scales, rows, k, accumulate,
                                 W16Group{wq0, ws0, out0, n0, 0}, W16Group{wq1, ws1, out1, n1, n0},
                                 W16Group{wq2, ws2, out2, n2, n0 + n1}, partial, partial_stride, splits);
}
