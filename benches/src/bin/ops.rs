//! The op kit's perf mode: every op of one layer at a model's shapes, timed on
//! one backend and on a baseline backend in the same run, with the ratio.
//!
//!     cargo run --release -p tessera-benches --bin ops -- [options]
//!
//! `--backend B`   cpu-fast (default), cpu-reference, wgpu, cuda, cuda-w8a16
//! `--baseline B`  the same choices, or none (default: cpu-reference)
//! `--tokens N`    token rows of each op (default 64)
//! `--seconds S`   time spent on each op (default 0.5)
//!
//! Shapes are Qwen3-Reranker-4B's (hidden 2560, FFN 9728, 32/8 heads of 128).
//! `wgpu` needs `--features wgpu`, `cuda*` `--features cuda`.

use std::time::Duration;

use anyhow::{bail, Context};
use tessera_backend::parity::{run_perf, PerfReport, PerfShape};
use tessera_backend::Backend;
use tessera_backend_cpu::CpuBackend;

struct Args {
    backend: String,
    baseline: Option<String>,
    tokens: usize,
    budget: Duration,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        backend: "cpu-fast".into(),
        baseline: Some("cpu-reference".into()),
        tokens: 64,
        budget: Duration::from_millis(500),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => args.backend = value()?,
            "--baseline" => {
                let v = value()?;
                args.baseline = (v != "none").then_some(v);
            }
            "--tokens" => args.tokens = value()?.parse().context("--tokens")?,
            "--seconds" => {
                args.budget = Duration::from_secs_f64(value()?.parse().context("--seconds")?)
            }
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown argument {other:?} (see the file's header)"),
        }
    }
    if args.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    Ok(args)
}

/// The perf run on the backend named `name`, and its description.
fn measure(
    name: &str,
    shape: PerfShape,
    budget: Duration,
) -> anyhow::Result<(String, Vec<PerfReport>)> {
    fn on<B: Backend>(b: B, shape: PerfShape, budget: Duration) -> (String, Vec<PerfReport>) {
        eprintln!("timing the ops on {} ...", b.name());
        (b.name(), run_perf(&b, shape, budget))
    }
    Ok(match name {
        "cpu-fast" => on(CpuBackend::fast(), shape, budget),
        "cpu-reference" => on(CpuBackend::reference(), shape, budget),
        #[cfg(feature = "wgpu")]
        "wgpu" => on(tessera_backend_wgpu::WgpuBackend::new(true)?, shape, budget),
        #[cfg(feature = "cuda")]
        "cuda" => on(tessera_backend_cuda::CudaBackend::new(0)?, shape, budget),
        #[cfg(feature = "cuda")]
        "cuda-w8a16" => on(
            tessera_backend_cuda::CudaBackend::new(0)?
                .with_arithmetic(tessera_backend_cuda::Arithmetic::W8A16)?,
            shape,
            budget,
        ),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => bail!("backend wgpu is not built in: add `--features wgpu`"),
        #[cfg(not(feature = "cuda"))]
        "cuda" | "cuda-w8a16" => bail!("backend {name} is not built in: add `--features cuda`"),
        other => bail!("unknown backend {other:?}"),
    })
}

/// A speed-up with three significant digits, however small (lavapipe is
/// hundreds of times slower than the CPU path).
fn ratio(r: f64) -> String {
    let digits = if r > 0.0 {
        (2 - r.log10().floor() as i32).clamp(2, 6)
    } else {
        2
    };
    format!("{r:.*}×", digits as usize)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let shape = PerfShape::qwen3_4b(args.tokens);
    let (name, ours) = measure(&args.backend, shape, args.budget)?;
    let base = match &args.baseline {
        Some(b) => Some(measure(b, shape, args.budget)?),
        None => None,
    };
    println!(
        "ops of one Qwen3-Reranker-4B layer, {} token rows",
        args.tokens
    );
    println!("cpu      {}", tessera_runtime::cpu_model());
    println!("backend  {name}");
    if let Some((base_name, _)) = &base {
        println!("baseline {base_name} (same run)");
    }
    println!();
    println!(
        "{:<13} {:<34} {:>10} {:>9} {:>8} {:>12} {:>9}",
        "op", "case", "ms", "GFLOP/s", "GB/s", "baseline ms", "speed-up"
    );
    for (i, r) in ours.iter().enumerate() {
        if let Some(why) = &r.failure {
            println!("{:<13} {:<34} FAILED: {why}", r.op, r.case);
            continue;
        }
        let baseline = base
            .as_ref()
            .and_then(|(_, b)| b.get(i))
            .filter(|b| b.failure.is_none() && b.case == r.case);
        let (base_ms, ratio) = match baseline {
            Some(b) => (
                format!("{:.3}", b.seconds * 1e3),
                ratio(b.seconds / r.seconds),
            ),
            None => ("—".into(), "—".into()),
        };
        println!(
            "{:<13} {:<34} {:>10.3} {:>9.1} {:>8.1} {:>12} {:>9}",
            r.op,
            r.case,
            r.seconds * 1e3,
            r.flops / r.seconds / 1e9,
            r.bytes / r.seconds / 1e9,
            base_ms,
            ratio
        );
    }
    Ok(())
}
