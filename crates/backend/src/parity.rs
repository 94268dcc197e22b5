//! The op parity kit: every op of a backend against a plain f64 oracle, on fresh
//! random inputs with awkward sizes. Outputs are poisoned (NaN) before the op so
//! an unwritten element fails, and sentinels after them must come back untouched
//! so an out-of-bounds write fails. Errors are normalised: NMSE = mse(a, b) / mse(b, 0).
//!
//! The oracles are written here from the op definitions, independent of any
//! backend's code; GPU backends run the same cases.
//!
//! Two modes over the same case code, as llama.cpp's test-backend-ops has:
//! **eval** ([`run_all`]: awkward sizes, each op checked against its oracle)
//! and **perf** ([`run_perf`]: a model's shapes, each op timed, with its
//! flops and bytes moved, no oracle). [`parity_tests!`](crate::parity_tests)
//! instantiates the eval suite for one backend configuration per line.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_gguf::{dequantize_row_q8_0, quantize_row_q8_0, BlockQ8_0, GgmlType};

use crate::{
    AttentionLayout, AttentionShape, Backend, BackendError, GateUp, HostTensor, KvRef, Norm, Qkv,
    Rope, Rows,
};

const SENTINEL: f32 = -7.25e9;
const SENTINEL_LEN: usize = 37;

/// The result of one parity case.
#[derive(Clone, Debug)]
pub struct CaseReport {
    pub op: &'static str,
    pub case: String,
    pub nmse: f64,
    pub tolerance: f64,
    /// Why the case failed, if it did.
    pub failure: Option<String>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

impl std::fmt::Display for CaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<13} {:<34} nmse {:.2e} (tol {:.0e})",
            self.op, self.case, self.nmse, self.tolerance
        )?;
        match &self.failure {
            None => write!(f, "  ok"),
            Some(why) => write!(f, "  FAILED: {why}"),
        }
    }
}

/// Per-op tolerances (NMSE) for a backend computing in f32 against the f64 oracle.
#[derive(Clone, Copy, Debug)]
pub struct Tolerances {
    pub elementwise: f64,
    pub matmul: f64,
    pub attention: f64,
}

impl Tolerances {
    /// f32 arithmetic with f32 or f64 accumulation.
    pub const F32: Tolerances = Tolerances {
        elementwise: 1e-10,
        matmul: 1e-10,
        attention: 1e-10,
    };

    /// int8 activations against Q8_0 weights (W8A8, as ggml's `q8_0 × q8_0`
    /// dot): each activation block is rounded to 1/127 of its largest |x|, an
    /// expected NMSE of (1/127)²/12 ÷ E[x²] ≈ 1.6e-5 on the kit's uniform inputs.
    /// A case with a single output (one 32-term dot) scatters widely around that,
    /// hence 30× headroom; a wrong scale or a lost block costs 1e-2 or more.
    /// Every other op in f32.
    pub const W8A8: Tolerances = Tolerances {
        matmul: 5e-4,
        ..Tolerances::F32
    };

    /// f16 activations against Q8_0 weights turned into f16 (W8A16, f32
    /// accumulation): each activation and each `q · d` rounded to f16's 11
    /// significant bits, a relative error of at most 2^-11 each and about 2^-12
    /// r.m.s., so the products' r.m.s. error is ≈ 3e-4 of their size: an
    /// expected NMSE ≈ 1e-7 against the W8A32 oracle (measured 4e-8 to 2e-7 on the
    /// kit, 5e-7 for a one-output case). 50× headroom for the scatter of small
    /// cases; a wrong scale, a lost block or a swapped pair of k costs 1e-2 or
    /// more. Attention in this arithmetic runs on the f16 tensor cores too: Q, K,
    /// V and the softmax weights rounded to f16, sums and softmax in f32 — the
    /// same order of error (measured 6e-8 to 1.2e-7), 2e-6 allowed; a wrong mask,
    /// head or tile costs 1e-3 or more. Every other op in f32.
    pub const W8A16: Tolerances = Tolerances {
        matmul: 5e-6,
        attention: 2e-6,
        ..Tolerances::F32
    };
}

/// Normalised mean squared error of `got` against `want`.
pub fn nmse(got: &[f32], want: &[f64]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    if norm == 0.0 {
        err
    } else {
        err / norm
    }
}

