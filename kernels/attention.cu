// attention.cu — causal GQA attention over packed sequences, flash style: keys and
// values stream through shared memory 32 at a time and each (query row, head) keeps
// an online softmax (running max m, running sum l, unnormalised output), so no
// score matrix is ever stored. A sequence may be preceded by a shared prefix whose
// K/V were computed earlier; keys are visited prefix first, then the sequence's own
// up to the query row.
//
// The host cuts every sequence into tiles of consecutive query rows; a block takes
// one tile and a group of query heads that share one KV head (so each K/V tile
// loaded serves all of them): grid (tiles, kv_heads · head_chunks), 128 threads.
// A tile is five u32: seq_start, row_begin, row_count, prefix_len, prefix_index;
// prefix_kv holds (k, v) device addresses per prefix.
#include "common.cuh"

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / WARP_SIZE)
#define ATT_ITEMS 16  // (query row, head) pairs per block: rows_per_block · heads_per_block
#define ATT_SLOTS (ATT_ITEMS / ATT_WARPS)
#define ATT_KEYS 32   // keys per tile: one per lane when scoring

static_assert(ATT_SLOTS == 4, "the output loop feeds exactly four slots per value");

// Four floats loaded as one 16-byte shared-memory access (LDS.128).
struct __align__(16) f32x4 {
    float x, y, z, w;
};
static __device__ __forceinline__ f32x4 load4(const float* p) {
#ifdef TESSERA_CUDA_EMULATION
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
        cuda_emu::kernel_error("attention: a 16-byte shared-memory load is not 16-byte aligned");
    }
#endif
    return *reinterpret_cast<const f32x4*>(p);
}

// DPL: output dimensions per lane (head_dim <= 32 · DPL). Each warp owns
// ATT_SLOTS (query row, head) items and processes them together: per key tile a
// lane scores its key against all of them (one k load serves four dot products)
// and every value it loads feeds all of them, so shared-memory loads per FMA drop
// from ≈ 2 (score) and ≈ 1.25 (output) to ≈ 0.3, and the FP32 pipe, not shared
// memory bandwidth, bounds the loop. Rows in shared memory are padded to d4 (d
// rounded up to 4, zeros past d) so they load four at a time.
//
// Dynamic shared memory: q [16][d4], k [32][d4 | 4] (lane j's 16-byte loads of
// key j fall in distinct banks per quarter warp), v [32][d], p [4 warps][32 keys]
// [4 slots].
template <int DPL>
static __device__ __forceinline__ void attention(const float* q, const float* k, const float* v, const u32* tiles,
                                                 const u64* prefix_kv, u32 n_heads, u32 n_kv_heads, u32 d,
                                                 u32 heads_per_block, float scale, float* out) {
    DYNAMIC_SHARED(float, smem);
    // An odd number of 16-byte units per key row: a quarter warp's 16-byte loads
    // of 8 consecutive rows then fall in 8 distinct 4-bank groups (d4 + 4 when
    // d4 is a multiple of 8, d4 itself otherwise; the host allocates d4 + 4).
    const u32 d4 = (d + 3) / 4 * 4, ks_stride = d4 | 4;
    float* qs = smem;
    float* ks = qs + ATT_ITEMS * d4;
    float* vs = ks + ATT_KEYS * ks_stride;
    float* ps = vs + ATT_KEYS * d;

    const u32* tile = tiles + 5 * blockIdx.x;
    const u32 seq_start = tile[0], row_begin = tile[1], row_count = tile[2], prefix_len = tile[3];
    const float* prefix_k = prefix_len > 0 ? reinterpret_cast<const float*>(prefix_kv[2 * tile[4]]) : k;
    const float* prefix_v = prefix_len > 0 ? reinterpret_cast<const float*>(prefix_kv[2 * tile[4] + 1]) : v;
    const u32 group = n_heads / n_kv_heads;
    const u32 chunks = group / heads_per_block;
    const u32 kv_head = blockIdx.y / chunks;
    const u32 head0 = kv_head * group + (blockIdx.y % chunks) * heads_per_block;
    const u64 qw = u64(n_heads) * d, kvw = u64(n_kv_heads) * d;
    const u32 items = row_count * heads_per_block;
    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;

    for (u32 id = threadIdx.x; id < ATT_ITEMS * d4; id += ATT_THREADS) {
        const u32 item = id / d4, c = id % d4;
        const u32 row = row_begin + item / heads_per_block, head = head0 + item % heads_per_block;
        qs[id] = item < items && c < d ? q[row * qw + head * d + c] : 0.0f;
    }

    // Slot s of this warp is item warp + s · ATT_WARPS; limit: its last visible key.
    bool active[ATT_SLOTS];
    u32 limit[ATT_SLOTS];
    float m[ATT_SLOTS], l[ATT_SLOTS], acc[ATT_SLOTS][DPL];
#pragma unroll
    for (int s = 0; s < ATT_SLOTS; ++s) {
        const u32 item = warp + s * ATT_WARPS;
        active[s] = item < items;  // warp-uniform
        limit[s] = prefix_len + row_begin + item / heads_per_block - seq_start;
        m[s] = negative_infinity();
        l[s] = 0.0f;
#pragma unroll
        for (int c = 0; c < DPL; ++c) {
            acc[s][c] = 0.0f;
        }
    }
    float* my_p = ps + warp * ATT_KEYS * ATT_SLOTS;

    // The last row of the tile sees the most keys.
    const u32 n_keys = prefix_len + (row_begin + row_count - seq_start);
    for (u32 t0 = 0; t0 < n_keys; t0 += ATT_KEYS) {
        __syncthreads();  // the previous tile is consumed (and, first time, q is stored)
        for (u32 id = threadIdx.x; id < ATT_KEYS * d4; id += ATT_THREADS) {
            const u32 j = id / d4, c = id % d4, key = t0 + j;
            float key_value = 0.0f, value = 0.0f;
            if (c < d) {
                if (key < prefix_len) {
                    const u64 at = key * kvw + kv_head * d + c;
                    key_value = prefix_k[at];
                    value = prefix_v[at];
                } else if (key < n_keys) {
                    const u64 at = (seq_start + key - prefix_len) * kvw + kv_head * d + c;
                    key_value = k[at];
                    value = v[at];
                }
                vs[j * d + c] = value;
            }
            ks[j * ks_stride + c] = key_value;
        }
#ifndef TESSERA_MUTATE_ATTENTION_BARRIER  // mutation test build: the barrier is missing
        __syncthreads();
#endif
        // Lane = key: its dot product with every slot's query, c ascending.
        const u32 key = t0 + lane;
        float dot[ATT_SLOTS];
#pragma unroll
        for (int s = 0; s < ATT_SLOTS; ++s) {
            dot[s] = 0.0f;
        }
        const float* krow = ks + lane * ks_stride;
        for (u32 c = 0; c < d4; c += 4) {
            const f32x4 kk = load4(krow + c);
#pragma unroll
            for (int s = 0; s < ATT_SLOTS; ++s) {
                const f32x4 qq = load4(qs + (warp + s * ATT_WARPS) * d4 + c);
                dot[s] = fmaf(qq.x, kk.x, dot[s]);
                dot[s] = fmaf(qq.y, kk.y, dot[s]);
                dot[s] = fmaf(qq.z, kk.z, dot[s]);
                dot[s] = fmaf(qq.w, kk.w, dot[s]);
            }
        }
        // Online softmax per slot; a slot with nothing visible here (or no item)
        // gets weight 0 and correction 1, which leave its state as it was.
        float correction[ATT_SLOTS];
#pragma unroll
        for (int s = 0; s < ATT_SLOTS; ++s) {
            const bool visible = key <= limit[s];
            const float score = visible ? dot[s] * scale : negative_infinity();
            const float tile_max = warp_max(score);
            float p = 0.0f;
            correction[s] = 1.0f;
            if (active[s] && tile_max != negative_infinity()) {  // warp-uniform
                const float new_m = fmaxf(m[s], tile_max);
                correction[s] = expf(m[s] - new_m);
                p = visible ? expf(score - new_m) : 0.0f;
                l[s] = l[s] * correction[s] + warp_sum(p);
                m[s] = new_m;
            }
            my_p[lane * ATT_SLOTS + s] = p;
        }
        __syncwarp();
#pragma unroll
        for (int s = 0; s < ATT_SLOTS; ++s) {
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                acc[s][c] *= correction[s];
            }
        }
        // Every value loaded feeds all four slots; keys ascending.
        for (u32 j = 0; j < ATT_KEYS; ++j) {
            const f32x4 pj = load4(my_p + j * ATT_SLOTS);
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                const u32 dim = lane + WARP_SIZE * c;
                if (dim < d) {
                    const float value = vs[j * d + dim];
                    acc[0][c] = fmaf(pj.x, value, acc[0][c]);
                    acc[1][c] = fmaf(pj.y, value, acc[1][c]);
                    acc[2][c] = fmaf(pj.z, value, acc[2][c]);
                    acc[3][c] = fmaf(pj.w, value, acc[3][c]);
                }
            }
        }
        __syncwarp();  // p consumed before the next tile overwrites it
    }

