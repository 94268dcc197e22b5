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

// ------------------------------------------------- f16 tensor cores (W8A16 mode)
//
// The same attention (packed sequences, shared prefixes visited first, causal
// inside a sequence, GQA) on mma.sync m16n8k16 f16 tiles with f32 accumulation,
// flash style: a warp owns 16 query rows of one head, kept in shared memory and
// read as A fragments at each key tile (in registers they would push the key
// loop past 128 registers into local memory); per tile of 32 keys it computes
// S = Q·Kᵀ (f32), the online softmax
// in f32 on S's accumulator registers, rounds P to f16 in the very registers an
// A fragment wants (an m16n8 C fragment pair is an m16n8k16 A fragment), and adds
// P·V to its f32 output. Q, K and V are rounded to f16 as they enter shared
// memory (the activations stay f32 in global memory). A block is 8 warps: the
// query heads of one KV head it holds (heads_per_block, a divisor of the group,
// at most 8) × 16-row tiles, so every K/V tile it converts serves them all.
//
// Shared memory (dynamic, sizeof(AttMmaShared<D>): 52,224 bytes at D = 128, over
// the 48 KiB default, so the launcher opts the kernel in): rows of D f16 padded
// by 8 (16 bytes: the 8 rows one ldmatrix phase reads fall in 8 distinct 16-byte
// bank groups for every D that is a multiple of 16); Q of the 8 warps, then one
// tile of K and of V.
#define ATT_MMA_WARPS 8
#define ATT_MMA_THREADS (ATT_MMA_WARPS * WARP_SIZE)
#define ATT_MMA_KEYS 32

template <int D>
struct __align__(16) AttMmaShared {
    static constexpr int STRIDE = D + 8;  // f16 per row
    u16 q[ATT_MMA_WARPS * 16 * STRIDE];
    u16 k[ATT_MMA_KEYS * STRIDE];
    u16 v[ATT_MMA_KEYS * STRIDE];
};

// Four f32 from global memory (16-byte aligned: D is a multiple of 16) rounded
// to four f16 in shared memory.
static __device__ __forceinline__ void f32x4_to_f16(const float* src, u16* dst) {
    u32 w[4];
    load_16(w, src);
    store_8(dst, pack_f16x2(__int_as_float(int(w[0])), __int_as_float(int(w[1]))),
            pack_f16x2(__int_as_float(int(w[2])), __int_as_float(int(w[3]))));
}

// The same, each value multiplied by `scale` first (Q's softmax scale). A
// separate function: without fast-math the compiler keeps a multiplication by
// a 1.0f default (it would quiet a signalling NaN), 32 FMUL per K/V tile.
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