/// Runs every case; the reports say which passed.
pub fn run_all<B: Backend>(backend: &B, tolerances: Tolerances, seed: u64) -> Vec<CaseReport> {
    let mut kit = Kit::new(backend, tolerances, seed, Mode::Eval);
    for &(rows, dim) in &[(1, 32), (7, 64), (33, 96), (5, 1024)] {
        kit.rms_norm(rows, dim);
    }
    for &(rows, k, n) in &[
        (1, 32, 1),
        (3, 32, 31),
        (17, 64, 33),
        (33, 96, 127),
        (64, 256, 65),
        // More than one 128 × 128 tile each way, partial at both edges.
        (130, 96, 257),
    ] {
        for ty in [GgmlType::Q8_0, GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            kit.matmul(rows, k, n, ty);
        }
    }
    for &(tokens, heads, head_dim) in &[(1, 1, 2), (13, 3, 16), (40, 4, 128)] {
        kit.rope(tokens, heads, head_dim);
    }
    for (lengths, prefixes, heads, kv, d) in [
        (vec![1], vec![None], 1, 1, 8),
        (vec![5, 1, 17], vec![None, None, None], 4, 1, 16),
        (vec![33, 2], vec![None, None], 6, 2, 16),
        (vec![70], vec![None], 8, 8, 128),
        (vec![1, 9, 4], vec![Some(1), Some(1), None], 4, 2, 16),
        (vec![3, 31, 2], vec![Some(40), Some(7), Some(40)], 6, 2, 16),
        (vec![17], vec![Some(130)], 8, 2, 128),
        (vec![66, 3], vec![Some(5), None], 4, 2, 64),
        // Head sizes that are not a multiple of 8 (padded rows) or of 4.
        (vec![9, 4], vec![Some(3), None], 4, 2, 20),
        (vec![5], vec![None], 2, 1, 6),
    ] {
        let shape = AttentionShape {
            n_heads: heads,
            n_kv_heads: kv,
            head_dim: d,
        };
        kit.attention(&lengths, &prefixes, shape);
    }
    for &len in &[1, 31, 1000] {
        kit.swiglu(len);
        kit.add(len);
    }
    for &(vocab, dim) in &[(5, 32), (300, 64)] {
        kit.embedding(vocab, dim);
        kit.score_head(vocab, dim);
    }
    // The fused ops, against the same oracles composed.
    for (rows, dim, ns) in [
        (1, 32, vec![1, 7, 3]),
        (9, 64, vec![33, 64]),
        (70, 128, vec![96, 32, 32]),
    ] {
        for ty in [GgmlType::Q8_0, GgmlType::F32] {
            kit.rms_norm_matmuls(rows, dim, &ns, ty);
        }
    }
    for &(tokens, heads, kv, d) in &[(1, 1, 1, 2), (13, 6, 2, 16), (40, 4, 2, 128)] {
        kit.qk_norm_rope(tokens, heads, kv, d);
    }
    for &(rows, k, n) in &[(1, 32, 1), (17, 64, 33), (64, 256, 65)] {
        for ty in [GgmlType::Q8_0, GgmlType::F32] {
            kit.matmul_add(rows, k, n, ty);
            kit.swiglu_matmul_add(rows, k, n, ty);
        }
    }
    kit.reports
}

/// The inputs' seed of [`parity_tests!`](crate::parity_tests).
pub const SEED: u64 = 7;

/// Every case of [`run_all`] must pass: prints each report and panics with
/// the failures. What [`parity_tests!`](crate::parity_tests) runs.
pub fn assert_all_pass<B: Backend>(backend: &B, tolerances: Tolerances, seed: u64) {
    println!("backend: {}", backend.name());
    let reports = run_all(backend, tolerances, seed);
    for report in &reports {
        println!("{report}");
    }
    assert!(reports.len() >= 40, "only {} cases ran", reports.len());
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(ToString::to_string)
        .collect();
    assert!(
        failed.is_empty(),
        "{}: {} of {} cases failed:\n{}",
        backend.name(),
        failed.len(),
        reports.len(),
        failed.join("\n")
    );
}

/// One eval test per backend configuration: `name: expression, tolerances;`,
/// where the expression gives an `Option` of the backend (`None` after
/// printing why the configuration cannot run here, e.g. no device).
///
/// ```ignore
/// tessera_backend::parity_tests! {
///     cpu_reference: Some(CpuBackend::new()), Tolerances::F32;
/// }
/// ```
#[macro_export]
macro_rules! parity_tests {
    ($($name:ident: $backend:expr, $tolerances:expr;)+) => {$(
        #[test]
        fn $name() {
            let backend = $backend;
            match backend {
                // One seed everywhere: every backend sees the same inputs.
                Some(backend) => $crate::parity::assert_all_pass(
                    &backend,
                    $tolerances,
                    $crate::parity::SEED,
                ),
                None => println!("skipped: {}", stringify!($name)),
            }
        }
    )+};
}

/// The shapes of one model, for [`run_perf`].
#[derive(Clone, Copy, Debug)]
pub struct PerfShape {
    pub hidden: usize,
    pub ffn: usize,
    pub attention: AttentionShape,
    /// Token rows of each batched op.
    pub tokens: usize,
}

impl PerfShape {
    /// Qwen3-Reranker-4B: hidden 2560, FFN 9728, 32 query and 8 KV heads of 128.
    pub fn qwen3_4b(tokens: usize) -> PerfShape {
        PerfShape {
            hidden: 2560,
            ffn: 9728,
            attention: AttentionShape {
                n_heads: 32,
                n_kv_heads: 8,
                head_dim: 128,
            },
            tokens,
        }
    }
}

/// One op timed in perf mode.
#[derive(Clone, Debug)]
pub struct PerfReport {
    pub op: &'static str,
    pub case: String,
    /// Median seconds per call (the device waited on).
    pub seconds: f64,
    pub calls: usize,
    /// Useful floating-point (or integer) operations per call.
    pub flops: f64,
    /// Bytes an ideal kernel reads and writes per call.
    pub bytes: f64,
    pub failure: Option<String>,
}

