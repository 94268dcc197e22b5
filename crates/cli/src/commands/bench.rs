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
use tessera_engine::{PrefixGroup, ScoreRequest};
use tessera_runtime::{AnyReranker, BackendChoice, BackendOptions, Precision, Profiler};

use super::bench_report::{Format, Profile, Record};
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
            reranker.score_groups(&[group])?;
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
        let run_once = || self.run_counted(reranker).map(|(seconds, _)| seconds);
        if warm_up {
            run_once()?;
        }
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            let t = run_once()?;
            say!(
                "{label:<10} run {:>2}  {:.3} s  {:.1} tokens/s  {:.2} docs/s",
                i + 1,
                t,
                self.tokens() as f64 / t,
                self.docs() as f64 / t
            );
            times.push(t);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        say!(
            "{label:<10} median  {:.3} s  {:.1} tokens/s  {:.2} docs/s  ({} docs, {} tokens)",
            median,
            self.tokens() as f64 / median,
            self.docs() as f64 / median,
            self.docs(),
            self.tokens()
        );
        Ok(median)
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
    let prompt = reranker.prompt();
    let vocab = prompt.tokenizer().vocab_size().min(151_643) as u32;
    let mut rng = StdRng::seed_from_u64(7);
    let mut random_ids =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
    let workload = match args.sequence_tokens {
        Some(len) => Workload {
            passes: (0..args.docs)
                .map(|_| (Vec::new(), vec![random_ids(len)]))
                .collect(),
            pair_tokens: vec![len; args.docs],
        },
        None => {
            let query_ids = random_ids(args.query_tokens);
            let query = prompt.tokenizer().decode(&query_ids)?;
            let prefix = prompt.query_prefix(None, &query)?;
            let request = ScoreRequest {
                documents: (0..args.docs)
                    .map(|_| {
                        let mut doc = random_ids(args.doc_tokens);
                        doc.extend_from_slice(prompt.suffix_ids());
                        doc
                    })
                    .collect(),
                prefix,
            };
            // Passes as the server's scheduler packs one request.
            let passes = request
                .passes(args.batch_tokens)
                .into_iter()
                .map(|pass| (request.prefix.clone(), request.documents[pass].to_vec()))
                .collect();
            Workload {
                passes,
                pair_tokens: request
                    .documents
                    .iter()
                    .map(|d| request.prefix.len() + d.len())
                    .collect(),
            }
        }
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
    let measured = workload.measure(reranker, args.runs, true, label)?;
    let rate = |w: &Workload, t: f64| (w.tokens() as f64 / t, w.docs() as f64 / t);
    let (tokens_per_s, docs_per_s) = rate(&workload, measured);
    let profile = match &profiler {
        Some(profiler) => {
            profiler.start();
            let run = workload.run_counted(reranker);
            let ops = profiler.finish();
            let profile = Profile::from_ops(&ops, run?.0);
            for line in profile.lines() {
                say!("{line}");
            }
            Some(profile)
        }
        None => None,
    };
    let c = reranker.config();
    let mut record = Record {
        tessera: env!("CARGO_PKG_VERSION").to_string(),
        commit: option_env!("TESSERA_GIT_COMMIT")
            .unwrap_or("unknown")
            .to_string(),
        device: device.clone(),
        cpu: tessera_runtime::cpu_model(),
        backend: backend_name.clone(),
        arithmetic: if on_cpu {
            args.run_on.precision.name().to_string()
        } else if backend_name.starts_with("cuda") {
            args.run_on.gpu_precision.name().to_string()
        } else {
            "f32".to_string()
        },
        model: loaded.name.clone(),
        layers: c.n_layers,
        hidden: c.hidden,
        ffn: c.ffn,
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
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
        profile,
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
