// cuda_cpu.h — lets the unmodified kernel sources in kernels/*.cu compile with the
// host C++ compiler and run on the CPU, so every kernel executes in CI.
//
// Model: each CUDA thread is a fiber; the blocks of a grid run one at a time on the
// calling OS thread, so `__syncthreads()` is a barrier among the block's fibers and
// `__shared__` storage (static thread_local) belongs to the block that is running.
// Warp-level operations (shuffles, votes, mma.sync) are collectives among the 32
// fibers of a warp: every lane deposits its operand, the warp meets at a barrier,
// each lane reads what it needs. A barrier nobody can pass (a `__syncthreads()` some
// threads never reach, a shuffle after part of a warp exited) is reported as an
// error, not a hang.
//
// Force-included (`-include cuda_cpu.h`) before each .cu file; the kernels reach
// special instructions only through the wrappers in common.cuh, whose emulation
// branch calls the functions declared here.
#pragma once

#define TESSERA_CUDA_EMULATION 1

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) alignas(n)
// One instance per OS thread, reused by each block in turn (blocks run one at a time).
#define __shared__ static thread_local
// Kernels are plain C++ functions here (C++ linkage, so a test build can compile a
// second, mutated copy of a kernel file inside a namespace); on the GPU they are
// `extern "C" __global__` so the driver finds them by name.
#define TESSERA_KERNEL

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

namespace cuda_emu {

// Where the running fiber is: the built-in index variables read these.
struct ThreadPosition {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned linear_tid;
};

extern thread_local ThreadPosition* current_position;

// Block barrier (`__syncthreads`, `bar.sync 0`).
void sync_threads();
// Warp barrier among all 32 lanes of the caller's warp; returns the index of the
// exchange buffer this collective uses (alternating, so one barrier suffices).
// `mask` must be the full warp: the kernels only use full-warp collectives.
unsigned warp_collective(unsigned mask, const char* what);
// The exchange slots of the caller's warp: `buffer` from warp_collective, 16
// 32-bit words per lane.
uint32_t* warp_slots(unsigned buffer);
// Deposits this lane's words for the next collective (before warp_collective).
uint32_t* warp_slots_next();

// Dynamic shared memory of the running block (poisoned at block start).
void* dynamic_shared();
// Its size in bytes (the launch's shared_bytes; %dynamic_smem_size on the GPU).
unsigned dynamic_shared_bytes();

// cp.async: copies issued into the open group; the destination is poisoned until
// a wait_group that covers the group copies the data in.
void cp_async(void* shared_dst, const void* global_src, unsigned bytes, unsigned src_bytes);
void cp_async_commit();
void cp_async_wait(unsigned pending_allowed);

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32, lane-exact (cuda_cpu.cpp).
void mma_m16n8k32_s8(int (&d)[4], const int (&a)[4], const int (&b)[2], const int (&c)[4]);
// ldmatrix.sync.aligned.m8n8.x4.shared.b16, lane-exact (cuda_cpu.cpp).
void ldmatrix_x4(int (&d)[4], const void* row);
// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16, lane-exact (cuda_cpu.cpp).
void ldmatrix_x4_trans(int (&d)[4], const void* row);
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, lane-exact fragments
// (cuda_cpu.cpp); the sum is exact, rounded once to f32.
void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]);
// The shared-memory address of `p` (cvta.to.shared): its offset in the running
// block's dynamic shared memory, the only shared memory a wgmma operand uses here.
uint32_t shared_address(const void* p);
// wgmma.mma_async.sync.aligned.m64nNk16.f32.f16.f16 with A in registers and B
// K-major in shared memory by descriptor (no swizzle or 128-byte swizzle), for
// the calling warp's 16 rows of the warpgroup's 64; `d` holds N/2 f32. Issued
// asynchronously: `d` reads as NaN until a wgmma_wait covering its group.
void wgmma_m64nNk16_f16(float* d, unsigned n, const uint32_t (&a)[4], uint64_t desc_b, bool accumulate);
// wgmma.fence / commit_group / wait_group.
void wgmma_fence();
void wgmma_commit();
void wgmma_wait(unsigned pending_allowed);
// mbarrier objects in shared memory (PTX ISA §9.7.13.15, "mbarrier"): an
// expected arrival count, a pending count and a transaction count per phase;
// the phase completes when both reach zero, and its parity flips. A wait
// blocks the fiber until the phase of `parity` has completed (try_wait.parity
// in a loop on the GPU).
void mbarrier_init(void* bar, unsigned count);
void mbarrier_arrive(void* bar);
void mbarrier_arrive_expect_tx(void* bar, unsigned bytes);
void mbarrier_wait(void* bar, unsigned parity);
// The tensor map the emulated device encodes for cuTensorMapEncodeTiled's
// arguments (the driver's own encoding is opaque): a 2-D tile of `rows` rows
// of `cols` elements, `pitch` bytes apart; the 128-byte object a kernel takes
// as a __grid_constant__ parameter.
struct alignas(128) EmuTensorMap {
    uint64_t magic;  // kEmuTensorMapMagic
    uint64_t base;
    uint64_t cols, rows, pitch;
    uint32_t box_cols, box_rows, element_bytes, swizzle;  // swizzle: 0 or 128 (bytes)
    uint8_t unused[72];
};
static_assert(sizeof(EmuTensorMap) == 128, "CUtensorMap is 128 bytes");
constexpr uint64_t kEmuTensorMapMagic = 0x50414d54'53534554ull;  // "TESSTMAP"
// cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes:
// the box at (c0, c1) (element column, row) into shared memory at `dst`,
// elements outside the tensor zero-filled, completing `box bytes` of
// transactions on `bar`. The data lands (and the destination reads poison
// until then) when a fiber waits on the barrier.
void tma_load_2d(void* dst, const void* map, int c0, int c1, void* bar);
// An aligned vector load of `bytes` (8 or 16) bytes (ld.shared.v2/v4.b32):
// misaligned addresses are a kernel error, as on the GPU.
void load_vector(void* dst, const void* src, unsigned bytes);

