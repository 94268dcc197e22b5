//! `tessera serve`: the HTTP server, hosting a reranker, an embedding model, or
//! both. Binds first (so `/health` answers 503 while the models load), loads
//! them with a progress bar on a terminal, then serves until SIGINT/SIGTERM,
//! finishing requests in flight.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tessera_model::ModelKind;
use tessera_runtime::{BackendChoice, Devices};
use tessera_server::{Server, ServerOptions};
use tessera_service::{
    LoadPlan, ModelFile, Placement, SchedulerConfig, ServiceOptions, DEFAULT_MAX_BATCH_TOKENS,
};

use crate::backends::BackendArgs;
use crate::flags::{count, MAX_PASS_TOKENS};
use crate::hub::{self, ModelId};
use crate::model_source::{self, ModelArgs};
use crate::terminal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    source: ModelArgs,
    /// tokenizer.json to use instead of the GGUF's own tokenizer (of --model).
    #[arg(long, value_name = "PATH", env = "TESSERA_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// A Qwen3 embedding GGUF (pooling last) to host beside the reranker:
    /// POST /v1/embeddings (OpenAI) and /embed (TEI). (A --model that is itself
    /// an embedding model is served alone.)
    #[arg(
        long,
        value_name = "PATH",
        env = "TESSERA_EMBEDDING_MODEL",
        conflicts_with = "embedding_model_id"
    )]
    embedding_model: Option<PathBuf>,
    /// The embedding model from the Hugging Face Hub, REPO or REPO:FILE, as
    /// --model-id.
    #[arg(long, value_name = "REPO[:FILE]", env = "TESSERA_EMBEDDING_MODEL_ID")]
    embedding_model_id: Option<ModelId>,
    /// Model name clients must send to the embedding routes; repeat for
    /// aliases (env: comma-separated). None ⇒ any name (echoed back).
    #[arg(
        long = "embedding-served-model-name",
        value_name = "NAME",
        env = "TESSERA_EMBEDDING_SERVED_MODEL_NAMES",
        value_delimiter = ','
    )]
    embedding_served_model_names: Vec<String>,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, env = "TESSERA_HOST", default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, env = "TESSERA_PORT", default_value_t = 8080)]
    port: u16,
    /// Accepted bearer key; repeat for several (env: comma-separated). None ⇒ no auth.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "TESSERA_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Model name clients must send to --model (the reranker, or the embedding
    /// model served alone); repeat for aliases (env: comma-separated). None ⇒ any name.
    #[arg(
        long = "served-model-name",
        value_name = "NAME",
        env = "TESSERA_SERVED_MODEL_NAMES",
        value_delimiter = ','
    )]
    served_model_names: Vec<String>,
    #[command(flatten)]
    run_on: BackendArgs,
    /// Tokens per forward pass (each query prefix once plus its documents).
    #[arg(long, env = "TESSERA_MAX_BATCH_TOKENS", default_value_t = DEFAULT_MAX_BATCH_TOKENS,
          value_parser = count::<1, MAX_PASS_TOKENS>)]
    max_batch_tokens: usize,
    /// Tokens queued or in progress beyond which requests get 429.
    #[arg(long, env = "TESSERA_MAX_QUEUE_TOKENS", default_value_t = 4_194_304,
          value_parser = count::<1, { u32::MAX as usize }>)]
    max_queue_tokens: usize,
    /// Most documents one request may carry (more: 400).
    #[arg(long, env = "TESSERA_MAX_DOCUMENTS", default_value_t = 10_000,
          value_parser = count::<1, 1_000_000>)]
    max_documents: usize,
    /// Largest request body: bytes, or with a KiB/MiB/GiB (or K/M/G) suffix.
    #[arg(long, env = "TESSERA_MAX_BODY_BYTES", default_value = "32MiB", value_parser = parse_bytes)]
    max_body_bytes: usize,
    /// Bytes of query-prefix K/V kept across requests (LRU; the system prompt's
    /// is always kept), per model and device: the reranker's query prefixes,
    /// the embedding model's instruction prompts. 0 shares prefixes only within
    /// a batch.
    #[arg(long, env = "TESSERA_PREFIX_CACHE_BYTES", default_value = "512MiB", value_parser = parse_cache_bytes)]
    prefix_cache_bytes: usize,
    /// Tokens of the warm-up pass run before the server reports ready: compiles
    /// the GPU kernels and takes the activation memory of a full batch, so the
    /// first request is not slow and a batch budget the device cannot hold fails
    /// at startup. Default: --max-batch-tokens on a GPU, 0 (none) on the CPU.
    #[arg(long, env = "TESSERA_WARM_UP_TOKENS", value_parser = count::<0, MAX_PASS_TOKENS>)]
    warm_up_tokens: Option<usize>,
    /// Copies of the model on the CPU (--backend cpu, or auto where it picks the
    /// CPU; for several GPUs use --devices), the threads split evenly
    /// between them: one queue feeds them, each takes the next batch when idle,
    /// each keeps its own prefix cache (--prefix-cache-bytes each). A replica
    /// that fails 3 batches in a row is taken out of rotation while another serves.
    #[arg(long, env = "TESSERA_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    replicas: u16,
    /// Devices to serve from: all, or their numbers (0,1,3) — CUDA GPUs, or with
    /// --backend wgpu the usable adapters (GPUs first). One engine per device
    /// with the weights on each, one queue feeding them; a device that fails 3
    /// batches in a row is taken out of rotation while another serves.
    #[arg(
        long,
        env = "TESSERA_DEVICES",
        value_name = "all|N,N,...",
        conflicts_with = "replicas"
    )]
    devices: Option<Devices>,
    /// Longest a request waits for its scores (queue and compute) before a 503:
    /// seconds, or with an ms/s/m suffix.
    #[arg(long, env = "TESSERA_REQUEST_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Longest a client may take to send a request's headers (an idle
    /// keep-alive connection is closed after it too); the connection is then
    /// closed without an answer.
    #[arg(long, env = "TESSERA_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Longest a client may take to send a request's body once its headers are
    /// in; past it the answer is 408 and the connection is closed.
    #[arg(long, env = "TESSERA_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Open connections at most; at the limit new connections wait in the
    /// kernel's accept backlog until one closes. Keep it below `ulimit -n`.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = count::<1, 1_000_000>)]
    max_connections: usize,
    /// Requests tokenised at once, each on its own thread (default: one per
    /// core); the others wait for a turn without holding a thread.
    #[arg(long, env = "TESSERA_TOKENIZE_THREADS", value_parser = count::<1, 1024>)]
    tokenize_threads: Option<usize>,
    /// Log lines on stderr: text (coloured only on a terminal, never with
    /// NO_COLOR set) or json (one object per line).
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("expected a size like 32MiB, got {text:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("size {text:?} is out of range"))
}

