//! wgpu (the `wgpu` feature): WGSL shaders on any adapter. `wgpu_off.rs` stands
//! in for this module when the feature is off.

use std::sync::Arc;

use tessera_gguf::GgufFile;
use tessera_model::RerankTokenizer;

use crate::{model_on, BackendOptions, Devices, Loaded, RuntimeError};

pub(crate) fn on_wgpu(
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    allow_cpu_adapter: bool,
    options: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    let backend = tessera_backend_wgpu::WgpuBackend::new(allow_cpu_adapter)
        .map_err(RuntimeError::backend("wgpu"))?;
    loaded_on(backend, "", file, tokenizer, options)
}

/// The model on `backend`, its device line `{label}{name} ({api}, {type})`.
fn loaded_on(
    backend: tessera_backend_wgpu::WgpuBackend,
    label: &str,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    let info = backend.adapter();
    let device = format!("{label}{} ({}, {})", info.name, info.api, info.device_type);
    let on_gpu = !info.is_cpu;
    Ok(Loaded {
        model: model_on(backend, file, tokenizer, options.profiler.clone())?,
        device,
        on_gpu,
    })
}

pub(crate) fn open_adapters(
    devices: &Devices,
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Vec<Loaded>, RuntimeError> {
    use tessera_backend_wgpu::{adapter_count, WgpuBackend, WgpuOptions};
    let numbers: Vec<usize> = match devices {
        Devices::All => (0..adapter_count(true)).collect(),
        Devices::List(list) => list.clone(),
    };
    if numbers.is_empty() {
        return Err(RuntimeError::Unavailable {
            backend: "wgpu",
            reason: "no usable wgpu adapter".into(),
        });
    }
    numbers
        .into_iter()
        .map(|adapter| {
            let wgpu_options = WgpuOptions {
                allow_cpu_adapter: true,
                adapter: Some(adapter),
                ..WgpuOptions::default()
            };
            let backend =
                WgpuBackend::with_options(&wgpu_options).map_err(RuntimeError::backend("wgpu"))?;
            loaded_on(
                backend,
                &format!("wgpu:{adapter} "),
                file,
                tokenizer.clone(),
                options,
            )
        })
        .collect()
}

pub(crate) fn compiled() -> Result<(), RuntimeError> {
    Ok(())
}

pub(crate) fn gpu_adapter() -> bool {
    tessera_backend_wgpu::WgpuBackend::new(false).is_ok()
}
