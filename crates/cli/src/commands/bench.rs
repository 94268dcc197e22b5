//! `tessera bench`: forward-pass throughput of a backend on a synthetic
//! rerank workload (one query, many documents of random tokens, the query
//! prefix shared) or a plain prefill workload (`--sequence-tokens`), with the
//! reference path measured in the same run as the baseline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_gguf::GgufFile;
use tessera_report::device_name;
use tessera_report::op_cost::{op_costs, ModelShape, PassShape};
use tessera_runtime::{AnyReranker, BackendChoice, BackendOptions, Ceilings, Precision, Profiler};
use tessera_service::{PackedRequest, PrefixGroup};

use super::bench_report::{render_all, Format, Profile, ProfileLines, Record, RecordFormat};
use crate::backends::BackendArgs;
use crate::flags::{count, MAX_PASS_TOKENS};
use crate::model_source::{self, ModelArgs};

/// Whether progress and text results go to stdout (`--format text`) or to
/// stderr (stdout then holds only the formatted records).
static TEXT_ON_STDOUT: AtomicBool = AtomicBool::new(true);

macro_rules! say {
    ($($arg:tt)*) => {
        if TEXT_ON_STDOUT.load(Ordering::Relaxed) {
            println!($($arg)*)
        } else {
            eprintln!($($arg)*)
        }
    };
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    source: ModelArgs,
    /// Documents per run.
    #[arg(long, default_value_t = 16, value_parser = count::<1, 1_000_000>)]
    docs: usize,
    /// Tokens per document.
    #[arg(long, default_value_t = 256, value_parser = count::<1, MAX_PASS_TOKENS>)]
    doc_tokens: usize,
    /// Tokens of the query.
    #[arg(long, default_value_t = 32, value_parser = count::<1, MAX_PASS_TOKENS>)]
    query_tokens: usize,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 4096, value_parser = count::<1, MAX_PASS_TOKENS>)]
    batch_tokens: usize,
    /// Timed runs (after one warm-up run).
    #[arg(long, default_value_t = 3, value_parser = count::<1, 100_000>)]
    runs: usize,
    #[command(flatten)]
    run_on: BackendArgs,
    /// Measure plain prefill instead: each sequence is this many random tokens,
    /// no prompt, one sequence per forward pass (as `llama-bench -p N`).
    #[arg(long, value_parser = count::<1, MAX_PASS_TOKENS>)]
    sequence_tokens: Option<usize>,
    /// Instead of the reference baseline, measure the rerank workload three ways
    /// on the chosen backend: every pair computed whole (no prefix sharing), the
    /// query prefix shared with a cold cache, and the same query again (warm).
    #[arg(long, conflicts_with = "sequence_tokens")]
    prefix_study: bool,
    /// Sequences the reference baseline runs on (it is several times slower;
    /// 0 skips it). Per-sequence work is identical, so rates compare.
    #[arg(long, default_value_t = 2, value_parser = count::<0, 1_000_000>)]
    baseline_docs: usize,
    /// After the timed runs, one more run with the device waited on around
    /// every backend op: milliseconds and share per op kind, per layer, and the
    /// host time between ops.
    #[arg(long)]
    profile: bool,
    /// How the results are written on stdout: text lines as the run goes, or
    /// one record per measurement as json (JSON Lines), csv or md (a Markdown
    /// table), with the progress on stderr.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Measure the rerank workload over a grid of documents per request,
    /// tokens per document and batch tokens (`--sweep-docs`,
    /// `--sweep-doc-tokens`, `--sweep-batch-tokens`; defaults sized to finish
    /// in minutes, smaller on the CPU), one record per point; no baseline.
    /// With --profile each point also carries a per-op profile.
    #[arg(long, conflicts_with_all = ["sequence_tokens", "prefix_study"])]
    sweep: bool,
    /// Documents per request of the sweep: a comma list, or A..B (A, 2A, 4A, …
    /// up to B).
    #[arg(long, value_name = "LIST", requires = "sweep", value_parser = sweep_values)]
    sweep_docs: Option<SweepAxis>,
    /// Tokens per document of the sweep (as --sweep-docs).
    #[arg(long, value_name = "LIST", requires = "sweep", value_parser = sweep_values)]
    sweep_doc_tokens: Option<SweepAxis>,
    /// Tokens per forward pass of the sweep (as --sweep-docs).
    #[arg(long, value_name = "LIST", requires = "sweep", value_parser = sweep_values)]
    sweep_batch_tokens: Option<SweepAxis>,
    /// With --sweep: append each point's JSON record to FILE as it is
    /// measured, and skip the points FILE already holds for this device,
    /// backend, arithmetic and model (an interrupted sweep resumes).
    #[arg(long, value_name = "FILE", requires = "sweep")]
    out: Option<std::path::PathBuf>,
}

