//! `tessera bench`: forward-pass throughput of the CPU backend on a synthetic
//! rerank workload (one query, many documents of random tokens).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend_cpu::CpuBackend;
use tessera_engine::Reranker;

use crate::model_source;

#[derive(Args)]
pub struct BenchArgs {
    /// GGUF model file (default: the embedded tiny random model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Documents per run.
    #[arg(long, default_value_t = 16)]
    docs: usize,
    /// Tokens per document.
    #[arg(long, default_value_t = 256)]
    doc_tokens: usize,
    /// Tokens of the query.
    #[arg(long, default_value_t = 32)]
    query_tokens: usize,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    /// Timed runs (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.docs == 0 || args.doc_tokens == 0 || args.runs == 0 {
        bail!("--docs, --doc-tokens and --runs must be at least 1");
    }
    let loaded = model_source::open(args.model.as_deref())?;
    let load_start = Instant::now();
    let reranker = Reranker::load(CpuBackend::new(), &loaded.file, None)?;
    let load_time = load_start.elapsed();
    let prompt = reranker.prompt();
    let vocab = prompt.tokenizer().vocab_size().min(151_643) as u32;
    let mut rng = StdRng::seed_from_u64(7);
    let mut random_ids =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
    let query_ids = random_ids(args.query_tokens);
    let query = prompt.tokenizer().decode(&query_ids)?;
    let prefix = prompt.query_prefix(None, &query)?;
    let sequences: Vec<Vec<u32>> = (0..args.docs)
        .map(|_| {
            let mut ids = prefix.clone();
            ids.extend(random_ids(args.doc_tokens));
            ids.extend_from_slice(prompt.suffix_ids());
            ids
        })
        .collect();
    let tokens: usize = sequences.iter().map(Vec::len).sum();
    let mut batches: Vec<Vec<&[u32]>> = vec![Vec::new()];
    let mut in_batch = 0;
    for seq in &sequences {
        if in_batch > 0 && in_batch + seq.len() > args.batch_tokens {
            batches.push(Vec::new());
            in_batch = 0;
        }
        batches.last_mut().expect("never empty").push(seq);
        in_batch += seq.len();
    }
    let c = reranker.engine().config();
    println!(
        "model      {} ({} layers, hidden {}, ffn {}, heads {}/{}, head_dim {})",
        loaded.name, c.n_layers, c.hidden, c.ffn, c.n_heads, c.n_kv_heads, c.head_dim
    );
    println!("cpu        {} ({} threads)", cpu_model(), rayon_threads());
    println!(
        "backend    cpu-reference; weights loaded in {:.2} s",
        load_time.as_secs_f64()
    );
    println!(
        "workload   {} docs × {} tokens + {}-token prompt prefix = {} tokens in {} forward passes",
        args.docs,
        args.doc_tokens,
        prefix.len(),
        tokens,
        batches.len()
    );
    let run_once = || -> anyhow::Result<f64> {
        let start = Instant::now();
        for batch in &batches {
            reranker.engine().score(batch)?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    run_once()?;
    let mut times = Vec::with_capacity(args.runs);
    for i in 0..args.runs {
        let t = run_once()?;
        println!(
            "run {:>2}     {:.3} s  {:.1} tokens/s  {:.2} docs/s",
            i + 1,
            t,
            tokens as f64 / t,
            args.docs as f64 / t
        );
        times.push(t);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "median     {:.3} s  {:.1} tokens/s  {:.2} docs/s",
        median,
        tokens as f64 / median,
        args.docs as f64 / median
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
