// score_head.cu — the reranker's head: two rows (yes, no) of the head matrix against
// each final-normed last token, out[r, j] = x[r, :] · w[head_rows[j], :]. For a Q8_0
// head in the W8A8 arithmetic the input rows are quantised first (quantize_q8_0 in
// matmul_q8_0.cu), as in the matmuls; in W8A16 the f32 rows meet the exact q · d
// (score_head_q8_0_f32); other heads use f32 activations.
#include "common.cuh"

// Grid (rows), 64 threads: warp j computes logit j. Lanes stride over the Q8_0
// blocks; each block is eight dp4a over aligned 4-byte words.
TESSERA_KERNEL void score_head_q8_0(const i8* xq, const float* x_scales, const i8* wq, const u16* w_scales,
                                    u32 yes_row, u32 no_row, u32 k, float* out) {
    const u32 lane = threadIdx.x % WARP_SIZE, j = threadIdx.x / WARP_SIZE;
    const u64 w_row = j == 0 ? yes_row : no_row;
    const u32 blocks = k / QK8_0;
    const int* x_words = reinterpret_cast<const int*>(xq + u64(blockIdx.x) * k);
    const int* w_words = reinterpret_cast<const int*>(wq + w_row * k);
    float acc = 0.0f;
    for (u32 b = lane; b < blocks; b += WARP_SIZE) {
        int isum = 0;
#pragma unroll
        for (int w = 0; w < QK8_0 / 4; ++w) {
            isum = dot4_s8(x_words[b * 8 + w], w_words[b * 8 + w], isum);
        }
        acc = fmaf(float(isum), f16_to_f32(w_scales[w_row * blocks + b]) * x_scales[u64(blockIdx.x) * blocks + b], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        out[u64(blockIdx.x) * 2 + j] = acc;
    }
}

// The head of the W8A16 arithmetic: f32 rows against the exact q · d (W8A32).
// Grid (rows), 64 threads: warp j computes logit j, lanes stride over k.
TESSERA_KERNEL void score_head_q8_0_f32(const float* x, const i8* wq, const u16* w_scales, u32 yes_row, u32 no_row,
                                        u32 k, float* out) {
    const u32 lane = threadIdx.x % WARP_SIZE, j = threadIdx.x / WARP_SIZE;
    const u64 w_row = j == 0 ? yes_row : no_row;
    const u32 blocks = k / QK8_0;
    float acc = 0.0f;
    for (u32 c = lane; c < k; c += WARP_SIZE) {
        const float w = float(wq[w_row * k + c]) * f16_to_f32(w_scales[w_row * blocks + c / QK8_0]);
        acc = fmaf(x[u64(blockIdx.x) * k + c], w, acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        out[u64(blockIdx.x) * 2 + j] = acc;
    }
}

template <typename W>
static __device__ __forceinline__ void score_head_dense(const float* x, const typename W::storage* w, u32 yes_row,
                                                        u32 no_row, u32 k, float* out) {
    const u32 lane = threadIdx.x % WARP_SIZE, j = threadIdx.x / WARP_SIZE;
    const u64 w_row = j == 0 ? yes_row : no_row;
    float acc = 0.0f;
    for (u32 c = lane; c < k; c += WARP_SIZE) {
        acc = fmaf(x[u64(blockIdx.x) * k + c], W::load(w, w_row * k + c), acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        out[u64(blockIdx.x) * 2 + j] = acc;
    }
}

TESSERA_KERNEL void score_head_f32(const float* x, const float* w, u32 yes_row, u32 no_row, u32 k, float* out) {
    score_head_dense<WeightF32>(x, w, yes_row, no_row, k, out);
}
TESSERA_KERNEL void score_head_f16(const float* x, const u16* w, u32 yes_row, u32 no_row, u32 k, float* out) {
    score_head_dense<WeightF16>(x, w, yes_row, no_row, k, out);
}
TESSERA_KERNEL void score_head_bf16(const float* x, const u16* w, u32 yes_row, u32 no_row, u32 k, float* out) {
    score_head_dense<WeightBF16>(x, w, yes_row, no_row, k, out);
}
