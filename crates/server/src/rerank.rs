//! The rerank routes: Cohere v1/v2 (`/v1/rerank`, `/v2/rerank`) and TEI (`/rerank`).
//! Each validates its dialect's body, then one shared path tokenizes on a blocking
//! thread, queues the pairs for the compute thread and awaits their scores.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::IgnoredAny;
use serde::Deserialize;
use tessera_service::{
    prepare_rerank, ranking, ModelKind, PromptBuilder, RerankOutput, ServiceError,
};

use crate::encode::millis;
use crate::error::{ApiError, Dialect, ErrorKind, Failure};
use crate::json::{json_body, parse};
use crate::prepare::{
    document_texts, echo_document, parse_side, positive, request_error, with_truncated_header,
    RerankJob,
};
use crate::route_table::Endpoint;
use crate::state::{AppState, ServerOptions};
use crate::types::{RerankRequest, RerankResponse, TeiRank, TeiRerankRequest};

pub const TRUNCATED_HEADER: &str = "x-truncated-documents";

/// Ranks through the service (tokenised in its pool, queued, awaited within
/// the deadline); the scores come back shaped by the engine (best chunk per
/// document, billing). Dropping the returned future (the client went away)
/// abandons the queued work.
async fn score(
    state: &Arc<AppState>,
    route: &str,
    job: RerankJob,
) -> Result<RerankOutput, ApiError> {
    let list = job.list;
    let ranked =
        state
            .service
            .rerank(job.into_service_job())
            .await
            .map_err(|error| match error {
                ServiceError::Rerank(error) => request_error(list, error),
                other => other.into(),
            })?;
    let timings = ranked.timings;
    let scored = &ranked.output;
    state
        .metrics
        .record_scored(scored.documents.len(), timings.queue, timings.compute);
    tracing::info!(
        route,
        documents = scored.documents.len(),
        pairs = ranked.pairs,
        tokens = scored.total_tokens,
        truncated = ranked.truncated.len(),
        tokenize_ms = millis(timings.tokenize),
        queue_ms = millis(timings.queue),
        inference_ms = millis(timings.compute),
        batches = timings.batches,
        "scored"
    );
    Ok(ranked.output)
}

fn check_query_and_count(
    options: &ServerOptions,
    query: &str,
    count: usize,
    list: &str,
) -> Result<(), ApiError> {
    if query.trim().is_empty() {
        return Err(ApiError::empty("query must not be empty").at("query"));
    }
    if count == 0 {
        return Err(ApiError::empty(format!("{list} must not be empty")).at(list));
    }
    let max = options.max_documents;
    if count > max {
        return Err(ApiError::invalid_at(
            list,
            format_args!("{count} items, more than the maximum of {max} (--max-documents)"),
        ));
    }
    Ok(())
}

/// A Cohere body checked field by field, as a job plus its `top_n`.
fn cohere_job(
    options: &ServerOptions,
    body: &RerankRequest,
) -> Result<(RerankJob, Option<usize>), ApiError> {
    options.check_model(body.model.as_deref())?;
    check_query_and_count(options, &body.query, body.documents.len(), "documents")?;
    let top_n = positive("top_n", body.top_n)?;
    let max_tokens_per_doc = positive("max_tokens_per_doc", body.max_tokens_per_doc)?;
    let max_chunks_per_doc = positive("max_chunks_per_doc", body.max_chunks_per_doc)?.unwrap_or(1);
    let side = parse_side("truncation_direction", body.truncation_direction.as_deref())?;
    let texts = document_texts(&body.documents, body.rank_fields.as_deref())?;
    let job = RerankJob {
        list: "documents",
        query: body.query.clone(),
        documents: texts,
        options: RerankJob::options(
            body.instruction.clone(),
            body.truncate.unwrap_or(true),
            side,
            max_tokens_per_doc,
            max_chunks_per_doc,
        ),
    };
    Ok((job, top_n))
}

/// A TEI body checked field by field.
fn tei_job(options: &ServerOptions, body: TeiRerankRequest) -> Result<RerankJob, ApiError> {
    check_query_and_count(options, &body.query, body.texts.len(), "texts")?;
    let side = parse_side("truncation_direction", body.truncation_direction.as_deref())?;
    Ok(RerankJob {
        list: "texts",
        query: body.query,
        documents: body.texts,
        options: RerankJob::options(None, body.truncate.unwrap_or(true), side, None, 1),
    })
}

