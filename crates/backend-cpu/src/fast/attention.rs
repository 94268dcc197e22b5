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
use tessera_backend::{AttentionLayout, AttentionShape, BackendError, KvRef};

use super::Isa;
use crate::ops::attention::validate;

/// Query rows per task.
const BLOCK_ROWS: usize = 64;
/// Keys per packed chunk.
const KEY_CHUNK: usize = 64;

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

#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    layout: &AttentionLayout,
    prefixes: &[KvRef<'_, Vec<f32>>],
    out: &mut [f32],
    isa: Isa,
) -> Result<(), BackendError> {
    validate(q, k, v, shape, layout, prefixes, out)?;
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
    task_body(inputs, task)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn task_avx512(inputs: &Inputs<'_>, task: &Task) -> Vec<f32> {
    task_body(inputs, task)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_avx2(inputs: &Inputs<'_>, task: &Task) -> Vec<f32> {
    task_body(inputs, task)
}

/// One block: `rows × group` query vectors against the keys they may see.
#[inline(always)]
fn task_body(inputs: &Inputs<'_>, task: &Task) -> Vec<f32> {
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
        for i in 0..vectors {
            // Keys 0..=limit are visible to this vector's row.
            let limit = prefix_len + task.row0 + i / group;
            if limit < c0 {
                continue;
            }
            let n = cl.min(limit + 1 - c0);
            let qv = &qs[i * d..(i + 1) * d];
            let o = &mut out[i * d..(i + 1) * d];
            let state = (&mut max[i], &mut sum[i]);
            match d {
                128 => chunk_fixed::<128>(qv, &kt, &vc, n, state, o),
                64 => chunk_fixed::<64>(qv, &kt, &vc, n, state, o),
                _ => chunk_any(qv, &kt, &vc, n, state, o),
            }
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
