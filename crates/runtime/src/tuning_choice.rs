//! Which W8A16 GEMM configurations (and attention kernel) the CUDA backend
//! runs: `--tuning`, the per-device table in the user cache, and what `tessera
//! tune` measures. Generic over the device, so the emulated one tests it.

use tessera_model::ModelConfig;

use crate::{Arithmetic, GemmShape, RuntimeError, TuningTable};

/// Where the CUDA backend's W8A16 GEMM configurations come from
/// (`--tuning`; docs/kernels.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tuning {
    /// The table `tessera tune` wrote for this device in the user cache
    /// ([`tuning_cache_path`]) when there is one measured on this very device,
    /// driver and arithmetic; else the built-in choice.
    #[default]
    Default,
    /// This table, which must have been measured on this device.
    File(std::path::PathBuf),
    /// The built-in choice only.
    Builtin,
}

impl std::str::FromStr for Tuning {
    type Err = String;

    /// `builtin`, `default`, or a file's path.
    fn from_str(s: &str) -> Result<Tuning, String> {
        match s {
            "" => Err("expected a tuning table's path, `default` or `builtin`".into()),
            "default" => Ok(Tuning::Default),
            "builtin" => Ok(Tuning::Builtin),
            path => Ok(Tuning::File(path.into())),
        }
    }
}

/// Where `tessera tune` writes a device's table by default and `--tuning
/// default` looks: `$TESSERA_TUNING_DIR/<device>.json`, else
/// `$XDG_CACHE_HOME` (or `~/.cache`) `/tessera/tuning/<device>.json`.
pub fn tuning_cache_path(
    device: &tessera_backend_cuda::DeviceIdentity,
) -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("TESSERA_TUNING_DIR") {
        let file = tessera_backend_cuda::tuning::default_path(std::path::Path::new(""), device);
        return Some(std::path::PathBuf::from(dir).join(file.file_name()?));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(tessera_backend_cuda::tuning::default_path(&base, device))
}

/// The backend with its W8A16 GEMM choice as `tuning` says, and the words for
/// the device line (`, GEMMs: ...`; nothing in W8A8, which has one kernel).
/// A table given by path must be this device's; the default one is used only
/// when it is, and otherwise named with the reason.
pub fn with_tuning<D: tessera_backend_cuda::Device>(
    backend: tessera_backend_cuda::KernelBackend<D>,
    tuning: &Tuning,
) -> Result<(tessera_backend_cuda::KernelBackend<D>, String), RuntimeError> {
    if backend.arithmetic() != Arithmetic::W8A16 {
        return Ok((backend, String::new()));
    }
    let identity = backend.device().identity();
    let builtin = format!(
        ", GEMMs: built-in choice for {} SMs",
        identity.multiprocessors
    );
    match tuning {
        Tuning::Builtin => Ok((backend, builtin)),
        Tuning::File(path) => {
            let table = TuningTable::read(path)?;
            let shapes = table.gemm.len();
            let backend = backend.with_tuning(table, path)?;
            Ok((
                backend,
                format!(
                    ", GEMMs: tuning table {} ({shapes} entries)",
                    path.display()
                ),
            ))
        }
        Tuning::Default => {
            let Some(path) = tuning_cache_path(&identity).filter(|p| p.exists()) else {
                return Ok((
                    backend,
                    builtin + " (no tuning table: `tessera tune` writes one)",
                ));
            };
            let table = match TuningTable::read(&path) {
                Ok(table) => table,
                Err(e) => return Ok((backend, format!("{builtin} ({e})"))),
            };
            if let Err(e) = table.check(&path, &identity, backend.arithmetic()) {
                return Ok((backend, format!("{builtin} ({e})")));
            }
            let shapes = table.gemm.len();
            let backend = backend.with_tuning(table, &path)?;
            Ok((
                backend,
                format!(
                    ", GEMMs: tuning table {} ({shapes} entries)",
                    path.display()
                ),
            ))
        }
    }
}

/// What `tessera tune` measures.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Row counts (tokens in a pass) to time each GEMM at.
    pub rows: Vec<usize>,
    /// Timed launches per candidate (the best counts), after one warm-up.
    pub repeats: usize,
    /// Where to write the table; `None`: [`tuning_cache_path`].
    pub out: Option<std::path::PathBuf>,
    /// The CUDA device.
    pub ordinal: usize,
}

/// The GEMM shapes of a model's layer, as the engine launches them.
pub fn gemm_shapes(config: &ModelConfig) -> Vec<GemmShape> {
    GemmShape::transformer_layer(
        config.hidden,
        config.n_heads * config.head_dim,
        config.n_kv_heads * config.head_dim,
        config.ffn,
    )
}
