//! Embedding throughput beside rerank on the same backend and model shape:
//! N inputs of T random tokens embedded (each a whole sequence, the
//! end-of-text token counted in T), and N documents of T tokens reranked
//! behind one shared 32-token query prefix; both in passes of the default
//! batch budget. The rerank run is the baseline of the ratio. Then the
//! question of sharing a query instruction's tokens: N queries of Q random
//! tokens after the default instruction's prompt, embedded whole against the
//! prompt computed once (and kept in the prefix cache) with the queries after it.
//!
//!     cargo run --release -p tessera-benches --bin embed -- \
//!         --reranker R.gguf --embedder E.gguf [options]
//!
//! `--backend B`  cpu (default), cuda, wgpu (`--features cuda|wgpu`)
//! `--inputs N`   inputs and documents (default 100)
//! `--tokens T`   tokens of each (default 256)
//! `--runs K`     timed runs of each, after one warm-up (default 3)
//! `--query-tokens Q`  tokens of each instructed query (default 24)
//!
//! Make a pair of one shape with `tessera generate --shape 0.6b --kind
//! reranker|embedding` (their weights differ; the work per token does not).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tessera_engine::pack::next_pass;
use tessera_engine::{PrefixGroup, DEFAULT_MAX_BATCH_TOKENS};
use tessera_gguf::GgufFile;
use tessera_runtime::{BackendChoice, BackendOptions, DeviceModel};

struct Args {
    reranker: PathBuf,
    embedder: PathBuf,
    backend: BackendChoice,
    inputs: usize,
    tokens: usize,
    runs: usize,
    query_tokens: usize,
}

fn parse() -> anyhow::Result<Args> {
    let (mut reranker, mut embedder) = (None, None);
    let mut args = Args {
        reranker: PathBuf::new(),
        embedder: PathBuf::new(),
        backend: BackendChoice::Cpu,
        inputs: 100,
        tokens: 256,
        runs: 3,
        query_tokens: 24,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--reranker" => reranker = Some(PathBuf::from(value()?)),
            "--embedder" => embedder = Some(PathBuf::from(value()?)),
            "--backend" => {
                args.backend = match value()?.as_str() {
                    "cpu" => BackendChoice::Cpu,
                    "cuda" => BackendChoice::Cuda,
                    "wgpu" => BackendChoice::Wgpu,
                    other => bail!("--backend: expected cpu, cuda or wgpu, got {other:?}"),
                }
            }
            "--inputs" => args.inputs = value()?.parse().context("--inputs")?,
            "--tokens" => args.tokens = value()?.parse().context("--tokens")?,
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--query-tokens" => args.query_tokens = value()?.parse().context("--query-tokens")?,
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown argument {other:?} (see the file's header)"),
        }
    }
    args.reranker = reranker.context("--reranker PATH is required")?;
    args.embedder = embedder.context("--embedder PATH is required")?;
    if args.inputs == 0 || args.tokens < 2 || args.runs == 0 {
        bail!("--inputs and --runs must be at least 1, --tokens at least 2");
    }
    Ok(args)
}

/// Median seconds of `runs` timed calls of `work`, after one warm-up call.
fn time(runs: usize, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    work()?;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        work()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2].as_secs_f64())
}

