//! The routes around reranking: health, model list, server info, metrics,
//! tokenization, the OpenAPI document, and the 404/405 answers.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use tessera_engine::scheduler::DeviceStatus;

use crate::error::{ApiError, Dialect, ErrorKind};
use crate::json::{json_body, parse};
use crate::state::AppState;
use crate::types::{
    CohereModel, EmbeddingModelInfo, Health, Info, Limits, ModelCard, ModelList, Token,
    TokenizeInputs, TokenizeRequest,
};

#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "The model is loaded", body = Health),
              (status = 503, description = "Loading or shutting down", body = Health)))]
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    // A model whose every device failed its last batches; the server is
    // unhealthy only when no hosted model serves (one still serving is
    // reported `degraded`, as a device out of rotation is).
    let reranker_failing = state
        .loaded_reranker()
        .and_then(|model| model.scheduler.device_failing());
    let embedder_failing = state
        .loaded_embedder()
        .and_then(|model| model.scheduler.device_failing())
        .map(|failure| format!("embedding model: {failure}"));
    let hosts = state.options.hosts;
    let none_serves = (!hosts.reranker || reranker_failing.is_some())
        && (!hosts.embedder || embedder_failing.is_some());
    let failing: Vec<String> = reranker_failing
        .into_iter()
        .chain(embedder_failing)
        .collect();
    let (status, text) = if state.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_string())
    } else if !failing.is_empty() && none_serves {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "device failing: the last batches all failed ({})",
                failing.join("; ")
            ),
        )
    } else if state.is_ready() {
        // Devices out of rotation, each model's named by `whose`.
        let retired = |devices: Vec<DeviceStatus>, whose: &'static str| {
            devices
                .into_iter()
                .filter(|d| d.retired)
                .map(move |d| format!("{whose}device {} out of rotation: {}", d.index, d.failure))
        };
        let reranker = retired(
            state
                .loaded_reranker()
                .map(|model| model.scheduler.devices())
                .unwrap_or_default(),
            "",
        );
        let embedder = retired(
            state
                .loaded_embedder()
                .map(|model| model.scheduler.devices())
                .unwrap_or_default(),
            "embedding model's ",
        );
        let out: Vec<String> = failing
            .iter()
            .map(|f| format!("device failing, the other model serves: {f}"))
            .chain(reranker)
            .chain(embedder)
            .collect();
        if !out.is_empty() {
            let detail = Some(out.join("; "));
            let health = Health {
                status: "degraded".into(),
                detail,
            };
            return (StatusCode::OK, Json(health)).into_response();
        }
        (StatusCode::OK, "ok".to_string())
    } else if state.compute_stopped() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "compute thread stopped".to_string(),
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading".to_string())
    };
    let health = Health {
        status: text,
        detail: None,
    };
    (status, Json(health)).into_response()
}

/// The server's limits, with the model's longest sequence.
fn limits(options: &crate::state::ServerOptions, max_pair_tokens: usize) -> Limits {
    Limits {
        max_pair_tokens,
        max_documents: options.max_documents,
        max_body_bytes: options.max_body_bytes,
        max_batch_tokens: options.scheduler.max_batch_tokens,
        max_queue_tokens: options.scheduler.max_queue_tokens,
    }
}

fn served_names(configured: &[String], own: &str) -> Vec<String> {
    if configured.is_empty() {
        vec![own.to_string()]
    } else {
        configured.to_vec()
    }
}

/// Every served name of every hosted model: its OpenAI card and its Cohere
/// entry; 503 while a hosted model loads.
fn model_cards(state: &AppState) -> Result<Vec<(ModelCard, CohereModel)>, ApiError> {
    let hosts = state.options.hosts;
    // (names, kind, endpoint, context length) of each hosted model.
    let mut entries: Vec<(Vec<String>, &str, &str, usize)> = Vec::new();
    if hosts.reranker {
        let model = state.model()?;
        entries.push((
            served_names(&state.options.served_model_names, &model.info.name),
            "reranker",
            "rerank",
            model.prompt.max_pair_tokens(),
        ));
    }
    if hosts.embedder {
        let model = state.embedder()?;
        entries.push((
            served_names(
                &state.options.embedding_served_model_names,
                &model.info.name,
            ),
            "embedding",
            "embed",
            model.format.max_tokens(),
        ));
    }
    Ok(entries
        .into_iter()
        .flat_map(|(names, kind, endpoint, context_length)| {
            names.into_iter().map(move |name| {
                let card = ModelCard {
                    id: name.clone(),
                    object: "model".into(),
                    created: 0,
                    owned_by: "tessera".into(),
                    kind: kind.to_string(),
                };
                let cohere = CohereModel {
                    name,
                    endpoints: vec![endpoint.to_string()],
                    context_length,
                };
                (card, cohere)
            })
        })
        .collect())
}