/// The values of one sweep axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepAxis(Vec<usize>);

/// A sweep axis: `8,32,128` or `8..128` (8, 16, 32, 64, 128); each value from 1
/// to 16,777,216, at most 64 values.
fn sweep_values(text: &str) -> Result<SweepAxis, String> {
    let values: Vec<usize> = match text.split_once("..") {
        Some((low, high)) => {
            let low = count::<1, MAX_PASS_TOKENS>(low)?;
            let high = count::<1, MAX_PASS_TOKENS>(high)?;
            if high < low {
                return Err(format!("{text}: the range ends below its start"));
            }
            std::iter::successors(Some(low), |v| v.checked_mul(2))
                .take_while(|v| *v <= high)
                .collect()
        }
        None => text
            .split(',')
            .map(count::<1, MAX_PASS_TOKENS>)
            .collect::<Result<_, _>>()?,
    };
    if values.len() > 64 {
        return Err(format!("{text}: {} values, at most 64", values.len()));
    }
    Ok(SweepAxis(values))
}

/// Token sequences of one measured workload and how they are batched.
struct Workload {
    /// Rerank: `(prefix, documents)` groups per forward pass; prefill: one
    /// document per pass with an empty prefix.
    passes: Vec<(Vec<u32>, Vec<Vec<u32>>)>,
    /// Tokens per document as billed (prefix + document).
    pair_tokens: Vec<usize>,
}

impl Workload {
    /// The same documents with each pair computed whole: the prefix is
    /// prepended to every document and nothing is shared.
    fn unshared(&self) -> Workload {
        Workload {
            passes: self
                .passes
                .iter()
                .map(|(prefix, docs)| {
                    let whole = docs
                        .iter()
                        .map(|d| prefix.iter().chain(d).copied().collect())
                        .collect();
                    (Vec::new(), whole)
                })
                .collect(),
            pair_tokens: self.pair_tokens.clone(),
        }
    }

    /// One timed run: seconds and the token rows the forward passes computed.
    fn run_counted(&self, reranker: &dyn AnyReranker) -> anyhow::Result<(f64, u64)> {
        let before = reranker
            .prefix_cache_stats()
            .unwrap_or_default()
            .computed_tokens;
        let start = Instant::now();
        for (prefix, documents) in &self.passes {
            let group = PrefixGroup {
                prefix,
                documents: documents.iter().map(Vec::as_slice).collect(),
            };
            reranker.compute(&[group])?;
        }
        let seconds = start.elapsed().as_secs_f64();
        let computed = reranker
            .prefix_cache_stats()
            .unwrap_or_default()
            .computed_tokens
            - before;
        Ok((seconds, computed))
    }

    fn docs(&self) -> usize {
        self.pair_tokens.len()
    }

    /// One more run with `profiler` recording: each op kind's time, with the
    /// FLOPs and minimum bytes the passes gave it (`tessera_report::op_cost`).
    fn profile(
        &self,
        reranker: &dyn AnyReranker,
        profiler: &Profiler,
        shape: &ModelShape,
    ) -> anyhow::Result<Profile> {
        profiler.start();
        let run = self.run_counted(reranker);
        let ops = profiler.finish();
        let (seconds, computed) = run?;
        let passes: Vec<PassShape> = self
            .passes
            .iter()
            .map(|(prefix, docs)| PassShape {
                prefix: prefix.len(),
                docs: docs.iter().map(Vec::len).collect(),
            })
            .collect();
        let doc_rows: usize = passes.iter().flat_map(|p| &p.docs).sum();
        // Rows beyond the documents' are query prefix computed in this run.
        let prefix_rows = (computed as usize).saturating_sub(doc_rows);
        let costs = op_costs(shape, &passes, prefix_rows);
        Ok(Profile::from_ops(&ops, seconds, &costs))
    }

    fn tokens(&self) -> usize {
        self.pair_tokens.iter().sum()
    }

