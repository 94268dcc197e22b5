// embedding.cu — embedding gather: out[i, :] = table[ids[i], :] as f32. Q8_0 tables
// are held split (as uploaded): int8 values [rows, dim] and f16 scales [rows, dim/32].
#include "common.cuh"

// One block per token.
TESSERA_KERNEL void embedding_q8_0(const i8* qs, const u16* scales, const u32* ids, u32 dim, float* out) {
    const u64 row = ids[blockIdx.x];
    const u64 dst = u64(blockIdx.x) * dim;
    const u32 blocks = dim / QK8_0;
    for (u32 c = threadIdx.x; c < dim; c += blockDim.x) {
        out[dst + c] = float(qs[row * dim + c]) * f16_to_f32(scales[row * blocks + c / QK8_0]);
    }
}

template <typename W>
static __device__ __forceinline__ void embedding_dense(const typename W::storage* table, const u32* ids, u32 dim,
                                                       float* out) {
    const u64 row = ids[blockIdx.x];
    const u64 dst = u64(blockIdx.x) * dim;
    for (u32 c = threadIdx.x; c < dim; c += blockDim.x) {
        out[dst + c] = W::load(table, row * dim + c);
    }
}

TESSERA_KERNEL void embedding_f32(const float* table, const u32* ids, u32 dim, float* out) {
    embedding_dense<WeightF32>(table, ids, dim, out);
}
TESSERA_KERNEL void embedding_f16(const u16* table, const u32* ids, u32 dim, float* out) {
    embedding_dense<WeightF16>(table, ids, dim, out);
}
TESSERA_KERNEL void embedding_bf16(const u16* table, const u32* ids, u32 dim, float* out) {
    embedding_dense<WeightBF16>(table, ids, dim, out);
}