fn parse_cache_bytes(text: &str) -> Result<usize, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    parse_bytes(text)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration like 300s, got {text:?}"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    if duration.is_zero() {
        return Err("the duration must be more than 0".into());
    }
    Ok(duration)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal, and not when NO_COLOR is set (no-color.org):
    // journald, Docker and Kubernetes read the log from a pipe.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(|| crate::terminal::LogWriter);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A failure before the server opens its port (model file, format, backend,
/// the port itself): `tessera` exits with status 2 and this one line.
#[derive(Debug)]
pub struct StartupError(pub String);

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

impl From<anyhow::Error> for StartupError {
    fn from(error: anyhow::Error) -> StartupError {
        StartupError(format!("{error:#}"))
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-http")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(args));
    // A signal during loading leaves the loader running on a blocking thread:
    // do not wait for it (the process exits right after).
    runtime.shutdown_background();
    result
}

/// The names a client may send, empty ones dropped.
fn names(list: &[String]) -> Vec<String> {
    list.iter().filter(|n| !n.is_empty()).cloned().collect()
}

/// A model file's kind, or the startup error naming it.
fn kind_of(source: &model_source::LoadedFile) -> Result<ModelKind, StartupError> {
    ModelKind::from_gguf(&source.file)
        .map(|(kind, _)| kind)
        .map_err(|e| StartupError(format!("cannot serve model {}: {e}", source.name)))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // What can fail without the port is checked first (exit code 2, one line):
    // the model files and their kinds, the tokenizer override, the backend.
    let path = args.source.path().map_err(StartupError::from)?;
    let source = model_source::open(path.as_deref()).map_err(StartupError::from)?;
    let embedding_path = match (&args.embedding_model, &args.embedding_model_id) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(id)) => Some(hub::fetch(id).map_err(StartupError::from)?),
        (None, None) => None,
    };
    let (reranker_source, embedder_source) = match (kind_of(&source)?, embedding_path) {
        (ModelKind::Reranker, None) => (Some(source), None),
        (ModelKind::Embedding, None) => (None, Some(source)),
        (ModelKind::Reranker, Some(path)) => {
            let embedder = model_source::open(Some(&path)).map_err(StartupError::from)?;
            if kind_of(&embedder)? != ModelKind::Embedding {
                return Err(StartupError(format!(
                    "--embedding-model {}: it is a reranker, not an embedding model (pooling \
                     last); pass rerankers as --model",
                    path.display()
                ))
                .into());
            }
            (Some(source), Some(embedder))
        }
        (ModelKind::Embedding, Some(_)) => {
            return Err(StartupError(format!(
                "--model {} is itself an embedding model; pass a reranker as --model and the \
                 embedding model as --embedding-model",
                source.name
            ))
            .into())
        }
    };
    // `--model` is the embedding model: its name, tokenizer and served names
    // are those of `--model`.
    let primary_embeds = reranker_source.is_none();
    let auth = args.api_keys.iter().any(|k| !k.is_empty());
    let tokenizer =
        model_source::tokenizer_override(args.tokenizer.as_ref()).map_err(StartupError::from)?;
    // Replicas run on the CPU: `auto` is resolved here, once, before listening.
    let backend =
        tessera_runtime::replicas_backend(args.run_on.choice(), usize::from(args.replicas))
            .map_err(|e| StartupError(e.to_string()))?;
    tessera_runtime::available(args.run_on.choice()).map_err(|e| StartupError(e.to_string()))?;
    if args.devices.is_some() {
        let gpu_backend = match args.run_on.choice() {
            BackendChoice::Cpu => {
                return Err(StartupError(
                    "--devices is for the CUDA or wgpu backend; on the CPU use --replicas".into(),
                )
                .into())
            }
            BackendChoice::Wgpu => BackendChoice::Wgpu,
            BackendChoice::Cuda | BackendChoice::Auto => BackendChoice::Cuda,
        };
        tessera_runtime::available(gpu_backend).map_err(|e| StartupError(e.to_string()))?;
    }
    if reranker_source
        .as_ref()
        .or(embedder_source.as_ref())
        .is_some_and(|s| s.embedded)
    {
        tracing::warn!("{}", model_source::EMBEDDED_WARNING);
    }
    // The `--tokenizer` override goes with `--model`.
    let (reranker_tokenizer, embedder_tokenizer) = if primary_embeds {
        (None, tokenizer)
    } else {
        (tokenizer, None)
    };
    let plan = LoadPlan {
        reranker: reranker_source.map(|source| model_file(source, reranker_tokenizer)),
        embedder: embedder_source.map(|source| model_file(source, embedder_tokenizer)),
        backend,
        backend_options: args.run_on.options(),
        placement: match args.devices {
            Some(devices) => Placement::Gpus(devices),
            None => Placement::Replicas(usize::from(args.replicas)),
        },
        prefix_cache_bytes: args.prefix_cache_bytes,
        warm_up_tokens: args.warm_up_tokens,
        progress: Arc::new(TerminalProgress),
    };
    let options = ServerOptions {
        api_keys: args
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect(),
        // `--served-model-name` names `--model`, whatever its kind.
        served_model_names: if primary_embeds {
            Vec::new()
        } else {
            names(&args.served_model_names)
        },
        embedding_served_model_names: if primary_embeds {
            names(&args.served_model_names)
                .into_iter()
                .chain(names(&args.embedding_served_model_names))
                .collect()
        } else {
            names(&args.embedding_served_model_names)
        },
        max_documents: args.max_documents,
        max_body_bytes: args.max_body_bytes,
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        max_connections: args.max_connections,
        service: ServiceOptions {
            hosts: plan.hosts(),
            load: Some(plan),
            scheduler: SchedulerConfig {
                max_batch_tokens: args.max_batch_tokens,
                max_queue_tokens: args.max_queue_tokens,
            },
            request_timeout: args.request_timeout,
            tokenize_threads: args
                .tokenize_threads
                .unwrap_or_else(tessera_service::default_tokenize_threads),
            ..ServiceOptions::default()
        },
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another server is on that port: stop it, or choose another with --port)"
            } else {
                ""
            };
            StartupError(format!(
                "cannot listen on {}:{}: {e}{hint}",
                args.host, args.port
            ))
        })?;
    let address: SocketAddr = listener.local_addr()?;
    // One plain line on stdout so scripts can find an ephemeral port.
    println!("tessera listening on http://{address}");
    tracing::info!(%address, auth, "listening; loading the model");
    // The first SIGINT/SIGTERM stops gracefully (the server's own handler);
    // a second one exits at once.
    tokio::spawn(async {
        tessera_server::shutdown_signal().await;
        tessera_server::shutdown_signal().await;
        tracing::warn!("second signal: exiting now, without finishing requests in flight");
        std::process::exit(130);
    });

    // The service loads the models on a thread of its own while the server
    // answers `/health` with 503.
    let (server, loading) = Server::start(options);
    let mut serving = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .serve(listener, tessera_server::shutdown_signal())
                .await
        })
    };
    tokio::select! {
        result = loading.wait() => {
            result.map_err(|e| anyhow::anyhow!("{e}"))?;
            serving.await.context("the server task stopped")??;
        }
        result = &mut serving => {
            // Stopped (signal) or failed while the model was still loading.
            result.context("the server task stopped")??;
        }
    }
    Ok(())
}

