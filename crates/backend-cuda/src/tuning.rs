//! Which compiled configuration of the W8A16 GEMM runs each of a model's
//! matmuls. `tessera tune` times every configuration and split-K factor
//! ([`tune`]) on the device for the model's shapes and writes a
//! [`TuningTable`]: JSON keyed by the device (name, compute capability, driver),
//! the arithmetic and each GEMM's shape. A backend given a table
//! ([`crate::KernelBackend::with_tuning`]) runs what it says for the shapes it
//! holds (the nearest measured row count) and the built-in choice
//! ([`builtin_choice`]) for the rest.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tessera_backend::{AttentionLayout, AttentionShape, Backend, BackendError, KvRef, Qkv};
use tessera_gguf::{GgmlType, QK8_0};

use crate::ops::attention::{
    attention_with, mma_kernel_for_head_dim, wgmma_kernel_for_head_dim, AttentionKernel,
};
pub use crate::ops::w8a16::{builtin_choice, MIN_STAGES_PER_SPLIT};
use crate::ops::w8a16::{
    gemm_with, GemmChoice, GemmConfig, HalfRows, GEMM_CONFIGS, MAX_GROUP, MAX_SPLIT_K,
};
use crate::{Arithmetic, Device, DeviceBuffer, DeviceIdentity, DeviceWeight, KernelBackend};

/// The table format this build reads and writes.
pub const FORMAT: u32 = 1;

/// A GEMM of a model: the output features of each weight of one launch (q, k,
/// v: three) and the shared k.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GemmShape {
    pub n: Vec<usize>,
    pub k: usize,
}

impl GemmShape {
    /// The matmuls of one transformer layer as the engine launches them: q/k/v
    /// (grouped), the attention output, gate/up (grouped) and down.
    pub fn transformer_layer(
        hidden: usize,
        q_features: usize,
        kv_features: usize,
        ffn: usize,
    ) -> Vec<GemmShape> {
        vec![
            GemmShape {
                n: vec![q_features, kv_features, kv_features],
                k: hidden,
            },
            GemmShape {
                n: vec![hidden],
                k: q_features,
            },
            GemmShape {
                n: vec![ffn, ffn],
                k: hidden,
            },
            GemmShape {
                n: vec![hidden],
                k: ffn,
            },
        ]
    }

    /// Multiply-adds × 2 of `rows` rows.
    pub fn flops(&self, rows: usize) -> f64 {
        2.0 * rows as f64 * self.k as f64 * self.n.iter().sum::<usize>() as f64
    }
}

impl std::fmt::Display for GemmShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns: Vec<String> = self.n.iter().map(usize::to_string).collect();
        write!(f, "n {} × k {}", ns.join("+"), self.k)
    }
}

/// One timed candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub config: String,
    pub split_k: usize,
    /// Best of the timed repetitions, microseconds.
    pub micros: f64,
}

/// The winner for one shape at one row count, with every candidate's time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuningEntry {
    pub shape: GemmShape,
    pub rows: usize,
    pub config: String,
    pub split_k: usize,
    pub micros: f64,
    pub tflops: f64,
    pub candidates: Vec<Timing>,
}

/// An attention workload: `docs` sequences of `doc_tokens` after one shared
/// prefix of `prefix_tokens` (the served shape: one query, many documents).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionWorkload {
    pub docs: usize,
    pub doc_tokens: usize,
    pub prefix_tokens: usize,
}

impl AttentionWorkload {
    /// The served workload and one long pair.
    pub const SERVED: [AttentionWorkload; 2] = [
        AttentionWorkload {
            docs: 100,
            doc_tokens: 256,
            prefix_tokens: 32,
        },
        AttentionWorkload {
            docs: 1,
            doc_tokens: 8160,
            prefix_tokens: 32,
        },
    ];

    /// QKᵀ and P·V over every row's visible keys.
    pub fn flops(&self, shape: AttentionShape) -> f64 {
        let visible: usize = (0..self.doc_tokens)
            .map(|r| self.prefix_tokens + r + 1)
            .sum::<usize>()
            * self.docs;
        4.0 * visible as f64 * shape.n_heads as f64 * shape.head_dim as f64
    }
}

/// One timed attention kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionTiming {
    pub kernel: String,
    pub micros: f64,
}

/// The faster tensor-core attention for one head shape and workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionEntry {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub workload: AttentionWorkload,
    pub kernel: String,
    pub micros: f64,
    pub tflops: f64,
    pub candidates: Vec<AttentionTiming>,
}

/// What `tessera tune` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuningTable {
    pub format: u32,
    pub device: DeviceIdentity,
    /// `w8a16` (the only arithmetic with configurations today).
    pub arithmetic: String,
    pub gemm: Vec<TuningEntry>,
    /// W8A16's tensor-core attention kernels timed per head shape (absent in
    /// tables written before attention was tuned).
    #[serde(default)]
    pub attention: Vec<AttentionEntry>,
}