#[utoipa::path(get, path = "/v1/models", tag = "server",
    responses((status = 200, description = "Served model names, each with its kind", body = ModelList),
              (status = 503, description = "A hosted model is still loading")))]
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    match model_cards(&state) {
        Ok(cards) => {
            let (data, models) = cards.into_iter().unzip();
            Json(ModelList {
                object: "list".into(),
                data,
                models,
            })
            .into_response()
        }
        Err(e) => e.in_dialect(Dialect::CohereAndOpenAi).into_response(),
    }
}

#[utoipa::path(get, path = "/v1/models/{id}", tag = "server",
    params(("id" = String, Path, description = "A served model name (`/` raw or as %2F)")),
    responses((status = 200, description = "That model's card", body = ModelCard),
              (status = 404, description = "Not a served name", body = crate::error::OpenAiError)))]
pub async fn model(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let found = model_cards(&state).and_then(|cards| {
        let names: Vec<String> = cards.iter().map(|(card, _)| card.id.clone()).collect();
        cards
            .into_iter()
            .map(|(card, _)| card)
            .find(|card| card.id == id)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorKind::Validation,
                    format!(
                        "model: '{id}' is not served here; available: {}",
                        names.join(", ")
                    ),
                )
                .at("model")
            })
    });
    match found {
        Ok(card) => Json(card).into_response(),
        Err(e) => e.in_dialect(Dialect::OpenAi).into_response(),
    }
}

#[utoipa::path(get, path = "/info", tag = "server",
    responses((status = 200, description = "Model, backend, device, limits, version", body = Info)))]
pub async fn info(State(state): State<Arc<AppState>>) -> Response {
    let options = &state.options;
    let embedding = if options.hosts.embedder {
        match state.embedder() {
            Ok(model) => Some(EmbeddingModelInfo {
                model_id: model.info.name.clone(),
                served_model_names: served_names(
                    &options.embedding_served_model_names,
                    &model.info.name,
                ),
                backend: model.info.backend.clone(),
                device: model.info.device.clone(),
                dimensions: model.format.width(),
                max_input_tokens: model.format.max_tokens(),
            }),
            Err(e) => return e.in_dialect(Dialect::Cohere).into_response(),
        }
    } else {
        None
    };
    if !options.hosts.reranker {
        // Only an embedding model: the top-level fields describe it.
        let Some(embedding) = embedding else {
            return ApiError::not_ready()
                .in_dialect(Dialect::Cohere)
                .into_response();
        };
        let placeholder = state.loaded_embedder().is_some_and(|m| m.info.placeholder);
        return Json(Info {
            model_id: embedding.model_id,
            served_model_names: embedding.served_model_names,
            placeholder_model: placeholder,
            model_type: "embedding".into(),
            backend: embedding.backend,
            device: embedding.device,
            limits: limits(options, embedding.max_input_tokens),
            auth_required: !options.api_keys.is_empty(),
            version: env!("CARGO_PKG_VERSION").into(),
            embedding_model: None,
        })
        .into_response();
    }
    let model = match state.model() {
        Ok(model) => model,
        Err(e) => return e.in_dialect(Dialect::Cohere).into_response(),
    };
    Json(Info {
        model_id: model.info.name.clone(),
        served_model_names: served_names(&options.served_model_names, &model.info.name),
        placeholder_model: model.info.placeholder,
        model_type: "reranker".into(),
        backend: model.info.backend.clone(),
        device: model.info.device.clone(),
        limits: limits(options, model.prompt.max_pair_tokens()),
        auth_required: !options.api_keys.is_empty(),
        version: env!("CARGO_PKG_VERSION").into(),
        embedding_model: embedding,
    })
    .into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // The models' queues share one token budget: `queued_tokens` is their sum
    // either way; requests and throughput add up.
    let reranker = state.loaded_reranker().map(|m| m.scheduler.stats());
    let embedder = state.loaded_embedder().map(|m| m.scheduler.stats());
    let stats = match (reranker, embedder) {
        (Some(r), Some(e)) => Some(tessera_engine::scheduler::SchedulerStats {
            queued_requests: r.queued_requests + e.queued_requests,
            completed_requests: r.completed_requests + e.completed_requests,
            dropped_requests: r.dropped_requests + e.dropped_requests,
            batches: r.batches + e.batches,
            tokens_per_second: r.tokens_per_second + e.tokens_per_second,
            ..r
        }),
        (one, other) => one.or(other),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(stats),
    )
        .into_response()
}

