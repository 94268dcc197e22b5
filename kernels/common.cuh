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

// acc = A·B + acc for a 16×16 f16 A (row-major), 16×8 f16 B (column-major), f32
// accumulators (mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32), in the
// fragment layout of PTX ISA §9.7.14.5.8: a[r] and b[r] hold two f16 each (low
// half first). C and D are the same registers ("+f"), so no copies.
static __device__ __forceinline__ void mma_f16_m16n8k16(float (&acc)[4], const u32 (&a)[4], const u32 (&b)[2]) {
#ifdef TESSERA_CUDA_EMULATION
    const float c[4] = {acc[0], acc[1], acc[2], acc[3]};
    cuda_emu::mma_m16n8k16_f16(acc, a, b, c);
#elif __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    // The host never launches an f16 mma kernel below sm_80.
    __trap();
#endif
}

// prmt.b32 d, a, b, sel (default mode), from the PTX ISA: the eight bytes {b, a}
// are numbered 0-3 (a, low first) and 4-7 (b); byte i of d is the byte that
// nibble i of sel names (its low three bits), or, when the nibble's high bit is
// set, that byte's sign bit replicated.
static __device__ __forceinline__ u32 byte_perm(u32 a, u32 b, u32 sel) {
#ifdef TESSERA_CUDA_EMULATION
    const unsigned long long bytes = (static_cast<unsigned long long>(b) << 32) | a;
    u32 d = 0;
    for (int i = 0; i < 4; ++i) {
        const u32 nibble = (sel >> (4 * i)) & 0xfu;
        u32 byte = u32(bytes >> (8 * (nibble & 7u))) & 0xffu;
        if (nibble & 8u) {
            byte = (byte & 0x80u) ? 0xffu : 0u;
        }
        d |= byte << (8 * i);
    }
    return d;
#else
    u32 d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
#endif
}

// Two f16 lanes at once, each rounded to nearest even: sub.rn.f16x2 and
// mul.rn.f16x2 (.rn: never contracted into an fma).
#ifdef TESSERA_CUDA_EMULATION
// Both f16 lanes of a and b through `op`, exact in double, rounded once to f16.
template <typename Op>
static inline u32 emulate_f16x2(u32 a, u32 b, Op op) {
    u32 d = 0;
    for (int i = 0; i < 2; ++i) {
        const double x = cuda_emu::half_bits_to_float(u16(a >> (16 * i)));
        const double y = cuda_emu::half_bits_to_float(u16(b >> (16 * i)));
        d |= u32(cuda_emu::double_to_half_bits_rn(op(x, y))) << (16 * i);
    }
    return d;
}
#endif

static __device__ __forceinline__ u32 hsub2_rn(u32 a, u32 b) {
#ifdef TESSERA_CUDA_EMULATION
    return emulate_f16x2(a, b, [](double x, double y) { return x - y; });
#else
    u32 d;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
#endif
}

static __device__ __forceinline__ u32 hmul2_rn(u32 a, u32 b) {
#ifdef TESSERA_CUDA_EMULATION
    return emulate_f16x2(a, b, [](double x, double y) { return x * y; });
#else
    u32 d;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
#endif
}

// Aligned 16- and 8-byte loads (one ld.v4.b32 / ld.v2.b32); the emulator rejects
// a misaligned address, as the GPU would fault on it.
static __device__ __forceinline__ void load_16(u32 (&d)[4], const void* p) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::load_vector(d, p, 16);
#else
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    d[0] = v.x;
    d[1] = v.y;
    d[2] = v.z;
    d[3] = v.w;
#endif
}

static __device__ __forceinline__ void load_8(u32 (&d)[2], const void* p) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::load_vector(d, p, 8);
#else
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    d[0] = v.x;
    d[1] = v.y;
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: as ldmatrix_x4, each 8×8
// matrix transposed on the way: lane l receives in d[m] the elements (row
// 2(l % 4), column l / 4) and (row 2(l % 4) + 1, column l / 4) of matrix m —
// for f16 data stored key-major, the B fragment of an m16n8k16 whose k runs
// over the rows (attention's P·V).
static __device__ __forceinline__ void ldmatrix_x4_trans(int (&d)[4], const void* row) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::ldmatrix_x4_trans(d, row);
#elif __CUDA_ARCH__ >= 750
    const u32 address = u32(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(address));
