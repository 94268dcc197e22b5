// attention_tc.cuh — what the tensor-core attention kernels share (v2 and v3
// in attention.cu on mma.sync, v4 in attention_wgmma.cu on wgmma): the block's
// warps (8 of them, each one query head × 16 rows of the tile, GQA heads
// grouped per KV head), Q staged in f16 and pre-scaled, the online softmax of a
// key tile on the m16n8 C layout, and the rows' output. Spliced into each
// module after common.cuh (crates/backend-cuda/src/kernels.rs), like it.
#pragma once

#define ATT_MMA_WARPS 8
#define ATT_MMA_THREADS (ATT_MMA_WARPS * WARP_SIZE)

// Four f32 from global memory (16-byte aligned: D is a multiple of 16), each
// multiplied by `scale` (Q's softmax scale), rounded to four f16 in shared
// memory. A function apart from attention.cu's f32x4_to_f16: without
// fast-math the compiler keeps a multiplication by a 1.0f default (it would
// quiet a signalling NaN), 32 FMUL per K/V tile.
static __device__ __forceinline__ void f32x4_to_f16_scaled(const float* src, u16* dst, float scale) {
    u32 w[4];
    load_16(w, src);
    store_8(dst, pack_f16x2(__int_as_float(int(w[0])) * scale, __int_as_float(int(w[1])) * scale),
            pack_f16x2(__int_as_float(int(w[2])) * scale, __int_as_float(int(w[3])) * scale));
}

// The query head and rows one warp of a tensor-core attention block takes:
// the block holds the query heads of one KV head (heads_per_block of them, a
// divisor of the group) × 16-row tiles; warp w takes head w % heads_per_block
// of the block's and rows row_begin + 16·(w / heads_per_block) on (rows_here of
// them, 0 past the tile).
struct AttWarp {
    u32 kv_head, head, row0, rows_here;
};

static __device__ __forceinline__ AttWarp att_warp(u32 row_begin, u32 row_count, u32 n_heads, u32 n_kv_heads,
                                                   u32 heads_per_block) {
    const u32 group = n_heads / n_kv_heads;
    const u32 chunks = group / heads_per_block;
    const u32 kv_head = blockIdx.y / chunks;
#ifdef TESSERA_MUTATE_ATTENTION_GQA
    // Mutation test build: query heads mapped to KV heads round-robin instead of
    // in consecutive groups (the other common GQA convention, wrong here).
    const u32 head0 = (blockIdx.y % chunks) * heads_per_block * n_kv_heads + kv_head;
    const u32 head_step = n_kv_heads;
#else
    const u32 head0 = kv_head * group + (blockIdx.y % chunks) * heads_per_block;
    const u32 head_step = 1;
#endif
    const u32 warp = threadIdx.x / WARP_SIZE;
    const u32 row0 = row_begin + (warp / heads_per_block) * 16;
    const u32 rows_left = row0 < row_begin + row_count ? row_begin + row_count - row0 : 0;
    return AttWarp{kv_head, head0 + (warp % heads_per_block) * head_step, row0, rows_left < 16 ? rows_left : 16};
}

// Q: the warp stages its 16 rows (zeros past the tile) as f16 in its own part
// of `q_shared` (rows of STRIDE f16). Scores come out in log2 units: Q is
// multiplied by scale · log2(e) before it is rounded, so exp2 of a score is the
// softmax's exp. Returns this lane's ldmatrix row for Q's A fragments: matrices
// 0/1 rows 0-7/8-15 of columns kk·16.., 2/3 the same of kk·16+8...
template <int D, int STRIDE>
static __device__ __forceinline__ const u16* att_stage_q(const float* q, const AttWarp& w, u64 qw, float scale,
                                                         u16* q_shared) {
    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const float q_scale = scale * 1.4426950408889634f;
    u16* my_q = q_shared + warp * 16 * STRIDE;
    for (u32 id = lane; id < 16 * (D / 4); id += WARP_SIZE) {
        const u32 r = id / (D / 4), c = (id % (D / 4)) * 4;
        if (r < w.rows_here) {
            f32x4_to_f16_scaled(q + u64(w.row0 + r) * qw + u64(w.head) * D + c, my_q + r * STRIDE + c, q_scale);
        } else {
            store_8(my_q + r * STRIDE + c, 0u, 0u);
        }
    }
    __syncwarp();
    return my_q + ((lane / 8) & 1) * 8 * STRIDE + (lane % 8) * STRIDE + ((lane / 8) >> 1) * 8;
}