// O += P·V for one key tile: P's C fragments are the A fragments (keys
// 16ks..16ks+15); ldmatrix.trans on V's key rows (`vs`, rows of STRIDE f16)
// gives B fragments (keys 2t, 2t+1 at dim g) for two tiles of 8 dims at once.
template <int KEYS, int D, int STRIDE>
static __device__ __forceinline__ void att_pv_tile(const float (&s)[KEYS / 8][4], const u16* vs,
                                                   float (&o)[D / 8][4]) {
    const u32 lane = threadIdx.x % WARP_SIZE;
#pragma unroll
    for (int ks = 0; ks < KEYS / 16; ++ks) {
        const u32 a[4] = {pack_f16x2(s[2 * ks][0], s[2 * ks][1]), pack_f16x2(s[2 * ks][2], s[2 * ks][3]),
                          pack_f16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                          pack_f16x2(s[2 * ks + 1][2], s[2 * ks + 1][3])};
        const u32 mat = lane / 8;
        const u16* vrow = vs + (ks * 16 + (mat & 1) * 8 + lane % 8) * STRIDE + (mat >> 1) * 8;
#pragma unroll
        for (int n = 0; n < D / 8; n += 2) {
            int f[4];
            ldmatrix_x4_trans(f, vrow + n * 8);
            const u32 b0[2] = {u32(f[0]), u32(f[1])};
            const u32 b1[2] = {u32(f[2]), u32(f[3])};
            mma_f16_m16n8k16(o[n], a, b0);
            mma_f16_m16n8k16(o[n + 1], a, b1);
        }
    }
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

template <int D>
static __device__ __forceinline__ void attention_mma(const float* q, const float* k, const float* v, const u32* tiles,
                                                     const u64* prefix_kv, u32 n_heads, u32 n_kv_heads,
                                                     u32 heads_per_block, float scale, float* out) {
    static_assert(D % 16 == 0 && D <= 128, "head_dim a multiple of 16, at most 128");
    constexpr int STRIDE = AttMmaShared<D>::STRIDE;
    DYNAMIC_SHARED(AttMmaShared<D>, shared);  // dynamic: the emulator poisons it per block
    AttMmaShared<D>& sm = *shared;
    const u32* tile = tiles + 5 * blockIdx.x;
    const u32 seq_start = tile[0], row_begin = tile[1], row_count = tile[2], prefix_len = tile[3];
    const float* prefix_k = prefix_len > 0 ? reinterpret_cast<const float*>(prefix_kv[2 * tile[4]]) : k;
    const float* prefix_v = prefix_len > 0 ? reinterpret_cast<const float*>(prefix_kv[2 * tile[4] + 1]) : v;
    const AttWarp w = att_warp(row_begin, row_count, n_heads, n_kv_heads, heads_per_block);
    const u32 kv_head = w.kv_head, head = w.head, row0 = w.row0, rows_here = w.rows_here;
    const bool warp_active = rows_here > 0;  // heads_per_block divides the 8 warps
    const u64 qw = u64(n_heads) * D, kvw = u64(n_kv_heads) * D;
    const u32 lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
    const u16* q_frag = att_stage_q<D, STRIDE>(q, w, qw, scale, sm.q);

    // Rows g and g + 8 of the warp: the last key each sees (prefix keys count
    // first); a row past the tile sees nothing and is never stored.
    u32 last_key[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        last_key[h] = prefix_len + (row0 + g + 8 * h - seq_start);
    }
    float m[2] = {negative_infinity(), negative_infinity()};
    float l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            o[n][e] = 0.0f;
        }
    }

    const u32 n_keys = prefix_len + (row_begin + row_count - seq_start);
    // The warp's last row sees the most keys: tiles past its last key are skipped.
    const u32 warp_last_key = prefix_len + (row0 + (rows_here > 0 ? rows_here - 1 : 0) - seq_start);
    // The K/V loader: a thread always converts the same 16-byte column chunk
    // (chunks per row divide the block's threads), of rows my_row, my_row +
    // ROWS_PER_PASS, ...: the column's offsets and the two sources' bases are
    // computed once, not per tile and chunk.
    constexpr u32 CHUNKS = D / 4;
    constexpr u32 ROWS_PER_PASS = ATT_MMA_THREADS / CHUNKS;
    constexpr u32 PASSES = (ATT_MMA_KEYS + ROWS_PER_PASS - 1) / ROWS_PER_PASS;
    const u32 my_row = threadIdx.x / CHUNKS, my_col = (threadIdx.x % CHUNKS) * 4;
    const u64 column = u64(kv_head) * D + my_col;
    const float* my_prefix_k = prefix_k + column;
    const float* my_prefix_v = prefix_v + column;
    const float* my_k = k + u64(seq_start) * kvw + column;
    const float* my_v = v + u64(seq_start) * kvw + column;
    for (u32 t0 = 0; t0 < n_keys; t0 += ATT_MMA_KEYS) {
        __syncthreads();  // the previous tile consumed
#pragma unroll
        for (u32 pass = 0; pass < PASSES; ++pass) {
            const u32 j = my_row + pass * ROWS_PER_PASS, key = t0 + j;
            if (ROWS_PER_PASS > ATT_MMA_KEYS && j >= ATT_MMA_KEYS) {
                break;  // small heads: more chunks than a tile holds
            }
            u16* kd = sm.k + j * STRIDE + my_col;
            u16* vd = sm.v + j * STRIDE + my_col;
            if (key < prefix_len) {
                f32x4_to_f16(my_prefix_k + u64(key) * kvw, kd);
                f32x4_to_f16(my_prefix_v + u64(key) * kvw, vd);
            } else if (key < n_keys) {
                f32x4_to_f16(my_k + u64(key - prefix_len) * kvw, kd);
                f32x4_to_f16(my_v + u64(key - prefix_len) * kvw, vd);
            } else {
                store_8(kd, 0u, 0u);
                store_8(vd, 0u, 0u);
            }
        }
#ifndef TESSERA_MUTATE_ATTENTION_BARRIER  // mutation test build: the barrier is missing
        __syncthreads();
#endif
        if (!warp_active || t0 > warp_last_key) {
            continue;  // warp-uniform
        }
        // S = Q·Kᵀ: 4 tiles of 8 keys; ldmatrix on K rows gives B fragments
        // (lane: key g, dims 2t, 2t + 1) for two k steps at once.
        float s[4][4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[j][e] = 0.0f;
            }
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2) {
            u32 qa[2][4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                int f[4];
                const u32 mat = lane / 8;
                ldmatrix_x4(f, sm.k + (j * 8 + lane % 8) * STRIDE + kk * 16 + mat * 8);
                if (j == 0) {
                    // Q's A fragments for k steps kk and kk + 1, read after the
                    // first K fragment: so the first shared-memory read after
                    // the K/V tile is written is of that tile, which is where
                    // the emulator's lane order exposes a missing barrier (the
                    // mutation build without it must fail).
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        if (kk + h < D / 16) {
                            int fq[4];
                            ldmatrix_x4(fq, q_frag + (kk + h) * 16);
#pragma unroll
                            for (int i = 0; i < 4; ++i) {
                                qa[h][i] = u32(fq[i]);
                            }
                        }
                    }
                }
                const u32 b0[2] = {u32(f[0]), u32(f[1])};
                mma_f16_m16n8k16(s[j], qa[0], b0);
                if (kk + 1 < D / 16) {
                    const u32 b1[2] = {u32(f[2]), u32(f[3])};
                    mma_f16_m16n8k16(s[j], qa[1], b1);
                }
            }
        }
        // Masks only where some row of the warp stops inside the tile (its first
        // row sees the fewest keys); elsewhere every score is visible.
        const bool whole = t0 + ATT_MMA_KEYS - 1 <= prefix_len + (row0 - seq_start);
        const int origin = int(t0 + 2 * t);
        const int limit[2] = {int(last_key[0]) - origin, int(last_key[1]) - origin};
        att_softmax_tile<ATT_MMA_KEYS, D>(s, whole, limit, int(n_keys) - origin, m, l, o);
        att_pv_tile<ATT_MMA_KEYS, D, STRIDE>(s, sm.v, o);
    }
    if (!warp_active) {
        return;
    }
    att_store_rows<D>(l, o, rows_here, out + u64(row0) * qw + u64(head) * D, qw);
}

TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 2)
    attention_mma_d16(const float* q, const float* k, const float* v, const u32* tiles, const u64* prefix_kv,
                      u32 n_heads, u32 n_kv_heads, u32 heads_per_block, float scale, float* out) {
    attention_mma<16>(q, k, v, tiles, prefix_kv, n_heads, n_kv_heads, heads_per_block, scale, out);
}
TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 2)
    attention_mma_d32(const float* q, const float* k, const float* v, const u32* tiles, const u64* prefix_kv,
                      u32 n_heads, u32 n_kv_heads, u32 heads_per_block, float scale, float* out) {
    attention_mma<32>(q, k, v, tiles, prefix_kv, n_heads, n_kv_heads, heads_per_block, scale, out);
}
TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 2)
    attention_mma_d64(const float* q, const float* k, const float* v, const u32* tiles, const u64* prefix_kv,
                      u32 n_heads, u32 n_kv_heads, u32 heads_per_block, float scale, float* out) {
    attention_mma<64>(q, k, v, tiles, prefix_kv, n_heads, n_kv_heads, heads_per_block, scale, out);
}
TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 2)
    attention_mma_d128(const float* q, const float* k, const float* v, const u32* tiles, const u64* prefix_kv,
                      u32 n_heads, u32 n_kv_heads, u32 heads_per_block, float scale, float* out) {
    attention_mma<128>(q, k, v, tiles, prefix_kv, n_heads, n_kv_heads, heads_per_block, scale, out);
}

// ------------------------------------------- v3: f16 K/V, cp.async double buffer
//
// attention_f16kv_d*: the tensor-core attention above with K and V already in
// f16 in global memory (kv_to_f16 writes them once per layer: the sequences'
// rows and every prefix's, into one buffer; the old kernel converted each K/V
// tile again in every block that read it), so a tile is copied as is:
// cp.async into one of two shared-memory buffers while the warps compute the
// other — the loads of tile t + 1 are in flight during tile t's mma, one
// barrier per tile. Tiles are 64 keys (128 HMMA per warp and tile at d = 128,
// twice the old tile's, so the per-tile softmax bookkeeping, barrier and loop
// cost half as much per mma). Q, its scale, the masks, the online softmax and
// the GQA grouping are the old kernel's.
//
// A tile is five u32 as above, but the fifth is the prefix's first row in the
// f16 buffers (not its index): key j of a sequence is row prefix_row + j for
// j < prefix_len, else token_row0 + seq_start + (j - prefix_len).
#define ATT16_KEYS 64

template <int D>
struct __align__(16) Att16Shared {
    static constexpr int STRIDE = D + 8;  // f16 per row, as AttMmaShared
    u16 q[ATT_MMA_WARPS * 16 * STRIDE];
    u16 k[2][ATT16_KEYS * STRIDE];
    u16 v[2][ATT16_KEYS * STRIDE];
};

