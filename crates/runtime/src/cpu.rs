//! The CPU backend: always built, the reference and the default where there
//! is no GPU.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_gguf::GgufFile;
use tessera_model::RerankTokenizer;

use crate::{model_on, BackendOptions, Loaded, RuntimeError};

pub(crate) fn on_cpu(
    file: &Arc<GgufFile>,
    tokenizer: Option<RerankTokenizer>,
    options: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    let backend = CpuBackend::with_options(options.precision, options.threads)
        .map_err(RuntimeError::backend("cpu"))?;
    let threads = backend.threads();
    // The CPU reads the weights where the file is mapped: the file is what
    // stays resident (shared by every replica of a process).
    let device = format!(
        "cpu ({threads} {}), model mapped {:.2} GB",
        if threads == 1 { "thread" } else { "threads" },
        file.file_size() as f64 / 1e9
    );
    Ok(Loaded {
        model: model_on(backend, file, tokenizer, options.profiler.clone())?,
        device,
        on_gpu: false,
    })
}

/// The CPU's model name (`/proc/cpuinfo`), or the architecture where that is
/// not readable: the hardware a CPU measurement names.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