impl std::fmt::Display for PerfReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.failure {
            return write!(f, "{:<13} {:<34} FAILED: {why}", self.op, self.case);
        }
        write!(
            f,
            "{:<13} {:<34} {:>10.3} ms  {:>8.1} GFLOP/s  {:>7.1} GB/s  ({} calls)",
            self.op,
            self.case,
            self.seconds * 1e3,
            self.flops / self.seconds / 1e9,
            self.bytes / self.seconds / 1e9,
            self.calls
        )
    }
}

/// Perf mode: the ops of one layer at `shape`, each timed for about
/// `budget` after one warm-up call (at least 3 calls; the median is kept).
pub fn run_perf<B: Backend>(backend: &B, shape: PerfShape, budget: Duration) -> Vec<PerfReport> {
    let mut kit = Kit::new(backend, Tolerances::F32, 11, Mode::Perf(budget));
    let PerfShape {
        hidden,
        ffn,
        attention,
        tokens,
    } = shape;
    let (qw, kvw) = (attention.q_width(), attention.kv_width());
    let q8 = GgmlType::Q8_0;
    kit.rms_norm(tokens, hidden);
    kit.rms_norm_matmuls(tokens, hidden, &[qw, kvw, kvw], q8);
    kit.matmul(tokens, hidden, qw, q8);
    kit.matmul(tokens, hidden, kvw, q8);
    kit.qk_norm_rope(
        tokens,
        attention.n_heads,
        attention.n_kv_heads,
        attention.head_dim,
    );
    kit.rope(tokens, attention.n_heads, attention.head_dim);
    // A prefill (one sequence) and a rerank batch (documents of 256 after a
    // shared 64-token prefix), `tokens` query rows each.
    kit.attention(&[tokens], &[None], attention);
    let docs = tokens.div_ceil(256);
    let lengths: Vec<usize> = (0..docs).map(|i| 256.min(tokens - i * 256)).collect();
    kit.attention(&lengths, &vec![Some(64); docs], attention);
    kit.matmul_add(tokens, qw, hidden, q8);
    kit.rms_norm_matmuls(tokens, hidden, &[ffn, ffn], q8);
    kit.swiglu(tokens * ffn);
    kit.swiglu_matmul_add(tokens, ffn, hidden, q8);
    kit.matmul(tokens, ffn, hidden, q8);
    kit.add(tokens * hidden);
    kit.perf.into_inner()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Eval,
    /// Time each op for about this long; no oracle.
    Perf(Duration),
}

/// What one call of an op costs, for perf mode's rates.
#[derive(Clone, Copy, Debug)]
struct Work {
    flops: f64,
    bytes: f64,
}

impl Work {
    fn new(flops: usize, bytes: usize) -> Work {
        Work {
            flops: flops as f64,
            bytes: bytes as f64,
        }
    }
}

struct Kit<'a, B: Backend> {
    backend: &'a B,
    rng: StdRng,
    reports: Vec<CaseReport>,
    tolerances: Tolerances,
    mode: Mode,
    perf: RefCell<Vec<PerfReport>>,
}

impl<'a, B: Backend> Kit<'a, B> {
    fn new(backend: &'a B, tolerances: Tolerances, seed: u64, mode: Mode) -> Kit<'a, B> {
        Kit {
            backend,
            rng: StdRng::seed_from_u64(seed),
            reports: Vec::new(),
            tolerances,
            mode,
            perf: RefCell::new(Vec::new()),
        }
    }

    /// The oracle's values in eval mode; nothing in perf mode (never computed).
    fn oracle(&self, want: impl FnOnce() -> Vec<f64>) -> Vec<f64> {
        match self.mode {
            Mode::Eval => want(),
            Mode::Perf(_) => Vec::new(),
        }
    }

    /// Runs the op once (eval), or times it (perf) and records the rate.
    fn run_op(
        &self,
        op: &'static str,
        case: &str,
        work: Work,
        mut call: impl FnMut() -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let Mode::Perf(budget) = self.mode else {
            return call();
        };
        let mut timed = || -> Result<f64, BackendError> {
            let start = Instant::now();
            call()?;
            self.backend.synchronize()?;
            Ok(start.elapsed().as_secs_f64())
        };
        let outcome = (|| {
            timed()?;
            let mut times = Vec::new();
            let start = Instant::now();
            while times.len() < 3 || (start.elapsed() < budget && times.len() < 10_000) {
                times.push(timed()?);
            }
            Ok::<_, BackendError>(times)
        })();
        let mut report = PerfReport {
            op,
            case: case.to_string(),
            seconds: f64::NAN,
            calls: 0,
            flops: work.flops,
            bytes: work.bytes,
            failure: None,
        };
        match outcome {
            Ok(mut times) => {
                times.sort_by(f64::total_cmp);
                report.seconds = times[times.len() / 2];
                report.calls = times.len();
            }
            Err(e) => report.failure = Some(e.to_string()),
        }
        self.perf.borrow_mut().push(report);
        Ok(())
    }

    fn random(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| self.rng.random_range(-scale..scale))
            .collect()
    }

    /// A weight tensor of `rows × cols` in `ty`, and its exact f32 values.
    fn weight(
        &mut self,
        rows: usize,
        cols: usize,
        ty: GgmlType,
        scale: f32,
    ) -> (HostTensor, Vec<f32>) {
        let values = self.random(rows * cols, scale);
        let (bytes, exact) = encode(&values, ty);
        let tensor = HostTensor::in_memory("w", ty, rows, cols, bytes)
            .expect("the kit builds consistent tensors");
        (tensor, exact)
    }