/// A model file as the service loads it.
fn model_file(
    source: model_source::LoadedFile,
    tokenizer: Option<tessera_model::RerankTokenizer>,
) -> ModelFile {
    ModelFile {
        file: source.file,
        name: source.name,
        placeholder: source.embedded,
        tokenizer,
    }
}

/// Loading's steps on a terminal: a bar while the file is read, a spinner
/// while the engine is built and warmed up; log lines otherwise.
struct TerminalProgress;

impl tessera_service::Progress for TerminalProgress {
    fn step(&self, what: &str) -> Box<dyn Send> {
        Box::new(terminal::spinner(what))
    }

    fn reading(&self, name: &str, total: u64) -> Box<dyn FnMut(u64) + Send> {
        match terminal::bytes_bar(total, format!("reading {name}")) {
            Some(bar) => Box::new(move |bytes| bar.bar().inc(bytes)),
            None => {
                tracing::info!(model = name, mib = total >> 20, "reading the model file");
                Box::new(|_| {})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_bytes("32MiB"), Ok(32 << 20));
        assert_eq!(parse_bytes("4 k"), Ok(4096));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_bytes("99999999999G")
            .unwrap_err()
            .contains("out of range"));
        assert_eq!(parse_cache_bytes("0"), Ok(0));
        assert_eq!(parse_cache_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5h").unwrap_err().contains("\"h\""));
    }
}
