//! The service started in this process for one call of `tessera rerank` or
//! `tessera embed`: the same loading, tokenising pool, queue and batching as
//! `tessera serve`, so a command's results equal the API's for the same request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tessera_service::{
    Hosted, LoadPlan, LogProgress, ModelFile, Placement, SchedulerConfig, Service, ServiceError,
    ServiceOptions,
};

use crate::backends::BackendArgs;
use crate::model_source::LoadedFile;

/// Query-prefix K/V kept across the call's batches (`serve`'s default).
const PREFIX_CACHE_BYTES: usize = 512 << 20;

/// What the call hosts: `file` as a reranker or as an embedding model.
pub enum Role {
    Reranker,
    Embedder,
}

/// Starts a service hosting `file` on the backend `run_on` names, runs `call`
/// on it once the model is loaded, and stops it after the answer.
pub fn call<T, F, Fut>(
    file: &LoadedFile,
    tokenizer: Option<tessera_model::RerankTokenizer>,
    role: Role,
    run_on: &BackendArgs,
    call: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Service) -> Fut,
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let model = ModelFile {
        file: Arc::clone(&file.file),
        name: file.name.clone(),
        placeholder: file.embedded,
        tokenizer,
    };
    let (reranker, embedder) = match role {
        Role::Reranker => (Some(model), None),
        Role::Embedder => (None, Some(model)),
    };
    let plan = LoadPlan {
        reranker,
        embedder,
        backend: run_on.choice(),
        backend_options: run_on.options(),
        placement: Placement::Replicas(1),
        prefix_cache_bytes: PREFIX_CACHE_BYTES,
        // One call: nothing to gain from a warm-up pass before it.
        warm_up_tokens: Some(0),
        progress: Arc::new(LogProgress),
    };
    let options = ServiceOptions {
        hosts: Hosted {
            reranker: plan.reranker.is_some(),
            embedder: plan.embedder.is_some(),
        },
        load: Some(plan),
        scheduler: SchedulerConfig {
            // The caller's own work: no admission limit.
            max_queue_tokens: usize::MAX / 2,
            ..SchedulerConfig::default()
        },
        // No deadline for the caller's own work (a year stands for none).
        request_timeout: Duration::from_secs(365 * 24 * 3600),
        tokenize_threads: 1,
        ..ServiceOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    let (service, loading) = Service::start(options);
    let result = runtime.block_on(async {
        loading.wait().await?;
        call(service.clone()).await
    });
    service.stop();
    result.map_err(|e| anyhow::anyhow!("{e}"))
}
