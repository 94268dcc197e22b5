//! Stands in for `cuda.rs` in a build without the `cuda` feature: every entry
//! point says which build it needs.

use std::sync::Arc;

use tessera_gguf::GgufFile;
use tessera_model::{ModelConfig, RerankTokenizer};

use crate::tuning_choice::TuneOptions;
use crate::{not_built, BackendOptions, Devices, Loaded, RuntimeError, TuningTable};

pub(crate) fn on_cuda(
    _: &Arc<GgufFile>,
    _: Option<RerankTokenizer>,
    _: &BackendOptions,
) -> Result<Loaded, RuntimeError> {
    Err(not_built("cuda"))
}

pub(crate) fn open_gpus(
    _: &Devices,
    _: &Arc<GgufFile>,
    _: Option<RerankTokenizer>,
    _: &BackendOptions,
) -> Result<Vec<Loaded>, RuntimeError> {
    Err(not_built("cuda"))
}

pub(crate) fn available() -> Result<(), RuntimeError> {
    Err(not_built("cuda"))
}

/// `tessera tune` needs the `cuda` feature.
pub fn tune(
    _: &ModelConfig,
    _: &TuneOptions,
    _: impl FnMut(&str),
) -> Result<(TuningTable, std::path::PathBuf), RuntimeError> {
    Err(not_built("cuda"))
}