    fn buffer(&mut self, data: &[f32]) -> Result<B::Buffer, BackendError> {
        let mut buf = self.backend.alloc(data.len())?;
        self.backend.write(&mut buf, data)?;
        Ok(buf)
    }

    /// An output buffer: `len` NaNs followed by sentinels.
    fn output(&mut self, len: usize) -> Result<B::Buffer, BackendError> {
        let mut data = vec![f32::NAN; len];
        data.extend(std::iter::repeat_n(SENTINEL, SENTINEL_LEN));
        self.buffer(&data)
    }

    fn check(
        &mut self,
        op: &'static str,
        case: String,
        tolerance: f64,
        result: Result<Vec<f32>, BackendError>,
        want: &[f64],
    ) {
        if let Mode::Perf(_) = self.mode {
            // Timed in `run_op`; a failure before the op is recorded here.
            if let Err(e) = result {
                self.perf.borrow_mut().push(PerfReport {
                    op,
                    case,
                    seconds: f64::NAN,
                    calls: 0,
                    flops: 0.0,
                    bytes: 0.0,
                    failure: Some(e.to_string()),
                });
            }
            return;
        }
        let report = |nmse, failure| CaseReport {
            op,
            case: case.clone(),
            nmse,
            tolerance,
            failure,
        };
        let got = match result {
            Ok(got) => got,
            Err(e) => {
                self.reports
                    .push(report(f64::NAN, Some(format!("op failed: {e}"))));
                return;
            }
        };
        let (body, tail) = got.split_at(want.len());
        let out_of_bounds = tail
            .iter()
            .position(|&s| s != SENTINEL)
            .map(|i| format!("wrote past its output (sentinel {i} is {})", tail[i]));
        let not_finite = || {
            body.iter()
                .position(|v| !v.is_finite())
                .map(|i| format!("element {i} is {} (unwritten or overflowed)", body[i]))
        };
        let failure = out_of_bounds.or_else(not_finite);
        let error = nmse(body, want);
        let failure = failure
            .or_else(|| (error > tolerance).then(|| format!("nmse {error:.3e} > {tolerance:.0e}")));
        self.reports.push(report(error, failure));
    }

    fn read_output(&self, buf: &B::Buffer, len: usize) -> Result<Vec<f32>, BackendError> {
        self.backend.read(buf, len + SENTINEL_LEN)
    }

    fn rms_norm(&mut self, rows: usize, dim: usize) {
        let x = self.random(rows * dim, 3.0);
        let (w, w_exact) = self.weight(1, dim, GgmlType::F32, 1.5);
        let eps = 1e-6;
        let want = self.oracle(|| oracle_rms_norm(&widen(&x), &w_exact, dim, eps));
        let case = format!("rows{rows}_dim{dim}");
        let result = (|| {
            let b = self.backend;
            let wt = b.upload_weight(&w)?;
            let xb = self.buffer(&x)?;
            let mut out = self.output(rows * dim)?;
            let work = Work::new(4 * rows * dim, 8 * rows * dim);
            self.run_op("rms_norm", &case, work, || {
                b.rms_norm(&xb, &wt, rows, dim, eps as f32, &mut out)
            })?;
            let mut inplace = self.buffer(&x)?;
            b.rms_norm_inplace(&mut inplace, &wt, rows, dim, eps as f32)?;
            let a = self.read_output(&out, rows * dim)?;
            let c = b.read(&inplace, rows * dim)?;
            if a[..rows * dim] != c[..] {
                return Err(BackendError::Invalid {
                    op: "rms_norm",
                    detail: "in-place result differs".into(),
                });
            }
            Ok(a)
        })();
        let tol = self.tolerances.elementwise;
        self.check("rms_norm", case, tol, result, &want);
    }

    fn matmul(&mut self, rows: usize, k: usize, n: usize, ty: GgmlType) {
        let x = self.random(rows * k, 1.0);
        let (w, w_exact) = self.weight(n, k, ty, 0.5);
        let want = self.oracle(|| oracle_matmul(&widen(&x), &w_exact, k));
        let case = format!("{}_{rows}x{k}_by_{n}", ty.name());
        let result = (|| {
            let b = self.backend;
            let wt = b.upload_weight(&w)?;
            let xb = self.buffer(&x)?;
            let mut out = self.output(rows * n)?;
            let work = matmul_work(rows, k, n, &w);
            self.run_op("matmul", &case, work, || b.matmul(&xb, rows, &wt, &mut out))?;
            self.read_output(&out, rows * n)
        })();
        let tol = self.tolerances.matmul;
        self.check("matmul", case, tol, result, &want);
    }

