// swiglu.cu — SwiGLU activation: out = silu(gate) · up = gate / (1 + e^-gate) · up.
#include "common.cuh"

TESSERA_KERNEL void swiglu_f32(const float* gate, const float* up, float* out, u32 n) {
    const u32 stride = gridDim.x * blockDim.x;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
