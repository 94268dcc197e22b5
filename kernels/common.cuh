// common.cuh — what every kernel file shares: integer types, the device wrappers
// for special instructions (inline PTX on the GPU; the emulator's lane-exact
// versions when compiled on the CPU with emulation/cuda_cpu.h), and reductions.
//
// No CUDA headers: NVRTC compiles these files as they are, with nothing on its
// include path, on any machine that has a driver and libnvrtc.
#pragma once

typedef signed char i8;
typedef unsigned char u8;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define QK8_0 32
#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

#ifndef TESSERA_CUDA_EMULATION
// Kernels are looked up by name in the module NVRTC builds.
#define TESSERA_KERNEL extern "C" __global__
#define DYNAMIC_SHARED(type, name)                                  \
    extern __shared__ __align__(16) unsigned char tessera_smem_[]; \
    type* name = reinterpret_cast<type*>(tessera_smem_)
#else
#define DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::cuda_emu::dynamic_shared())
#endif

// ---------------------------------------------------------------- conversions

static __device__ __forceinline__ float f16_to_f32(u16 h) {
#ifdef TESSERA_CUDA_EMULATION
    return cuda_emu::half_bits_to_float(h);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

static __device__ __forceinline__ u16 f32_to_f16_rn(float f) {
#ifdef TESSERA_CUDA_EMULATION
    return cuda_emu::float_to_half_bits_rn(f);
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#endif
}

static __device__ __forceinline__ float bf16_to_f32(u16 b) { return __int_as_float(int(u32(b) << 16)); }

// Weight element types of the dense (non-Q8_0) kernels.
struct WeightF32 {
    typedef float storage;
    static __device__ __forceinline__ float load(const float* p, u64 i) { return p[i]; }
};
struct WeightF16 {
    typedef u16 storage;
    static __device__ __forceinline__ float load(const u16* p, u64 i) { return f16_to_f32(p[i]); }
};
struct WeightBF16 {
    typedef u16 storage;
    static __device__ __forceinline__ float load(const u16* p, u64 i) { return bf16_to_f32(p[i]); }
};

// ------------------------------------------------------ special instructions

// d = c + Σ a.byte[i] · b.byte[i] over the four signed bytes (dp4a.s32.s32).
static __device__ __forceinline__ int dot4_s8(int a, int b, int c) {
#ifdef TESSERA_CUDA_EMULATION
    u32 sum = u32(c);
    for (int i = 0; i < 4; ++i) {
        sum += u32(int(i8(a >> (8 * i))) * int(i8(b >> (8 * i))));
    }
    return int(sum);
#else
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
}

// D = A·B + C for a 16×32 s8 A (row-major), 32×8 s8 B (column-major), s32 C/D, held
// in the fragment layout of PTX ISA §9.7.14.5.10 by the 32 lanes of a warp.
static __device__ __forceinline__ void mma_s8_m16n8k32(int (&d)[4], const int (&a)[4], const int (&b)[2],
                                                       const int (&c)[4]) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::mma_m16n8k32_s8(d, a, b, c);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]),
          "r"(c[3]));
#else
    // The host never launches an mma kernel below sm_80.
    __trap();
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8×8 matrices of 16-bit elements
// (rows of 16 bytes) from shared memory in one instruction. Lanes 8m..8m+7 give
// the (16-byte aligned) addresses of rows 0..7 of matrix m; lane l receives in
// d[m] the 32-bit word l % 4 of row l / 4 of matrix m — for int8 data, exactly
// the A/B fragment words of mma.m16n8k32 (see matmul_q8_0.cu).
static __device__ __forceinline__ void ldmatrix_x4(int (&d)[4], const void* row) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::ldmatrix_x4(d, row);
#elif __CUDA_ARCH__ >= 750
    const u32 address = u32(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(address));
#else
    // Only the mma path (sm_80+) loads fragments this way.
    __trap();
#endif
}

// 16-byte asynchronous copy global → shared; with `valid` false the destination is
// zero-filled and nothing is read (cp.async.cg with src-size 0).
static __device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src, bool valid) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::cp_async(shared_dst, global_src, 16, valid ? 16 : 0);
#elif __CUDA_ARCH__ >= 800
    const u32 dst = u32(__cvta_generic_to_shared(shared_dst));
    const int src_bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(global_src), "r"(src_bytes));
#else
    int4 value = valid ? *reinterpret_cast<const int4*>(global_src) : make_int4(0, 0, 0, 0);
    *reinterpret_cast<int4*>(shared_dst) = value;
#endif
}

static __device__ __forceinline__ void cp_async_commit() {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::cp_async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}

// Waits until at most `PENDING` committed groups of this thread are in flight.
template <int PENDING>
static __device__ __forceinline__ void cp_async_wait() {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::cp_async_wait(PENDING);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(PENDING));
#endif
}

// ---------------------------------------------------------------- reductions

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `scratch` holds 32 floats of shared memory, free again on return.
static __device__ __forceinline__ float block_sum(float v, float* scratch) {
    const u32 lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    v = warp_sum(v);
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    v = lane < blockDim.x / WARP_SIZE ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// ------------------------------------------------------------ quantisation

// One Q8_0 block held one value per lane, quantised exactly as ggml's
// quantize_row_q8_0_ref: d = amax / 127, q = round(x / d) with halves away from
// zero (roundf), computed as x · (1/d); d is stored as f16 (`scale` gets its value).
static __device__ __forceinline__ int quantize_q8_0_lane(float x, float& scale) {
    const float amax = warp_max(fabsf(x));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    scale = f16_to_f32(f32_to_f16_rn(d));
    return int(roundf(x * id));
}

// Integer → float without a conversion instruction (I2F runs at 16 per clock per
// SM on sm_80/sm_90, an eighth of FP32's rate, and would bound the int8 matmuls).
// An integer sum started at INT_BIAS (by the mma/dp4a accumulator input, at no
// cost) holds, as float bits, 1.5·2^23 + sum exactly while |sum| < 2^22: floats in
// [2^23, 2^24) are the integers, one ulp apart. One FADD then gives float(sum),
// exactly what a conversion would. A Q8_0 block's |isum| ≤ 32·127·128 = 520,192.
#define INT_BIAS 0x4B400000
#define INT_BIAS_F 12582912.0f  // 1.5 · 2^23, the float whose bits are INT_BIAS
static __device__ __forceinline__ float unbias_to_float(int biased) { return __int_as_float(biased) - INT_BIAS_F; }

static __device__ __forceinline__ float negative_infinity() { return __int_as_float(int(0xff800000u)); }
