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

// DPL: output dimensions per lane (head_dim <= 32 · DPL). Dynamic shared memory:
// q [16][d], k [32][d + 1] (padded: lane j reads key j without bank conflicts),
// v [32][d], p [4 warps][32].
template <int DPL>
static __device__ __forceinline__ void attention(const float* q, const float* k, const float* v, const u32* tiles,
                                                 const u64* prefix_kv, u32 n_heads, u32 n_kv_heads, u32 d,
                                                 u32 heads_per_block, float scale, float* out) {
    DYNAMIC_SHARED(float, smem);
    float* qs = smem;
    float* ks = qs + ATT_ITEMS * d;
    float* vs = ks + ATT_KEYS * (d + 1);
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

    for (u32 id = threadIdx.x; id < ATT_ITEMS * d; id += ATT_THREADS) {
        const u32 item = id / d, c = id % d;
        const u32 row = row_begin + item / heads_per_block, head = head0 + item % heads_per_block;
        qs[id] = item < items ? q[row * qw + head * d + c] : 0.0f;
    }

    float m[ATT_SLOTS], l[ATT_SLOTS], acc[ATT_SLOTS][DPL];
#pragma unroll
    for (int s = 0; s < ATT_SLOTS; ++s) {
        m[s] = negative_infinity();
        l[s] = 0.0f;
#pragma unroll
        for (int c = 0; c < DPL; ++c) {
            acc[s][c] = 0.0f;
        }
    }

    // The last row of the tile sees the most keys.
    const u32 n_keys = prefix_len + (row_begin + row_count - seq_start);
    for (u32 t0 = 0; t0 < n_keys; t0 += ATT_KEYS) {
        __syncthreads();  // the previous tile is consumed (and, first time, q is stored)
        for (u32 id = threadIdx.x; id < ATT_KEYS * d; id += ATT_THREADS) {
            const u32 j = id / d, c = id % d, key = t0 + j;
            float key_value = 0.0f, value = 0.0f;
            if (key < prefix_len) {
                const u64 at = key * kvw + kv_head * d + c;
                key_value = prefix_k[at];
                value = prefix_v[at];
            } else if (key < n_keys) {
                const u64 at = (seq_start + key - prefix_len) * kvw + kv_head * d + c;
                key_value = k[at];
                value = v[at];
            }
            ks[j * (d + 1) + c] = key_value;
            vs[j * d + c] = value;
        }
#ifndef TESSERA_MUTATE_ATTENTION_BARRIER  // mutation test build: the barrier is missing
        __syncthreads();
#endif
#pragma unroll
        for (int s = 0; s < ATT_SLOTS; ++s) {
            const u32 item = warp + s * ATT_WARPS;
            if (item >= items) {
                continue;  // warp-uniform
            }
            // Keys 0 ..= limit are visible to this row (the whole prefix, then causal).
            const u32 limit = prefix_len + row_begin + item / heads_per_block - seq_start;
            const u32 key = t0 + lane;
            float score = negative_infinity();
            if (key <= limit) {
                float dot = 0.0f;
                for (u32 c = 0; c < d; ++c) {
                    dot = fmaf(qs[item * d + c], ks[lane * (d + 1) + c], dot);
                }
                score = dot * scale;
            }
            const float tile_max = warp_max(score);
            if (tile_max == negative_infinity()) {
                continue;  // every key of this tile is in the row's future (warp-uniform)
            }
            const float new_m = fmaxf(m[s], tile_max);
            const float correction = expf(m[s] - new_m);
            const float p = key <= limit ? expf(score - new_m) : 0.0f;
            l[s] = l[s] * correction + warp_sum(p);
            m[s] = new_m;
            ps[warp * WARP_SIZE + lane] = p;
            __syncwarp();
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                acc[s][c] *= correction;
            }
            for (u32 j = 0; j < ATT_KEYS; ++j) {
                const float pj = ps[warp * WARP_SIZE + j];
#pragma unroll
                for (int c = 0; c < DPL; ++c) {
                    const u32 dim = lane + WARP_SIZE * c;
                    if (dim < d) {
                        acc[s][c] = fmaf(pj, vs[j * d + dim], acc[s][c]);
                    }
                }
            }
            __syncwarp();  // p consumed before the next slot overwrites it
        }
    }

#pragma unroll
    for (int s = 0; s < ATT_SLOTS; ++s) {
        const u32 item = warp + s * ATT_WARPS;
        if (item >= items) {
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