/// Why a table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error("tuning table {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("tuning table {path} was measured on {found}; this is {here}: run `tessera tune` on this device (or give --tuning builtin for the built-in choice)")]
    OtherDevice {
        path: String,
        found: String,
        here: String,
    },
    #[error("writing tuning table {path}: {detail}")]
    Write { path: String, detail: String },
}

fn describe(device: &DeviceIdentity, arithmetic: &str) -> String {
    format!(
        "{} (compute capability {}, driver CUDA {}, {} SMs) in {arithmetic}",
        device.name, device.compute_capability, device.driver, device.multiprocessors
    )
}

impl TuningTable {
    /// Reads and checks a table: its format, every configuration name it
    /// names, split-K factors of v3 configurations only.
    pub fn read(path: &Path) -> Result<TuningTable, TuningError> {
        let error = |detail: String| TuningError::Read {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let table: TuningTable = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        if table.format != FORMAT {
            return Err(error(format!(
                "format {} (this build reads format {FORMAT}): run `tessera tune` again",
                table.format
            )));
        }
        for entry in &table.attention {
            for name in
                std::iter::once(&entry.kernel).chain(entry.candidates.iter().map(|c| &c.kernel))
            {
                if AttentionKernel::named(name).is_none() {
                    return Err(error(format!(
                        "unknown attention kernel '{name}' at head size {} (known: f16kv, mma, wgmma)",
                        entry.head_dim
                    )));
                }
            }
        }
        for entry in &table.gemm {
            let Some(config) = GemmConfig::named(&entry.config) else {
                return Err(error(format!(
                    "unknown configuration '{}' for {} (known: {})",
                    entry.config,
                    entry.shape,
                    config_names()
                )));
            };
            if entry.split_k == 0
                || entry.split_k > MAX_SPLIT_K
                || (!config.grouped && entry.split_k != 1)
            {
                return Err(error(format!(
                    "split-k {} for {} with {} (1 to {MAX_SPLIT_K}, 1 for v2)",
                    entry.split_k, entry.shape, entry.config
                )));
            }
            if entry.shape.n.is_empty()
                || entry.shape.n.len() > MAX_GROUP
                || entry.shape.k == 0
                || entry.rows == 0
            {
                return Err(error(format!(
                    "entry {} at {} rows: 1 to {MAX_GROUP} weights, k and rows above 0",
                    entry.shape, entry.rows
                )));
            }
        }
        Ok(table)
    }

    pub fn write(&self, path: &Path) -> Result<(), TuningError> {
        let error = |detail: String| TuningError::Write {
            path: path.display().to_string(),
            detail,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| error(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| error(e.to_string()))
    }

    /// Ok when the table was measured on this device (name, compute
    /// capability, driver, multiprocessors) in this arithmetic.
    pub fn check(
        &self,
        path: &Path,
        device: &DeviceIdentity,
        arithmetic: Arithmetic,
    ) -> Result<(), TuningError> {
        if &self.device != device || self.arithmetic != arithmetic.name() {
            return Err(TuningError::OtherDevice {
                path: path.display().to_string(),
                found: describe(&self.device, &self.arithmetic),
                here: describe(device, arithmetic.name()),
            });
        }
        // Only a hand-edited table can name a wgmma kernel for a device
        // without it (tune never times one there).
        if let Some(entry) = self
            .gemm
            .iter()
            .find(|e| GemmConfig::named(&e.config).is_some_and(|c| c.wgmma && !device.has_wgmma()))
        {
            return Err(TuningError::Read {
                path: path.display().to_string(),
                detail: format!(
                    "{} for {} needs wgmma (compute capability 9.0), which {} lacks",
                    entry.config, entry.shape, device.name
                ),
            });
        }
        let wgmma_attention = AttentionKernel::Wgmma.name();
        if let Some(entry) = self
            .attention
            .iter()
            .find(|e| e.kernel == wgmma_attention && !device.has_wgmma())
        {
            return Err(TuningError::Read {
                path: path.display().to_string(),
                detail: format!(
                    "attention {wgmma_attention} at head size {} needs wgmma (compute capability 9.0), which {} lacks",
                    entry.head_dim, device.name
                ),
            });
        }
        Ok(())
    }

    /// The measured choice for `shape` at the row count nearest `rows` (by
    /// ratio), or `None` when the table has no entry for the shape.
    pub fn choose(&self, ns: &[usize], k: usize, rows: usize) -> Option<GemmChoice> {
        let distance = |measured: usize| (measured as f64 / rows.max(1) as f64).ln().abs();
        let entry = self
            .gemm
            .iter()
            .filter(|e| e.shape.n == ns && e.shape.k == k)
            .min_by(|a, b| distance(a.rows).total_cmp(&distance(b.rows)))?;
        Some(GemmChoice {
            config: GemmConfig::named(&entry.config)?,
            split_k: entry.split_k,
        })
    }
}

impl TuningTable {
    /// Keeps `older`'s entries (a table of the same device) for every shape,
    /// row count and attention workload this one did not measure.
    pub fn merge_older(&mut self, older: TuningTable) {
        for entry in older.gemm {
            if !self
                .gemm
                .iter()
                .any(|e| e.shape == entry.shape && e.rows == entry.rows)
            {
                self.gemm.push(entry);
            }
        }
        for entry in older.attention {
            let same = |e: &AttentionEntry| {
                (e.n_heads, e.n_kv_heads, e.head_dim, e.workload)
                    == (
                        entry.n_heads,
                        entry.n_kv_heads,
                        entry.head_dim,
                        entry.workload,
                    )
            };
            if !self.attention.iter().any(same) {
                self.attention.push(entry);
            }
        }
    }

    /// The attention kernel with the least time summed over the table's
    /// workloads at `head_dim`, or `None` when none was timed there.
    pub fn attention_choice(&self, head_dim: usize) -> Option<AttentionKernel> {
        let entries: Vec<&AttentionEntry> = self
            .attention
            .iter()
            .filter(|e| e.head_dim == head_dim)
            .collect();
        if entries.is_empty() {
            return None;
        }
        AttentionKernel::ALL
            .into_iter()
            .map(|kernel| {
                let total: f64 = entries
                    .iter()
                    .map(|e| {
                        e.candidates
                            .iter()
                            .find(|c| c.kernel == kernel.name())
                            .map_or(f64::INFINITY, |c| c.micros)
                    })
                    .sum();
                (kernel, total)
            })
            .filter(|(_, total)| total.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(kernel, _)| kernel)
    }
}

fn config_names() -> String {
    let names: Vec<&str> = GEMM_CONFIGS.iter().map(|c| c.name).collect();
    names.join(", ")
}

/// Where `tessera tune` writes and `serve` looks by default: one file per
/// device under the user cache, `tessera/tuning/<device>.json`.
pub fn default_path(cache_dir: &Path, device: &DeviceIdentity) -> std::path::PathBuf {
    let slug: String = format!("{} sm{}", device.name, device.compute_capability)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    cache_dir
        .join("tessera")
        .join("tuning")
        .join(format!("{slug}.json"))
}

/// A table's choice for `rows` rows: its split-K factor lowered until the grid
/// is within the bounds [`candidates`] times (each share two stages or more,
/// at most four waves) — an entry measured at a few rows must not split a
/// large batch (nor claim its workspace).
pub fn split_for_rows(
    device: &DeviceIdentity,
    choice: GemmChoice,
    rows: usize,
    ns: &[usize],
    k: usize,
) -> GemmChoice {
    let config = choice.config;
    if !config.grouped {
        return GemmChoice { config, split_k: 1 };
    }
    let blocks: usize = ns
        .iter()
        .map(|n| n.div_ceil(config.tile_cols))
        .sum::<usize>()
        * rows.div_ceil(config.tile_rows);
    let stages = GemmConfig::k_stages(k);
    let mut split_k = choice.split_k.clamp(1, MAX_SPLIT_K);
    while split_k > 1
        && (stages / split_k < MIN_STAGES_PER_SPLIT
            || blocks * split_k > 4 * device.multiprocessors)
    {
        split_k -= 1;
    }
    GemmChoice { config, split_k }
}

/// The candidates [`tune`] times for a shape: every configuration the device
/// runs (its shared memory holds it; the wgmma ones on compute capability 9.0
/// only), and for the grouped ones every split-K factor up to [`MAX_SPLIT_K`]
/// that leaves each share [`MIN_STAGES_PER_SPLIT`] k stages and the grid
/// within four waves.
pub fn candidates(device: &DeviceIdentity, rows: usize, shape: &GemmShape) -> Vec<GemmChoice> {
    let multiprocessors = device.multiprocessors;
    let stages = GemmConfig::k_stages(shape.k);
    let mut out = Vec::new();
    for config in GEMM_CONFIGS.iter().filter(|c| c.runs_on(device)) {
        out.push(GemmChoice { config, split_k: 1 });
        if !config.grouped {
            continue;
        }
        let blocks: usize = shape
            .n
            .iter()
            .map(|n| n.div_ceil(config.tile_cols))
            .sum::<usize>()
            * rows.div_ceil(config.tile_rows);
        for split_k in [2, 3, 4, 6, 8] {
            if split_k <= MAX_SPLIT_K
                && stages / split_k >= MIN_STAGES_PER_SPLIT
                && blocks * split_k <= 4 * multiprocessors
            {
                out.push(GemmChoice { config, split_k });
            }
        }
    }
    out
}

/// Times every candidate for every shape at every row count on `b`'s device
/// (the time of a tensor-core GEMM does not depend on the values),
/// `repeats` launches each after one warm-up, and returns the table of
/// winners. A configuration whose outputs differ from the built-in choice's on
/// random inputs ([`crate::agreement`]) is not timed: `progress` says so, and
/// gets one line per shape and row count.
pub fn tune<D: Device>(
    b: &KernelBackend<D>,
    shapes: &[GemmShape],
    rows: &[usize],
    repeats: usize,
    mut progress: impl FnMut(&str),
) -> Result<TuningTable, BackendError> {
    let device = b.device();
    let identity = device.identity();
    let mut entries = Vec::new();
    for shape in shapes {
        if shape.n.is_empty() || shape.n.len() > MAX_GROUP || !shape.k.is_multiple_of(QK8_0) {
            return Err(BackendError::Invalid {
                op: "tune",
                detail: format!("{shape}: 1 to {MAX_GROUP} weights and k a multiple of {QK8_0}"),
            });
        }
        let mut weights = shape
            .n
            .iter()
            .map(|&n| uninitialised_q8_0(device, n, shape.k))
            .collect::<Result<Vec<_>, _>>()?;
        // Only configurations that compute what the built-in choice computes
        // (checked at the fewest rows asked, at most 512) are timed.
        let check_rows = rows.iter().copied().min().unwrap_or(1).clamp(1, 512);
        let wrong = crate::agreement::disagreements(b, check_rows, &mut weights)?;
        for disagreement in &wrong {
            progress(&format!("{shape} at {check_rows} rows: {disagreement}"));
        }
        let weight_refs: Vec<&DeviceWeight<D::Memory>> = weights.iter().collect();
        for &r in rows {
            let x = HalfRows::alloc(device, r, shape.k)?;
            let mut outs = shape
                .n
                .iter()
                .map(|&n| {
                    Ok(DeviceBuffer {
                        memory: device.alloc(
                            r.checked_mul(n)
                                .and_then(|v| v.checked_mul(4))
                                .ok_or_else(|| {
                                    BackendError::Device(format!("{r} × {n} outputs do not fit"))
                                })?,
                        )?,
                        len: r * n,
                    })
                })
                .collect::<Result<Vec<_>, BackendError>>()?;
            let mut timings = Vec::new();
            for choice in candidates(&identity, r, shape)
                .into_iter()
                .filter(|c| wrong.iter().all(|w| w.config != c.config.name))
            {
                // Uninitialised values read in whichever layout the kernel reads.
                x.set_layout(choice.config.layout);
                let mut out_refs: Vec<&mut DeviceBuffer<D::Memory>> = outs.iter_mut().collect();
                let best = best_micros(device, repeats, || {
                    gemm_with(b, choice, &x, r, &weight_refs, false, &mut out_refs)
                })?;
                timings.push(Timing {
                    config: choice.config.name.to_string(),
                    split_k: choice.split_k,
                    micros: best,
                });
            }
            let Some(best) = timings
                .iter()
                .min_by(|a, b| a.micros.total_cmp(&b.micros))
                .cloned()
            else {
                return Err(BackendError::Device(format!(
                    "{shape} at {r} rows: no configuration fits this device's shared memory"
                )));
            };
            let tflops = shape.flops(r) / (best.micros * 1e-6) / 1e12;
            progress(&format!(
                "{shape} at {r} rows: {} split-k {} in {:.1} µs ({tflops:.1} TFLOP/s), {} candidates",
                best.config,
                best.split_k,
                best.micros,
                timings.len()
            ));
            entries.push(TuningEntry {
                shape: shape.clone(),
                rows: r,
                config: best.config,
                split_k: best.split_k,
                micros: best.micros,
                tflops,
                candidates: timings,
            });
        }
    }
    Ok(TuningTable {
        format: FORMAT,
        device: identity,
        arithmetic: Arithmetic::W8A16.name().to_string(),
        gemm: entries,
        attention: Vec::new(),
    })
}

/// The largest NMSE between an attention kernel's output and v3's that counts
/// as the same result: both round Q, K, V and P to f16 and sum in f32, in
/// other tile orders (each within ≈ 1e-7 of the f64 oracle on the kit's
/// cases, so a few 1e-7 apart); a wrong fragment, mask or ring step costs
/// 1e-3 or more.
pub const ATTENTION_AGREEMENT_NMSE: f64 = 1e-5;

/// Times W8A16's tensor-core attention kernels for `shape` on each workload
/// (random Q/K/V: the online softmax's rescaling depends on the values),
/// `repeats` runs each after one warm-up. Empty for head sizes without a
/// tensor-core kernel.
pub fn tune_attention<D: Device>(
    b: &KernelBackend<D>,
    shape: AttentionShape,
    workloads: &[AttentionWorkload],
    repeats: usize,
    mut progress: impl FnMut(&str),
) -> Result<Vec<AttentionEntry>, BackendError> {
    if mma_kernel_for_head_dim(shape.head_dim).is_none() || b.arithmetic() != Arithmetic::W8A16 {
        return Ok(Vec::new());
    }
    let mut entries = Vec::new();
    for &w in workloads {
        let tokens = w.docs * w.doc_tokens;
        let mut seed = 0x9e37_79b9_u32;
        let mut buffer = |len: usize| -> Result<DeviceBuffer<D::Memory>, BackendError> {
            let values: Vec<f32> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as f32 / u32::MAX as f32 * 2.0 - 1.0
                })
                .collect();
            let mut buf = b.alloc(len)?;
            b.write(&mut buf, &values)?;
            Ok(buf)
        };
        let q = buffer(tokens * shape.q_width())?;
        let k = buffer(tokens * shape.kv_width())?;
        let v = buffer(tokens * shape.kv_width())?;
        let pk = buffer(w.prefix_tokens * shape.kv_width())?;
        let pv = buffer(w.prefix_tokens * shape.kv_width())?;
        let mut out = b.alloc(tokens * shape.q_width())?;
        let prefix = (w.prefix_tokens > 0).then_some(0);
        let layout = AttentionLayout::packed_with_prefixes(
            &vec![w.doc_tokens; w.docs],
            &vec![prefix; w.docs],
        );
        let prefixes = [KvRef {
            k: &pk,
            v: &pv,
            len: w.prefix_tokens,
        }];
        let mut candidates = Vec::new();
        let identity = b.device().identity();
        // v4 only where it runs (wgmma: compute capability 9.0) and has a
        // kernel of its own at this head size (elsewhere it would time v3).
        let fits = |k: &AttentionKernel| match k {
            AttentionKernel::Wgmma => {
                identity.has_wgmma()
                    && wgmma_kernel_for_head_dim(shape.head_dim).is_some()
                    && k.shared_bytes(shape.head_dim) <= identity.max_shared_per_block
            }
            _ => k.shared_bytes(shape.head_dim) <= identity.max_shared_per_block,
        };
        // Each kernel's output against v3's on these inputs first: one that
        // disagrees (written and checked on the emulator, wrong on this card)
        // is not timed, so it can never be chosen for being fast.
        let run = |kernel: AttentionKernel, out: &mut DeviceBuffer<D::Memory>| {
            let qkv = Qkv {
                q: &q,
                k: &k,
                v: &v,
            };
            attention_with(b, kernel, qkv, shape, &layout, &prefixes, out)
        };
        let len = tokens * shape.q_width();
        run(AttentionKernel::F16Kv, &mut out)?;
        let reference = b.read(&out, len)?;
        for kernel in AttentionKernel::ALL.into_iter().filter(fits) {
            run(kernel, &mut out)?;
            let got = b.read(&out, len)?;
            let (err, size) = got
                .iter()
                .zip(&reference)
                .fold((0.0, 0.0), |(e, n), (&g, &r)| {
                    let (g, r) = (f64::from(g), f64::from(r));
                    (e + (g - r).powi(2), n + r * r)
                });
            let nmse = err / size.max(f64::MIN_POSITIVE);
            // NaN (outputs not finite) disagrees too.
            if nmse.is_nan() || nmse > ATTENTION_AGREEMENT_NMSE {
                progress(&format!(
                    "attention {} at head size {}: disagrees with f16kv (NMSE {nmse:.2e}, more than {ATTENTION_AGREEMENT_NMSE:.0e}): not timed",
                    kernel.name(),
                    shape.head_dim
                ));
                continue;
            }
            let best = best_micros(b.device(), repeats, || {
                let qkv = Qkv {
                    q: &q,
                    k: &k,
                    v: &v,
                };
                attention_with(b, kernel, qkv, shape, &layout, &prefixes, &mut out)
            })?;
            candidates.push(AttentionTiming {
                kernel: kernel.name().to_string(),
                micros: best,
            });
        }
        // v2 (51 KiB at d = 128) is always timed: it fits every card with
        // tensor cores.
        let Some(best) = candidates
            .iter()
            .min_by(|a, b| a.micros.total_cmp(&b.micros))
            .cloned()
        else {
            return Err(BackendError::Device("no attention kernel was timed".into()));
        };
        let tflops = w.flops(shape) / (best.micros * 1e-6) / 1e12;
        progress(&format!(
            "attention {}×{}+{} at head size {}: {} in {:.1} µs ({tflops:.1} TFLOP/s)",
            w.docs, w.doc_tokens, w.prefix_tokens, shape.head_dim, best.kernel, best.micros
        ));
        entries.push(AttentionEntry {
            n_heads: shape.n_heads,
            n_kv_heads: shape.n_kv_heads,
            head_dim: shape.head_dim,
            workload: w,
            kernel: best.kernel,
            micros: best.micros,
            tflops,
            candidates,
        });
    }
    Ok(entries)
}