// dst[i] = f16(src[i]) (round to nearest even) for i < n: a layer's K or V
// rows (or a prefix's) into the f16 buffers attention_f16kv reads.
TESSERA_KERNEL void kv_to_f16(const float* src, u64 n, u16* dst) {
    const u64 stride = u64(gridDim.x) * blockDim.x;
    for (u64 i = u64(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = f32_to_f16_rn(src[i]);
    }
}

// Issues the cp.async copies of key tile `t0` (K and V, 64 keys × D f16) into
// buffer `buf`; keys past n_keys are zero-filled. Thread tid copies chunk
// tid % (D/8) of key rows tid / (D/8) + i · 256/(D/8) of K, then of V: its
// column, its first row and each copy's source matrix are fixed (`k_src`,
// `v_src`: own rows, shifted so that key j is row j; `*_prefix` likewise).
template <int D>
static __device__ __forceinline__ void att16_issue_tile(u16* k_dst, u16* v_dst, u32 t0, u32 n_keys, u32 prefix_len,
                                                        const u16* k_prefix, const u16* k_own, const u16* v_prefix,
                                                        const u16* v_own, u64 kvw) {
    constexpr u32 CHUNKS = D / 8;  // 16-byte chunks per row
    constexpr u32 ROWS_PER_COPY = ATT_MMA_THREADS / CHUNKS;
    constexpr u32 COPIES = (ATT16_KEYS + ROWS_PER_COPY - 1) / ROWS_PER_COPY;  // per matrix
    constexpr int STRIDE = Att16Shared<D>::STRIDE;
    const u32 j0 = threadIdx.x / CHUNKS, col = (threadIdx.x % CHUNKS) * 8;
#pragma unroll
    for (u32 i = 0; i < COPIES; ++i) {
        const u32 j = j0 + i * ROWS_PER_COPY;
        if (ROWS_PER_COPY * COPIES > ATT16_KEYS && j >= ATT16_KEYS) {
            break;  // small heads: more threads than chunks
        }
        const u32 key = t0 + j;
        const bool valid = key < n_keys;
        const u64 offset = u64(valid ? key : 0) * kvw + col;
        const bool in_prefix = key < prefix_len;
        cp_async_16(k_dst + j * STRIDE + col, (in_prefix ? k_prefix : k_own) + offset, valid);
        cp_async_16(v_dst + j * STRIDE + col, (in_prefix ? v_prefix : v_own) + offset, valid);
    }
}

template <int D>
static __device__ __forceinline__ void attention_f16kv(const float* q, const u16* k16, const u16* v16,
                                                       const u32* tiles, u32 token_row0, u32 n_heads, u32 n_kv_heads,
                                                       u32 heads_per_block, float scale, float* out) {
    static_assert(D % 16 == 0 && D <= 128, "head_dim a multiple of 16, at most 128");
    constexpr int STRIDE = Att16Shared<D>::STRIDE;
    DYNAMIC_SHARED(Att16Shared<D>, shared);
    require_dynamic_shared(sizeof(Att16Shared<D>));
    Att16Shared<D>& sm = *shared;
    const u32* tile = tiles + 5 * blockIdx.x;
    const u32 seq_start = tile[0], row_begin = tile[1], row_count = tile[2], prefix_len = tile[3];
    const u32 prefix_row = tile[4];
    const AttWarp w = att_warp(row_begin, row_count, n_heads, n_kv_heads, heads_per_block);
    const u32 kv_head = w.kv_head, row0 = w.row0, rows_here = w.rows_here;
    const bool warp_active = rows_here > 0;
    const u64 qw = u64(n_heads) * D, kvw = u64(n_kv_heads) * D;
    const u32 lane = threadIdx.x % WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;

    // This KV head's columns of the prefix's rows and of the sequence's own.
    const u16* k_prefix = k16 + u64(prefix_row) * kvw + u64(kv_head) * D;
    const u16* v_prefix = v16 + u64(prefix_row) * kvw + u64(kv_head) * D;
    // Own rows shifted back by the prefix, so that key j (>= prefix_len) is row j
    // of both (the shifted pointer is only ever offset forward past it).
    const u16* k_own = k16 + (u64(token_row0 + seq_start) * kvw + u64(kv_head) * D) - u64(prefix_len) * kvw;
    const u16* v_own = v16 + (u64(token_row0 + seq_start) * kvw + u64(kv_head) * D) - u64(prefix_len) * kvw;
    const u32 n_keys = prefix_len + (row_begin + row_count - seq_start);
    // The first tile's copies go out before Q is staged, so they overlap it.
    att16_issue_tile<D>(sm.k[0], sm.v[0], 0, n_keys, prefix_len, k_prefix, k_own, v_prefix, v_own, kvw);
    cp_async_commit();

    const u16* q_frag = att_stage_q<D, STRIDE>(q, w, qw, scale, sm.q);
    // Q's A fragments: those of k steps 2.. read once into registers (24 at d =
    // 128), so the key loop's shared-memory reads — its bound — are nearly all
    // K's and V's; the first two k steps' are read in the loop, after the
    // tile's first K fragment, so the first shared-memory read after the
    // barrier is of the tile, where the emulator's warp order exposes a
    // missing barrier (as in attention_mma).
    u32 qf[D / 16][4];
#pragma unroll
    for (int kk = 2; kk < D / 16; ++kk) {
        int fq[4];
        ldmatrix_x4(fq, q_frag + kk * 16);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            qf[kk][i] = u32(fq[i]);
        }
    }

    u32 last_key[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        last_key[h] = prefix_len + (row0 + g + 8 * h - seq_start);
    }
    float m[2] = {negative_infinity(), negative_infinity()};
    float l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            o[n][e] = 0.0f;
        }
    }
    const u32 warp_last_key = prefix_len + (row0 + (rows_here > 0 ? rows_here - 1 : 0) - seq_start);
    u32 buf = 0;
    for (u32 t0 = 0; t0 < n_keys; t0 += ATT16_KEYS) {
        // This tile has landed; after the barrier every thread's copies are
        // visible and every warp is done with the other buffer (the last tile),
        // which the next tile's copies then fill.
#ifdef TESSERA_MUTATE_ATTENTION_WAIT
        cp_async_wait<1>();  // mutation test build: does not wait for the tile
#else
        cp_async_wait<0>();
#endif
#ifndef TESSERA_MUTATE_ATTENTION_BARRIER  // mutation test build: the barrier is missing
        __syncthreads();
#endif
        if (t0 + ATT16_KEYS < n_keys) {
            att16_issue_tile<D>(sm.k[buf ^ 1], sm.v[buf ^ 1], t0 + ATT16_KEYS, n_keys, prefix_len, k_prefix, k_own,
                                v_prefix, v_own, kvw);
        }
        cp_async_commit();
#ifdef TESSERA_MUTATE_ATTENTION_BUFFER
        const u32 read = buf ^ 1;  // mutation test build: computes on the buffer being filled
#else
        const u32 read = buf;
#endif
        buf ^= 1;
        if (!warp_active || t0 > warp_last_key) {
            continue;  // warp-uniform
        }
        const u16* ks = sm.k[read];
        const u16* vs = sm.v[read];
        // S = Q·Kᵀ: 8 tiles of 8 keys.
        float s[ATT16_KEYS / 8][4];
#pragma unroll
        for (int j = 0; j < ATT16_KEYS / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[j][e] = 0.0f;
            }
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2) {
#pragma unroll
            for (int j = 0; j < ATT16_KEYS / 8; ++j) {
                int f[4];
                ldmatrix_x4(f, ks + (j * 8 + lane % 8) * STRIDE + kk * 16 + (lane / 8) * 8);
                if (kk == 0 && j == 0) {
#pragma unroll
                    for (int h = 0; h < 2 && h < D / 16; ++h) {
                        int fq[4];
                        ldmatrix_x4(fq, q_frag + h * 16);
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            qf[h][i] = u32(fq[i]);
                        }
                    }
                }
                const u32 b0[2] = {u32(f[0]), u32(f[1])};
                mma_f16_m16n8k16(s[j], qf[kk], b0);
                if (kk + 1 < D / 16) {
                    const u32 b1[2] = {u32(f[2]), u32(f[3])};
                    mma_f16_m16n8k16(s[j], qf[kk + 1], b1);
                }
            }
        }
        const bool whole = t0 + ATT16_KEYS - 1 <= prefix_len + (row0 - seq_start);
        // Score (j, e) is key t0 + 8j + 2t + e: visible while 8j + e is at most
        // the limit (one subtraction per row, then compile-time offsets).
        const int origin = int(t0 + 2 * t);
        const int limit[2] = {int(last_key[0]) - origin, int(last_key[1]) - origin};
        att_softmax_tile<ATT16_KEYS, D>(s, whole, limit, int(n_keys) - origin, m, l, o);
        att_pv_tile<ATT16_KEYS, D, STRIDE>(s, vs, o);
    }
    if (!warp_active) {
        return;
    }
    att_store_rows<D>(l, o, rows_here, out + u64(row0) * qw + u64(w.head) * D, qw);
}

