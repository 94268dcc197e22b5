//! Where the model comes from: a GGUF path, or the tiny random model compiled
//! into the binary when none is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tessera_gguf::GgufFile;
use tessera_model::RerankTokenizer;

use crate::hub::{self, ModelId};

/// The embedded default model: a tiny random Qwen3 reranker with the real Qwen3
/// vocabulary (the `tiny-q8.gguf` test fixture). It runs the whole pipeline; its
/// scores mean nothing. The binary carries it compactly (its header compressed,
/// its weights as the seed of their random stream) and rebuilds the 11 MB file in
/// memory on first use, checked against its pinned SHA-256.
fn embedded_model() -> anyhow::Result<&'static [u8]> {
    tessera_fixtures::in_memory("tiny-q8.gguf").context("cannot rebuild the embedded model")
}
pub const EMBEDDED_NAME: &str = "tessera-embedded-tiny-random";

pub struct LoadedFile {
    pub file: Arc<GgufFile>,
    /// The name the API echoes: `general.name`, else the file stem.
    pub name: String,
    /// The embedded tiny random model (no `--model` given): its scores mean nothing.
    pub embedded: bool,
}

/// The one warning for the embedded model, for the commands that print to a
/// terminal (`serve` logs it instead).
pub const EMBEDDED_WARNING: &str = "no --model given: using the embedded tiny random model; \
     its scores are meaningless (pass --model PATH.gguf for real results)";

/// `--model` and `--model-id`, the same on every command that loads a model.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file (default: the embedded tiny random model, whose scores
    /// are meaningless).
    #[arg(
        long,
        value_name = "PATH",
        env = "TESSERA_MODEL",
        conflicts_with = "model_id"
    )]
    pub model: Option<PathBuf>,
    /// A GGUF on the Hugging Face Hub, REPO or REPO:FILE (without FILE: the
    /// repository's only GGUF, or its only Q8_0 one), downloaded into the
    /// Hugging Face cache (HF_HOME) and used from there; HF_TOKEN, HF_ENDPOINT
    /// and HF_HUB_OFFLINE=1 are honoured.
    #[arg(long, value_name = "REPO[:FILE]", env = "TESSERA_MODEL_ID")]
    pub model_id: Option<ModelId>,
}

impl ModelArgs {
    /// The model's path: `--model`, or the `--model-id` file in the cache
    /// (downloaded first when it is not there); `None` for the embedded model.
    pub fn path(&self) -> anyhow::Result<Option<PathBuf>> {
        match (&self.model, &self.model_id) {
            (Some(path), _) => Ok(Some(path.clone())),
            (None, Some(id)) => hub::fetch(id).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// Opens the model; the embedded one when `path` is `None` (no warning printed:
/// see [`open_warning`] and [`EMBEDDED_WARNING`]).
pub fn open(path: Option<&Path>) -> anyhow::Result<LoadedFile> {
    match path {
        Some(path) => {
            let file = GgufFile::open(path)
                .with_context(|| format!("cannot load model {}", path.display()))?;
            let name = match file.get_str("general.name") {
                Ok(name) if !name.is_empty() => name.to_string(),
                _ => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            Ok(LoadedFile {
                file: Arc::new(file),
                name,
                embedded: false,
            })
        }
        None => {
            let file = GgufFile::from_static(embedded_model()?)
                .context("the embedded model is corrupt")?;
            Ok(LoadedFile {
                file: Arc::new(file),
                name: EMBEDDED_NAME.to_string(),
                embedded: true,
            })
        }
    }
}

pub fn embedded_file() -> anyhow::Result<GgufFile> {
    GgufFile::from_static(embedded_model()?).context("the embedded model is corrupt")
}

pub fn tokenizer_override(path: Option<&PathBuf>) -> anyhow::Result<Option<RerankTokenizer>> {
    path.map(|p| {
        RerankTokenizer::from_file(p)
            .with_context(|| format!("cannot load tokenizer {}", p.display()))
    })
    .transpose()
}

/// [`open`], printing [`EMBEDDED_WARNING`] once on stderr when the embedded
/// model is used (the command-line tools; `serve` logs it instead).
pub fn open_warning(path: Option<&Path>) -> anyhow::Result<LoadedFile> {
    let loaded = open(path)?;
    if loaded.embedded {
        eprintln!("warning: {EMBEDDED_WARNING}");
    }
    Ok(loaded)
}