    fn rope(&mut self, tokens: usize, heads: usize, head_dim: usize) {
        let x = self.random(tokens * heads * head_dim, 2.0);
        let positions: Vec<u32> = (0..tokens)
            .map(|_| self.rng.random_range(0..9000))
            .collect();
        let theta = 1e6f64;
        let want = self.oracle(|| {
            let mut want = widen(&x);
            oracle_rope(&mut want, &positions, heads, head_dim, theta);
            want
        });
        let case = format!("t{tokens}_h{heads}_d{head_dim}");
        let result = (|| {
            let b = self.backend;
            let mut xb = self.with_sentinels(&x)?;
            let work = Work::new(3 * x.len(), 8 * x.len());
            self.run_op("rope", &case, work, || {
                b.rope(&mut xb, &positions, heads, head_dim, theta as f32)
            })?;
            self.read_output(&xb, x.len())
        })();
        // Angles of positions up to 9,000 carry f32 rounding (as in the reference model).
        self.check("rope", case, 1e-8, result, &want);
    }

    /// `prefix_lens[i]`: the length of sequence i's shared prefix, if any;
    /// sequences with equal prefix lengths share one prefix K/V.
    fn attention(
        &mut self,
        lengths: &[usize],
        prefix_lens: &[Option<usize>],
        shape: AttentionShape,
    ) {
        let tokens: usize = lengths.iter().sum();
        let (qw, kvw, d) = (shape.q_width(), shape.kv_width(), shape.head_dim);
        let q = self.random(tokens * qw, 1.5);
        let k = self.random(tokens * kvw, 1.5);
        let v = self.random(tokens * kvw, 1.0);
        let mut prefix_kv: Vec<(usize, Vec<f32>, Vec<f32>)> = Vec::new();
        let mut prefix_index = Vec::new();
        for &len in prefix_lens {
            let index = len.map(|len| match prefix_kv.iter().position(|p| p.0 == len) {
                Some(i) => i,
                None => {
                    let (pk, pv) = (self.random(len * kvw, 1.5), self.random(len * kvw, 1.0));
                    prefix_kv.push((len, pk, pv));
                    prefix_kv.len() - 1
                }
            });
            prefix_index.push(index);
        }
        let layout = AttentionLayout::packed_with_prefixes(lengths, &prefix_index);
        let group = shape.n_heads / shape.n_kv_heads;
        let want = self.oracle(|| {
            let mut want = vec![0.0f64; tokens * qw];
            for seq in &layout.sequences {
                let (p_len, pk, pv) = match seq.prefix {
                    Some(i) => (
                        prefix_kv[i].0,
                        prefix_kv[i].1.as_slice(),
                        prefix_kv[i].2.as_slice(),
                    ),
                    None => (0, &[][..], &[][..]),
                };
                for row in seq.start..seq.start + seq.len {
                    for h in 0..shape.n_heads {
                        let kh = h / group;
                        // Keys: the whole prefix, then the sequence's own up to this row.
                        let own = (seq.start..=row)
                            .map(|j| (&k[j * kvw + kh * d..][..d], &v[j * kvw + kh * d..][..d]));
                        let key_rows: Vec<(&[f32], &[f32])> = (0..p_len)
                            .map(|j| (&pk[j * kvw + kh * d..][..d], &pv[j * kvw + kh * d..][..d]))
                            .chain(own)
                            .collect();
                        let qv = &q[row * qw + h * d..][..d];
                        let scores: Vec<f64> = key_rows
                            .iter()
                            .map(|(kr, _)| {
                                qv.iter()
                                    .zip(*kr)
                                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                    .sum::<f64>()
                                    / (d as f64).sqrt()
                            })
                            .collect();
                        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let sum: f64 = exps.iter().sum();
                        for ((_, vr), p) in key_rows.iter().zip(&exps) {
                            for i in 0..d {
                                want[row * qw + h * d + i] += p / sum * f64::from(vr[i]);
                            }
                        }
                    }
                }
            }
            want
        });
        let prefix_lens: Vec<usize> = prefix_lens.iter().map(|p| p.unwrap_or(0)).collect();
        let case = format!(
            "seqs{lengths:?}_pre{prefix_lens:?}_h{}_kv{}_d{d}",
            shape.n_heads, shape.n_kv_heads
        )
        .replace(' ', "");
        // Visible (query, key) pairs: each row sees its prefix and itself causally.
        let pairs: usize = layout
            .sequences
            .iter()
            .map(|seq| {
                let p = seq.prefix.map_or(0, |i| prefix_kv[i].0);
                seq.len * p + seq.len * (seq.len + 1) / 2
            })
            .sum();
        let prefix_bytes: usize = prefix_kv.iter().map(|(len, ..)| 8 * len * kvw).sum();
        let work = Work::new(
            4 * d * shape.n_heads * pairs,
            4 * tokens * (2 * qw + 2 * kvw) + prefix_bytes,
        );
        let result = (|| {
            let (qb, kb, vb) = (self.buffer(&q)?, self.buffer(&k)?, self.buffer(&v)?);
            let mut device_prefixes = Vec::new();
            for (len, pk, pv) in &prefix_kv {
                device_prefixes.push((*len, self.buffer(pk)?, self.buffer(pv)?));
            }
            let refs: Vec<KvRef<'_, B::Buffer>> = device_prefixes
                .iter()
                .map(|(len, k, v)| KvRef { k, v, len: *len })
                .collect();
            let mut out = self.output(tokens * qw)?;
            let b = self.backend;
            self.run_op("attention", &case, work, || {
                let qkv = Qkv {
                    q: &qb,
                    k: &kb,
                    v: &vb,
                };
                b.attention(qkv, shape, &layout, &refs, &mut out)
            })?;
            self.read_output(&out, tokens * qw)
        })();
        let tol = self.tolerances.attention;
        self.check("attention", case, tol, result, &want);
    }