// The online softmax of one key tile, shared by the tensor-core kernels. `s`
// holds S (scores in log2 units) in the m16n8 C layout — rows g (e = 0, 1) and
// g + 8 (e = 2, 3) of 8-key tile j, keys 8j + 2t + e of the tile — and leaves P
// there. Unless `whole`, score (j, e) of row h is masked unless 8j + e is at most
// `limit[h]` (its last visible key minus the tile's first and 2t; the causal
// mutant also needs `remaining`, the keys left from that same origin). Each
// row's max and sum run across the lane quad. Returns in `correction` what O
// must be multiplied by before this tile's P·V is added (att_rescale): the
// wgmma kernel applies it only once its previous P·V has completed.
template <int KEYS>
static __device__ __forceinline__ void att_softmax_scores(float (&s)[KEYS / 8][4], bool whole, const int (&limit)[2],
                                                          int remaining, float (&m)[2], float (&l)[2],
                                                          float (&correction)[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float tile_max = negative_infinity();
#pragma unroll
        for (int j = 0; j < KEYS / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float& score = s[j][2 * h + e];
                if (!whole) {
#ifdef TESSERA_MUTATE_ATTENTION_CAUSAL
                    // Mutation test build: a row also sees the key after its own.
                    const bool visible = j * 8 + e <= limit[h] + 1 && j * 8 + e < remaining;
#else
                    const bool visible = j * 8 + e <= limit[h];
                    (void)remaining;
#endif
                    score = visible ? score : negative_infinity();
                }
                tile_max = fmaxf(tile_max, score);
            }
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_MASK, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_MASK, tile_max, 2));
        const float new_m = fmaxf(m[h], tile_max);
        // No key visible yet: nothing to add, nothing to rescale.
        const float base = new_m == negative_infinity() ? 0.0f : new_m;
        correction[h] = exp2_ftz(m[h] - base);  // exp2(-inf) = 0 on the first tile
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < KEYS / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float& p = s[j][2 * h + e];
                p = exp2_ftz(p - base);
                sum += p;
            }
        }
        l[h] = l[h] * correction[h] + sum;  // this lane's share; the quad adds up at the end
        m[h] = new_m;
    }
}

// O times the rows' corrections, only when one of this lane's rows has a new
// maximum (exp2(0) is exactly 1): on long contexts most tiles leave it alone.
template <int D>
static __device__ __forceinline__ void att_rescale(float (&o)[D / 8][4], const float (&correction)[2]) {
    if (correction[0] != 1.0f || correction[1] != 1.0f) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            o[n][0] *= correction[0];
            o[n][1] *= correction[0];
            o[n][2] *= correction[1];
            o[n][3] *= correction[1];
        }
    }
}

// Both, for the mma.sync kernels (their P·V is synchronous).
template <int KEYS, int D>
static __device__ __forceinline__ void att_softmax_tile(float (&s)[KEYS / 8][4], bool whole, const int (&limit)[2],
                                                        int remaining, float (&m)[2], float (&l)[2],
                                                        float (&o)[D / 8][4]) {
    float correction[2];
    att_softmax_scores<KEYS>(s, whole, limit, remaining, m, l, correction);
    att_rescale<D>(o, correction);
}

// The warp's output rows: the quad's sums added up, O divided by them, stored
// at `dst` (the warp's first row, this head) in rows `qw` apart; rows past
// `rows_here` are not stored.
template <int D>
static __device__ __forceinline__ void att_store_rows(float (&l)[2], const float (&o)[D / 8][4], u32 rows_here,
                                                      float* dst, u64 qw) {
    const u32 lane = threadIdx.x % WARP_SIZE, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        l[h] += __shfl_xor_sync(FULL_MASK, l[h], 1);
        l[h] += __shfl_xor_sync(FULL_MASK, l[h], 2);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const u32 r = g + 8 * h;
        if (r >= rows_here) {
            continue;
        }
        const float inv = 1.0f / l[h];
        float* row = dst + u64(r) * qw;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            row[n * 8 + 2 * t] = o[n][2 * h] * inv;
            row[n * 8 + 2 * t + 1] = o[n][2 * h + 1] * inv;
        }
    }
}