#else
    __trap();
#endif
}

// Two f32 → one f16x2 word, each rounded to nearest even: `lo` in the low half
// (cvt.rn.f16x2.f32 d, hi, lo).
static __device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
#ifdef TESSERA_CUDA_EMULATION
    return u32(cuda_emu::float_to_half_bits_rn(lo)) | (u32(cuda_emu::float_to_half_bits_rn(hi)) << 16);
#else
    u32 d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
#endif
}

// An aligned 16-byte store (st.v4.b32).
static __device__ __forceinline__ void store_16(void* p, const u32 (&v)[4]) {
#ifdef TESSERA_CUDA_EMULATION
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
        cuda_emu::kernel_error("a 16-byte store to an address that is not 16-byte aligned");
    }
    std::memcpy(p, v, 16);
#else
    *reinterpret_cast<uint4*>(p) = make_uint4(v[0], v[1], v[2], v[3]);
#endif
}

// An aligned 8-byte shared-memory store (st.shared.v2.b32).
static __device__ __forceinline__ void store_8(void* p, u32 a, u32 b) {
#ifdef TESSERA_CUDA_EMULATION
    if (reinterpret_cast<uintptr_t>(p) % 8 != 0) {
        cuda_emu::kernel_error("an 8-byte store to an address that is not 8-byte aligned");
    }
    const u32 words[2] = {a, b};
    std::memcpy(p, words, 8);
#else
    *reinterpret_cast<uint2*>(p) = make_uint2(a, b);
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
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most `PENDING` committed groups of this thread are in flight.
template <int PENDING>
static __device__ __forceinline__ void cp_async_wait() {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::cp_async_wait(PENDING);
#elif __CUDA_ARCH__ >= 800
    // "memory": no shared-memory access is moved across the wait by the compiler
    // (every wait today is followed by a barrier, which is such a fence too).
    asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
#endif
}

// Ends the launch with an error when the block got less dynamic shared memory
// than `needed` bytes (a host plan out of step with a kernel's layout): the
// emulator reports it, the GPU traps (the launch fails) instead of letting the
// block write past its shared memory.
static __device__ __forceinline__ void require_dynamic_shared(u32 needed) {
#ifdef TESSERA_CUDA_EMULATION
    if (cuda_emu::dynamic_shared_bytes() < needed) {
        cuda_emu::kernel_error("less dynamic shared memory than the kernel's layout needs");
    }
#else
    u32 size;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(size));
    if (size < needed) {
        __trap();
    }
#endif
}

// ------------------------------------------------------ Hopper wgmma (sm_90a)
//
// Warpgroup matrix multiply (four consecutive warps, 128 threads, issue it
// together): compiled for sm_90a only (NVRTC compute_90a; `__CUDA_ARCH_FEAT_SM90_ALL`),
// emulated lane-exactly (cuda_cpu.cpp's wgmma_m64nNk16_f16, which documents
// the layouts), a trap on other targets. Results are asynchronous: read the
// accumulators only after wgmma_wait covers their group.

// The shared-memory address of `p` (what a matrix descriptor holds).
static __device__ __forceinline__ u32 shared_address(const void* p) {
#ifdef TESSERA_CUDA_EMULATION
    return cuda_emu::shared_address(p);
#else
    return u32(__cvta_generic_to_shared(p));
#endif
}

// A wgmma shared-memory matrix descriptor: start address, leading and stride
// dimension byte offsets (multiples of 16), layout 0 (no swizzle) or 1
// (128-byte swizzle), base offset 0.
static __device__ __forceinline__ u64 gmma_desc(u32 address, u32 lbo, u32 sbo, u32 layout) {
    return u64((address >> 4) & 0x3fffu) | (u64((lbo >> 4) & 0x3fffu) << 16) | (u64((sbo >> 4) & 0x3fffu) << 32) |
           (u64(layout & 3u) << 62);
}

// wgmma.fence: orders the warpgroup's register writes (A fragments,
// accumulators) before the wgmma that read them.
static __device__ __forceinline__ void wgmma_fence() {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::wgmma_fence();
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#else
    __trap();
#endif
}