// Grid (tiles, kv_heads · head chunks), 256 threads, sizeof(Att16Shared<D>)
// of dynamic shared memory (104,448 bytes at D = 128).
#define ATT16_PARAMS                                                                                              \
    const float *q, const u16 *k16, const u16 *v16, const u32 *tiles, u32 token_row0, u32 n_heads, u32 n_kv_heads, \
        u32 heads_per_block, float scale, float *out
#define ATT16_ARGS q, k16, v16, tiles, token_row0, n_heads, n_kv_heads, heads_per_block, scale, out
TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 2) attention_f16kv_d16(ATT16_PARAMS) {
    attention_f16kv<16>(ATT16_ARGS);
}
TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 2) attention_f16kv_d32(ATT16_PARAMS) {
    attention_f16kv<32>(ATT16_ARGS);
}
TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 1) attention_f16kv_d64(ATT16_PARAMS) {
    attention_f16kv<64>(ATT16_ARGS);
}
TESSERA_KERNEL void __launch_bounds__(ATT_MMA_THREADS, 1) attention_f16kv_d128(ATT16_PARAMS) {
    attention_f16kv<128>(ATT16_ARGS);
}

// ------------------------------------------- v4: wgmma (sm_90a), TMA-fed ring
//
// attention_wgmma_d{64,128}: v3's attention (the same f16 K rows, tiles, Q
// staging and scale, online softmax and GQA grouping) on Hopper's warpgroup
// mma. A block is three warpgroups: two consumers (warps 0-7, each warp the
// same head and 16 rows as in v3, so a warpgroup is one 64-row wgmma M tile:
// with 4 query heads per KV head, 4 heads × 16 rows) and a producer (warps
// 8-11, one lane issues; setmaxnreg gives its registers to the consumers).
//
// Per key tile (64 keys) a consumer warpgroup computes S = Q·Kᵀ with D/16
// wgmma m64n64k16 (A: Q's fragments, in registers for the whole loop; B: the
// K tile by descriptor), the online softmax on S's accumulators (the m16n8 C
// layout per warp, as v3's: att_softmax_scores serves both), rounds P to f16
// in the registers of an A fragment and adds P·V with four wgmma m64nDk16
// (B: Vᵀ, by descriptor). Tile i + 1's S and softmax run while tile i's P·V
// is in flight (FlashAttention-3's intra-warpgroup overlap; O is rescaled
// once that P·V has completed). Both B operands are K-major with the
// 128-byte swizzle, as the wgmma GEMM's: K rows are 64-dim halves of 128 bytes, and V
// is transposed once per layer (kv_to_f16_transposed: Vᵀ [kv_heads · D]
// [rows], each dimension's keys contiguous) so a tile's 64 keys of one
// dimension are one 128-byte row.
//
// The producer stages tiles with TMA (cp.async.bulk.tensor) into a ring of
// ATTWG_STAGES slots (a warpgroup holds two at a time: S(i + 1)'s and
// P·V(i)'s), each the K tile (D/64 boxes of 64 keys × 64 dims) and
// the Vᵀ tile (one box of 64 keys × D dims), completing on the slot's `full`
// mbarrier; each consumer warp frees a slot on its `empty` mbarrier once its
// warpgroup's wgmma reading it have completed. A TMA box is contiguous rows
// of one buffer, so keys are walked per segment: the prefix's tiles (from its
// first row), then the sequence's own (from its first row) — the same keys
// in v3's order, prefix first, but the prefix's last tile may be partial
// (its keys past the prefix are masked; they are other rows of the buffer,
// or zeros past its end, never NaN from f16 values a model produces). Tiles
// past every row of a warpgroup (causal) are waited for and freed unread.
#define ATTWG_KEYS 64
#define ATTWG_STAGES 3  // a warpgroup holds two slots (S of tile i + 1, P·V of tile i)
#define ATTWG_CONSUMER_WARPS ATT_MMA_WARPS
#define ATTWG_THREADS (ATT_MMA_THREADS + 128)

template <int D>
struct AttWgLayout {
    static_assert(D == 64 || D == 128, "head_dim 64 or 128: whole 128-byte K rows, an N the wgmma wrappers have");
    static constexpr int STRIDE = D + 8;  // Q staging rows, as v3
    static constexpr u32 Q_BYTES = ATT_MMA_WARPS * 16 * STRIDE * 2;
    static constexpr u32 K_BYTES = ATTWG_KEYS * D * 2;  // D/64 boxes of 64 keys × 128 bytes
    static constexpr u32 V_BYTES = D * ATTWG_KEYS * 2;  // Vᵀ: D rows × 128 bytes
    static constexpr u32 STAGE_BYTES = K_BYTES + V_BYTES;
    static constexpr u32 RING_OFFSET = (Q_BYTES + 1023) / 1024 * 1024;
    static constexpr u32 BAR_OFFSET = RING_OFFSET + ATTWG_STAGES * STAGE_BYTES;  // full[], then empty[]
    // Plus up to 1,024 bytes to align the layout (swizzle atoms).
    static constexpr u32 SHARED_BYTES = BAR_OFFSET + 2 * ATTWG_STAGES * 8 + 1024;
    static constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;  // 128 · 40 + 256 · 232 ≤ 65,536
};

