// matmul_dense.cu — out[rows, n] = x[rows, k] · wᵀ for weights stored as F32, F16 or
// BF16 (norm-free projections of unquantised models), f32 arithmetic. The Q8_0
// weights of the real model take the int8 path in matmul_q8_0.cu.
#include "common.cuh"

#define MD_BM 64
#define MD_BN 64
#define MD_BK 16
#define MD_THREADS 256

// Grid (ceil(n / 64), ceil(rows / 64)), 256 threads as 16×16; thread (tx, ty) owns
// rows ty + 16i and columns tx + 16j (i, j < 4).
template <typename W>
static __device__ __forceinline__ void matmul_dense(const float* x, const typename W::storage* w, u32 rows, u32 n,
                                                    u32 k, float* out) {
    __shared__ float xs[MD_BM][MD_BK + 1];
    __shared__ float ws[MD_BN][MD_BK + 1];
    const u32 tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const u32 row0 = blockIdx.y * MD_BM, col0 = blockIdx.x * MD_BN;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            acc[i][j] = 0.0f;
        }
    }
    for (u32 k0 = 0; k0 < k; k0 += MD_BK) {
        for (u32 id = threadIdx.x; id < MD_BM * MD_BK; id += MD_THREADS) {
            const u32 r = id / MD_BK, kk = id % MD_BK;
            const u32 row = row0 + r, col = col0 + r, kx = k0 + kk;
            xs[r][kk] = row < rows && kx < k ? x[u64(row) * k + kx] : 0.0f;
            ws[r][kk] = col < n && kx < k ? W::load(w, u64(col) * k + kx) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < MD_BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                a[i] = xs[ty + 16 * i][kk];
                b[i] = ws[tx + 16 * i][kk];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 row = row0 + ty + 16 * i, col = col0 + tx + 16 * j;
            if (row < rows && col < n) {
                out[u64(row) * n + col] = acc[i][j];
            }
        }
    }
}

TESSERA_KERNEL void __launch_bounds__(MD_THREADS)
    matmul_f32(const float* x, const float* w, u32 rows, u32 n, u32 k, float* out) {
    matmul_dense<WeightF32>(x, w, rows, n, k, out);
}
TESSERA_KERNEL void __launch_bounds__(MD_THREADS)
    matmul_f16(const float* x, const u16* w, u32 rows, u32 n, u32 k, float* out) {
    matmul_dense<WeightF16>(x, w, rows, n, k, out);
}
TESSERA_KERNEL void __launch_bounds__(MD_THREADS)
    matmul_bf16(const float* x, const u16* w, u32 rows, u32 n, u32 k, float* out) {
    matmul_dense<WeightBF16>(x, w, rows, n, k, out);
}
