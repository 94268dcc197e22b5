//! `tessera rerank`: one query, documents from the command line or a file,
//! scored by the service started in this process with the API's options, so
//! the scores, truncation and billing equal `/v1/rerank`'s for the same request.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tessera_server::types::RerankResponse;
use tessera_service::{RerankJob, RerankOptions, TruncationSide};

use crate::backends::BackendArgs;
use crate::in_process::{self, Role};
use crate::model_source::{self, ModelArgs};

#[derive(Args)]
pub struct RerankArgs {
    #[command(flatten)]
    source: ModelArgs,
    /// tokenizer.json to use instead of the GGUF's own tokenizer.
    #[arg(long, value_name = "PATH", env = "TESSERA_TOKENIZER")]
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
    #[arg(long, value_parser = crate::flags::count::<1, { usize::MAX }>)]
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
    /// Cut every document to this many tokens first (the API's max_tokens_per_doc).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens_per_doc: Option<u64>,
    /// Split a document too long for the context into up to this many chunks,
    /// each scored; the document scores its best chunk (the API's max_chunks_per_doc).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    max_chunks_per_doc: u64,
    /// Print exactly the /v1/rerank response body.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run_on: BackendArgs,
    /// Documents to score.
    documents: Vec<String>,
}

/// One JSON string per non-empty line: documents for rerank, inputs for embed.
pub(crate) fn read_documents_file(path: &PathBuf) -> anyhow::Result<Vec<String>> {
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
    let loaded = model_source::open_warning(args.source.path()?.as_deref())?;
    let tokenizer = model_source::tokenizer_override(args.tokenizer.as_ref())?;
    let side = if args.truncate_left {
        TruncationSide::Left
    } else {
        TruncationSide::Right
    };
    let options = RerankOptions {
        instruction: args.instruction.clone(),
        truncation: (!args.no_truncate).then_some(side),
        max_tokens_per_doc: args.max_tokens_per_doc.map(saturating_usize),
        max_tokens_side: side,
        max_chunks_per_doc: saturating_usize(args.max_chunks_per_doc),
        ..RerankOptions::default()
    };
    let job = RerankJob {
        query: args.query.clone(),
        documents: documents.clone(),
        options,
    };
    let output = in_process::call(
        &loaded,
        tokenizer,
        Role::Reranker,
        &args.run_on,
        |service| async move { service.rerank(job).await.map(|ranked| ranked.output) },
    )?;

    if args.json {
        let echo = |index: usize| json!({ "text": documents[index] });
        let body = RerankResponse::new(
            &output,
            args.top_n,
            args.return_documents.then_some(echo),
            "1",
            loaded.name.clone(),
        );
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        // Rank first, then the document's position in the input: the first row
        // is the best document, whatever its index.
        println!("rank  index  score     document");
        for (rank, d) in output.top(args.top_n).iter().enumerate() {
            let mut text: String = documents[d.index].chars().take(70).collect();
            if text.len() < documents[d.index].len() {
                text.push('…');
            }
            println!(
                "{:>4}  {:>5}  {:.6}  {}",
                rank + 1,
                d.index,
                d.relevance,
                text.replace('\n', " ")
            );
        }
        if let Some(warning) = output.truncation_warning() {
            eprintln!("note: {warning}");
        }
        eprintln!("{} tokens scored", output.total_tokens);
    }
    Ok(())
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
