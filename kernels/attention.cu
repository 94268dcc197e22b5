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
#include "attention_tc.cuh"

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