// dst[c · pitch + r] = f16(src[r · cols + c]) (round to nearest even) for
// r < rows, c < cols: a layer's V rows (or a prefix's) transposed into the
// Vᵀ buffer attention_wgmma reads (`dst` at the rows' first column).
TESSERA_KERNEL void kv_to_f16_transposed(const float* src, u32 rows, u32 cols, u16* dst, u64 pitch) {
    const u64 n = u64(rows) * cols;
    const u64 stride = u64(gridDim.x) * blockDim.x;
    for (u64 i = u64(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        const u64 r = i / cols, c = i % cols;
        dst[c * pitch + r] = f32_to_f16_rn(src[i]);
    }
}

static __device__ __forceinline__ void att_wg_pv(float (&o)[32], const u32 (&p)[4], u64 desc) {
    wgmma_m64n64k16_f16(o, p, desc, true);
}
static __device__ __forceinline__ void att_wg_pv(float (&o)[64], const u32 (&p)[4], u64 desc) {
    wgmma_m64n128k16_f16(o, p, desc, true);
}

// What a consumer warp needs to mask tile i: prefix tiles come first; its
// rows' own-key indices (rows g and g + 8); the lane's g and t.
struct AttWgMasks {
    u32 prefix_tiles, prefix_len, own_keys;
    int last_own[2];
    u32 g, t;
};

// S = Q·Kᵀ for the K tile at shared address `k_address`, one commit group:
// k16 step kk reads dims 16kk.. of the 64 keys, in the 64-dim half kk / 4,
// 32 bytes a step into its 128-byte rows. The first step does not accumulate.
template <int D>
static __device__ __forceinline__ void att_wg_issue_s(float (&s)[ATTWG_KEYS / 2], u32 (&qf)[D / 16][4],
                                                      u32 k_address) {
    u64 desc[D / 16];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        desc[kk] = gmma_desc(k_address + (kk / 4) * 8192 + (kk % 4) * 32, 16, 1024, 1);
    }
    wgmma_fence_operands(qf);
    wgmma_fence_operands(desc);
    wgmma_fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        wgmma_m64n64k16_f16(s, qf[kk], desc[kk], kk > 0);
    }
    wgmma_commit();
}

// O += P·V for the Vᵀ tile at `v_address`, one commit group: k16 step ks
// reads keys 16ks.. of each dimension's 128-byte row.
template <int D>
static __device__ __forceinline__ void att_wg_issue_pv(float (&o)[D / 2], u32 (&p)[ATTWG_KEYS / 16][4],
                                                       u32 v_address) {
    u64 desc[ATTWG_KEYS / 16];
#pragma unroll
    for (int ks = 0; ks < ATTWG_KEYS / 16; ++ks) {
        desc[ks] = gmma_desc(v_address + ks * 32, 16, 1024, 1);
    }
    wgmma_fence_operands(p);
    wgmma_fence_operands(desc);
    wgmma_fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < ATTWG_KEYS / 16; ++ks) {
        att_wg_pv(o, p[ks], desc[ks]);
    }
    wgmma_commit();
}

// The masks of tile i and the online softmax on its scores: a prefix tile's
// keys past the prefix (every row sees the whole prefix), an own tile's keys
// past each row (causal). Score (j, e) is key t0 + 8j + 2t + e of the segment.
static __device__ __forceinline__ void att_wg_softmax(const AttWgMasks& k, u32 i, float (&s)[ATTWG_KEYS / 8][4],
                                                      float (&m)[2], float (&l)[2], float (&correction)[2]) {
    const bool in_prefix = i < k.prefix_tiles;
    const u32 t0 = (in_prefix ? i : i - k.prefix_tiles) * ATTWG_KEYS;
    const int origin = int(t0 + 2 * k.t);
    bool whole;
    int limit[2];
    int remaining;
    if (in_prefix) {
        whole = t0 + ATTWG_KEYS <= k.prefix_len;
#ifdef TESSERA_MUTATE_ATTENTION_PREFIX_EDGE
        // Mutation test build: the prefix's last tile also admits the key after it.
        limit[0] = limit[1] = int(k.prefix_len) - origin;
#else
        limit[0] = limit[1] = int(k.prefix_len) - 1 - origin;
#endif
        remaining = int(k.prefix_len) - origin;
    } else {
        whole = int(t0 + ATTWG_KEYS - 1) <= k.last_own[0] - int(k.g);
        limit[0] = k.last_own[0] - origin;
        limit[1] = k.last_own[1] - origin;
        remaining = int(k.own_keys) - origin;
    }
    att_softmax_scores<ATTWG_KEYS>(s, whole, limit, remaining, m, l, correction);
}

