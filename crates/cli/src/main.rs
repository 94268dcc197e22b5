//! `tessera`: serve a Qwen3 reranker (and embedding model) GGUF over HTTP, rerank
//! or embed from the command line, inspect a GGUF, benchmark the forward pass,
//! generate random test models.

mod backends;
mod commands;
mod flags;
mod hub;
mod in_process;
mod model_source;
mod terminal;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Qwen3 reranker and embedding inference runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Every command with numeric flags reads a negative number as the flag's value
// (`--threads -1`), so its parser refuses it by name, instead of as an unknown
// argument.
#[derive(Subcommand)]
enum Command {
    /// Serve the rerank HTTP API (Cohere v1/v2 and TEI dialects), and with an
    /// embedding model /v1/embeddings (OpenAI) and /embed (TEI).
    #[command(allow_negative_numbers = true)]
    Serve(commands::serve::ServeArgs),
    /// Score documents against a query and print them ranked.
    #[command(allow_negative_numbers = true)]
    Rerank(commands::rerank::RerankArgs),
    /// Embed texts with a Qwen3 embedding GGUF and print the vectors.
    #[command(allow_negative_numbers = true)]
    Embed(commands::embed::EmbedArgs),
    /// Print a GGUF's architecture, hyper-parameters, tensors, tokenizer and score head.
    Inspect(commands::inspect::InspectArgs),
    /// Measure forward-pass throughput (tokens/s) on any backend, beside the CPU
    /// reference path.
    #[command(allow_negative_numbers = true)]
    Bench(commands::bench::BenchArgs),
    /// Make one self-contained HTML page (rooflines, time shares, sweeps, runs
    /// side by side) from bench records.
    Report(commands::report::ReportArgs),
    /// Write a random Qwen3 reranker or embedding GGUF with the real vocabulary
    /// (tests, benchmarks).
    #[command(allow_negative_numbers = true)]
    Generate(commands::generate::GenerateArgs),
    /// Ask a running server's /health; exit 0 when it serves (container health checks).
    #[command(allow_negative_numbers = true)]
    Health(commands::health::HealthArgs),
    /// Time every W8A16 GEMM configuration on this GPU for a model's shapes and
    /// write the tuning table serve, rerank and bench use (`--tuning`).
    #[command(allow_negative_numbers = true)]
    Tune(commands::tune::TuneArgs),
}

/// Output piped into a reader that stops early (`tessera inspect | head`) ends
/// the process quietly, as a Unix tool does, instead of with a panic: `print!`
/// panics on a closed stdout.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141); // 128 + SIGPIPE, what a shell reports
        }
        default(info);
    }));
}

fn main() {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Rerank(args) => commands::rerank::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Health(args) => commands::health::run(args),
        Command::Tune(args) => commands::tune::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {}", error_chain(error.as_ref()));
        // Startup failures (bad model file, missing backend, busy port) are the
        // caller's to fix: 2, as for bad arguments.
        let startup = error
            .downcast_ref::<commands::serve::StartupError>()
            .is_some();
        std::process::exit(if startup { 2 } else { 1 });
    }
}

/// An error and its causes in one line, `: `-separated, each cause left out
/// when the message before it already says it (many errors repeat their source).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