    /// The first `docs` documents, batched the same way.
    fn take(&self, docs: usize) -> Workload {
        let mut left = docs;
        let mut passes = Vec::new();
        for (prefix, documents) in &self.passes {
            if left == 0 {
                break;
            }
            let n = documents.len().min(left);
            passes.push((prefix.clone(), documents[..n].to_vec()));
            left -= n;
        }
        Workload {
            passes,
            pair_tokens: self.pair_tokens[..docs.min(self.docs())].to_vec(),
        }
    }

    /// Median seconds of `runs` timed runs, after one warm-up if asked.
    fn measure(
        &self,
        reranker: &dyn AnyReranker,
        runs: usize,
        warm_up: bool,
        label: &str,
    ) -> anyhow::Result<f64> {
        Ok(self.measure_counted(reranker, runs, warm_up, label)?.0)
    }

    /// As `measure`, with the token rows the median run computed (the
    /// billed tokens where the engine does not count them).
    fn measure_counted(
        &self,
        reranker: &dyn AnyReranker,
        runs: usize,
        warm_up: bool,
        label: &str,
    ) -> anyhow::Result<(f64, u64)> {
        if warm_up {
            self.run_counted(reranker)?;
        }
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            let (t, computed) = self.run_counted(reranker)?;
            let computed = if computed == 0 {
                self.tokens() as u64
            } else {
                computed
            };
            say!(
                "{label:<10} run {:>2}  {:.3} s  {:.1} tokens/s  {:.2} docs/s",
                i + 1,
                t,
                self.tokens() as f64 / t,
                self.docs() as f64 / t
            );
            times.push((t, computed));
        }
        times.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (median, computed) = times[times.len() / 2];
        say!(
            "{label:<10} median  {:.3} s  {:.1} tokens/s  {:.2} docs/s  ({} docs, {} tokens)",
            median,
            self.tokens() as f64 / median,
            self.docs() as f64 / median,
            self.docs(),
            self.tokens()
        );
        Ok((median, computed))
    }
}

