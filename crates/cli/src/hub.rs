//! `--model-id REPO[:FILE]`: a GGUF from the Hugging Face Hub, kept in the
//! standard Hugging Face cache (`HF_HOME`, default `~/.cache/huggingface`) so
//! other tools share it. `HF_ENDPOINT` picks the Hub (a mirror, or a test
//! server), `HF_TOKEN` (else the cache's `token` file) authenticates, and
//! `HF_HUB_OFFLINE=1` uses only what is cached. A file already in the cache is
//! used without asking the Hub; an interrupted download resumes from its
//! `.part` file.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

/// A `--model-id` value: the repository and, when given, the file in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelId {
    pub repo: String,
    pub file: Option<String>,
}

impl std::str::FromStr for ModelId {
    type Err = String;

    fn from_str(text: &str) -> Result<ModelId, String> {
        let (repo, file) = match text.split_once(':') {
            Some((repo, file)) => (repo, Some(file.to_string())),
            None => (text, None),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => {}
            _ => {
                return Err(format!(
                    "expected OWNER/NAME or OWNER/NAME:FILE.gguf (e.g. \
                     Qwen/Qwen3-Reranker-4B-GGUF:Qwen3-Reranker-4B-Q8_0.gguf), got {text:?}"
                ))
            }
        }
        if file.as_deref() == Some("") {
            return Err(format!("{text:?}: the file after ':' is empty"));
        }
        Ok(ModelId {
            repo: repo.to_string(),
            file,
        })
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{file}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
}

/// The GGUF of `id`, from the cache or downloaded into it.
pub fn fetch(id: &ModelId) -> anyhow::Result<PathBuf> {
    let repo = Repo::new(id.repo.clone(), RepoType::Model);
    let cache = Cache::from_env().repo(repo.clone());
    if offline() {
        let file = match &id.file {
            Some(file) => file.clone(),
            None => cached_gguf(&cache, id)?,
        };
        return cache.get(&file).with_context(|| {
            format!(
                "{id}: {file} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set",
                Cache::from_env().path().display()
            )
        });
    }
    if let Some(path) = id.file.as_deref().and_then(|file| cache.get(file)) {
        tracing::info!("{id}: using the cached {}", path.display());
        return Ok(path);
    }
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| Cache::from_env().token());
    let api = ApiBuilder::from_env()
        .with_token(token)
        .with_progress(std::io::stderr().is_terminal())
        .with_retries(3)
        .build()
        .context("cannot set up the Hugging Face Hub client")?
        .repo(repo);
    let file = match &id.file {
        Some(file) => file.clone(),
        None => choose_gguf(&api, id)?,
    };
    if let Some(path) = cache.get(&file) {
        tracing::info!("{id}: using the cached {}", path.display());
        return Ok(path);
    }
    tracing::info!("{id}: downloading {file} from {}", endpoint());
    api.get(&file)
        .map_err(|e| explain(e, id, &file))
        .with_context(|| format!("cannot download {file} of {}", id.repo))
}

/// The one GGUF of the repository, or its one Q8_0 GGUF when there are several.
fn choose_gguf(api: &ApiRepo, id: &ModelId) -> anyhow::Result<String> {
    let info = api
        .info()
        .map_err(|e| explain(e, id, "the file list"))
        .with_context(|| format!("cannot list the files of {}", id.repo))?;
    let ggufs: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    pick(id, ggufs)
}

/// The GGUF of the repository's cached snapshot (for `HF_HUB_OFFLINE`).
fn cached_gguf(cache: &hf_hub::CacheRepo, id: &ModelId) -> anyhow::Result<String> {
    // The snapshot folder of the cached revision holds one link per file.
    let probe = cache.get(".").with_context(|| {
        format!("{id}: nothing of this repository is in the Hugging Face cache, and HF_HUB_OFFLINE is set")
    })?;
    let names = std::fs::read_dir(&probe)
        .with_context(|| format!("cannot read {}", probe.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    pick(id, names)
}

fn pick(id: &ModelId, mut ggufs: Vec<String>) -> anyhow::Result<String> {
    ggufs.sort();
    if ggufs.len() == 1 {
        return Ok(ggufs.remove(0));
    }
    let q8: Vec<&String> = ggufs
        .iter()
        .filter(|f| f.to_ascii_lowercase().contains("q8_0"))
        .collect();
    if q8.len() == 1 {
        return Ok(q8[0].clone());
    }
    if ggufs.is_empty() {
        bail!("{} has no .gguf file", id.repo);
    }
    bail!(
        "{} has several GGUF files; name one as {}:FILE ({})",
        id.repo,
        id.repo,
        ggufs.join(", ")
    )
}

/// An error of the Hub in words: which status, and what to do about it.
fn explain(error: ApiError, id: &ModelId, what: &str) -> anyhow::Error {
    let status = match &error {
        ApiError::RequestError(e) => match e.as_ref() {
            ureq::Error::Status(code, _) => Some(*code),
            ureq::Error::Transport(_) => None,
        },
        _ => None,
    };
    let transport = matches!(&error, ApiError::RequestError(e) if matches!(e.as_ref(), ureq::Error::Transport(_)));
    if transport {
        // The transport error's layers each repeat their cause: say it once.
        return anyhow::anyhow!(
            "cannot reach the Hugging Face Hub at {} ({}): check the network or HF_ENDPOINT, \
             or set HF_HUB_OFFLINE=1 to use only what is in the cache",
            endpoint(),
            crate::error_chain(&error)
        );
    }
    match status {
        Some(code @ (401 | 403)) => anyhow::anyhow!(
            "the Hub refused access to {} (status {code}): set HF_TOKEN to a token that may \
             read it (gated models need their terms accepted on the Hub first)",
            id.repo
        ),
        Some(404) => anyhow::anyhow!(
            "{} has no {what} (status 404 from {}): check the repository and file names",
            id.repo,
            endpoint()
        ),
        _ => anyhow::Error::new(error),
    }
}
