//! `tessera rerank`: one query, documents from the command line or a file.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use tessera_engine::RerankOptions;
use tessera_model::TruncationSide;

use crate::backends::{self, BackendArgs};
use crate::model_source;

#[derive(Args)]
pub struct RerankArgs {
    /// GGUF model file (default: the embedded tiny random model).
    #[arg(long, env = "TESSERA_MODEL")]
    model: Option<PathBuf>,
    /// tokenizer.json to use instead of the GGUF's own tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The query the documents are ranked against.
    #[arg(long)]
    query: String,
    /// Task instruction (default: "Given a web search query, retrieve relevant passages that answer the query").
    #[arg(long)]
    instruction: Option<String>,
    /// A file with one JSON string per line, each a document.
    #[arg(long)]
    documents_file: Option<PathBuf>,
    /// Keep only the best N results.
    #[arg(long)]
    top_n: Option<usize>,
    /// Include each document's text in the results.
    #[arg(long)]
    return_documents: bool,
    /// Drop the head of a too-long document instead of its tail.
    #[arg(long, conflicts_with = "no_truncate")]
    truncate_left: bool,
    /// Fail on a document that does not fit the context instead of truncating it.
    #[arg(long)]
    no_truncate: bool,
    /// Print exactly the /v1/rerank response body.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run_on: BackendArgs,
    /// Documents to score.
    documents: Vec<String>,
}

fn read_documents_file(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut docs = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: String = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: expected one JSON string per line",
                path.display(),
                n + 1
            )
        })?;
        docs.push(doc);
    }
    Ok(docs)
}

pub fn run(args: RerankArgs) -> anyhow::Result<()> {
    let mut documents = args.documents.clone();
    if let Some(path) = &args.documents_file {
        documents.extend(read_documents_file(path)?);
    }
    if args.query.is_empty() {
        bail!("--query must not be empty");
    }
    if documents.is_empty() {
        bail!("no documents: pass them as arguments or with --documents-file");
    }
    if args.top_n == Some(0) {
        bail!("--top-n must be at least 1");
    }
    let loaded = model_source::open_warning(args.model.as_deref())?;
    let tokenizer = model_source::tokenizer_override(args.tokenizer.as_ref())?;
    let cpu = args.run_on.options();
    let reranker = backends::load(args.run_on.backend, &loaded.file, tokenizer, cpu)?.reranker;
    let options = RerankOptions {
        instruction: args.instruction.clone(),
        truncation: match (args.no_truncate, args.truncate_left) {
            (true, _) => None,
            (false, true) => Some(TruncationSide::Left),
            (false, false) => Some(TruncationSide::Right),
        },
        ..RerankOptions::default()
    };
    let refs: Vec<&str> = documents.iter().map(String::as_str).collect();
    let output = reranker.rerank(&args.query, &refs, &options)?;
    let mut ranked = output.ranked();
    ranked.truncate(args.top_n.unwrap_or(usize::MAX));
    let truncated = output.truncated();

    if args.json {
        let results: Vec<Value> = ranked
            .iter()
            .map(|d| {
                let mut r = json!({"index": d.index, "relevance_score": d.relevance});
                if args.return_documents {
                    r["document"] = json!({"text": documents[d.index]});
                }
                r
            })
            .collect();
        let mut meta = json!({
            "api_version": {"version": "1"},
            "billed_units": {"search_units": documents.len().div_ceil(100), "total_tokens": output.total_tokens},
            "tokens": {"input_tokens": output.total_tokens, "output_tokens": 0},
        });
        if !truncated.is_empty() {
            meta["warnings"] = json!([format!(
                "documents truncated to fit the context: {truncated:?}"
            )]);
        }
        let body = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "results": results,
            "meta": meta,
            "model": loaded.name,
            "usage": {"total_tokens": output.total_tokens},
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        for d in &ranked {
            let mut text: String = documents[d.index].chars().take(70).collect();
            if text.len() < documents[d.index].len() {
                text.push('…');
            }
            println!(
                "{:>3}  {:.6}  {}",
                d.index,
                d.relevance,
                text.replace('\n', " ")
            );
        }
        if !truncated.is_empty() {
            eprintln!("note: documents truncated to fit the context: {truncated:?}");
        }
        eprintln!("{} tokens scored", output.total_tokens);
    }
    Ok(())
}