static __device__ __forceinline__ void wgmma_commit() {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::wgmma_commit();
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#else
    __trap();
#endif
}

// fence.proxy.async.shared::cta: this thread's earlier shared-memory writes
// (st.shared, and cp.async copies once waited for) become visible to the async
// proxy, through which wgmma reads its shared-memory operands (PTX ISA, memory
// consistency model, "proxies"); a barrier after it publishes every thread's.
// The emulator has one view of shared memory: nothing to do there.
static __device__ __forceinline__ void fence_proxy_async() {
#ifdef TESSERA_CUDA_EMULATION
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#else
    __trap();
#endif
}

// Pins the accumulators in place for the compiler: an empty volatile asm that
// "writes" each of them, so no read of `d` moves above a wgmma_wait before it
// (the wgmma's own asm names them as outputs, so nothing else orders those
// reads after the wait) and no write moves below a wgmma after it.
template <int N>
static __device__ __forceinline__ void wgmma_fence_operands(float (&d)[N]) {
#ifndef TESSERA_CUDA_EMULATION
#pragma unroll
    for (int i = 0; i < N; ++i) {
        asm volatile("" : "+f"(d[i])::"memory");
    }
#else
    (void)d;
#endif
}

// The same for a wgmma's A registers: every one of them is computed before
// this point (the compiler may not sink their arithmetic past the wgmma_fence
// that follows, between the wgmma that read them: ptxas would then serialise
// the wgmma).
template <int M, int N>
static __device__ __forceinline__ void wgmma_fence_operands(u32 (&a)[M][N]) {
#ifndef TESSERA_CUDA_EMULATION
#pragma unroll
    for (int i = 0; i < M; ++i) {
#pragma unroll
        for (int j = 0; j < N; ++j) {
            asm volatile("" : "+r"(a[i][j])::"memory");
        }
    }
#else
    (void)a;
#endif
}

// And for matrix descriptors.
template <int N>
static __device__ __forceinline__ void wgmma_fence_operands(u64 (&desc)[N]) {
#ifndef TESSERA_CUDA_EMULATION
#pragma unroll
    for (int i = 0; i < N; ++i) {
        asm volatile("" : "+l"(desc[i])::"memory");
    }
#else
    (void)desc;
#endif
}

// Waits until at most PENDING committed wgmma groups are in flight.
template <int PENDING>
static __device__ __forceinline__ void wgmma_wait() {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::wgmma_wait(PENDING);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(PENDING) : "memory");
#else
    __trap();
#endif
}

// D (64 × 64, f32; this thread's 32: d[4j + 2h + e] = row 16·warp + g + 8h,
// column 8j + 2t + e) = A (64 × 16, f16 in registers, mma.m16n8k16's A layout
// per warp) · B (16 × 64, f16, K-major in shared memory by `desc_b`) + D when
// `accumulate`.
static __device__ __forceinline__ void wgmma_m64n64k16_f16(float (&d)[32], const u32 (&a)[4], u64 desc_b,
                                                           bool accumulate) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::wgmma_m64nNk16_f16(d, 64, a, desc_b, accumulate);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),
                   "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
                   "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
                   "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
                   "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)));
#else
    __trap();
#endif
}

// The same with N = 128 and 256 (d: this thread's N/2 f32, in the layout
// above: d[4j + 2h + e] = row 16·warp + g + 8h, column 8j + 2t + e).
static __device__ __forceinline__ void wgmma_m64n128k16_f16(float (&d)[64], const u32 (&a)[4], u64 desc_b,
                                                            bool accumulate) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::wgmma_m64nNk16_f16(d, 128, a, desc_b, accumulate);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)));
#else
    __trap();
#endif
}

static __device__ __forceinline__ void wgmma_m64n256k16_f16(float (&d)[128], const u32 (&a)[4], u64 desc_b,
                                                            bool accumulate) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::wgmma_m64nNk16_f16(d, 256, a, desc_b, accumulate);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
        "{%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)));
#else
    __trap();
#endif
}

