//! `tessera tune`: time every W8A16 GEMM configuration and split-K factor on
//! this GPU for a model's matmul shapes, and both tensor-core attention
//! kernels on the served workloads, and write the tuning table `serve`,
//! `rerank` and `bench` then use (`--tuning`, docs/kernels.md).

use std::path::PathBuf;

use clap::Args;
use tessera_model::ModelConfig;
use tessera_runtime::{gemm_shapes, TuneOptions};

use super::generate::Shape;
use crate::flags::{count, MAX_PASS_TOKENS};
use crate::model_source::{self, ModelArgs};

/// The shapes come from `--model`; without one, from Qwen3-Reranker-4B (not
/// from the embedded tiny model, whose shapes nobody serves).
#[derive(Args)]
#[command(mut_arg("model", |a| a.help(
    "GGUF whose matmul shapes to tune (default: Qwen3-Reranker-4B's: hidden 2560, \
     32 heads and 8 KV heads of 128, ffn 9728)"
)))]
pub struct TuneArgs {
    #[command(flatten)]
    source: ModelArgs,
    /// Tokens per pass to time each GEMM at, comma-separated; a served batch
    /// uses the entry nearest its size.
    #[arg(long, value_delimiter = ',', default_value = "512,2048,4096,8192,16384",
          value_parser = count::<1, MAX_PASS_TOKENS>)]
    rows: Vec<usize>,
    /// Timed launches per candidate after one warm-up (the fastest counts).
    #[arg(long, default_value_t = 5, value_parser = count::<1, 1000>)]
    repeats: usize,
    /// Where to write the table (default: this GPU's file in the user cache,
    /// which `--tuning default` reads).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The CUDA device to measure.
    #[arg(long, default_value_t = 0, value_parser = count::<0, 255>)]
    device: usize,
}

pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    let (config, what) = match args.source.path()? {
        Some(path) => {
            let loaded = model_source::open_warning(Some(&path))?;
            (ModelConfig::from_gguf(&loaded.file)?, loaded.name)
        }
        // Qwen3-Reranker-4B has Qwen3-4B's shape, as `generate --shape 4b` writes it.
        None => (Shape::Qwen3_4b.config(), "Qwen3-Reranker-4B".to_string()),
    };
    let shapes = gemm_shapes(&config);
    eprintln!(
        "tune: {} GEMM shapes of {what} at {:?} rows, {} timed launches per candidate",
        shapes.len(),
        args.rows,
        args.repeats
    );
    let options = TuneOptions {
        rows: args.rows,
        repeats: args.repeats,
        out: args.out,
        ordinal: args.device,
    };
    let (table, path) = tessera_runtime::tune(&config, &options, |line| eprintln!("  {line}"))?;
    println!(
        "{} (compute capability {}, driver CUDA {}, {} SMs)",
        table.device.name,
        table.device.compute_capability,
        table.device.driver,
        table.device.multiprocessors
    );
    println!(
        "{:<26} {:>6}  {:<8} {:>5} {:>10} {:>9} {:>9}",
        "shape", "rows", "config", "split", "µs", "TFLOP/s", "vs v2"
    );
    for entry in &table.gemm {
        let v2 = entry
            .candidates
            .iter()
            .find(|c| c.config == "v2")
            .map_or("-".to_string(), |c| {
                format!("{:.2}×", c.micros / entry.micros)
            });
        println!(
            "{:<26} {:>6}  {:<8} {:>5} {:>10.1} {:>9.1} {:>9}",
            entry.shape.to_string(),
            entry.rows,
            entry.config,
            entry.split_k,
            entry.micros,
            entry.tflops,
            v2
        );
    }
    for entry in &table.attention {
        let w = entry.workload;
        let times: Vec<String> = entry
            .candidates
            .iter()
            .map(|c| format!("{} {:.1} µs", c.kernel, c.micros))
            .collect();
        println!(
            "attention {}×{}+{} (heads {}/{} × {}): {} at {:.1} TFLOP/s ({})",
            w.docs,
            w.doc_tokens,
            w.prefix_tokens,
            entry.n_heads,
            entry.n_kv_heads,
            entry.head_dim,
            entry.kernel,
            entry.tflops,
            times.join(", ")
        );
    }
    println!("wrote {}", path.display());
    Ok(())
}
