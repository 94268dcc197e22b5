//! Stands in for `wgpu.rs` in a build without the `wgpu` feature.

use std::sync::Arc;

use tessera_gguf::GgufFile;
use tessera_model::RerankTokenizer;

use crate::{not_built, BackendOptions, Devices, Loaded, RuntimeError};

pub(crate) fn on_wgpu(
    _: &Arc<GgufFile>,
    _: Option<RerankTokenizer>,
    _: bool,
    _: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    Err(not_built("wgpu"))
}

pub(crate) fn open_adapters(
    _: &Devices,
    _: &Arc<GgufFile>,
    _: Option<RerankTokenizer>,
    _: &BackendOptions,
) -> Result<Vec<Loaded>, RuntimeError> {
    Err(not_built("wgpu"))
}

pub(crate) fn compiled() -> Result<(), RuntimeError> {
    Err(not_built("wgpu"))
}

pub(crate) fn gpu_adapter() -> bool {
    false
}