/// `--prefix-study`: the rerank workload without prefix sharing, with it on a
/// cold cache, and with it on a warm cache, on the same backend in one run.
fn prefix_study(workload: &Workload, reranker: &dyn AnyReranker) -> anyhow::Result<()> {
    let capacity = reranker
        .prefix_cache_stats()
        .unwrap_or_default()
        .capacity_bytes;
    let billed = workload.tokens();
    // A warm-up that leaves the cache cold: page in weights, size buffers.
    workload.take(1).unshared().run_counted(reranker)?;
    let mut rows = Vec::new();
    for mode in ["unshared", "shared-cold", "shared-warm"] {
        let (seconds, computed) = match mode {
            "unshared" => {
                reranker.set_prefix_cache_bytes(0);
                let r = workload.unshared().run_counted(reranker)?;
                reranker.set_prefix_cache_bytes(capacity);
                r
            }
            "shared-cold" => {
                // Drops every cached query prefix; the system prompt stays pinned.
                reranker.set_prefix_cache_bytes(0);
                reranker.set_prefix_cache_bytes(capacity);
                workload.run_counted(reranker)?
            }
            _ => workload.run_counted(reranker)?,
        };
        say!(
            "{mode:<12} {seconds:>9.3} s  {computed:>8} tokens computed of {billed} billed  \
             {:.1} billed tokens/s  {:.2} docs/s",
            billed as f64 / seconds,
            workload.docs() as f64 / seconds
        );
        rows.push((mode, seconds, computed));
    }
    let (_, base_s, base_computed) = rows[0];
    for (mode, seconds, computed) in &rows[1..] {
        say!(
            "summary    {mode}: {:.1}% of the tokens computed, wall time {:.3}× unshared ({:.2}× faster)",
            100.0 * *computed as f64 / base_computed as f64,
            seconds / base_s,
            base_s / seconds
        );
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.prefix_study && args.format != Format::Text {
        bail!("--prefix-study writes text only (--format text)");
    }
    TEXT_ON_STDOUT.store(args.format == Format::Text, Ordering::Relaxed);
    let loaded = model_source::open_warning(args.source.path()?.as_deref())?;
    let load_start = Instant::now();
    let profiler = args.profile.then(Profiler::new);
    let cpu = BackendOptions {
        profiler: profiler.clone(),
        ..args.run_on.options()
    };
    let measured_on = tessera_runtime::open(args.run_on.choice(), &loaded.file, None, &cpu)?;
    let device = measured_on.device;
    let measured = measured_on.model.into_reranker(&loaded.name)?;
    let reranker = measured.as_ref();
    let backend_name = reranker.backend_name();
    let on_cpu = backend_name.starts_with("cpu");
    let load_time = load_start.elapsed();
    let mut rng = StdRng::seed_from_u64(7);
    let shape = model_shape(reranker, &loaded.file);
    if args.sweep {
        let (ceilings, no_ceilings) = measure_ceilings(&args, &device, reranker, None);
        let template = Record {
            ceilings,
            no_ceilings,
            ..record_template(&args, &loaded.name, &device, reranker)
        };
        let profiling = profiler.as_deref().map(|p| (p, &shape));
        return sweep(&args, reranker, &mut rng, template, profiling);
    }
    let workload = match args.sequence_tokens {
        Some(len) => {
            let vocab = vocab_of(reranker);
            Workload {
                passes: (0..args.docs)
                    .map(|_| (Vec::new(), vec![random_ids(&mut rng, vocab, len)]))
                    .collect(),
                pair_tokens: vec![len; args.docs],
            }
        }
        None => rerank_workload(
            reranker,
            &mut rng,
            (args.docs, args.doc_tokens, args.query_tokens),
            args.batch_tokens,
        )?,
    };
    let c = reranker.config();
    say!(
        "model      {} ({} layers, hidden {}, ffn {}, heads {}/{}, head_dim {})",
        loaded.name,
        c.n_layers,
        c.hidden,
        c.ffn,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim
    );
    say!("cpu        {}", tessera_runtime::cpu_model());
    say!("device     {}", device);
    say!(
        "backend    {backend_name}; weights loaded in {:.2} s",
        load_time.as_secs_f64()
    );
    match args.sequence_tokens {
        Some(len) => say!(
            "workload   prefill: {} sequences × {len} random tokens, one per forward pass",
            args.docs
        ),
        None => say!(
            "workload   rerank: {} docs × {} tokens + prompt ({} tokens billed) in {} forward {}; \
             the {}-token query prefix is shared by the documents of each pass and cached across passes",
            args.docs,
            args.doc_tokens,
            workload.tokens(),
            workload.passes.len(),
            plural(workload.passes.len(), "pass", "passes"),
            workload.passes[0].0.len()
        ),
    }
    if args.prefix_study {
        return prefix_study(&workload, reranker);
    }
    let label = if on_cpu {
        args.run_on.precision.name().to_string()
    } else {
        // "wgpu (llvmpipe …)" → "wgpu", "cuda …" → "cuda".
        backend_name
            .split([' ', '-'])
            .next()
            .unwrap_or("measured")
            .to_string()
    };
    let label = label.as_str();
    let (measured, computed) = workload.measure_counted(reranker, args.runs, true, label)?;
    let matmul_gflop_per_s = matmul_flops_per_token(reranker) * computed as f64 / measured / 1e9;
    let (ceilings, no_ceilings) =
        measure_ceilings(&args, &device, reranker, Some(matmul_gflop_per_s));
    let rate = |w: &Workload, t: f64| (w.tokens() as f64 / t, w.docs() as f64 / t);
    let (tokens_per_s, docs_per_s) = rate(&workload, measured);
    let profile = match &profiler {
        Some(profiler) => {
            let profile = workload.profile(reranker, profiler, &shape)?;
            for line in profile.lines(ceilings.as_ref()) {
                say!("{line}");
            }
            Some(profile)
        }
        None => None,
    };
    let mut record = Record {
        workload: if args.sequence_tokens.is_some() {
            "prefill"
        } else {
            "rerank"
        }
        .to_string(),
        docs: workload.docs(),
        doc_tokens: args.sequence_tokens.unwrap_or(args.doc_tokens),
        query_tokens: if args.sequence_tokens.is_some() {
            0
        } else {
            args.query_tokens
        },
        batch_tokens: args.batch_tokens,
        passes: workload.passes.len(),
        billed_tokens: workload.tokens(),
        runs: args.runs,
        median_s: measured,
        tokens_per_s,
        docs_per_s,
        reference_tokens_per_s: None,
        matmul_gflop_per_s: Some(matmul_gflop_per_s),
        ceilings,
        no_ceilings,
        profile,
        ..record_template(&args, &loaded.name, &device, reranker)
    };
    let baseline_docs = args.baseline_docs.min(args.docs);
    if (on_cpu && args.run_on.precision == Precision::Reference) || baseline_docs == 0 {
        say!("summary    {label} {tokens_per_s:.1} tokens/s {docs_per_s:.2} docs/s");
        return emit(&record, args.format);
    }
    let baseline = workload.take(baseline_docs);
    say!(
        "baseline   reference path on the first {} of the {} docs, one run, no warm-up",
        baseline.docs(),
        workload.docs()
    );
    if args.sequence_tokens.is_none() {
        say!(
            "           (its query prefix is shared by fewer docs and not yet cached, so it \
             does more work per doc: the rerank ratio flatters the fast path; the prefill \
             ratio is the like-for-like one)"
        );
    }
    let reference = tessera_runtime::open(
        BackendChoice::Cpu,
        &loaded.file,
        None,
        &BackendOptions {
            precision: Precision::Reference,
            ..args.run_on.options()
        },
    )?
    .model
    .into_reranker(&loaded.name)?;
    let base_time = baseline.measure(reference.as_ref(), 1, false, "reference")?;
    let (base_tokens, base_docs) = rate(&baseline, base_time);
    say!(
        "summary    {label} {tokens_per_s:.1} tokens/s {docs_per_s:.2} docs/s | reference {base_tokens:.1} tokens/s {base_docs:.2} docs/s | {label}/reference {:.2}×",
        tokens_per_s / base_tokens
    );
    record.reference_tokens_per_s = Some(base_tokens);
    emit(&record, args.format)
}

/// `n` random token ids below `vocab`.
fn random_ids(rng: &mut StdRng, vocab: u32, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab)).collect()
}

