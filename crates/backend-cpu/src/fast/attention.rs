//! Blocked (flash-style) causal GQA attention for the fast path, with shared
//! prefix K/V: the same contract and validation as `ops::attention`.
//!
//! Work is split into tasks of (sequence, KV head, block of `BLOCK_ROWS` query
//! rows); a task takes the query vectors of every query head sharing that KV
//! head, walks the keys the block can see in chunks of `KEY_CHUNK` (prefix keys
//! first, then the sequence's own, up to its causal limit), packs each chunk's K
//! and V rows contiguously once, and keeps an online softmax (running max,
//! running sum, rescaled output) per query vector. K/V are read once per block
//! instead of once per query row and head, the chunk stays in L1, and the inner
//! loops (scores against a transposed chunk, a polynomial `exp`, `o += p·v` with
//! the output row in registers for head_dim 64 and 128) are plain lane-wise
//! arithmetic that the compiler vectorises for the instruction set each entry
//! point enables.

use rayon::prelude::*;
use tessera_backend::{AttentionLayout, AttentionShape, BackendError, KvRef, Qkv};

use super::Isa;
use crate::ops::attention::validate;

/// Query rows per task.
const BLOCK_ROWS: usize = 64;
/// Keys per packed chunk.
const KEY_CHUNK: usize = 64;
/// Query vectors that walk a chunk together where the registers allow: each
/// packed key and value row loaded is used by all of them. A chunk's K and V
/// (2 × 32 KiB at head_dim 128) do not fit in L1 beside everything else, so
/// one vector at a time streams them from L2 at about half the FMA rate.
const QUERY_GROUP: usize = 4;

/// One task's share: rows `row0..row0 + rows` of sequence `seq`, KV head `kv`.
#[derive(Clone, Copy)]
struct Task {
    seq: usize,
    kv: usize,
    row0: usize,
    rows: usize,
}

/// What every task reads.
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: AttentionShape,
    layout: &'a AttentionLayout,
    prefixes: &'a [KvRef<'a, Vec<f32>>],
}

pub fn attention(
    qkv: Qkv<'_, Vec<f32>>,
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, Vec<f32>>],
    out: &mut [f32],
    isa: Isa,
) -> Result<(), BackendError> {
    validate(qkv, shape, layout, prefixes, out)?;
    let Qkv { q, k, v } = qkv;
    let mut tasks = Vec::new();
    for (seq, s) in layout.sequences.iter().enumerate() {
        for kv in 0..shape.n_kv_heads {
            for row0 in (0..s.len).step_by(BLOCK_ROWS) {
                let rows = BLOCK_ROWS.min(s.len - row0);
                tasks.push(Task {
                    seq,
                    kv,
                    row0,
                    rows,
                });
            }
        }
    }
    let inputs = Inputs {
        q,
        k,
        v,
        shape,
        layout,
        prefixes,
    };
    let blocks: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|task| run_task(&inputs, task, isa))
        .collect();
    // Scatter each block's rows (its query heads, in head order) into `out`.
    let d = shape.head_dim;
    let group = shape.n_heads / shape.n_kv_heads;
    let qw = shape.q_width();
    for (task, block) in tasks.iter().zip(&blocks) {
        let start = layout.sequences[task.seq].start;
        for r in 0..task.rows {
            let at = (start + task.row0 + r) * qw + task.kv * group * d;
            out[at..at + group * d].copy_from_slice(&block[r * group * d..(r + 1) * group * d]);
        }
    }
    Ok(())
}