    fn swiglu(&mut self, len: usize) {
        let gate = self.random(len, 6.0);
        let up = self.random(len, 2.0);
        let want = self.oracle(|| oracle_swiglu(&gate, &up));
        let case = format!("len{len}");
        let result = (|| {
            let b = self.backend;
            let (gb, ub) = (self.buffer(&gate)?, self.buffer(&up)?);
            let mut out = self.output(len)?;
            self.run_op("swiglu", &case, Work::new(5 * len, 12 * len), || {
                b.swiglu(&gb, &ub, len, &mut out)
            })?;
            self.read_output(&out, len)
        })();
        let tol = self.tolerances.elementwise;
        self.check("swiglu", case, tol, result, &want);
    }

    fn add(&mut self, len: usize) {
        let x = self.random(len, 4.0);
        let y = self.random(len, 4.0);
        let want = self.oracle(|| {
            x.iter()
                .zip(&y)
                .map(|(&a, &b)| f64::from(a) + f64::from(b))
                .collect()
        });
        let case = format!("len{len}");
        let result = (|| {
            let b = self.backend;
            let mut xb = self.with_sentinels(&x)?;
            let yb = self.buffer(&y)?;
            self.run_op("add", &case, Work::new(len, 12 * len), || {
                b.add_inplace(&mut xb, &yb, len)
            })?;
            self.read_output(&xb, len)
        })();
        let tol = self.tolerances.elementwise;
        self.check("add", case, tol, result, &want);
    }