#[utoipa::path(post, path = "/tokenize", tag = "server",
    request_body = TokenizeRequest,
    responses((status = 200, description = "Tokens of each input (no special tokens added)", body = Vec<Vec<Token>>),
              (status = 400, description = "Invalid value", body = crate::error::TeiError)))]
pub async fn tokenize(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let result = async {
        let bytes = json_body(request).await?;
        let body: TokenizeRequest = parse(&bytes)?;
        let inputs = match body.inputs {
            TokenizeInputs::One(text) => vec![text],
            TokenizeInputs::Many(texts) => texts,
        };
        if inputs.is_empty() {
            return Err(ApiError::empty("inputs must not be empty").at("inputs"));
        }
        let worker = Arc::clone(&state);
        state
            .tokenize
            .run(move || tokenize_all(&worker, &inputs))
            .await?
    }
    .await;
    match result {
        Ok(tokens) => Json(tokens).into_response(),
        Err(e) => e.in_dialect(Dialect::Tei).into_response(),
    }
}

fn tokenize_all(state: &AppState, inputs: &[String]) -> Result<Vec<Vec<Token>>, ApiError> {
    // Either model's tokenizer: the reranker's when it hosts one.
    let tokenizer = match state.loaded_reranker() {
        Some(model) => model.prompt.tokenizer().inner(),
        None if !state.options.hosts.reranker => state.embedder()?.format.tokenizer().inner(),
        None => return Err(ApiError::not_ready()),
    };
    let added = tokenizer.get_added_vocabulary();
    inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let encoding = tokenizer.encode(text.as_str(), false).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::Tokenizer,
                    format!("inputs[{index}]: cannot tokenize: {e}"),
                )
            })?;
            Ok(encoding
                .get_ids()
                .iter()
                .zip(encoding.get_offsets())
                .map(|(&id, &(start, stop))| {
                    let piece = tokenizer.id_to_token(id).unwrap_or_default();
                    let text = text
                        .get(start..stop)
                        .map(str::to_string)
                        .or_else(|| tokenizer.decode(&[id], false).ok())
                        .unwrap_or_default();
                    Token {
                        id,
                        text,
                        special: added.is_special_token(&piece),
                        start: Some(start),
                        stop: Some(stop),
                    }
                })
                .collect())
        })
        .collect()
}

#[utoipa::path(get, path = "/openapi.json", tag = "server",
    responses((status = 200, description = "This API's OpenAPI 3.1 document")))]
pub async fn openapi() -> Response {
    match crate::openapi::document() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Backend,
            format!("cannot render the OpenAPI document: {e}"),
        )
        .in_dialect(Dialect::Cohere)
        .into_response(),
    }
}

pub async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_string();
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorKind::Validation,
        format!("no route {} {path}", request.method()),
    )
    .in_dialect(Dialect::of_path(&path))
    .into_response()
}

pub async fn post_only(request: Request) -> Response {
    wrong_method(request, "POST")
}

pub async fn get_only(request: Request) -> Response {
    wrong_method(request, "GET")
}

fn wrong_method(request: Request, allow: &'static str) -> Response {
    let path = request.uri().path().to_string();
    ApiError::method_not_allowed(request.method().as_str(), &path, allow)
        .in_dialect(Dialect::of_path(&path))
        .into_response()
}