// P as the A operand: k16 step ks is keys 16ks.., the C fragments of 8-key
// tiles 2ks and 2ks + 1 (registers: row g keys 2t, 2t+1; row g + 8 the same;
// then both rows at keys 2t + 8, 2t + 9).
static __device__ __forceinline__ void att_wg_pack_p(const float (&s)[ATTWG_KEYS / 8][4],
                                                     u32 (&p)[ATTWG_KEYS / 16][4]) {
#pragma unroll
    for (int ks = 0; ks < ATTWG_KEYS / 16; ++ks) {
#ifdef TESSERA_MUTATE_ATTENTION_P_FRAGMENT
        // Mutation test build: registers 1 and 2 swapped (rows + 8 and keys + 8 confused).
        constexpr int r1 = 2, r2 = 1;
#else
        constexpr int r1 = 1, r2 = 2;
#endif
        p[ks][0] = pack_f16x2(s[2 * ks][0], s[2 * ks][1]);
        p[ks][r1] = pack_f16x2(s[2 * ks][2], s[2 * ks][3]);
        p[ks][r2] = pack_f16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
        p[ks][3] = pack_f16x2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
    }
}

// A consumer warp's reads of a ring slot are done (its warpgroup's wgmma on
// it waited for): one arrival on the slot's `empty` barrier.
static __device__ __forceinline__ void att_wg_free(u64* empty) {
    __syncwarp();
    if (threadIdx.x % WARP_SIZE == 0) {
        mbarrier_arrive(empty);
    }
}