fn run_task(inputs: &Inputs<'_>, task: &Task, isa: Isa) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the backend only selects an ISA the CPU reports (`Isa::is_available`).
        Isa::Avx512Vnni => return unsafe { task_avx512(inputs, task) },
        Isa::Avx2 | Isa::AvxVnni => return unsafe { task_avx2(inputs, task) },
        Isa::Scalar => {}
    }
    let _ = isa;
    task_body::<OneAtATime>(inputs, task)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn task_avx512(inputs: &Inputs<'_>, task: &Task) -> Vec<f32> {
    task_body::<Avx512Group>(inputs, task)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_avx2(inputs: &Inputs<'_>, task: &Task) -> Vec<f32> {
    task_body::<Avx2Group>(inputs, task)
}

/// One block: `rows × group` query vectors against the keys they may see,
/// `QUERY_GROUP` vectors at a time through each chunk where `G` has a grouped
/// kernel (head_dim 64 and 128), one at a time otherwise and for the remainder.
#[inline(always)]
fn task_body<G: GroupKernel>(inputs: &Inputs<'_>, task: &Task) -> Vec<f32> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = inputs.shape;
    let group = n_heads / n_kv_heads;
    let (qw, kvw) = (inputs.shape.q_width(), inputs.shape.kv_width());
    let seq = inputs.layout.sequences[task.seq];
    let prefix = seq.prefix.map(|p| inputs.prefixes[p]);
    let prefix_len = prefix.map_or(0, |p| p.len);
    let scale = 1.0 / (d as f32).sqrt();
    let vectors = task.rows * group;

    // Query vector i = (row i / group, head kv·group + i % group), scaled.
    let mut qs = vec![0.0f32; vectors * d];
    for r in 0..task.rows {
        let row = seq.start + task.row0 + r;
        for g in 0..group {
            let h = task.kv * group + g;
            let src = &inputs.q[row * qw + h * d..row * qw + (h + 1) * d];
            let dst = &mut qs[(r * group + g) * d..(r * group + g + 1) * d];
            for (o, &x) in dst.iter_mut().zip(src) {
                *o = x * scale;
            }
        }
    }
    let mut max = vec![f32::NEG_INFINITY; vectors];
    let mut sum = vec![0.0f32; vectors];
    let mut out = vec![0.0f32; vectors * d];
    // Keys of the chunk transposed (dimension-major), so the scores of one query
    // against the whole chunk are KEY_CHUNK-wide multiply-adds, no horizontal sums.
    let mut kt = vec![0.0f32; d * KEY_CHUNK];
    let mut vc = vec![0.0f32; KEY_CHUNK * d];

    // The last row of the block sees prefix + its own position + 1 keys.
    let keys = prefix_len + task.row0 + task.rows;
    let off = task.kv * d;
    for c0 in (0..keys).step_by(KEY_CHUNK) {
        let cl = KEY_CHUNK.min(keys - c0);
        for j in 0..cl {
            let key = c0 + j;
            let (ks, vs) = match prefix {
                Some(pk) if key < prefix_len => (&pk.k[..], &pk.v[..]),
                _ => (inputs.k, inputs.v),
            };
            let at = if key < prefix_len {
                key * kvw + off
            } else {
                (seq.start + key - prefix_len) * kvw + off
            };
            for (t, &x) in ks[at..at + d].iter().enumerate() {
                kt[t * KEY_CHUNK + j] = x;
            }
            vc[j * d..(j + 1) * d].copy_from_slice(&vs[at..at + d]);
        }
        // Keys 0..=limit are visible to vector i's row: n of this chunk's.
        let visible = |i: usize| {
            let limit = prefix_len + task.row0 + i / group;
            (limit + 1).saturating_sub(c0).min(cl)
        };
        let mut i = 0;
        while i < vectors {
            const R: usize = QUERY_GROUP;
            if G::GROUPED && i + R <= vectors && (d == 128 || d == 64) {
                let ns: [usize; R] = std::array::from_fn(|r| visible(i + r));
                if ns.iter().any(|&n| n > 0) {
                    let span = i * d..(i + R) * d;
                    let states = (&mut max[i..i + R], &mut sum[i..i + R]);
                    let (qv, o) = (&qs[span.clone()], &mut out[span]);
                    // SAFETY: a grouped kernel is only instantiated by the entry
                    // point of its instruction set (`task_avx512`, `task_avx2`),
                    // which the backend selects only on CPUs that have it.
                    unsafe {
                        match d {
                            128 => G::chunk::<128>(qv, &kt, &vc, ns, states, o),
                            _ => G::chunk::<64>(qv, &kt, &vc, ns, states, o),
                        }
                    }
                }
                i += R;
                continue;
            }
            let n = visible(i);
            if n > 0 {
                let qv = &qs[i * d..(i + 1) * d];
                let o = &mut out[i * d..(i + 1) * d];
                let state = (&mut max[i], &mut sum[i]);
                match d {
                    128 => chunk_fixed::<128>(qv, &kt, &vc, n, state, o),
                    64 => chunk_fixed::<64>(qv, &kt, &vc, n, state, o),
                    _ => chunk_any(qv, &kt, &vc, n, state, o),
                }
            }
            i += 1;
        }
    }
    for i in 0..vectors {
        let inv = 1.0 / sum[i];
        out[i * d..(i + 1) * d].iter_mut().for_each(|x| *x *= inv);
    }
    out
}

/// `p[j] = q · key j` for every key of a transposed chunk (keys past the
/// chunk's end hold stale values; the caller masks them).
#[inline(always)]
fn scores(q: &[f32], kt: &[f32]) -> [f32; KEY_CHUNK] {
    let mut acc = [0.0f32; KEY_CHUNK];
    for (&qt, row) in q.iter().zip(kt.chunks_exact(KEY_CHUNK)) {
        for j in 0..KEY_CHUNK {
            acc[j] = qt.mul_add(row[j], acc[j]);
        }
    }
    acc
}

/// The online-softmax step shared by both chunk kernels: masks keys `n..`,
/// turns `p` into `e^(s − new max)` and returns (rescale factor of the old
/// output, sum of the new weights), updating the running max and sum.
#[inline(always)]
fn softmax_step(p: &mut [f32; KEY_CHUNK], n: usize, (max, sum): (&mut f32, &mut f32)) -> f32 {
    for x in &mut p[n..] {
        *x = f32::NEG_INFINITY;
    }
    let mut lanes = [f32::NEG_INFINITY; 16];
    for c in p.chunks_exact(16) {
        for l in 0..16 {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    let chunk_max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let new_max = max.max(chunk_max);
    let alpha = exp(*max - new_max);
    for x in p.iter_mut() {
        *x = exp(*x - new_max);
    }
    let mut lanes = [0.0f32; 16];
    for c in p.chunks_exact(16) {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    let mut width = 8;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    *sum = *sum * alpha + lanes[0];
    *max = new_max;
    alpha
}

/// One query vector against one chunk, head_dim known at compile time: the
/// output row stays in registers while the chunk's values stream past.
#[inline(always)]
fn chunk_fixed<const D: usize>(
    q: &[f32],
    kt: &[f32],
    vc: &[f32],
    n: usize,
    state: (&mut f32, &mut f32),
    o: &mut [f32],
) {
    let mut p = scores(q, kt);
    let alpha = softmax_step(&mut p, n, state);
    let mut acc = [0.0f32; D];
    for (a, &x) in acc.iter_mut().zip(o.iter()) {
        *a = x * alpha;
    }
    for (&pj, v) in p[..n].iter().zip(vc.chunks_exact(D)) {
        for t in 0..D {
            acc[t] = pj.mul_add(v[t], acc[t]);
        }
    }
    o.copy_from_slice(&acc);
}

/// A chunk kernel for `QUERY_GROUP` query vectors at once (consecutive in
/// `q`, outputs in `o`; vector r sees the chunk's first `ns[r]` keys).
trait GroupKernel {
    /// False: no grouped kernel, vectors go one at a time.
    const GROUPED: bool;
    /// # Safety
    /// The CPU must have the kernel's instruction set.
    unsafe fn chunk<const D: usize>(
        q: &[f32],
        kt: &[f32],
        vc: &[f32],
        ns: [usize; QUERY_GROUP],
        states: (&mut [f32], &mut [f32]),
        o: &mut [f32],
    );
}

/// The scalar path: no grouped kernel.
struct OneAtATime;

impl GroupKernel for OneAtATime {
    const GROUPED: bool = false;
    unsafe fn chunk<const D: usize>(
        _: &[f32],
        _: &[f32],
        _: &[f32],
        _: [usize; QUERY_GROUP],
        _: (&mut [f32], &mut [f32]),
        _: &mut [f32],
    ) {
        unreachable!("GROUPED is false")
    }
}

/// A grouped chunk kernel for one instruction set, from one template: each
/// packed key row feeds all `QUERY_GROUP` score rows (`$key_regs` registers of
/// keys at a time, all of the chunk with AVX-512, a quarter with AVX2's 16
/// registers), each value row all outputs (`$out_regs` registers of dimensions
/// at a time), accumulators in registers throughout. Per vector the arithmetic
/// is [`chunk_fixed`]'s in the same order; keys past a vector's `ns[r]` have
/// weight 0 and leave its output as it was.
macro_rules! group_kernel {
    ($kind:ident, $chunk:ident, $features:literal, $v:ty, $lanes:literal,
     $key_regs:literal, $out_regs:literal,
     $zero:ident, $load:ident, $store:ident, $splat:ident, $fma:ident, $mul:ident) => {
        #[cfg(target_arch = "x86_64")]
        struct $kind;

        #[cfg(target_arch = "x86_64")]
        impl GroupKernel for $kind {
            const GROUPED: bool = true;
            #[inline(always)]
            unsafe fn chunk<const D: usize>(
                q: &[f32],
                kt: &[f32],
                vc: &[f32],
                ns: [usize; QUERY_GROUP],
                states: (&mut [f32], &mut [f32]),
                o: &mut [f32],
            ) {
                $chunk::<D>(q, kt, vc, ns, states, o)
            }
        }

        /// # Safety
        /// The CPU must have the instruction set named in the attribute.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        // The register tiles are indexed [vector][register] in lockstep with
        // the loaded rows; explicit indices say that more plainly than zips.
        #[allow(clippy::needless_range_loop)]
        unsafe fn $chunk<const D: usize>(
            q: &[f32],
            kt: &[f32],
            vc: &[f32],
            ns: [usize; QUERY_GROUP],
            (max, sum): (&mut [f32], &mut [f32]),
            o: &mut [f32],
        ) {
            use std::arch::x86_64::*;
            const G: usize = QUERY_GROUP;
            const KEYS: usize = $lanes * $key_regs;
            const SPAN: usize = $lanes * $out_regs;
            assert!(q.len() >= G * D && o.len() >= G * D);
            assert!(kt.len() >= D * KEY_CHUNK && vc.len() >= KEY_CHUNK * D);

            let mut p = [[0.0f32; KEY_CHUNK]; G];
            for k0 in (0..KEY_CHUNK).step_by(KEYS) {
                let mut s: [[$v; $key_regs]; G] = [[$zero(); $key_regs]; G];
                for t in 0..D {
                    let row = kt.as_ptr().add(t * KEY_CHUNK + k0);
                    let k: [$v; $key_regs] = std::array::from_fn(|c| $load(row.add(c * $lanes)));
                    for r in 0..G {
                        let qt = $splat(*q.get_unchecked(r * D + t));
                        for c in 0..$key_regs {
                            s[r][c] = $fma(qt, k[c], s[r][c]);
                        }
                    }
                }
                for r in 0..G {
                    for c in 0..$key_regs {
                        $store(p[r].as_mut_ptr().add(k0 + c * $lanes), s[r][c]);
                    }
                }
            }
            let mut alpha = [0.0f32; G];
            for r in 0..G {
                alpha[r] = softmax_step(&mut p[r], ns[r], (&mut max[r], &mut sum[r]));
            }
            let keys = ns.iter().copied().max().unwrap_or(0).min(KEY_CHUNK);
            for h in (0..D).step_by(SPAN) {
                let mut acc: [[$v; $out_regs]; G] = [[$zero(); $out_regs]; G];
                for r in 0..G {
                    let a = $splat(alpha[r]);
                    for c in 0..$out_regs {
                        acc[r][c] = $mul($load(o.as_ptr().add(r * D + h + c * $lanes)), a);
                    }
                }
                for j in 0..keys {
                    let row = vc.as_ptr().add(j * D + h);
                    let v: [$v; $out_regs] = std::array::from_fn(|c| $load(row.add(c * $lanes)));
                    for r in 0..G {
                        let pj = $splat(p[r][j]);
                        for c in 0..$out_regs {
                            acc[r][c] = $fma(pj, v[c], acc[r][c]);
                        }
                    }
                }
                for r in 0..G {
                    for c in 0..$out_regs {
                        $store(o.as_mut_ptr().add(r * D + h + c * $lanes), acc[r][c]);
                    }
                }
            }
        }
    };
}

// 32 registers: 4 vectors × 64 keys of scores (16) or 64 dimensions of output (16).
group_kernel!(
    Avx512Group,
    chunk_group_avx512,
    "avx512f,fma",
    __m512,
    16,
    4,
    4,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_mul_ps
);
// 16 registers: 4 vectors × 16 keys (8) or 16 dimensions (8), the rest for loads.
group_kernel!(
    Avx2Group,
    chunk_group_avx2,
    "avx2,fma",
    __m256,
    8,
    2,
    2,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_mul_ps
);

/// [`chunk_fixed`] for any head_dim.
#[inline(always)]
fn chunk_any(
    q: &[f32],
    kt: &[f32],
    vc: &[f32],
    n: usize,
    state: (&mut f32, &mut f32),
    o: &mut [f32],
) {
    let d = o.len();
    let mut p = scores(q, kt);
    let alpha = softmax_step(&mut p, n, state);
    o.iter_mut().for_each(|x| *x *= alpha);
    for (&pj, v) in p[..n].iter().zip(vc.chunks_exact(d)) {
        for (acc, &val) in o.iter_mut().zip(v) {
            *acc = pj.mul_add(val, *acc);
        }
    }
}

/// `e^x` for x ≤ 0 (a softmax's shifted scores), relative error below 3e-7 (2.5 ulp):
/// x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n through
/// the exponent bits. Branch-free, so a loop of it vectorises. −∞ gives 0.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest by the 1.5·2²³ trick (valid for |x·log2e| < 2²²).
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let poly = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    // Below e^-87 the true value is under 2^-125: treat as 0 like −∞.
    if x <= -87.0 {
        0.0
    } else {
        poly * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 and AVX2 paths walk chunks four query vectors at a time;
    /// their results must equal the one-vector path's exactly (same operations
    /// in the same order; the extra weight-0 keys change no value), here with
    /// GQA groups of 4 and 2, a shared prefix, ragged blocks and a ragged last
    /// group.
    #[test]
    fn grouped_vectors_equal_single_vectors_exactly() {
        let isas: Vec<Isa> = [Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .filter(|isa| {
                let available = isa.is_available();
                if !available {
                    println!("skipped: this CPU does not run the {} kernels", isa.name());
                }
                available
            })
            .collect();
        let mut seed = 0x2545_f491_u32;
        let mut random = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as f32 / u32::MAX as f32 * 2.0 - 1.0
                })
                .collect()
        };
        for (heads, kv, d, lengths, prefix) in [
            (8, 2, 128, vec![77, 5], 40),
            (4, 2, 64, vec![130], 0),
            (6, 2, 128, vec![3, 66], 9),
        ] {
            let shape = AttentionShape {
                n_heads: heads,
                n_kv_heads: kv,
                head_dim: d,
            };
            let tokens: usize = lengths.iter().sum();
            let (q, k, v) = (
                random(tokens * shape.q_width()),
                random(tokens * shape.kv_width()),
                random(tokens * shape.kv_width()),
            );
            let (pk, pv) = (
                random(prefix * shape.kv_width()),
                random(prefix * shape.kv_width()),
            );
            let seq_prefix: Vec<Option<usize>> =
                lengths.iter().map(|_| (prefix > 0).then_some(0)).collect();
            let layout = AttentionLayout::packed_with_prefixes(&lengths, &seq_prefix);
            let refs = [KvRef {
                k: &pk,
                v: &pv,
                len: prefix,
            }];
            let inputs = Inputs {
                q: &q,
                k: &k,
                v: &v,
                shape,
                layout: &layout,
                prefixes: if prefix > 0 { &refs } else { &[] },
            };
            for (seq, s) in layout.sequences.iter().enumerate() {
                for kv_head in 0..kv {
                    for row0 in (0..s.len).step_by(BLOCK_ROWS) {
                        let task = Task {
                            seq,
                            kv: kv_head,
                            row0,
                            rows: BLOCK_ROWS.min(s.len - row0),
                        };
                        let single = task_body::<OneAtATime>(&inputs, &task);
                        for &isa in &isas {
                            let grouped = run_task(&inputs, &task, isa);
                            assert!(
                                grouped.iter().zip(&single).all(|(a, b)| a == b),
                                "{} heads {heads}/{kv} d {d}: grouped and single differ",
                                isa.name()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn exp_matches_std_over_the_softmax_range() {
        let mut worst = 0.0f64;
        let mut x = -86.9f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
    }
}
