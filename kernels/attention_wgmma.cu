// attention_wgmma.cu — v4 of the causal GQA attention over packed sequences
// with shared prefixes (attention.cu has the f32 kernel and v2/v3 on
// mma.sync): the same tiles, f16 K rows, Q staging, online softmax and GQA
// grouping as v3 (attention_tc.cuh), on Hopper's warpgroup mma (sm_90a).
#include "common.cuh"
#include "attention_tc.cuh"

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
// 128-byte swizzle, as the wgmma GEMM's: K rows are 64-dim halves of 128
// bytes, and V is transposed once per layer (kv_to_f16_transposed: Vᵀ
// [kv_heads · D][rows], each dimension's keys contiguous) so a tile's 64 keys
// of one dimension are one 128-byte row.
//
// The producer stages tiles with TMA (cp.async.bulk.tensor) into a ring of
// ATTWG_STAGES slots (a warpgroup holds two at a time: S(i + 1)'s and
// P·V(i)'s), each the K tile (D/64 boxes of 64 keys × 64 dims) and the Vᵀ
// tile (one box of 64 keys × D dims), completing on the slot's `full`
// mbarrier; each consumer warp frees a slot on its `empty` mbarrier once its
// warpgroup's wgmma reading it have completed. A TMA box is contiguous rows
// of one buffer, so keys are walked per segment: the prefix's tiles (from its
// first row), then the sequence's own (from its first row) — the same keys
// in v3's order, prefix first, but the prefix's last tile may be partial
// (its keys past the prefix are masked; they are other rows of the buffer,
// finite as v3's own rows must be, or zeros past its end: P = 0 times a
// finite V adds nothing). Tiles
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