// The kernel table behind tessera_emu_launch: `entry` unpacks the launch's
// parameter pointers (as cuLaunchKernel's kernelParams) and calls the kernel.
void register_kernel(const char* name, void (*entry)(void**));

template <typename... A, size_t... I>
inline void invoke_kernel(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <typename... A>
constexpr size_t kernel_arity(void (*)(A...)) {
    return sizeof...(A);
}
template <auto Kernel>
void kernel_entry(void** args) {
    invoke_kernel(Kernel, args, std::make_index_sequence<kernel_arity(Kernel)>{});
}

// Reports a kernel error (aborts the launch with this message).
[[noreturn]] void kernel_error(const char* message);

inline unsigned lane_id() { return current_position->linear_tid & 31u; }

// IEEE binary16 ↔ binary32, round to nearest even (as cvt.rn.f16.f32).
inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        // Subnormal: normalise.
        int e = -1;
        do {
            ++e;
            mant <<= 1;
        } while ((mant & 0x400u) == 0);
        bits = sign | uint32_t(112 - e) << 23 | ((mant & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// A double rounded to binary16, to nearest even (exact for every f16 operation's
// unrounded result, which a double holds exactly for add, sub and mul).
inline uint16_t double_to_half_bits_rn(double v) {
    const uint16_t sign = std::signbit(v) ? 0x8000u : 0u;
    const double a = std::fabs(v);
    if (std::isnan(v)) {
        return uint16_t(sign | 0x7e00u);
    }
    if (a == 0.0) {
        return sign;
    }
    int e;
    std::frexp(a, &e);  // a = m · 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
    const int exponent = std::max(e - 1, -14);  // subnormals share 2^-14's spacing
    const double step = std::ldexp(1.0, exponent - 10);
    const double q = std::nearbyint(a / step);  // the default mode: nearest even
    const double r = q * step;
    if (r >= 65520.0) {
        return uint16_t(sign | 0x7c00u);
    }
    if (r < std::ldexp(1.0, -14)) {
        return uint16_t(sign | uint16_t(q));  // subnormal (q < 1024) or zero
    }
    int re;
    const double m = std::frexp(r, &re);  // r = m · 2^re
    const uint32_t mant = uint32_t(std::ldexp(m, 11)) & 0x3ffu;
    return uint16_t(sign | uint32_t(re - 1 + 15) << 10 | mant);
}

inline uint16_t float_to_half_bits_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) {  // inf or nan
        return uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    }
    if (abs >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
        return uint16_t(sign | 0x7c00u);
    }
    if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (abs < 0x33000000u) {  // below half the smallest subnormal
            return sign;
        }
        const uint32_t exp = abs >> 23;
        const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - exp;  // 14..24
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u);
        const uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u))) {
            ++q;
        }
        return uint16_t(sign | q);
    }
    uint32_t h = ((abs >> 13) - (112u << 10));
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) {
        ++h;
    }
    return uint16_t(sign | h);
}

