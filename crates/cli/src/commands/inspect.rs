//! `tessera inspect`: what a GGUF holds and how Tessera would run it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use tessera_model::{ModelConfig, ModelKind, RerankTokenizer, Weights};

use crate::model_source::{self, ModelArgs};

#[derive(Args)]
pub struct InspectArgs {
    /// GGUF file (default: the embedded tiny random model); the same as `--model`.
    #[arg(value_name = "PATH", conflicts_with_all = ["model", "model_id"])]
    path: Option<PathBuf>,
    #[command(flatten)]
    source: ModelArgs,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let path = match &args.path {
        Some(path) => Some(path.clone()),
        None => args.source.path()?,
    };
    let loaded = model_source::open_warning(path.as_deref())?;
    let file = &loaded.file;
    let source = match &path {
        Some(p) => p.display().to_string(),
        None => "(embedded)".to_string(),
    };
    println!("file          {source}");
    println!("name          {}", loaded.name);
    println!(
        "gguf          v{}, {} metadata keys, {} tensors, alignment {}, {:.1} MiB",
        file.version(),
        file.metadata().len(),
        file.tensors().len(),
        file.alignment(),
        file.file_size() as f64 / (1 << 20) as f64
    );
    println!(
        "architecture  {}",
        file.get_str("general.architecture").unwrap_or("(missing)")
    );
    let kind = ModelKind::from_gguf(file);
    match &kind {
        Ok((kind, pooling)) => println!("kind          {} (pooling: {pooling})", kind.name()),
        Err(e) => println!("kind          not servable: {e}"),
    }
    let embedding = matches!(kind, Ok((ModelKind::Embedding, _)));
    match ModelConfig::from_gguf(file) {
        Ok(c) => {
            println!(
                "layers {}  hidden {}  ffn {}  heads {} (kv {}, GQA {}:1)  head_dim {}",
                c.n_layers,
                c.hidden,
                c.ffn,
                c.n_heads,
                c.n_kv_heads,
                c.n_heads / c.n_kv_heads,
                c.head_dim
            );
            println!(
                "rms_eps {:e}  rope_theta {}  context {}",
                c.rms_eps, c.rope_theta, c.context_length
            );
        }
        Err(e) => println!("config        not runnable: {e}"),
    }

    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let entry = by_type.entry(t.ggml_type.name()).or_default();
        entry.0 += 1;
        entry.1 += t.size;
    }
    let types: Vec<String> = by_type
        .iter()
        .map(|(name, (n, bytes))| {
            format!("{name} ×{n} ({:.1} MiB)", *bytes as f64 / (1 << 20) as f64)
        })
        .collect();
    println!("tensor types  {}", types.join(", "));

    match RerankTokenizer::from_gguf(file) {
        Ok(tokenizer) => {
            println!("tokenizer     {}", tokenizer.summary());
            let id = |t: &str| {
                tokenizer
                    .token_to_id(t)
                    .map_or("-".to_string(), |id| id.to_string())
            };
            if !embedding {
                println!("yes/no ids    {} / {}", id("yes"), id("no"));
            }
            match (tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")) {
                (Some(yes), Some(no)) => match if embedding {
                    Weights::load_without_head(file)
                } else {
                    Weights::load(file, [yes, no])
                } {
                    Ok(w) if embedding => println!(
                        "pooled        the last token's hidden state after the final norm, {} values",
                        w.config.hidden
                    ),
                    Ok(w) => {
                        if let Some(head) = &w.score_head {
                            println!(
                                "score head    {} — rows {:?} of '{}' ({})",
                                head.source,
                                head.rows,
                                head.tensor.name,
                                head.tensor.ggml_type.name()
                            );
                        }
                        // What a GPU backend uploads (the score head's two rows aside).
                        println!(
                            "weights       {:.2} GB used by the forward pass",
                            w.total_bytes() as f64 / 1e9
                        );
                    }
                    Err(e) => println!("weights       not runnable: {e}"),
                },
                _ => println!("score head    unavailable: the tokenizer has no 'yes'/'no' tokens"),
            }
        }
        Err(e) => println!("tokenizer     unavailable: {e}"),
    }
    Ok(())
}