/// The best of `repeats` timed runs of `run` (each waited for on the
/// device), after one warm-up, in microseconds.
fn best_micros<D: Device>(
    device: &D,
    repeats: usize,
    mut run: impl FnMut() -> Result<(), BackendError>,
) -> Result<f64, BackendError> {
    run()?;
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        run()?;
        device.synchronize()?;
        best = best.min(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(best)
}

/// A Q8_0 weight `[n, k]` of uninitialised device memory (for timing).
fn uninitialised_q8_0<D: Device>(
    device: &D,
    n: usize,
    k: usize,
) -> Result<DeviceWeight<D::Memory>, BackendError> {
    let values = n
        .checked_mul(k)
        .ok_or_else(|| BackendError::Device(format!("a {n} × {k} weight does not fit")))?;
    Ok(DeviceWeight {
        name: format!("tune {n}x{k}"),
        ggml_type: GgmlType::Q8_0,
        rows: n,
        cols: k,
        data: device.alloc(values)?,
        scales: Some(device.alloc(values / QK8_0 * 2)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> DeviceIdentity {
        DeviceIdentity {
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: "9.0".into(),
            driver: "13.0".into(),
            multiprocessors: 132,
            max_shared_per_block: 227 * 1024,
        }
    }

    /// An sm_89 card: 99 KiB of shared memory per block.
    fn l40s() -> DeviceIdentity {
        DeviceIdentity {
            name: "NVIDIA L40S".into(),
            compute_capability: "8.9".into(),
            driver: "13.0".into(),
            multiprocessors: 142,
            max_shared_per_block: 99 * 1024,
        }
    }

    fn entry(n: Vec<usize>, k: usize, rows: usize, config: &str, split_k: usize) -> TuningEntry {
        TuningEntry {
            shape: GemmShape { n, k },
            rows,
            config: config.into(),
            split_k,
            micros: 10.0,
            tflops: 1.0,
            candidates: vec![Timing {
                config: config.into(),
                split_k,
                micros: 10.0,
            }],
        }
    }

    fn table() -> TuningTable {
        TuningTable {
            format: FORMAT,
            device: h100(),
            arithmetic: "w8a16".into(),
            gemm: vec![
                entry(vec![4096, 1024, 1024], 2560, 512, "128x128", 2),
                entry(vec![4096, 1024, 1024], 2560, 8192, "256x128", 1),
                entry(vec![2560], 9728, 512, "v2", 1),
            ],
            attention: AttentionWorkload::SERVED
                .iter()
                .zip([(100.0, 300.0), (900.0, 800.0)])
                .map(|(&workload, (f16kv, mma))| AttentionEntry {
                    n_heads: 32,
                    n_kv_heads: 8,
                    head_dim: 128,
                    workload,
                    kernel: if f16kv < mma { "f16kv" } else { "mma" }.into(),
                    micros: f64::min(f16kv, mma),
                    tflops: 1.0,
                    candidates: vec![
                        AttentionTiming {
                            kernel: "f16kv".into(),
                            micros: f16kv,
                        },
                        AttentionTiming {
                            kernel: "mma".into(),
                            micros: mma,
                        },
                    ],
                })
                .collect(),
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tessera-tuning-{}", std::process::id()));
        dir.join(name)
    }

    #[test]
    fn a_table_round_trips_through_its_file() {
        let path = temp("round-trip/h100.json");
        table().write(&path).unwrap();
        let read = TuningTable::read(&path).unwrap();
        assert_eq!(read, table());
        read.check(&path, &h100(), Arithmetic::W8A16).unwrap();
    }

    #[test]
    fn a_table_for_another_device_or_arithmetic_is_refused_by_name() {
        let path = temp("other.json");
        let h200 = DeviceIdentity {
            name: "NVIDIA H200".into(),
            multiprocessors: 132,
            ..h100()
        };
        let message = table()
            .check(&path, &h200, Arithmetic::W8A16)
            .unwrap_err()
            .to_string();
        assert!(message.contains("NVIDIA H100 80GB HBM3"), "{message}");
        assert!(message.contains("this is NVIDIA H200"), "{message}");
        assert!(message.contains("tessera tune"), "{message}");
        let newer_driver = DeviceIdentity {
            driver: "13.1".into(),
            ..h100()
        };
        assert!(table()
            .check(&path, &newer_driver, Arithmetic::W8A16)
            .is_err());
        assert!(table().check(&path, &h100(), Arithmetic::W8A8).is_err());
        // A wgmma entry in a table for a card without wgmma (edited by hand:
        // tune never times one there) is refused by name.
        let a100 = DeviceIdentity {
            name: "NVIDIA A100-SXM4-80GB".into(),
            compute_capability: "8.0".into(),
            ..h100()
        };
        let mut edited = table();
        edited.device = a100.clone();
        assert!(edited.check(&path, &a100, Arithmetic::W8A16).is_ok());
        edited.gemm[0].config = "wgmma-128x128".into();
        let message = edited
            .check(&path, &a100, Arithmetic::W8A16)
            .unwrap_err()
            .to_string();
        assert!(message.contains("needs wgmma"), "{message}");
        let mut hopper = table();
        hopper.gemm[0].config = "wgmma-128x128".into();
        assert!(hopper.check(&path, &h100(), Arithmetic::W8A16).is_ok());
        // Likewise the wgmma attention.
        let mut edited = table();
        edited.device = a100.clone();
        edited.attention[0].kernel = "wgmma".into();
        let message = edited
            .check(&path, &a100, Arithmetic::W8A16)
            .unwrap_err()
            .to_string();
        assert!(message.contains("attention wgmma"), "{message}");
        let mut hopper = table();
        hopper.attention[0].kernel = "wgmma".into();
        assert!(hopper.check(&path, &h100(), Arithmetic::W8A16).is_ok());
    }

    #[test]
    fn unreadable_tables_say_what_is_wrong() {
        let bad = |name: &str, text: &str| {
            let path = temp(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            TuningTable::read(&path).unwrap_err().to_string()
        };
        let mut t = table();
        t.gemm[0].config = "512x512".into();
        let message = bad("unknown.json", &serde_json::to_string(&t).unwrap());
        assert!(
            message.contains("unknown configuration '512x512'"),
            "{message}"
        );
        assert!(message.contains("256x128"), "{message}");
        let mut t = table();
        t.gemm[2].split_k = 2;
        let message = bad("v2-split.json", &serde_json::to_string(&t).unwrap());
        assert!(message.contains("split-k 2"), "{message}");
        let mut t = table();
        t.format = FORMAT + 1;
        let message = bad("format.json", &serde_json::to_string(&t).unwrap());
        assert!(message.contains("format 2"), "{message}");
        let message = bad("broken.json", "{\"format\": 1");
        assert!(message.contains("broken.json"), "{message}");
        let missing = TuningTable::read(&temp("absent.json")).unwrap_err();
        assert!(missing.to_string().contains("absent.json"));
    }

    #[test]
    fn a_table_chooses_by_shape_and_the_nearest_row_count() {
        let t = table();
        let qkv = [4096, 1024, 1024];
        let at = |rows| t.choose(&qkv, 2560, rows).unwrap().to_string();
        assert_eq!(at(1), "128x128 split-k 2");
        assert_eq!(at(1500), "128x128 split-k 2");
        assert_eq!(at(2500), "256x128");
        assert_eq!(at(100_000), "256x128");
        assert_eq!(t.choose(&[2560], 9728, 4096).unwrap().to_string(), "v2");
        // Another shape (or the same n in another grouping): not in the table.
        assert!(t.choose(&[4096], 2560, 512).is_none());
        assert!(t.choose(&qkv, 4096, 512).is_none());
    }

    #[test]
    fn a_new_table_keeps_an_older_ones_other_shapes() {
        let mut new = table();
        new.gemm.truncate(1);
        new.gemm[0].config = "256x128".into();
        new.attention.clear();
        new.merge_older(table());
        // Its own entry wins; the older table's other entries come back.
        assert_eq!(new.gemm.len(), 3);
        assert_eq!(new.gemm[0].config, "256x128");
        assert_eq!(new.attention.len(), 2);
    }

    #[test]
    fn a_table_split_measured_at_few_rows_is_not_used_on_a_large_batch() {
        let config = GemmConfig::named("128x128").unwrap();
        let choice = GemmChoice { config, split_k: 4 };
        // 512 rows of the down projection: 80 blocks, four shares fit in 4 waves.
        assert_eq!(
            split_for_rows(&h100(), choice, 512, &[2560], 9728).split_k,
            4
        );
        // 16,384 rows: 2,560 blocks already, no split.
        assert_eq!(
            split_for_rows(&h100(), choice, 16_384, &[2560], 9728).split_k,
            1
        );
        // k = 256 is four stages: at most two shares of two.
        assert_eq!(split_for_rows(&h100(), choice, 16, &[64], 256).split_k, 2);
    }

    #[test]
    fn attention_goes_to_the_kernel_with_the_least_total_time() {
        // f16kv wins the short workload (100 vs 300 µs) and loses the long one
        // (900 vs 800): 1,000 µs against 1,100 in all.
        assert_eq!(table().attention_choice(128), Some(AttentionKernel::F16Kv));
        assert_eq!(table().attention_choice(64), None);
        let mut t = table();
        t.attention[1].candidates[1].micros = 500.0;
        assert_eq!(t.attention_choice(128), Some(AttentionKernel::Mma));
        // Tables from before attention was tuned still read.
        let mut old = serde_json::to_value(table()).unwrap();
        old.as_object_mut().unwrap().remove("attention");
        let path = temp("old-format.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, old.to_string()).unwrap();
        assert!(TuningTable::read(&path).unwrap().attention.is_empty());
        let mut t = table();
        t.attention[0].candidates[0].kernel = "flash3".into();
        let path = temp("bad-attention.json");
        std::fs::write(&path, serde_json::to_string(&t).unwrap()).unwrap();
        let message = TuningTable::read(&path).unwrap_err().to_string();
        assert!(
            message.contains("unknown attention kernel 'flash3'"),
            "{message}"
        );
    }

    #[test]
    fn the_builtin_choice_splits_k_only_to_fill_the_device() {
        // Qwen3-4B's down projection (n 2560, k 9728) at 512 rows: 20 × 4
        // tiles of 128 × 128 fill 80 of 132 SMs, no room for a second share.
        let h100 = h100();
        let down = builtin_choice(&h100, 512, &[2560], 9728);
        assert_eq!(down.to_string(), "128x128");
        // At 64 rows: 20 tiles of 64 × 128, six shares of 76 stages each.
        let few = builtin_choice(&h100, 64, &[2560], 9728);
        assert_eq!(few.to_string(), "64x128 split-k 6");
        // Many rows: the 256-row tile, never split.
        let many = builtin_choice(&h100, 16_384, &[9728, 9728], 2560);
        assert_eq!(many.to_string(), "256x128");
        // A tiny k cannot be split below two stages a share.
        assert_eq!(builtin_choice(&h100, 1, &[64], 128).split_k, 1);
        assert_eq!(builtin_choice(&h100, 1, &[64], 256).split_k, 2);
        // 99 KiB a block (sm_86/89): only 64 × 128 and v2 fit, whatever the rows.
        let small = l40s();
        assert_eq!(
            builtin_choice(&small, 16_384, &[9728], 2560).config.name,
            "64x128"
        );
        assert_eq!(
            builtin_choice(&small, 512, &[2560], 9728).config.name,
            "64x128"
        );
        let tiny = DeviceIdentity {
            max_shared_per_block: 48 * 1024,
            ..small
        };
        assert_eq!(builtin_choice(&tiny, 512, &[2560], 9728).to_string(), "v2");
        // The wgmma kernels are chosen only by measurement, never built in.
        for rows in [1, 64, 256, 1024, 4096, 16_384] {
            assert!(!builtin_choice(&h100, rows, &[2560], 9728).config.wgmma);
        }
    }

    #[test]
    fn candidates_cover_every_configuration_and_bounded_splits() {
        let shape = GemmShape {
            n: vec![2560],
            k: 9728,
        };
        let all = candidates(&h100(), 512, &shape);
        for config in GEMM_CONFIGS {
            assert!(all.iter().any(|c| c.config == config && c.split_k == 1));
        }
        assert!(all.iter().all(|c| c.config.grouped || c.split_k == 1));
        assert!(all.iter().any(|c| c.split_k == 6));
        // Huge grids are not split: 256x128 at 16k rows is 1,280 blocks.
        let big = candidates(&h100(), 16_384, &shape);
        assert!(big.iter().all(|c| c.split_k == 1));
        // The wgmma kernels are offered on sm_90 only.
        let wgmma = |device: &DeviceIdentity| {
            candidates(device, 512, &shape)
                .iter()
                .filter(|c| c.config.wgmma)
                .count()
        };
        assert!(wgmma(&h100()) >= 2);
        let a100 = DeviceIdentity {
            name: "NVIDIA A100-SXM4-80GB".into(),
            compute_capability: "8.0".into(),
            max_shared_per_block: 163 * 1024,
            ..h100()
        };
        assert_eq!(wgmma(&a100), 0);
        assert_eq!(wgmma(&l40s()), 0);
        // Only what fits is timed on a 99 KiB card.
        let small: Vec<&str> = candidates(&l40s(), 512, &shape)
            .iter()
            .map(|c| c.config.name)
            .collect();
        assert!(
            small.iter().all(|name| ["64x128", "v2"].contains(name)),
            "{small:?}"
        );
    }

    #[test]
    fn the_default_path_is_one_file_per_device() {
        let path = default_path(Path::new("/cache"), &h100());
        assert_eq!(
            path,
            Path::new("/cache/tessera/tuning/nvidia-h100-80gb-hbm3-sm9-0.json")
        );
    }
}