template <typename T>
inline T shuffle(unsigned mask, T value, unsigned source_lane, const char* what) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 64 bits");
    uint32_t* mine = warp_slots_next() + lane_id() * 16;
    std::memcpy(mine, &value, sizeof(T));
    const unsigned buffer = warp_collective(mask, what);
    T result;
    std::memcpy(&result, warp_slots(buffer) + (source_lane & 31u) * 16, sizeof(T));
    return result;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::current_position->thread_idx)
#define blockIdx (::cuda_emu::current_position->block_idx)
#define blockDim (::cuda_emu::current_position->block_dim)
#define gridDim (::cuda_emu::current_position->grid_dim)

inline void __syncthreads() { cuda_emu::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuda_emu::warp_collective(mask, "__syncwarp"); }

template <typename T>
inline T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
    const unsigned lane = cuda_emu::lane_id();
    const unsigned base = lane & ~unsigned(width - 1);
    return cuda_emu::shuffle(mask, value, base + (unsigned(src_lane) & unsigned(width - 1)), "__shfl_sync");
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    const unsigned lane = cuda_emu::lane_id();
    const unsigned target = lane ^ unsigned(lane_mask);
    // Lanes outside the caller's width segment read their own value (PTX shfl.bfly).
    const bool outside = (target & ~unsigned(width - 1)) != (lane & ~unsigned(width - 1));
    return cuda_emu::shuffle(mask, value, outside ? lane : target, "__shfl_xor_sync");
}

template <typename T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    const unsigned lane = cuda_emu::lane_id();
    const unsigned in_segment = lane & unsigned(width - 1);
    const unsigned source = in_segment + delta < unsigned(width) ? lane + delta : lane;
    return cuda_emu::shuffle(mask, value, source, "__shfl_down_sync");
}

template <typename T>
inline T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    const unsigned lane = cuda_emu::lane_id();
    const unsigned in_segment = lane & unsigned(width - 1);
    const unsigned source = in_segment >= delta ? lane - delta : lane;
    return cuda_emu::shuffle(mask, value, source, "__shfl_up_sync");
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
    uint32_t* mine = cuda_emu::warp_slots_next() + cuda_emu::lane_id() * 16;
    mine[0] = predicate ? 1u : 0u;
    const uint32_t* slots = cuda_emu::warp_slots(cuda_emu::warp_collective(mask, "__ballot_sync"));
    unsigned bits = 0;
    for (unsigned lane = 0; lane < 32; ++lane) {
        bits |= (slots[lane * 16] ? 1u : 0u) << lane;
    }
    return bits;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == 0xffffffffu; }

// CUDA math built-ins the host library lacks.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
