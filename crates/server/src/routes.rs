//! The routes around reranking: health, model list, server info, metrics,
//! tokenization, the OpenAPI document, and the 404/405 answers.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use tessera_service::{Health as ServiceHealth, ModelKind};

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
    // The service is unhealthy only when no hosted model serves; one still
    // serving is reported `degraded`, as a device out of rotation is.
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    let (status, text, detail) = match state.service.health() {
        ServiceHealth::ShuttingDown => (unavailable, "shutting down".to_string(), None),
        ServiceHealth::DeviceFailing(failing) => (
            unavailable,
            format!("device failing: the last batches all failed ({failing})"),
            None,
        ),
        ServiceHealth::Ready => (StatusCode::OK, "ok".to_string(), None),
        ServiceHealth::Degraded(detail) => (StatusCode::OK, "degraded".to_string(), Some(detail)),
        ServiceHealth::ComputeStopped => (unavailable, "compute thread stopped".to_string(), None),
        ServiceHealth::Loading => (unavailable, "loading".to_string(), None),
    };
    let health = Health {
        status: text,
        detail,
    };
    (status, Json(health)).into_response()
}

/// The server's limits, with the model's longest sequence.
fn limits(options: &crate::state::ServerOptions, max_pair_tokens: usize) -> Limits {
    Limits {
        max_pair_tokens,
        max_documents: options.max_documents,
        max_body_bytes: options.max_body_bytes,
        max_batch_tokens: options.service.scheduler.max_batch_tokens,
        max_queue_tokens: options.service.scheduler.max_queue_tokens,
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
    let hosts = state.service.hosts();
    // (names, kind, endpoint, context length) of each hosted model.
    let mut entries: Vec<(Vec<String>, &str, &str, usize)> = Vec::new();
    if hosts.reranker {
        let model = state.model(ModelKind::Reranker)?;
        entries.push((
            served_names(&state.options.served_model_names, &model.info.name),
            "reranker",
            "rerank",
            model.max_input_tokens(),
        ));
    }
    if hosts.embedder {
        let model = state.model(ModelKind::Embedding)?;
        entries.push((
            served_names(
                &state.options.embedding_served_model_names,
                &model.info.name,
            ),
            "embedding",
            "embed",
            model.max_input_tokens(),
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
    let hosts = state.service.hosts();
    let embedding = if hosts.embedder {
        match state.model(ModelKind::Embedding) {
            Ok(model) => Some(EmbeddingModelInfo {
                model_id: model.info.name.clone(),
                served_model_names: served_names(
                    &options.embedding_served_model_names,
                    &model.info.name,
                ),
                backend: model.info.backend.clone(),
                device: model.info.device.clone(),
                dimensions: model.dimensions().unwrap_or_default(),
                max_input_tokens: model.max_input_tokens(),
            }),
            Err(e) => return e.in_dialect(Dialect::Cohere).into_response(),
        }
    } else {
        None
    };
    if !hosts.reranker {
        // Only an embedding model: the top-level fields describe it.
        let Some(embedding) = embedding else {
            return ApiError::not_ready()
                .in_dialect(Dialect::Cohere)
                .into_response();
        };
        let placeholder = state
            .service
            .loaded(ModelKind::Embedding)
            .is_some_and(|m| m.info.placeholder);
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
    let model = match state.model(ModelKind::Reranker) {
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
        limits: limits(options, model.max_input_tokens()),
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
    let stats = state.service.stats();
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
        let tokens = state.service.tokenize(inputs).await?;
        Ok(tokens
            .into_iter()
            .map(|tokens| {
                tokens
                    .into_iter()
                    .map(|t| Token {
                        id: t.id,
                        text: t.text,
                        special: t.special,
                        start: Some(t.start),
                        stop: Some(t.stop),
                    })
                    .collect()
            })
            .collect::<Vec<Vec<Token>>>())
    }
    .await;
    match result {
        Ok(tokens) => Json(tokens).into_response(),
        Err(e) => e.in_dialect(Dialect::Tei).into_response(),
    }
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
