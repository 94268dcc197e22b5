//! CUDA (the `cuda` feature): our kernels on each GPU, the W8A16 tuning table
//! applied, `tessera tune`. `cuda_off.rs` stands in for this module when the
//! feature is off.

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_gguf::GgufFile;
use tessera_model::{ModelConfig, RerankTokenizer};

use crate::tuning_choice::{
    choices_line, gemm_shapes, tuning_cache_path, with_tuning, TuneOptions,
};
use crate::{
    model_on, tuning, Arithmetic, BackendOptions, Devices, Loaded, RuntimeError, TuningTable,
};

pub(crate) fn on_cuda(
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    on_gpu_number(0, file, tokenizer, options)
}

/// The model on CUDA device `ordinal`.
fn on_gpu_number(
    ordinal: usize,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    use tessera_backend_cuda::{CudaBackend, CudaDevice, Device};
    let backend = CudaBackend::new(ordinal)
        .and_then(|b| b.with_arithmetic(options.gpu_precision))
        .map_err(RuntimeError::backend("cuda"))?;
    let (backend, mut gemms) = with_tuning(backend, &options.tuning)?;
    if let Ok(config) = ModelConfig::from_gguf(file) {
        gemms += &choices_line(&backend, &config, tessera_backend_cuda::MLP_CHUNK_ROWS);
    }
    let name = backend.name();
    // A second handle on the same GPU, to read its memory after the backend
    // has moved into the engine.
    let probe = CudaDevice::new(ordinal).map_err(RuntimeError::backend("cuda"))?;
    let (before, total) = probe
        .memory_in_use()
        .map_err(RuntimeError::backend("cuda"))?;
    let model = model_on(backend, file, tokenizer, options.profiler.clone())?;
    // The same context's default stream: waits for the backend's work too.
    let (after, _) = probe
        .synchronize()
        .and_then(|()| probe.memory_in_use())
        .map_err(RuntimeError::backend("cuda"))?;
    // What loading added: the weights as uploaded, plus the pinned system
    // prompt's K/V and what its capture pass left in the pool (a few MB).
    let resident = after.saturating_sub(before) as f64 / 1e9;
    Ok(Loaded {
        model,
        device: format!(
            "cuda:{ordinal} {name}, model resident {resident:.2} GB of {:.1} GB{gemms}",
            total as f64 / 1e9
        ),
        on_gpu: true,
    })
}

pub(crate) fn open_gpus(
    devices: &Devices,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Vec<Loaded>, RuntimeError> {
    let ordinals = match devices {
        Devices::All => {
            let count =
                tessera_backend_cuda::cuda_device_count().map_err(RuntimeError::backend("cuda"))?;
            if count == 0 {
                return Err(RuntimeError::Unavailable {
                    backend: "cuda",
                    reason: "the driver sees no GPU".into(),
                });
            }
            (0..count).collect()
        }
        Devices::List(list) => list.clone(),
    };
    ordinals
        .into_iter()
        .map(|ordinal| on_gpu_number(ordinal, file, tokenizer.clone(), options))
        .collect()
}

pub(crate) fn available() -> Result<(), RuntimeError> {
    tessera_backend_cuda::cuda_available().map_err(RuntimeError::backend("cuda"))
}

/// Times every W8A16 GEMM configuration for `config`'s shapes on CUDA device
/// `options.ordinal` and writes the table; returns it and where it went.
pub fn tune(
    config: &ModelConfig,
    options: &TuneOptions,
    progress: impl FnMut(&str),
) -> Result<(TuningTable, std::path::PathBuf), RuntimeError> {
    use tessera_backend_cuda::{CudaBackend, Device};
    let backend = CudaBackend::new(options.ordinal)
        .and_then(|b| b.with_arithmetic(Arithmetic::W8A16))
        .map_err(RuntimeError::backend("cuda"))?;
    let identity = backend.device().identity();
    let path = match &options.out {
        Some(path) => path.clone(),
        None => tuning_cache_path(&identity).ok_or_else(|| RuntimeError::Unavailable {
            backend: "cuda",
            reason: "no cache directory (HOME and XDG_CACHE_HOME unset): give --out".into(),
        })?,
    };
    let mut progress = progress;
    let mut table = tuning::tune(
        &backend,
        &gemm_shapes(config),
        &options.rows,
        options.repeats,
        &mut progress,
    )
    .map_err(RuntimeError::backend("cuda"))?;
    let shape = tessera_backend::AttentionShape {
        n_heads: config.n_heads,
        n_kv_heads: config.n_kv_heads,
        head_dim: config.head_dim,
    };
    table.attention = tuning::tune_attention(
        &backend,
        shape,
        &tuning::AttentionWorkload::SERVED,
        options.repeats,
        &mut progress,
    )
    .map_err(RuntimeError::backend("cuda"))?;
    // Tuning a second model on this GPU keeps the first one's entries.
    if let Ok(old) = TuningTable::read(&path) {
        if old.check(&path, &table.device, Arithmetic::W8A16).is_ok() {
            table.merge_older(old);
        }
    }
    table.write(&path)?;
    Ok((table, path))
}
