// copy.cu — row movement: gathering rows by index (the last token of each sequence)
// and copying a contiguous run of rows (token chunks, prefix K/V).
#include "common.cuh"

// out[r, :] = x[rows[r], :]; one block per output row.
TESSERA_KERNEL void gather_rows_f32(const float* x, const u32* rows, u32 dim, float* out) {
    const u64 src = u64(rows[blockIdx.x]) * dim;
    const u64 dst = u64(blockIdx.x) * dim;
    for (u32 c = threadIdx.x; c < dim; c += blockDim.x) {
        out[dst + c] = x[src + c];
    }
}

// dst[i] = src[i] for i < n (the host offsets both pointers to the first row).
TESSERA_KERNEL void copy_f32(const float* src, float* dst, u64 n) {
    const u64 stride = u64(gridDim.x) * blockDim.x;
    for (u64 i = u64(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = src[i];
    }
}