// ------------------------------------------- TMA and mbarrier (sm_90, sm_90a)
//
// The tensor memory accelerator copies a box of a 2-D tensor described by a
// tensor map (built on the host: cuTensorMapEncodeTiled on the GPU, the
// emulated device's own encoding there) into shared memory, and completes its
// bytes as transactions on an mbarrier, which consumers wait on by phase
// parity (PTX ISA §9.7.9.25 cp.async.bulk.tensor, §9.7.13.15 mbarrier).

// CUtensorMap: 128 opaque bytes, passed as a __grid_constant__ parameter.
struct __align__(128) TensorMap {
    u64 opaque[16];
};

static __device__ __forceinline__ void mbarrier_init(u64* bar, u32 count) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::mbarrier_init(bar, count);
#elif __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count) : "memory");
#else
    __trap();
#endif
}

// Makes the initialised barriers visible to the async proxy (TMA's complete_tx).
static __device__ __forceinline__ void fence_mbarrier_init() {
#ifdef TESSERA_CUDA_EMULATION
#elif __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#else
    __trap();
#endif
}

static __device__ __forceinline__ void mbarrier_arrive(u64* bar) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::mbarrier_arrive(bar);
#elif __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar)) : "memory");
#else
    __trap();
#endif
}

// One arrival that also expects `bytes` of transactions in this phase.
static __device__ __forceinline__ void mbarrier_arrive_expect_tx(u64* bar, u32 bytes) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::mbarrier_arrive_expect_tx(bar, bytes);
#elif __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
                 : "memory");
#else
    __trap();
#endif
}

// Waits until the barrier's phase of `parity` (0 or 1) has completed.
static __device__ __forceinline__ void mbarrier_wait(u64* bar, u32 parity) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::mbarrier_wait(bar, parity);
#elif __CUDA_ARCH__ >= 900
    const u32 address = shared_address(bar);
    u32 done = 0;
    while (!done) {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(address), "r"(parity)
            : "memory");
    }
#else
    __trap();
#endif
}

// The box of `map` at (c0, c1) (element column, row) into `dst` (shared,
// 128-byte aligned; 1,024 with the 128-byte swizzle), its bytes completing on
// `bar`.
static __device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int c0, int c1, u64* bar) {
#ifdef TESSERA_CUDA_EMULATION
    cuda_emu::tma_load_2d(dst, map, c0, c1, bar);
#elif __CUDA_ARCH__ >= 900
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::
            "r"(shared_address(dst)),
        "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(shared_address(bar))
        : "memory");
#else
    __trap();
#endif
}

// setmaxnreg.{inc,dec}.sync.aligned.u32 (sm_90a): the calling warpgroup's
// registers per thread raised or lowered to REGS, so a warp-specialised
// kernel gives its producers' registers to its consumers (the register file is
// allocated per warpgroup: 3 warpgroups of a 384-thread block start at 168).
// The emulator has no register file: nothing to do there.
template <int REGS>
static __device__ __forceinline__ void setmaxnreg_inc() {
#ifdef TESSERA_CUDA_EMULATION
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(REGS));
#else
    __trap();
#endif
}

template <int REGS>
static __device__ __forceinline__ void setmaxnreg_dec() {
#ifdef TESSERA_CUDA_EMULATION
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(REGS));
#else
    __trap();
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

