//! `tessera embed`: texts from the command line or a file embedded with a
//! Qwen3 embedding GGUF by the service started in this process, so the
//! vectors, truncation and billing equal `/v1/embeddings`' for the same request.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use tessera_server::types::EmbeddingsResponse;
use tessera_service::{EmbedInputs, EmbedJob, EmbedOptions, TruncationSide};

use super::rerank::read_documents_file;
use crate::backends::BackendArgs;
use crate::in_process::{self, Role};
use crate::model_source::{self, ModelArgs};

/// `--model` / `--model-id` as every command has them, but required: the
/// embedded default model is a reranker, so the shared help's default does not
/// apply here.
#[derive(Args)]
#[command(mut_arg("model", |a| a
    .help("A Qwen3 embedding GGUF (pooling last). Required: this or --model-id")
    .required_unless_present("model_id")))]
pub struct EmbedArgs {
    #[command(flatten)]
    source: ModelArgs,
    /// tokenizer.json to use instead of the GGUF's own tokenizer.
    #[arg(long, value_name = "PATH", env = "TESSERA_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// The task of queries: each text is embedded as
    /// `Instruct: {instruction}\nQuery:{text}` (leave it out for documents).
    #[arg(long)]
    instruction: Option<String>,
    /// Keep the first N components of each vector, normalised again.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    dimensions: Option<u64>,
    /// A file with one JSON string per line, each a text.
    #[arg(long)]
    inputs_file: Option<PathBuf>,
    /// Drop the head of a too-long text instead of its tail.
    #[arg(long, conflicts_with = "no_truncate")]
    truncate_left: bool,
    /// Fail on a text longer than the context instead of truncating it.
    #[arg(long)]
    no_truncate: bool,
    /// Print exactly the /v1/embeddings response body.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run_on: BackendArgs,
    /// Texts to embed.
    inputs: Vec<String>,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let mut inputs = args.inputs.clone();
    if let Some(path) = &args.inputs_file {
        inputs.extend(read_documents_file(path)?);
    }
    if inputs.is_empty() {
        bail!("no texts: pass them as arguments or with --inputs-file");
    }
    if args
        .instruction
        .as_deref()
        .is_some_and(|i| i.trim().is_empty())
    {
        bail!("--instruction must not be empty (leave it out for documents)");
    }
    let loaded = model_source::open(args.source.path()?.as_deref())?;
    if loaded.embedded {
        bail!(
            "no --model given: the embedded model is a reranker; pass a Qwen3 embedding GGUF \
             (pooling last) with --model or --model-id"
        );
    }
    let tokenizer = model_source::tokenizer_override(args.tokenizer.as_ref())?;
    let side = if args.truncate_left {
        TruncationSide::Left
    } else {
        TruncationSide::Right
    };
    let options = EmbedOptions {
        instruction: args.instruction.clone(),
        dimensions: args
            .dimensions
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        truncation: (!args.no_truncate).then_some(side),
    };
    let job = EmbedJob {
        inputs: EmbedInputs::Texts(inputs),
        options,
        normalize: true,
    };
    let embedded = in_process::call(
        &loaded,
        tokenizer,
        Role::Embedder,
        &args.run_on,
        |service| async move { service.embed(job).await },
    )?;
    let (vectors, truncated) = (embedded.vectors, embedded.truncated);

    if args.json {
        let body = EmbeddingsResponse::new(vectors, false, loaded.name.clone());
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let tokens: usize = vectors.iter().map(|v| v.tokens).sum();
        for (index, v) in vectors.iter().enumerate() {
            let head: Vec<String> = v
                .values
                .iter()
                .take(4)
                .map(|x| format!("{x:+.5}"))
                .collect();
            let more = if v.values.len() > 4 { ", …" } else { "" };
            println!(
                "{index:>3}  {:>5} tokens  [{}{more}] ({} values)",
                v.tokens,
                head.join(", "),
                v.values.len()
            );
        }
        if !truncated.is_empty() {
            eprintln!("note: inputs truncated to fit the context: {truncated:?}");
        }
        eprintln!("{tokens} tokens embedded");
    }
    Ok(())
}