/// The ids random documents draw from: the tokenizer's ordinary tokens.
fn vocab_of(reranker: &dyn AnyReranker) -> u32 {
    reranker.prompt().tokenizer().vocab_size().min(151_643) as u32
}

/// One query of `query_tokens` random tokens and `docs` documents of
/// `doc_tokens`, in the prompt, batched into passes of `batch_tokens` as the
/// server's scheduler packs one request.
fn rerank_workload(
    reranker: &dyn AnyReranker,
    rng: &mut StdRng,
    (docs, doc_tokens, query_tokens): (usize, usize, usize),
    batch_tokens: usize,
) -> anyhow::Result<Workload> {
    let prompt = reranker.prompt();
    let vocab = vocab_of(reranker);
    let query_ids = random_ids(rng, vocab, query_tokens);
    let query = prompt.tokenizer().decode(&query_ids)?;
    let prefix = prompt.query_prefix(None, &query)?;
    let request = PackedRequest {
        documents: (0..docs)
            .map(|_| {
                let mut doc = random_ids(rng, vocab, doc_tokens);
                doc.extend_from_slice(prompt.suffix_ids());
                doc
            })
            .collect(),
        prefix,
    };
    let passes = request
        .passes(batch_tokens)
        .into_iter()
        .map(|pass| (request.prefix.clone(), request.documents[pass].to_vec()))
        .collect();
    Ok(Workload {
        passes,
        pair_tokens: request
            .documents
            .iter()
            .map(|d| request.prefix.len() + d.len())
            .collect(),
    })
}

/// A record's fields that do not depend on the workload: the build, the
/// device, the backend and its arithmetic, the model; the rest zero.
fn record_template(
    args: &BenchArgs,
    model: &str,
    device: &str,
    reranker: &dyn AnyReranker,
) -> Record {
    let backend = reranker.backend_name();
    let c = reranker.config();
    Record {
        tessera: env!("CARGO_PKG_VERSION").to_string(),
        commit: option_env!("TESSERA_GIT_COMMIT")
            .unwrap_or("unknown")
            .to_string(),
        device: device.to_string(),
        cpu: tessera_runtime::cpu_model(),
        arithmetic: if backend.starts_with("cpu") {
            args.run_on.precision.name().to_string()
        } else if backend.starts_with("cuda") {
            args.run_on.gpu_precision.name().to_string()
        } else {
            "f32".to_string()
        },
        backend,
        flags: std::env::args().collect::<Vec<_>>().join(" "),
        model: model.to_string(),
        layers: c.n_layers,
        hidden: c.hidden,
        ffn: c.ffn,
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        workload: String::new(),
        docs: 0,
        doc_tokens: 0,
        query_tokens: 0,
        batch_tokens: 0,
        passes: 0,
        billed_tokens: 0,
        runs: 0,
        median_s: 0.0,
        tokens_per_s: 0.0,
        docs_per_s: 0.0,
        reference_tokens_per_s: None,
        matmul_gflop_per_s: None,
        ceilings: None,
        no_ceilings: None,
        profile: None,
    }
}