    fn embedding(&mut self, vocab: usize, dim: usize) {
        let (table, exact) = self.weight(vocab, dim, GgmlType::Q8_0, 1.0);
        let ids: Vec<u32> = (0..11)
            .map(|_| self.rng.random_range(0..vocab as u32))
            .collect();
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| {
                exact[id as usize * dim..(id as usize + 1) * dim]
                    .iter()
                    .map(|&v| f64::from(v))
            })
            .collect();
        let result = (|| {
            let t = self.backend.upload_weight(&table)?;
            let mut out = self.output(ids.len() * dim)?;
            self.backend.embedding(&t, &ids, &mut out)?;
            self.read_output(&out, ids.len() * dim)
        })();
        self.check(
            "embedding",
            format!("Q8_0_vocab{vocab}_dim{dim}"),
            0.0,
            result,
            &want,
        );
    }

    fn score_head(&mut self, vocab: usize, dim: usize) {
        let (table, exact) = self.weight(vocab, dim, GgmlType::Q8_0, 1.0);
        let rows = 3;
        let x = self.random(rows * dim, 1.0);
        let head_rows = [vocab - 1, vocab / 2];
        let want: Vec<f64> = x
            .chunks(dim)
            .flat_map(|xr| {
                head_rows.map(|r| {
                    xr.iter()
                        .zip(&exact[r * dim..(r + 1) * dim])
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
                })
            })
            .collect();
        let result = (|| {
            let t = self.backend.upload_weight(&table)?;
            let xb = self.buffer(&x)?;
            let mut out = self.output(rows * 2)?;
            self.backend
                .score_head(&xb, rows, &t, head_rows, &mut out)?;
            self.read_output(&out, rows * 2)
        })();
        let tol = self.tolerances.matmul;
        self.check(
            "score_head",
            format!("Q8_0_vocab{vocab}_dim{dim}"),
            tol,
            result,
            &want,
        );
    }
    /// `rows × dim` activations, a norm weight and one `ty` weight per entry of
    /// `ns` (its output features); every product checked.
    fn rms_norm_matmuls(&mut self, rows: usize, dim: usize, ns: &[usize], ty: GgmlType) {
        let x = self.random(rows * dim, 3.0);
        let (norm, norm_exact) = self.weight(1, dim, GgmlType::F32, 1.5);
        let weights: Vec<(HostTensor, Vec<f32>)> =
            ns.iter().map(|&n| self.weight(n, dim, ty, 0.5)).collect();
        let eps = 1e-6;
        let want = self.oracle(|| {
            let normed = oracle_rms_norm(&widen(&x), &norm_exact, dim, eps);
            weights
                .iter()
                .flat_map(|(_, exact)| oracle_matmul(&normed, exact, dim))
                .collect()
        });
        let case = format!(
            "{}_{rows}x{dim}_by_{}",
            ty.name(),
            format!("{ns:?}").replace(' ', "")
        );
        let work = weights.iter().fold(Work::new(0, 0), |sum, (w, _)| {
            let one = matmul_work(rows, dim, w.rows, w);
            Work {
                flops: sum.flops + one.flops,
                bytes: sum.bytes + one.bytes,
            }
        });
        let result = (|| {
            let b = self.backend;
            let norm = b.upload_weight(&norm)?;
            let uploaded = weights
                .iter()
                .map(|(w, _)| b.upload_weight(w))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&B::Weight> = uploaded.iter().collect();
            let xb = self.buffer(&x)?;
            let mut scratch = self.output(rows * dim)?;
            let mut outs = ns
                .iter()
                .map(|&n| self.output(rows * n))
                .collect::<Result<Vec<_>, _>>()?;
            let mut out_refs: Vec<&mut B::Buffer> = outs.iter_mut().collect();
            self.run_op("norm_matmuls", &case, work, || {
                let x = Rows {
                    data: &xb,
                    rows,
                    width: dim,
                };
                let norm = Norm {
                    weight: &norm,
                    eps: eps as f32,
                };
                b.rms_norm_matmuls(x, norm, &refs, &mut scratch, &mut out_refs)
            })?;
            drop(out_refs);
            let mut got = Vec::new();
            for (out, &n) in outs.iter().zip(ns) {
                let values = self.read_output(out, rows * n)?;
                got.extend(self.sentinels_intact("rms_norm_matmuls", &values, rows * n)?);
            }
            got.extend(std::iter::repeat_n(SENTINEL, SENTINEL_LEN));
            Ok(got)
        })();
        let tol = self.tolerance_for(ty);
        self.check("norm_matmuls", case, tol, result, &want);
    }

    fn qk_norm_rope(&mut self, tokens: usize, heads: usize, kv_heads: usize, head_dim: usize) {
        let shape = AttentionShape {
            n_heads: heads,
            n_kv_heads: kv_heads,
            head_dim,
        };
        let q = self.random(tokens * shape.q_width(), 2.0);
        let k = self.random(tokens * shape.kv_width(), 2.0);
        let (q_norm, q_exact) = self.weight(1, head_dim, GgmlType::F32, 1.5);
        let (k_norm, k_exact) = self.weight(1, head_dim, GgmlType::F32, 1.5);
        let positions: Vec<u32> = (0..tokens)
            .map(|_| self.rng.random_range(0..9000))
            .collect();
        let (eps, theta) = (1e-6, 1e6);
        let want = self.oracle(|| {
            let mut want_q = oracle_rms_norm(&widen(&q), &q_exact, head_dim, eps);
            let mut want_k = oracle_rms_norm(&widen(&k), &k_exact, head_dim, eps);
            oracle_rope(&mut want_q, &positions, heads, head_dim, theta);
            oracle_rope(&mut want_k, &positions, kv_heads, head_dim, theta);
            want_q.into_iter().chain(want_k).collect()
        });
        let case = format!("t{tokens}_h{heads}_kv{kv_heads}_d{head_dim}");
        let elements = q.len() + k.len();
        let work = Work::new(7 * elements, 8 * elements);
        let result = (|| {
            let b = self.backend;
            let (qn, kn) = (b.upload_weight(&q_norm)?, b.upload_weight(&k_norm)?);
            let mut qb = self.with_sentinels(&q)?;
            let mut kb = self.with_sentinels(&k)?;
            self.run_op("qk_norm_rope", &case, work, || {
                let eps = eps as f32;
                let rope = Rope {
                    positions: &positions,
                    theta: theta as f32,
                };
                let (q_norm, k_norm) = (Norm { weight: &qn, eps }, Norm { weight: &kn, eps });
                b.qk_norm_rope(&mut qb, &mut kb, q_norm, k_norm, rope, shape)
            })?;
            let got_q = self.read_output(&qb, q.len())?;
            let mut got = self.sentinels_intact("qk_norm_rope", &got_q, q.len())?;
            got.extend(self.read_output(&kb, k.len())?);
            Ok(got)
        })();
        // As rope: angles of positions up to 9,000 carry f32 rounding.
        self.check("qk_norm_rope", case, 1e-8, result, &want);
    }

    fn matmul_add(&mut self, rows: usize, k: usize, n: usize, ty: GgmlType) {
        let x = self.random(rows * k, 1.0);
        let residual = self.random(rows * n, 2.0);
        let (w, w_exact) = self.weight(n, k, ty, 0.5);
        let want = self.oracle(|| add_f64(&residual, oracle_matmul(&widen(&x), &w_exact, k)));
        let case = format!("{}_{rows}x{k}_by_{n}", ty.name());
        let mut work = matmul_work(rows, k, n, &w);
        work.bytes += (4 * rows * n) as f64;
        let result = (|| {
            let b = self.backend;
            let wt = b.upload_weight(&w)?;
            let xb = self.buffer(&x)?;
            let mut scratch = self.output(rows * n)?;
            let mut out = self.with_sentinels(&residual)?;
            self.run_op("matmul_add", &case, work, || {
                b.matmul_add(&xb, rows, &wt, n, &mut scratch, &mut out)
            })?;
            self.read_output(&out, rows * n)
        })();
        let tol = self.tolerance_for(ty);
        self.check("matmul_add", case, tol, result, &want);
    }

    fn swiglu_matmul_add(&mut self, rows: usize, ffn: usize, n: usize, ty: GgmlType) {
        let gate = self.random(rows * ffn, 6.0);
        let up = self.random(rows * ffn, 2.0);
        let residual = self.random(rows * n, 2.0);
        let (w, w_exact) = self.weight(n, ffn, ty, 0.5);
        let want = self.oracle(|| {
            let act = oracle_swiglu(&gate, &up);
            add_f64(&residual, oracle_matmul(&act, &w_exact, ffn))
        });
        let case = format!("{}_{rows}x{ffn}_by_{n}", ty.name());
        let mut work = matmul_work(rows, ffn, n, &w);
        work.flops += (5 * rows * ffn) as f64;
        work.bytes += (4 * rows * ffn + 4 * rows * n) as f64;
        let result = (|| {
            let b = self.backend;
            let wt = b.upload_weight(&w)?;
            let (gb, ub) = (self.buffer(&gate)?, self.buffer(&up)?);
            let mut act = self.output(rows * ffn)?;
            let mut scratch = self.output(rows * n)?;
            let mut out = self.with_sentinels(&residual)?;
            self.run_op("swiglu_mm_add", &case, work, || {
                let gate_up = GateUp {
                    gate: &gb,
                    up: &ub,
                    rows,
                    ffn,
                };
                b.swiglu_matmul_add(gate_up, &wt, n, &mut act, &mut scratch, &mut out)
            })?;
            self.read_output(&out, rows * n)
        })();
        let tol = self.tolerance_for(ty);
        self.check("swiglu_mm_add", case, tol, result, &want);
    }

    /// The matmul tolerance for int8-path weights, f32's for the others.
    fn tolerance_for(&self, ty: GgmlType) -> f64 {
        if ty == GgmlType::Q8_0 {
            self.tolerances.matmul
        } else {
            Tolerances::F32.matmul.max(self.tolerances.elementwise)
        }
    }

    /// A buffer holding `data` followed by sentinels (in-place outputs).
    fn with_sentinels(&mut self, data: &[f32]) -> Result<B::Buffer, BackendError> {
        let mut init = data.to_vec();
        init.extend(std::iter::repeat_n(SENTINEL, SENTINEL_LEN));
        self.buffer(&init)
    }

    /// The first `len` values of an output read with its sentinels, once the
    /// sentinels are checked (for ops with several outputs, all but the last).
    fn sentinels_intact(
        &self,
        op: &'static str,
        values: &[f32],
        len: usize,
    ) -> Result<Vec<f32>, BackendError> {
        if values[len..].iter().any(|&v| v != SENTINEL) {
            return Err(BackendError::Invalid {
                op,
                detail: "wrote past one of its outputs".into(),
            });
        }
        Ok(values[..len].to_vec())
    }
}

