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
    let cache = tuning_cache_path(&backend.device().identity());
    with_tuning_at(backend, tuning, cache)
}

/// [`with_tuning`] with the default table's place given (`cache`: where
/// `--tuning default` looks).
fn with_tuning_at<D: tessera_backend_cuda::Device>(
    backend: tessera_backend_cuda::KernelBackend<D>,
    tuning: &Tuning,
    cache: Option<std::path::PathBuf>,
) -> Result<(tessera_backend_cuda::KernelBackend<D>, String), RuntimeError> {
    if backend.arithmetic() != Arithmetic::W8A16 {
        let note = match tuning {
            Tuning::File(path) => format!(
                ", tuning table {} not used: w8a8 has one kernel (tables choose w8a16's)",
                path.display()
            ),
            _ => String::new(),
        };
        return Ok((backend, note));
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
            let Some(path) = cache.filter(|p| p.exists()) else {
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

/// What serves a model's matmuls and attention on `backend` at `rows` tokens
/// a pass, for the device line: `; at 4096 rows: q/k/v 256x128, o 256x128,
/// gate/up 256x128, down 256x128, attention f16kv` (nothing in W8A8).
pub fn choices_line<D: tessera_backend_cuda::Device>(
    backend: &tessera_backend_cuda::KernelBackend<D>,
    config: &ModelConfig,
    rows: usize,
) -> String {
    if backend.arithmetic() != Arithmetic::W8A16 {
        return String::new();
    }
    let names = ["q/k/v", "o", "gate/up", "down"];
    let gemms: Vec<String> = gemm_shapes(config)
        .iter()
        .zip(names)
        .map(|(shape, name)| format!("{name} {}", backend.gemm_choice(rows, &shape.n, shape.k)))
        .collect();
    format!(
        "; at {rows} rows: {}, attention {}",
        gemms.join(", "),
        backend.attention_kernel(config.head_dim).name()
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_backend_cuda::tuning::{GemmShape, Timing, TuningEntry, FORMAT};
    use tessera_backend_cuda::{Device, GemmPolicy};
    use tessera_cuda_emulated::{emulated, emulated_w8a16};

    /// A one-entry table measured on `device`.
    fn table_for(device: tessera_backend_cuda::DeviceIdentity) -> TuningTable {
        TuningTable {
            format: FORMAT,
            device,
            arithmetic: "w8a16".into(),
            gemm: vec![TuningEntry {
                shape: GemmShape { n: vec![64], k: 64 },
                rows: 16,
                config: "64x128".into(),
                split_k: 1,
                micros: 1.0,
                tflops: 1.0,
                candidates: vec![Timing {
                    config: "64x128".into(),
                    split_k: 1,
                    micros: 1.0,
                }],
            }],
            attention: Vec::new(),
        }
    }

    #[test]
    fn tuning_picks_a_table_or_the_builtin_choice_and_says_which() {
        let dir =
            std::env::temp_dir().join(format!("tessera-tuning-choice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let here = emulated_w8a16().device().identity();
        let mine = dir.join("mine.json");
        table_for(here.clone()).write(&mine).unwrap();
        let theirs = dir.join("theirs.json");
        let other = tessera_backend_cuda::DeviceIdentity {
            name: "NVIDIA H200".into(),
            ..here.clone()
        };
        table_for(other).write(&theirs).unwrap();

        // W8A8 has one kernel: nothing to choose; a table named anyway is said
        // to be unused.
        let (_, said) = with_tuning_at(emulated(), &Tuning::Default, Some(mine.clone())).unwrap();
        assert_eq!(said, "");
        let (_, said) = with_tuning_at(emulated(), &Tuning::File(theirs.clone()), None).unwrap();
        assert!(said.contains("not used: w8a8 has one kernel"), "{said}");
        let (b, said) =
            with_tuning_at(emulated_w8a16(), &Tuning::Builtin, Some(mine.clone())).unwrap();
        assert!(matches!(b.gemm_policy(), GemmPolicy::Builtin));
        assert_eq!(said, ", GEMMs: built-in choice for 4 SMs");
        // A table named by path: used when it is this device's, refused otherwise.
        let (b, said) =
            with_tuning_at(emulated_w8a16(), &Tuning::File(mine.clone()), None).unwrap();
        assert!(matches!(b.gemm_policy(), GemmPolicy::Table(_)));
        assert!(
            said.contains("tuning table") && said.contains("mine.json (1 entries)"),
            "{said}"
        );
        let refused = with_tuning_at(emulated_w8a16(), &Tuning::File(theirs.clone()), None)
            .err()
            .expect("another device's table is refused")
            .to_string();
        assert!(
            refused.contains("NVIDIA H200") && refused.contains("tessera tune"),
            "{refused}"
        );
        // The default place: the table when it is this device's, else the
        // built-in choice with the reason.
        let (b, said) =
            with_tuning_at(emulated_w8a16(), &Tuning::Default, Some(mine.clone())).unwrap();
        assert!(matches!(b.gemm_policy(), GemmPolicy::Table(_)), "{said}");
        let (b, said) = with_tuning_at(emulated_w8a16(), &Tuning::Default, Some(theirs)).unwrap();
        assert!(matches!(b.gemm_policy(), GemmPolicy::Builtin));
        assert!(
            said.contains("built-in") && said.contains("NVIDIA H200"),
            "{said}"
        );
        let (b, said) = with_tuning_at(
            emulated_w8a16(),
            &Tuning::Default,
            Some(dir.join("absent.json")),
        )
        .unwrap();
        assert!(matches!(b.gemm_policy(), GemmPolicy::Builtin));
        assert!(said.contains("no tuning table"), "{said}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_device_line_names_what_serves_each_matmul_and_attention() {
        let config = ModelConfig {
            n_layers: 36,
            hidden: 2560,
            ffn: 9728,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            rms_eps: 1e-6,
            rope_theta: 1e6,
            context_length: 40_960,
        };
        assert_eq!(choices_line(&emulated(), &config, 4096), "");
        let line = choices_line(&emulated_w8a16(), &config, 4096);
        assert_eq!(
            line,
            "; at 4096 rows: q/k/v 256x128, o 256x128, gate/up 256x128, down 256x128, attention f16kv"
        );
        // A few rows take the 64-row tile (the emulated device's 4 SMs are
        // filled by these grids already: no split).
        let few = choices_line(&emulated_w8a16(), &config, 16);
        assert_eq!(
            few,
            "; at 16 rows: q/k/v 64x128, o 64x128, gate/up 64x128, down 64x128, attention f16kv"
        );
    }

    #[test]
    fn tuning_flags_parse_words_and_paths() {
        assert_eq!("default".parse::<Tuning>(), Ok(Tuning::Default));
        assert_eq!("builtin".parse::<Tuning>(), Ok(Tuning::Builtin));
        assert_eq!(
            "t.json".parse::<Tuning>(),
            Ok(Tuning::File("t.json".into()))
        );
        assert!("".parse::<Tuning>().is_err());
    }
}