/// The model's dimensions for the per-op costs, with the bytes per weight of
/// its first q projection (Q8_0 for the served model; 4 for f32 fixtures).
fn model_shape(reranker: &dyn AnyReranker, file: &GgufFile) -> ModelShape {
    let c = reranker.config();
    let weight_bytes = file.tensor("blk.0.attn_q.weight").map_or(34.0 / 32.0, |t| {
        t.ggml_type.type_size() as f64 / t.ggml_type.block_size() as f64
    });
    ModelShape {
        layers: c.n_layers,
        hidden: c.hidden,
        ffn: c.ffn,
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        weight_bytes,
    }
}

/// 2 · the matmul weights a token row goes through: every layer's q, k, v,
/// o, gate, up and down projections (attention and the score head aside).
fn matmul_flops_per_token(reranker: &dyn AnyReranker) -> f64 {
    let c = reranker.config();
    let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let per_layer =
        c.hidden * (q + 2 * kv) + q * c.hidden + 2 * c.hidden * c.ffn + c.ffn * c.hidden;
    2.0 * (c.n_layers * per_layer) as f64
}

/// The device's ceilings, measured in this run — on the CPU with the run's
/// threads, on CUDA on the run's GPU — or why there are none (wgpu; a CUDA
/// device without libcublas), and a line reading `matmul_gflop_per_s` (this
/// run's matmul rate, when measured) against them.
fn measure_ceilings(
    args: &BenchArgs,
    device: &str,
    reranker: &dyn AnyReranker,
    matmul_gflop_per_s: Option<f64>,
) -> (Option<Ceilings>, Option<String>) {
    let backend = reranker.backend_name();
    let measured = if backend.starts_with("cpu") {
        let threads = args.run_on.options().threads;
        tessera_runtime::cpu_ceilings(threads, tessera_runtime::CeilingSizes::default())
            .map_err(|e| e.to_string())
    } else if backend.starts_with("cuda") {
        // "cuda:N …": the GPU the model runs on.
        let ordinal = device
            .strip_prefix("cuda:")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        tessera_runtime::cuda_ceilings(ordinal).map_err(|e| format!("cuda: {e}"))
    } else {
        Err("wgpu: none measured (the backend has no timed copy or reference matmul              on the adapter to measure them with)"
            .to_string())
    };
    match measured {
        Ok(c) => {
            let run = matmul_gflop_per_s.map_or(String::new(), |rate| {
                format!(
                    " — this run's matmuls {rate:.1} GFLOP/s, {:.0}% of it",
                    100.0 * rate / c.matmul_gflop_per_s
                )
            });
            say!(
                "ceilings   copy {:.1} GB/s ({}); {} {:.1} GFLOP/s at {}{run}",
                c.copy_gb_per_s,
                c.copy_kind,
                c.matmul_kernel,
                c.matmul_gflop_per_s,
                c.matmul_shape,
            );
            (Some(c), None)
        }
        Err(why) => {
            say!("ceilings   {why}");
            (None, Some(why))
        }
    }
}

/// The default sweep grid: documents per request × tokens per document ×
/// batch tokens, sized to finish in a few minutes (smaller on the CPU).
fn default_grid(on_cpu: bool) -> [Vec<usize>; 3] {
    if on_cpu {
        [vec![4, 16], vec![64, 256], vec![1024, 4096]]
    } else {
        [vec![16, 64, 256], vec![128, 512, 2048], vec![4096, 16384]]
    }
}

/// Whether `line` (a JSON record) is the point `record` would measure: same
/// device, backend, arithmetic, model and workload shape.
fn same_point(line: &str, record: &Record) -> bool {
    let Ok(old) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let text = |key: &str, want: &str| old[key].as_str() == Some(want);
    let number = |key: &str, want: usize| old[key].as_u64() == Some(want as u64);
    old["device"].as_str().map(device_name) == Some(record.device_name())
        && text("backend", &record.backend)
        && text("arithmetic", &record.arithmetic)
        && text("model", &record.model)
        && text("workload", &record.workload)
        && number("docs", record.docs)
        && number("doc_tokens", record.doc_tokens)
        && number("query_tokens", record.query_tokens)
        && number("batch_tokens", record.batch_tokens)
}