/// Whether a `/rerank` body speaks the Cohere dialect (`documents`, no `texts`).
fn is_cohere_body(bytes: &[u8]) -> Result<bool, ApiError> {
    let probe: DialectProbe = parse(bytes)?;
    Ok(probe.texts.is_none() && probe.documents.is_some())
}

/// What a valid rerank body becomes before it is queued.
#[derive(Debug)]
pub struct ValidatedRequest {
    pub dialect: Dialect,
    /// Documents as the client counts them.
    pub documents: usize,
    /// Pairs queued for the model (more than `documents` when chunked).
    pub pairs: Vec<Vec<u32>>,
    pub prefix: Vec<u32>,
    pub truncated: Vec<usize>,
    pub total_tokens: usize,
}

/// Everything a rerank route does to a body short of scoring it: its dialect's
/// parsing, every field check and the tokenisation with `prompt`. Errors are what
/// the route would answer. For fuzzing and tests; the routes share the code.
pub fn validate_request(
    options: &ServerOptions,
    prompt: &PromptBuilder,
    path: &str,
    bytes: &[u8],
) -> Result<ValidatedRequest, Failure> {
    let endpoint = crate::route_table::route_of(path).map(|route| route.endpoint);
    let (dialect, job) = match endpoint {
        Some(Endpoint::RerankV1 | Endpoint::RerankV2) => {
            let job = parse::<RerankRequest>(bytes).and_then(|b| cohere_job(options, &b));
            (Dialect::Cohere, job.map(|(job, _)| job))
        }
        Some(Endpoint::RerankTei) => match is_cohere_body(bytes) {
            Ok(true) => {
                let job = parse::<RerankRequest>(bytes).and_then(|b| cohere_job(options, &b));
                (Dialect::Cohere, job.map(|(job, _)| job))
            }
            Ok(false) => (
                Dialect::Tei,
                parse::<TeiRerankRequest>(bytes).and_then(|b| tei_job(options, b)),
            ),
            Err(e) => (Dialect::Tei, Err(e)),
        },
        _ => {
            let error = ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorKind::Validation,
                format!("{path} is not a rerank route"),
            );
            return Err(error.in_dialect(Dialect::Cohere));
        }
    };
    let job = job.map_err(|e| e.in_dialect(dialect))?;
    let documents = job.documents.len();
    let list = job.list;
    let prepared = prepare_rerank(prompt, &job.query, &job.documents, &job.options)
        .map_err(|e| request_error(list, e).in_dialect(dialect))?;
    let total_tokens = prepared.total_tokens();
    Ok(ValidatedRequest {
        dialect,
        documents,
        pairs: prepared.score.documents,
        prefix: prepared.score.prefix,
        truncated: prepared.truncated,
        total_tokens,
    })
}

#[utoipa::path(
    post, path = "/v1/rerank", tag = "rerank",
    request_body = RerankRequest,
    responses(
        (status = 200, description = "Ranked results", body = RerankResponse,
         headers(("x-truncated-documents" = String, description = "Indices of truncated documents"))),
        (status = 400, description = "Invalid value", body = crate::error::CohereError),
        (status = 401, description = "Missing or wrong API key", body = crate::error::CohereError),
        (status = 404, description = "Unknown model", body = crate::error::CohereError),
        (status = 413, description = "Body too large", body = crate::error::CohereError),
        (status = 415, description = "Not JSON", body = crate::error::CohereError),
        (status = 422, description = "Field of the wrong type", body = crate::error::CohereError),
        (status = 429, description = "Overloaded; see Retry-After", body = crate::error::CohereError),
        (status = 503, description = "Not ready or shutting down", body = crate::error::CohereError),
    )
)]
pub async fn rerank_v1(State(state): State<Arc<AppState>>, request: Request) -> Response {
    cohere_route(state, request, "1", "/v1/rerank").await
}

#[utoipa::path(
    post, path = "/v2/rerank", tag = "rerank",
    request_body = RerankRequest,
    responses(
        (status = 200, description = "Ranked results (api_version 2)", body = RerankResponse),
        (status = 400, description = "Invalid value", body = crate::error::CohereError),
        (status = 422, description = "Field of the wrong type", body = crate::error::CohereError),
        (status = 429, description = "Overloaded; see Retry-After", body = crate::error::CohereError),
    )
)]
pub async fn rerank_v2(State(state): State<Arc<AppState>>, request: Request) -> Response {
    cohere_route(state, request, "2", "/v2/rerank").await
}