template <int D>
static __device__ __forceinline__ void attention_wgmma(const float* q, const u32* tiles, u32 token_row0, u32 n_heads,
                                                       u32 n_kv_heads, u32 heads_per_block, float scale, float* out,
                                                       const TensorMap* k_map, const TensorMap* v_map) {
    using L = AttWgLayout<D>;
    constexpr int STRIDE = L::STRIDE;
    DYNAMIC_SHARED(unsigned char, smem_raw);
    require_dynamic_shared(L::SHARED_BYTES);
    const u32 raw_address = shared_address(smem_raw);
    const u32 pad = (1024 - raw_address % 1024) % 1024;
    unsigned char* smem = smem_raw + pad;
    const u32 smem_address = raw_address + pad;
    u64* full = reinterpret_cast<u64*>(smem + L::BAR_OFFSET);
    u64* empty = full + ATTWG_STAGES;

    const u32* tile = tiles + 5 * blockIdx.x;
    const u32 seq_start = tile[0], row_begin = tile[1], row_count = tile[2], prefix_len = tile[3];
    const u32 prefix_row = tile[4];
    // Own keys the block's last row sees; the prefix's tiles, then the own.
    const u32 own_keys = row_begin + row_count - seq_start;
    const u32 prefix_tiles = (prefix_len + ATTWG_KEYS - 1) / ATTWG_KEYS;
    const u32 n_tiles = prefix_tiles + (own_keys + ATTWG_KEYS - 1) / ATTWG_KEYS;

    if (threadIdx.x == 0) {
        for (int i = 0; i < ATTWG_STAGES; ++i) {
            mbarrier_init(&full[i], 1);
            mbarrier_init(&empty[i], ATTWG_CONSUMER_WARPS);
        }
        fence_mbarrier_init();
    }
    __syncthreads();
    const u32 warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    if (warp >= ATTWG_CONSUMER_WARPS) {
        setmaxnreg_dec<L::PRODUCER_REGS>();
        if (threadIdx.x == ATT_MMA_THREADS) {
            const u32 kv_head = blockIdx.y / (n_heads / n_kv_heads / heads_per_block);
            for (u32 i = 0; i < n_tiles; ++i) {
                const u32 slot = i % ATTWG_STAGES;
                if (i >= ATTWG_STAGES) {
                    mbarrier_wait(&empty[slot], ((i / ATTWG_STAGES) - 1) & 1);
                }
                mbarrier_arrive_expect_tx(&full[slot], L::STAGE_BYTES);
                const u32 row = i < prefix_tiles ? prefix_row + i * ATTWG_KEYS
                                                 : token_row0 + seq_start + (i - prefix_tiles) * ATTWG_KEYS;
                unsigned char* k_dst = smem + L::RING_OFFSET + slot * L::STAGE_BYTES;
#pragma unroll
                for (int h = 0; h < D / 64; ++h) {
                    tma_load_2d(k_dst + h * 8192, k_map, int(kv_head * D + 64 * h), int(row), &full[slot]);
                }
                tma_load_2d(k_dst + L::K_BYTES, v_map, int(row), int(kv_head * D), &full[slot]);
            }
        }
        return;
    }
    setmaxnreg_inc<L::CONSUMER_REGS>();

    const AttWarp w = att_warp(row_begin, row_count, n_heads, n_kv_heads, heads_per_block);
    const u64 qw = u64(n_heads) * D;
    const u32 g = lane / 4, t = lane % 4;
    const u16* q_frag = att_stage_q<D, STRIDE>(q, w, qw, scale, reinterpret_cast<u16*>(smem));
    u32 qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        int fq[4];
        ldmatrix_x4(fq, q_frag + kk * 16);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            qf[kk][i] = u32(fq[i]);
        }
    }
    // This warpgroup's rows (warp w: rows 16·(w / heads_per_block) on): it
    // computes a tile while any of them sees a key of it (a wgmma is issued by
    // the whole warpgroup, so the choice is the warpgroup's).
    const u32 first_warp = warp / 4 * 4;
    const u32 wg_row0 = row_begin + 16 * (first_warp / heads_per_block);
    const u32 wg_row_end = row_begin + 16 * ((first_warp + 3) / heads_per_block + 1);
    const u32 block_row_end = row_begin + row_count;
    const bool wg_active = wg_row0 < block_row_end;
    const u32 wg_last_own = (wg_row_end < block_row_end ? wg_row_end : block_row_end) - 1 - seq_start;
    // Rows g and g + 8 of the warp: their own-key index (the last own key each sees).
    int last_own[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        last_own[h] = int(w.row0 + g + 8 * h - seq_start);
    }
    float m[2] = {negative_infinity(), negative_infinity()};
    float l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            o[n][e] = 0.0f;
        }
    }
    float(&o_flat)[D / 2] = reinterpret_cast<float(&)[D / 2]>(o);

    // The tiles it computes: the prefix's, and its own up to its last row's;
    // the rest it waits for and frees unread.
    const u32 wg_tiles = prefix_tiles + wg_last_own / ATTWG_KEYS + 1;
    const u32 n_mine = wg_active ? (wg_tiles < n_tiles ? wg_tiles : n_tiles) : 0;
    const AttWgMasks masks{prefix_tiles, prefix_len, own_keys, {last_own[0], last_own[1]}, g, t};
    const u32 ring = smem_address + L::RING_OFFSET;
    float s[ATTWG_KEYS / 8][4];
    float(&s_flat)[ATTWG_KEYS / 2] = reinterpret_cast<float(&)[ATTWG_KEYS / 2]>(s);
    u32 p[ATTWG_KEYS / 16][4];
    float correction[2];
    if (n_mine > 0) {
        mbarrier_wait(&full[0], 0);
        att_wg_issue_s<D>(s_flat, qf, ring);
        wgmma_wait<0>();
        wgmma_fence_operands(s_flat);
        att_wg_softmax(masks, 0, s, m, l, correction);  // O is zero: nothing to rescale
        att_wg_pack_p(s, p);
        // Tile i's P·V overlaps tile i + 1's softmax: S(i + 1) is issued
        // first (the tensor pipe runs the groups in order), waited for alone,
        // and its softmax runs while P·V(i) is in flight; O is rescaled and
        // P(i + 1) packed once P·V(i) has completed (its A registers and
        // accumulators are the wgmma's until then).
        for (u32 i = 0; i + 1 < n_mine; ++i) {
            const u32 next = i + 1;
            mbarrier_wait(&full[next % ATTWG_STAGES], (next / ATTWG_STAGES) & 1);
            att_wg_issue_s<D>(s_flat, qf, ring + (next % ATTWG_STAGES) * L::STAGE_BYTES);
            att_wg_issue_pv<D>(o_flat, p, ring + (i % ATTWG_STAGES) * L::STAGE_BYTES + L::K_BYTES);
#ifdef TESSERA_MUTATE_ATTENTION_S_WAIT
            wgmma_wait<2>();  // mutation test build: S read while its wgmma may be in flight
#else
            wgmma_wait<1>();
#endif
            wgmma_fence_operands(s_flat);
            att_wg_softmax(masks, next, s, m, l, correction);
#ifdef TESSERA_MUTATE_ATTENTION_O_RESCALE
            att_rescale<D>(o, correction);  // mutation test build: O rescaled while P·V(i) accumulates into it
#endif
#ifdef TESSERA_MUTATE_ATTENTION_EMPTY_ARRIVE
            // Mutation test build: the slot freed before P·V's wgmma are waited for.
            att_wg_free(&empty[i % ATTWG_STAGES]);
            wgmma_wait<0>();
            wgmma_fence_operands(o_flat);
#else
            wgmma_wait<0>();
            wgmma_fence_operands(o_flat);
            att_wg_free(&empty[i % ATTWG_STAGES]);
#endif
#ifndef TESSERA_MUTATE_ATTENTION_O_RESCALE
            att_rescale<D>(o, correction);
#endif
            att_wg_pack_p(s, p);
        }
        const u32 last = n_mine - 1;
        att_wg_issue_pv<D>(o_flat, p, ring + (last % ATTWG_STAGES) * L::STAGE_BYTES + L::K_BYTES);
        wgmma_wait<0>();
        wgmma_fence_operands(o_flat);
        att_wg_free(&empty[last % ATTWG_STAGES]);
    }
    for (u32 i = n_mine; i < n_tiles; ++i) {
        mbarrier_wait(&full[i % ATTWG_STAGES], (i / ATTWG_STAGES) & 1);
        att_wg_free(&empty[i % ATTWG_STAGES]);
    }
    if (w.rows_here == 0) {
        return;
    }
    att_store_rows<D>(l, o, w.rows_here, out + u64(w.row0) * qw + u64(w.head) * D, qw);
}

// Grid (tiles, kv_heads · head chunks) as v3's, 384 threads,
// AttWgLayout<D>::SHARED_BYTES of dynamic shared memory (134,192 at D =
// 128). Tensor maps: K (f16 [rows][kv_heads · D], box 64 × 64, 128-byte
// swizzle) and Vᵀ (f16 [kv_heads · D][rows], box 64 × D, 128-byte swizzle).
#define ATTWG_PARAMS                                                                                             \
    const float *q, const u32 *tiles, u32 token_row0, u32 n_heads, u32 n_kv_heads, u32 heads_per_block,          \
        float scale, float *out, const __grid_constant__ TensorMap k_map, const __grid_constant__ TensorMap v_map
#define ATTWG_ARGS q, tiles, token_row0, n_heads, n_kv_heads, heads_per_block, scale, out, &k_map, &v_map
TESSERA_KERNEL void __launch_bounds__(ATTWG_THREADS, 1) attention_wgmma_d64(ATTWG_PARAMS) {
    attention_wgmma<64>(ATTWG_ARGS);
}
TESSERA_KERNEL void __launch_bounds__(ATTWG_THREADS, 1) attention_wgmma_d128(ATTWG_PARAMS) {
    attention_wgmma<128>(ATTWG_ARGS);
}
