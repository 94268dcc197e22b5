// wgmma_probe.cu — the Hopper warpgroup mma (wgmma.mma_async, sm_90a) on a
// small product, to pin down its layouts before a kernel relies on them: one
// warpgroup computes out (64 × 64 f32, row-major) = a (64 × k f16, row-major)
// · bᵀ (b: 64 × k f16, row-major, i.e. B K-major), k a multiple of 64. Each 64
// k of b is staged in shared memory in the canonical K-major layout `layout`
// names — 0: no swizzle (core matrices of 8 rows × 16 bytes; 128 bytes between
// k-octets, 1,024 between 8-row groups), 1: 128-byte swizzle (rows of 128
// bytes, the 16-byte chunk c of row n at chunk c ^ (n % 8) of 1,024-byte
// atoms) — and read through a matrix descriptor, four k16 steps a stage,
// committed as one group and waited for. The emulated tests check it against
// the f64 product; on an sm_90 GPU the GPU tests do the same, which checks the
// emulator's reading of the PTX ISA against the hardware.
#include "common.cuh"

#define WGMMA_PROBE_TILE_BYTES (64 * 64 * 2)
// The tile plus room to align it to 1,024 bytes.
#define WGMMA_PROBE_SHARED_BYTES (WGMMA_PROBE_TILE_BYTES + 1024)

// Grid (1), 128 threads (one warpgroup), WGMMA_PROBE_SHARED_BYTES of dynamic
// shared memory.
TESSERA_KERNEL void __launch_bounds__(128)
    wgmma_probe_64x64(const u16* a, const u16* b, u32 k, u32 layout, float* out) {
    DYNAMIC_SHARED(unsigned char, smem);
    require_dynamic_shared(WGMMA_PROBE_SHARED_BYTES);
    // The tile at a 1,024-byte aligned shared address: the 128-byte swizzle
    // XORs address bits 4-6 with bits 7-9.
    const u32 base = shared_address(smem);
    const u32 pad = (1024 - base % 1024) % 1024;
    unsigned char* tile = smem + pad;
    const u32 tile_address = base + pad;
    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
    float d[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
        d[i] = 0.0f;
    }
    for (u32 k0 = 0; k0 < k; k0 += 64) {
        __syncthreads();  // the last stage's wgmma were waited for: its tile is free
        for (u32 i = threadIdx.x; i < 64 * 8; i += 128) {
            const u32 n = i / 8, c = i % 8;  // row n, 16-byte chunk c (k 8c..8c+7)
#ifdef TESSERA_MUTATE_WGMMA_SWIZZLE
            // Mutation test build: chunks stored unswizzled under a 128-byte
            // swizzle descriptor.
            const u32 chunk = c;
#else
            const u32 chunk = c ^ (n % 8);
#endif
            const u32 offset = layout == 1 ? (n / 8) * 1024 + (n % 8) * 128 + chunk * 16
                                           : ((n / 8) * 8 + c) * 128 + (n % 8) * 16;
            u32 words[4];
            load_16(words, b + u64(n) * k + k0 + c * 8);
            store_16(tile + offset, words);
        }
        __syncthreads();
        wgmma_fence_operands(d);
        wgmma_fence();
#pragma unroll
        for (u32 s = 0; s < 4; ++s) {
            // A: rows 16·warp + g (+8), k k0 + 16s + 2t (+1) (+8), as mma.m16n8k16's A.
            const u16* row = a + u64(16 * warp + g) * k + k0 + 16 * s + 2 * t;
            const u16* row8 = row + u64(8) * k;
            const u32 af[4] = {u32(row[0]) | (u32(row[1]) << 16), u32(row8[0]) | (u32(row8[1]) << 16),
                               u32(row[8]) | (u32(row[9]) << 16), u32(row8[8]) | (u32(row8[9]) << 16)};
            const u64 desc = layout == 1 ? gmma_desc(tile_address + s * 32, 16, 1024, 1)
                                         : gmma_desc(tile_address + s * 2 * 128, 128, 1024, 0);
            wgmma_m64n64k16_f16(d, af, desc, k0 > 0 || s > 0);
        }
        wgmma_commit();
#ifndef TESSERA_MUTATE_WGMMA_WAIT  // mutation test build: the results are never waited for
        wgmma_wait<0>();
#endif
        wgmma_fence_operands(d);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                out[(16 * warp + g + 8 * h) * 64 + 8 * j + 2 * t + e] = d[4 * j + 2 * h + e];
            }
        }
    }
}