async fn cohere_route(
    state: Arc<AppState>,
    request: Request,
    version: &str,
    route: &str,
) -> Response {
    let result = async {
        let bytes = json_body(request).await?;
        let body: RerankRequest = parse(&bytes)?;
        cohere_rerank(&state, body, version, route).await
    }
    .await;
    result.unwrap_or_else(|e| e.in_dialect(Dialect::Cohere).into_response())
}

async fn cohere_rerank(
    state: &Arc<AppState>,
    body: RerankRequest,
    version: &str,
    route: &str,
) -> Result<Response, ApiError> {
    let (job, top_n) = cohere_job(&state.options, &body)?;
    let own_name = state.model(ModelKind::Reranker)?.info.name.clone();
    let scored = score(state, route, job).await?;
    let echo = |index: usize| echo_document(&body.documents[index]);
    let response = RerankResponse::new(
        &scored,
        top_n,
        body.return_documents.unwrap_or(false).then_some(echo),
        version,
        state.response_model_name(body.model.as_deref(), &own_name),
    );
    Ok(with_truncated_header(
        Json(response).into_response(),
        TRUNCATED_HEADER,
        &scored.truncated(),
    ))
}

/// Which dialect a `/rerank` body speaks.
#[derive(Deserialize)]
struct DialectProbe {
    texts: Option<IgnoredAny>,
    documents: Option<IgnoredAny>,
}

#[utoipa::path(
    post, path = "/rerank", tag = "rerank",
    request_body = TeiRerankRequest,
    responses(
        (status = 200, description = "Ranked texts (a body with `documents` instead of `texts` is answered as /v1/rerank)", body = Vec<TeiRank>),
        (status = 400, description = "Invalid value", body = crate::error::TeiError),
        (status = 422, description = "Field of the wrong type", body = crate::error::TeiError),
        (status = 429, description = "Overloaded; see Retry-After", body = crate::error::TeiError),
    )
)]
pub async fn rerank_tei(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let bytes = match json_body(request).await {
        Ok(bytes) => bytes,
        Err(e) => return e.in_dialect(Dialect::Tei).into_response(),
    };
    match is_cohere_body(&bytes) {
        Ok(true) => {
            let result = match parse::<RerankRequest>(&bytes) {
                Ok(body) => cohere_rerank(&state, body, "1", "/rerank").await,
                Err(e) => Err(e),
            };
            result.unwrap_or_else(|e| e.in_dialect(Dialect::Cohere).into_response())
        }
        Ok(false) => tei_rerank(&state, &bytes)
            .await
            .unwrap_or_else(|e| Failure::into_response(e.in_dialect(Dialect::Tei))),
        Err(e) => e.in_dialect(Dialect::Tei).into_response(),
    }
}

async fn tei_rerank(state: &Arc<AppState>, bytes: &[u8]) -> Result<Response, ApiError> {
    let body: TeiRerankRequest = parse(bytes)?;
    let return_text = body.return_text.unwrap_or(false);
    let raw = body.raw_scores.unwrap_or(false);
    let job = tei_job(&state.options, body)?;
    let texts = return_text.then(|| job.documents.clone());
    let scored = score(state, "/rerank", job).await?;
    let values: Vec<f32> = scored
        .documents
        .iter()
        .map(|d| {
            if raw {
                d.logits.logit_diff()
            } else {
                d.relevance
            }
        })
        .collect();
    let ranks: Vec<TeiRank> = ranking(&values)
        .into_iter()
        .map(|index| TeiRank {
            index,
            score: values[index],
            text: texts.as_ref().map(|t| t[index].clone()),
        })
        .collect();
    Ok(with_truncated_header(
        Json(ranks).into_response(),
        TRUNCATED_HEADER,
        &scored.truncated(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn log_durations_are_whole_microseconds() {
        let ms = super::millis(Duration::from_nanos(22_954_321));
        assert_eq!(ms.to_string(), "22.954");
        assert_eq!(super::millis(Duration::from_secs(2)).to_string(), "2000");
    }
}
