// add.cu — residual add: x += y over n elements.
#include "common.cuh"

// Grid-stride loop: any grid covers any n.
TESSERA_KERNEL void add_f32(float* x, const float* y, u32 n) {
    const u32 stride = gridDim.x * blockDim.x;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        x[i] += y[i];
    }
}
