// rms_norm.cu — RMSNorm over rows: out = x / sqrt(mean(x²) + eps) · w, also per
// head (rows = tokens × heads, dim = head_dim) for QK-norm; in place when out == x.
// The fused variant also quantises its output to Q8_0 blocks for the next matmul.
#include "common.cuh"

// The row's 1/sqrt(mean(x²) + eps); every thread of the block gets it.
static __device__ __forceinline__ float rms_scale(const float* row, u32 dim, float eps, float* scratch) {
    float sum = 0.0f;
    for (u32 c = threadIdx.x; c < dim; c += blockDim.x) {
        sum += row[c] * row[c];
    }
    sum = block_sum(sum, scratch);
    return rsqrtf(sum / float(dim) + eps);
}

// One block per row. Every read of the row happens before block_sum's barrier, so
// out may alias x.
TESSERA_KERNEL void rms_norm_f32(const float* x, const float* weight, u32 dim, float eps, float* out) {
    __shared__ float scratch[WARP_SIZE];
    const u64 base = u64(blockIdx.x) * dim;
    const float scale = rms_scale(x + base, dim, eps, scratch);
    for (u32 c = threadIdx.x; c < dim; c += blockDim.x) {
#ifdef TESSERA_MUTATE_RMS_NORM
        // Mutation test build: the weight index is off by one.
        out[base + c] = x[base + c] * scale * weight[(c + 1) % dim];
#else
        out[base + c] = x[base + c] * scale * weight[c];
#endif
    }
}

// rms_norm_f32 and then Q8_0 quantisation of the normalised row: int8 values
// [rows, dim] and f32 scales [rows, dim/32] (the f16-rounded d) as the int8 matmul
// reads them. dim must be a multiple of 32; the element a thread handles is
// c = threadIdx.x + i·blockDim.x, so each warp holds whole 32-blocks. `out` (the f32
// result, nullptr when unwanted) gets exactly what rms_norm_f32 writes.
TESSERA_KERNEL void rms_norm_q8_0(const float* x, const float* weight, u32 dim, float eps, float* out, i8* qs,
                                  float* scales) {
    __shared__ float scratch[WARP_SIZE];
    const u64 base = u64(blockIdx.x) * dim;
    const float scale = rms_scale(x + base, dim, eps, scratch);
    // Warp-uniform trip count: all lanes take part in each block's quantisation.
    for (u32 first = threadIdx.x - threadIdx.x % WARP_SIZE; first < dim; first += blockDim.x) {
        const u32 c = first + threadIdx.x % WARP_SIZE;
        const float v = x[base + c] * scale * weight[c];
        if (out != nullptr) {
            out[base + c] = v;
        }
        float d;
        qs[base + c] = i8(quantize_q8_0_lane(v, d));
        if (threadIdx.x % WARP_SIZE == 0) {
            scales[base / QK8_0 + c / QK8_0] = d;
        }
    }
}

// rms_norm_f32 and then the normalised row as f16 for the W8A16 matmul (one block
// per row): f16 values [rows, dim] (in `layout`: fragment tiles or wgmma rows) divided by the row's power of two, and 2^e in
// row_scales[row] (common.cuh's write_f16_row). Each value is computed as
// rms_norm_f32 computes it.
TESSERA_KERNEL void rms_norm_f16(const float* x, const float* weight, float eps, u32 dim, u16* out,
                                 float* row_scales, u32 layout) {
    __shared__ float scratch[WARP_SIZE];
    const u64 base = u64(blockIdx.x) * dim;
    const float* row = x + base;
    const float scale = rms_scale(row, dim, eps, scratch);
    write_f16_row([&](u32 c) { return row[c] * scale * weight[c]; }, blockIdx.x, dim, out, row_scales, scratch,
                  layout);
}