/// `--sweep`: every point of the grid measured on the loaded model, one record
/// each (appended to `--out` as it is measured, or written on stdout in
/// `--format`), progress on stderr; points `--out` already holds are skipped.
fn sweep(
    args: &BenchArgs,
    reranker: &dyn AnyReranker,
    rng: &mut StdRng,
    template: Record,
    profiling: Option<(&Profiler, &ModelShape)>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let [docs, doc_tokens, batch_tokens] = default_grid(template.backend.starts_with("cpu"));
    let axis =
        |given: &Option<SweepAxis>, default: Vec<usize>| given.clone().map_or(default, |a| a.0);
    let docs = axis(&args.sweep_docs, docs);
    let doc_tokens = axis(&args.sweep_doc_tokens, doc_tokens);
    let batch_tokens = axis(&args.sweep_batch_tokens, batch_tokens);
    let done: Vec<String> = match &args.out {
        Some(path) if path.exists() => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
            .lines()
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let mut out = match &args.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let points = docs.len() * doc_tokens.len() * batch_tokens.len();
    let mut records = Vec::new();
    let mut index = 0;
    for &d in &docs {
        for &t in &doc_tokens {
            for &b in &batch_tokens {
                index += 1;
                let mut record = Record {
                    workload: "rerank".into(),
                    docs: d,
                    doc_tokens: t,
                    query_tokens: args.query_tokens,
                    batch_tokens: b,
                    runs: args.runs,
                    ..template.clone()
                };
                if done.iter().any(|line| same_point(line, &record)) {
                    eprintln!("[{index}/{points}] {d} docs × {t} tokens, batch {b}: in the file already, skipped");
                    continue;
                }
                let workload = rerank_workload(reranker, rng, (d, t, args.query_tokens), b)?;
                let (median, computed) =
                    workload.measure_counted(reranker, args.runs, true, "sweep")?;
                record.matmul_gflop_per_s =
                    Some(matmul_flops_per_token(reranker) * computed as f64 / median / 1e9);
                record.passes = workload.passes.len();
                record.billed_tokens = workload.tokens();
                record.median_s = median;
                record.tokens_per_s = workload.tokens() as f64 / median;
                record.docs_per_s = workload.docs() as f64 / median;
                if let Some((profiler, shape)) = profiling {
                    record.profile = Some(workload.profile(reranker, profiler, shape)?);
                }
                eprintln!(
                    "[{index}/{points}] {d} docs × {t} tokens, batch {b}: {:.1} tokens/s, {:.2} docs/s",
                    record.tokens_per_s, record.docs_per_s
                );
                match &mut out {
                    Some(file) => {
                        // One write a record: an interrupted sweep leaves whole lines.
                        let line = record.render(Format::Json)?.unwrap_or_default() + "\n";
                        file.write_all(line.as_bytes())?;
                        file.flush()?;
                    }
                    // JSON Lines go out as measured; a table needs them all.
                    None if args.format == Format::Json => emit(&record, Format::Json)?,
                    None => records.push(record),
                }
            }
        }
    }
    if let Some(text) = render_all(&records, args.format)? {
        if !records.is_empty() {
            println!("{text}");
        }
    }
    Ok(())
}

/// Writes the record on stdout in `format` (text: already printed as it went).
fn emit(record: &Record, format: Format) -> anyhow::Result<()> {
    if let Some(text) = record.render(format)? {
        println!("{text}");
    }
    Ok(())
}

/// `one` for a count of 1, `many` otherwise.
fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_axes_are_lists_or_doubling_ranges() {
        assert_eq!(
            sweep_values("8..128"),
            Ok(SweepAxis(vec![8, 16, 32, 64, 128]))
        );
        assert_eq!(sweep_values("3..20"), Ok(SweepAxis(vec![3, 6, 12])));
        assert_eq!(sweep_values("5"), Ok(SweepAxis(vec![5])));
        assert_eq!(sweep_values("1,2,3"), Ok(SweepAxis(vec![1, 2, 3])));
        assert!(sweep_values("8..4")
            .unwrap_err()
            .contains("below its start"));
        assert!(sweep_values("0").is_err());
        assert!(sweep_values(&vec!["1"; 65].join(","))
            .unwrap_err()
            .contains("at most 64"));
    }
}