// Largest value over the block (as block_sum).
static __device__ __forceinline__ float block_max(float v, float* scratch) {
    const u32 lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    v = warp_max(v);
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    v = lane < blockDim.x / WARP_SIZE ? scratch[lane] : 0.0f;
    v = warp_max(v);
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

// ------------------------------------------------------ f16 activation rows

// 2^e as a float, for -126 <= e <= 127.
static __device__ __forceinline__ float exp2_int(int e) { return __int_as_float((e + 127) << 23); }

// The power of two a row of activations is divided by before it is rounded to
// f16 (the W8A16 matmuls read f16): the row's largest |v| lands in [2^14, 2^15),
// far from f16's overflow at 65,504 whatever the activations' range, and the
// smaller values stay clear of f16's subnormals for 29 binary orders of magnitude
// below it. Scaling by a power of two is exact; the matmul multiplies the row's
// sums back by 2^e. A row of zeros, subnormals, inf or NaN is not scaled.
static __device__ __forceinline__ int f16_row_exponent(float amax) {
    const int biased = (__float_as_int(amax) >> 23) & 0xff;
    if (biased == 0 || biased == 0xff) {
        return 0;
    }
    const int e = biased - 127 - 14;
    return e < -100 ? -100 : (e > 100 ? 100 : e);
}

// Where the f16 activation of (row, c) lives in the W8A16 matmul's A layout
// ("fragment tiles"; rows of `k_blocks` 32-value blocks, rows padded to 16): a
// 16-row × 32-k tile is 1,024 contiguous bytes, tiles ordered by row group, then
// block. Inside a tile, lane (g, t) of a warp finds its mma A fragments for rows
// g, g+8 and k 8t..8t+7 as two 16-byte units: unit (g·4 + t) holds the words
// (k pair w, row half hi) in the order (w0,hi0) (w0,hi1) (w1,hi0) (w1,hi1) |
// (w2,hi0) (w2,hi1) (w3,hi0) (w3,hi1) — exactly the fragment registers a0..a3 of
// the mma on k 8t..8t+3, then of the one on 8t+4..7 — with the two 16-byte halves
// swapped for odd g, so each quarter-warp's 16-byte loads meet every bank once.
static __device__ __forceinline__ u64 f16_tile_index(u32 row, u32 c, u32 k_blocks) {
    const u32 r = row % 16, hi = r / 8, g = r % 8;
    const u32 kk = c % QK8_0, t = kk / 8, p = kk % 8;
    const u32 position = (((p / 2) * 2 + hi) * 2 + p % 2) ^ (8 * (g & 1));
    return (u64(row / 16) * k_blocks + c / QK8_0) * 512 + (g * 4 + t) * 16 + position;
}

// Where the f16 activation of (row, c) lives in the wgmma W8A16 GEMM's layout
// ("wgmma rows", matmul_w8a16_wgmma.cu): rows of `k` values one after another,
// each 32-k block's values permuted so that, read in natural order as a wgmma
// B operand (k16 step h of the block takes positions 16h..16h+15), they meet
// the weights of the A registers a thread builds from 8 consecutive int8 of a
// weight row: position 16h + 8u + 2t + e holds k 8t + 4h + 2u + e (the
// register A fragment of PTX ISA §9.7.15, wgmma .f16, gives thread t k 2t, 2t+1
// (u = 0) and 2t+8, 2t+9 (u = 1) of each step). The permutation moves 4-byte
// pairs within a block: a block stays 64 contiguous bytes, so a stage's 64 k
// of a row are 8 whole 16-byte chunks (cp.async or TMA, natural order).
static __device__ __forceinline__ u64 f16_wgmma_index(u32 row, u32 c, u32 k) {
    const u32 kk = c % QK8_0, t = kk / 8, h = (kk / 4) % 2, u = (kk / 2) % 2, e = kk % 2;
    return u64(row) * k + (c - kk) + 16 * h + 8 * u + 2 * t + e;
}

// The activation layouts the row writers write (w8a16::F16Layout on the host).
#define F16_FRAGMENT_TILES 0u
#define F16_WGMMA_ROWS 1u

static __device__ __forceinline__ u64 f16_index(u32 layout, u32 row, u32 c, u32 k) {
    return layout == F16_WGMMA_ROWS ? f16_wgmma_index(row, c, k) : f16_tile_index(row, c, k / QK8_0);
}

// Writes row `row` of `dim` activations, `value(c)` for column c, as f16 divided
// by the row's power of two (f16_row_exponent) into `out` in `layout`
// (F16_FRAGMENT_TILES: f16_tile_index; F16_WGMMA_ROWS: f16_wgmma_index; dim a
// multiple of 32), and 2^e into row_scales[row].
#define ROW_CACHE 16
template <typename Value>
static __device__ __forceinline__ void write_f16_row(const Value& value, u32 row, u32 dim, u16* out,
                                                     float* row_scales, float* scratch, u32 layout) {
    float cached[ROW_CACHE];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < ROW_CACHE; ++i) {
        const u32 c = threadIdx.x + u32(i) * blockDim.x;
        cached[i] = c < dim ? value(c) : 0.0f;
        amax = fmaxf(amax, fabsf(cached[i]));
    }
    for (u32 c = threadIdx.x + ROW_CACHE * blockDim.x; c < dim; c += blockDim.x) {
        amax = fmaxf(amax, fabsf(value(c)));
    }
    const int e = f16_row_exponent(block_max(amax, scratch));
    const float down = exp2_int(-e);
#pragma unroll
    for (int i = 0; i < ROW_CACHE; ++i) {
        const u32 c = threadIdx.x + u32(i) * blockDim.x;
        if (c < dim) {
            out[f16_index(layout, row, c, dim)] = f32_to_f16_rn(cached[i] * down);
        }
    }
    for (u32 c = threadIdx.x + ROW_CACHE * blockDim.x; c < dim; c += blockDim.x) {
        out[f16_index(layout, row, c, dim)] = f32_to_f16_rn(value(c) * down);
    }
    if (threadIdx.x == 0) {
        row_scales[row] = exp2_int(e);
    }
}