/// A `rows × k` by `[n, k]` matmul: 2·rows·k·n operations; the weight's
/// bytes as stored plus f32 activations in and out.
fn matmul_work(rows: usize, k: usize, n: usize, weight: &HostTensor) -> Work {
    Work::new(
        2 * rows * k * n,
        weight.bytes().len() + 4 * rows * k + 4 * rows * n,
    )
}

fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

fn add_f64(x: &[f32], y: Vec<f64>) -> Vec<f64> {
    x.iter().zip(y).map(|(&a, b)| f64::from(a) + b).collect()
}

/// Row-wise `x / sqrt(mean(x²) + eps) · w` over rows of `dim`.
fn oracle_rms_norm(x: &[f64], w: &[f32], dim: usize, eps: f64) -> Vec<f64> {
    x.chunks(dim)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / dim as f64;
            let s = 1.0 / (ms + eps).sqrt();
            row.iter().zip(w).map(move |(&v, &g)| v * s * f64::from(g))
        })
        .collect()
}

/// `x · wᵀ` for `w` of rows of `k`.
fn oracle_matmul(x: &[f64], w: &[f32], k: usize) -> Vec<f64> {
    x.chunks(k)
        .flat_map(|xr| {
            w.chunks(k)
                .map(|wr| {
                    xr.iter()
                        .zip(wr)
                        .map(|(&a, &b)| a * f64::from(b))
                        .sum::<f64>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// NeoX rotation in place on `[tokens, heads, head_dim]`.
fn oracle_rope(x: &mut [f64], positions: &[u32], heads: usize, head_dim: usize, theta: f64) {
    let half = head_dim / 2;
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = (t * heads + h) * head_dim;
            for i in 0..half {
                let angle = f64::from(pos) * theta.powf(-((2 * i) as f64) / head_dim as f64);
                let (a, b) = (x[base + i], x[base + i + half]);
                x[base + i] = a * angle.cos() - b * angle.sin();
                x[base + i + half] = b * angle.cos() + a * angle.sin();
            }
        }
    }
}

fn oracle_swiglu(gate: &[f32], up: &[f32]) -> Vec<f64> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = f64::from(g);
            g / (1.0 + (-g).exp()) * f64::from(u)
        })
        .collect()
}

/// Encodes f32 values as a tensor of `ty`; returns the bytes and the values the
/// tensor really holds (after rounding or quantisation).
fn encode(values: &[f32], ty: GgmlType) -> (Vec<u8>, Vec<f32>) {
    match ty {
        GgmlType::F32 => (
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            values.to_vec(),
        ),
        GgmlType::F16 => {
            let h: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        GgmlType::BF16 => {
            let h: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        GgmlType::Q8_0 => {
            let mut blocks = vec![BlockQ8_0::default(); values.len() / 32];
            quantize_row_q8_0(values, &mut blocks);
            let mut exact = vec![0.0; values.len()];
            dequantize_row_q8_0(&blocks, &mut exact);
            (BlockQ8_0::as_bytes(&blocks).to_vec(), exact)
        }
        other => panic!("the kit does not encode {other:?}"),
    }
}
