// swiglu.cu — SwiGLU activation: out = silu(gate) · up = gate / (1 + e^-gate) · up.
// The fused variant quantises the result to Q8_0 blocks for the down projection.
#include "common.cuh"

static __device__ __forceinline__ float swiglu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

TESSERA_KERNEL void swiglu_f32(const float* gate, const float* up, float* out, u32 n) {
    const u32 stride = gridDim.x * blockDim.x;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = swiglu(gate[i], up[i]);
    }
}

// swiglu_f32 and then quantize_q8_0 on its result, without the f32 round trip
// through memory: one warp per 32 consecutive values of the flattened
// [rows, ffn] matrix (ffn a multiple of 32), the same value per element as
// swiglu_f32 writes and the same quantisation as quantize_q8_0.
TESSERA_KERNEL void swiglu_q8_0(const float* gate, const float* up, u64 n_blocks, i8* qs, float* scales) {
    const u64 block = u64(blockIdx.x) * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (block >= n_blocks) {
        return;  // the whole warp leaves together
    }
    const u32 lane = threadIdx.x % WARP_SIZE;
    const u64 i = block * QK8_0 + lane;
    float d;
    const int q = quantize_q8_0_lane(swiglu(gate[i], up[i]), d);
    qs[i] = i8(q);
    if (lane == 0) {
        scales[block] = d;
    }
}

// swiglu_f32 of one row of `ffn` values, written as f16 for the W8A16 down
// projection (one block per row): f16 values [rows, ffn] (in `layout`: fragment tiles or wgmma rows) divided by the row's
// power of two, 2^e in row_scales[row] (common.cuh's write_f16_row).
TESSERA_KERNEL void swiglu_f16(const float* gate, const float* up, u32 ffn, u16* out, float* row_scales,
                               u32 layout) {
    __shared__ float scratch[WARP_SIZE];
    const u64 base = u64(blockIdx.x) * ffn;
    write_f16_row([&](u32 c) { return swiglu(gate[base + c], up[base + c]); }, blockIdx.x, ffn, out, row_scales,
                  scratch, layout);
}