fn open(path: &PathBuf) -> anyhow::Result<Arc<GgufFile>> {
    Ok(Arc::new(GgufFile::open(path).with_context(|| {
        format!("cannot open {}", path.display())
    })?))
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let options = BackendOptions::default();
    let reranker = tessera_runtime::open(args.backend, &open(&args.reranker)?, None, &options)?;
    let device = reranker.device.clone();
    let what = args.reranker.display().to_string();
    let reranker = reranker.model.into_reranker(&what)?;
    let what = args.embedder.display().to_string();
    let embedder = tessera_runtime::open(args.backend, &open(&args.embedder)?, None, &options)?
        .model
        .into_embedder(&what)?;
    let shape = reranker.config();
    if embedder.config().hidden != shape.hidden || embedder.config().n_layers != shape.n_layers {
        bail!("the two models differ in shape: generate both with the same --shape and --layers");
    }

    // Random ids below the special tokens; the last token of an input is the
    // end-of-text token, as the embedding front door appends it.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_id = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 151_643) as u32
    };
    let sequences: Vec<Vec<u32>> = (0..args.inputs)
        .map(|_| {
            let mut ids: Vec<u32> = (0..args.tokens - 1).map(|_| next_id()).collect();
            ids.push(151_643);
            ids
        })
        .collect();
    let prefix: Vec<u32> = (0..32).map(|_| next_id()).collect();

    let embed_time = time(args.runs, || {
        let mut start = 0;
        while start < sequences.len() {
            let lengths = sequences[start..].iter().map(Vec::len);
            let taken = next_pass([(0, lengths)], DEFAULT_MAX_BATCH_TOKENS)[0];
            let pass: Vec<&[u32]> = sequences[start..start + taken]
                .iter()
                .map(Vec::as_slice)
                .collect();
            embedder.compute(&[whole_sequences(pass)])?;
            start += taken;
        }
        Ok(())
    })?;
    let rerank_time = time(args.runs, || {
        let mut start = 0;
        while start < sequences.len() {
            let lengths = sequences[start..].iter().map(Vec::len);
            let taken = next_pass([(prefix.len(), lengths)], DEFAULT_MAX_BATCH_TOKENS)[0];
            let group = PrefixGroup {
                prefix: &prefix,
                documents: sequences[start..start + taken]
                    .iter()
                    .map(Vec::as_slice)
                    .collect(),
            };
            reranker.compute(&[group])?;
            start += taken;
        }
        Ok(())
    })?;

    // Instructed queries: the prompt's tokens, then each query's, then the
    // end-of-text token.
    let prompt = embedder
        .format()
        .tokenizer()
        .encode(
            "Instruct: Given a web search query, retrieve relevant passages that answer the \
             query\nQuery:",
        )
        .context("tokenizing the instruction")?;
    let queries: Vec<Vec<u32>> = (0..args.inputs)
        .map(|_| {
            let mut ids: Vec<u32> = (0..args.query_tokens).map(|_| next_id()).collect();
            ids.push(151_643);
            ids
        })
        .collect();
    let whole: Vec<Vec<u32>> = queries.iter().map(|q| [&prompt[..], q].concat()).collect();
    let whole_time = time(args.runs, || {
        let pass: Vec<&[u32]> = whole.iter().map(Vec::as_slice).collect();
        embedder.compute(&[whole_sequences(pass)])?;
        Ok(())
    })?;
    let shared_time = time(args.runs, || {
        let group = PrefixGroup {
            prefix: &prompt,
            documents: queries.iter().map(Vec::as_slice).collect(),
        };
        embedder.compute(&[group])?;
        Ok(())
    })?;
    // The two agree (the shared path is what the server runs).
    let pass: Vec<&[u32]> = whole.iter().take(4).map(Vec::as_slice).collect();
    let a = embedder.compute(&[whole_sequences(pass)])?.remove(0);
    let group = PrefixGroup {
        prefix: &prompt,
        documents: queries.iter().take(4).map(Vec::as_slice).collect(),
    };
    let b = embedder.compute(&[group])?.remove(0);
    let cosine = a
        .iter()
        .zip(&b)
        .map(|(x, y)| {
            let dot: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| f64::from(*p) * f64::from(*q))
                .sum();
            let nx: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| f64::from(*q).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .fold(1.0f64, f64::min);

    let tokens = (args.inputs * args.tokens) as f64;
    println!(
        "{} inputs × {} tokens, hidden {}, {} layers",
        args.inputs, args.tokens, shape.hidden, shape.n_layers
    );
    println!("cpu      {}", tessera_runtime::cpu_model());
    println!("backend  {} on {device}", reranker.backend_name());
    println!();
    println!(
        "{:<8} {:>9} {:>12} {:>12} {:>9}",
        "work", "s", "items/s", "tokens/s", "vs rerank"
    );
    for (work, seconds) in [("rerank", rerank_time), ("embed", embed_time)] {
        println!(
            "{:<8} {:>9.3} {:>12.1} {:>12.0} {:>8.2}×",
            work,
            seconds,
            args.inputs as f64 / seconds,
            tokens / seconds,
            rerank_time / seconds
        );
    }
    println!();
    println!(
        "(rerank computes the 32-token query prefix once per pass besides the {} \
         document tokens; its prefix cache keeps it after the warm-up run)",
        args.inputs * args.tokens
    );
    println!();
    let billed = (args.inputs * (prompt.len() + args.query_tokens + 1)) as f64;
    println!(
        "{} instructed queries: {}-token prompt + {} tokens + end-of-text",
        args.inputs,
        prompt.len(),
        args.query_tokens
    );
    println!(
        "{:<8} {:>9} {:>12} {:>12} {:>9}",
        "queries", "s", "queries/s", "billed t/s", "speed-up"
    );
    for (work, seconds) in [("whole", whole_time), ("shared", shared_time)] {
        println!(
            "{:<8} {:>9.3} {:>12.1} {:>12.0} {:>8.2}×",
            work,
            seconds,
            args.inputs as f64 / seconds,
            billed / seconds,
            whole_time / seconds
        );
    }
    println!("lowest cosine, shared against whole: {cosine:.9}");
    Ok(())
}

/// Whole sequences as one group with no shared prefix.
fn whole_sequences(documents: Vec<&[u32]>) -> PrefixGroup<'_> {
    PrefixGroup {
        prefix: &[],
        documents,
    }
}