#pragma unroll
    for (int s = 0; s < ATT_SLOTS; ++s) {
        const u32 item = warp + s * ATT_WARPS;
        if (!active[s]) {
            continue;
        }
        const u32 row = row_begin + item / heads_per_block, head = head0 + item % heads_per_block;
        const float inv = 1.0f / l[s];
#pragma unroll
        for (int c = 0; c < DPL; ++c) {
            const u32 dim = lane + WARP_SIZE * c;
            if (dim < d) {
                out[row * qw + head * d + dim] = acc[s][c] * inv;
            }
        }
    }
}

TESSERA_KERNEL void __launch_bounds__(ATT_THREADS)
    attention_f32_d32(const float* q, const float* k, const float* v, const u32* tiles, const u64* prefix_kv, u32 n_heads,
                         u32 n_kv_heads, u32 d, u32 heads_per_block, float scale, float* out) {
    attention<1>(q, k, v, tiles, prefix_kv, n_heads, n_kv_heads, d, heads_per_block, scale, out);
}
TESSERA_KERNEL void __launch_bounds__(ATT_THREADS)
    attention_f32_d64(const float* q, const float* k, const float* v, const u32* tiles, const u64* prefix_kv, u32 n_heads,
                         u32 n_kv_heads, u32 d, u32 heads_per_block, float scale, float* out) {
    attention<2>(q, k, v, tiles, prefix_kv, n_heads, n_kv_heads, d, heads_per_block, scale, out);
}
TESSERA_KERNEL void __launch_bounds__(ATT_THREADS)
    attention_f32_d128(const float* q, const float* k, const float* v, const u32* tiles, const u64* prefix_kv, u32 n_heads,
                          u32 n_kv_heads, u32 d, u32 heads_per_block, float scale, float* out) {
    attention<4>(q, k, v, tiles, prefix_kv, n_heads, n_kv_heads, d, heads_per_block, scale, out);
}