// ------------------------------------------------------ W8A16 weights

// Four int8 weights → two f16x2 words scaled by d2 = (d, d): bytes 0, 1 in `lo`,
// bytes 2, 3 in `hi`. The byte is biased to unsigned (x ^ 0x80 = x + 128) and
// placed under the f16 exponent of 1024, whose spacing is 1: 0x64XX = 1024 + XX;
// subtracting 1152 gives x exactly, and one rounded multiply gives f16(x · d).
static __device__ __forceinline__ void dequant_4(u32 raw, u32 d2, u32& lo, u32& hi) {
    const u32 biased = raw ^ 0x80808080u;
#ifdef TESSERA_MUTATE_PRMT_SELECTOR
    // Mutation test build: the two weights of each f16 pair swapped.
    lo = byte_perm(biased, 0x64646464u, 0x5041u);
#else
    lo = byte_perm(biased, 0x64646464u, 0x5140u);
#endif
    hi = byte_perm(biased, 0x64646464u, 0x5342u);
    const u32 magic = 0x64806480u;  // (1152, 1152)
    lo = hmul2_rn(hsub2_rn(lo, magic), d2);
    hi = hmul2_rn(hsub2_rn(hi, magic), d2);
}

// One weight of a grouped W8A16 GEMM launch (v3 and wgmma: up to three weights
// that read the same activations, each block finding its own by its column tile).
struct W16Group {
    const i8* wq;
    const u16* ws;
    float* out;
    u32 n;
    u32 col_base;  // the group's first column among all groups' (in `partial`)
};

// The v3 and wgmma W8A16 GEMM kernels' parameters: the f16 activations and their row scales, rows, k,
// accumulate, then (weight int8, weight scales, out, n) for up to three groups
// (n = 0: absent), then the split-K workspace and its row stride (the groups'
// n summed).
#define W16_PARAMS                                                                                         \
    const u16 *x, const float *row_scales, u32 rows, u32 k, u32 accumulate, const i8 *wq0, const u16 *ws0, \
        float *out0, u32 n0, const i8 *wq1, const u16 *ws1, float *out1, u32 n1, const i8 *wq2,            \
        const u16 *ws2, float *out2, u32 n2, float *partial, u32 partial_stride

// Where the W8A16 GEMMs (v3 and wgmma) keep 16-byte chunk `c` of a stage's raw
// int8 weight row `n` (64 bytes a row): rows 2 and 3 of every 4 have their
// 32-byte halves swapped, so a half-warp's 8-byte reads of 8 rows (bytes
// 8t..8t+7 of a block) meet every bank once.
static __device__ __forceinline__ u32 w16_raw_chunk(u32 n, u32 c) { return c ^ (((n >> 1) & 1u) << 1); }

// 2^x in one instruction, ex2.approx.ftz.f32 (PTX ISA, "ex2": max relative
// error 2^-22.5 over the full range; a subnormal input or result is flushed to
// zero). Plain exp2f without -ftz adds a compare and two multiplications per
// call to handle subnormal results, which a softmax weight below 2^-126 does not
// need. The emulation computes it exactly and flushes the same way.
static __device__ __forceinline__ float exp2_ftz(float x) {
#ifdef TESSERA_CUDA_EMULATION
    const float y = exp2f(x);
    return (y != 0.0f && fabsf(y) < 1.17549435e-38f) ? 0.0f : y;
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}
