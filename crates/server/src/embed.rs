//! The embedding routes: OpenAI's `/v1/embeddings` and TEI's `/embed`. Each
//! checks its dialect's body, then one shared path prepares the inputs with the
//! engine's embedding front door on a blocking thread, queues them for the
//! embedding model's compute threads and awaits the vectors.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tessera_service::{
    prepare_embeddings, EmbedError, EmbedFormat, EmbedOptions, Embedding, ModelKind,
    PreparedEmbeddings, ServiceError,
};

use crate::encode::millis;
use crate::error::{ApiError, Dialect, ErrorKind, Failure};
use crate::json::{json_body, parse};
use crate::prepare::{parse_side, with_truncated_header};
use crate::route_table::Endpoint;
use crate::state::{AppState, ServerOptions};
use crate::types::{EmbeddingsRequest, EmbeddingsResponse, TeiEmbedRequest};

/// The indices of inputs cut to the model's context, comma-separated.
pub const TRUNCATED_INPUTS_HEADER: &str = "x-truncated-inputs";

/// What a client sent: texts, or token ids it tokenised itself.
use tessera_service::EmbedInputs as Inputs;

/// A checked embedding request, ready to prepare.
struct EmbedJob {
    /// The request's name for its inputs (`input`, `inputs`), for messages.
    field: &'static str,
    /// The one input came as a flat array of token ids (`input: [1, 2, 3]`):
    /// a token's path is `input[j]`, not `input[0][j]`.
    flat_tokens: bool,
    job: tessera_service::EmbedJob,
}

impl EmbedJob {
    /// Tokenised and cut with `format` (the engine's front door), errors in
    /// the route's words.
    fn prepare(&self, format: &EmbedFormat) -> Result<PreparedEmbeddings, ApiError> {
        prepare_embeddings(format, &self.job)
            .map_err(|e| prepare_error(self.field, self.flat_tokens, e))
    }
}

/// The vectors of a request in input order (each with its token count), and
/// which inputs were cut.
struct Embedded {
    vectors: Vec<Embedding>,
    truncated: Vec<usize>,
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn token_ids(field: &str, items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Number(n) => n
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid_at(
                        format!("{field}[{i}]"),
                        format_args!("a token id is an integer from 0 to 4294967295, got {n}"),
                    )
                }),
            other => Err(ApiError::wrong_type_at(
                format!("{field}[{i}]"),
                format_args!("expected a token id (an integer), got {}", kind_of(other)),
            )),
        })
        .collect()
}

/// OpenAI's `input`: a string, an array of strings, an array of token ids
/// (one input), or an array of arrays of token ids.
fn openai_inputs(value: &Value) -> Result<Inputs, ApiError> {
    const SHAPES: &str = "a string, an array of strings, an array of token ids or an array of \
                          arrays of token ids";
    let items = match value {
        Value::String(text) => return Ok(Inputs::Texts(vec![text.clone()])),
        Value::Array(items) => items,
        other => {
            return Err(ApiError::wrong_type_at(
                "input",
                format_args!("expected {SHAPES}, got {}", kind_of(other)),
            ))
        }
    };
    let Some(first) = items.first() else {
        return Err(ApiError::empty_at("input", "must not be empty"));
    };
    match first {
        Value::String(_) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(ApiError::wrong_type_at(
                    format!("input[{i}]"),
                    format_args!("expected a string like input[0], got {}", kind_of(other)),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Inputs::Texts),
        Value::Number(_) => Ok(Inputs::Tokens(vec![token_ids("input", items)?])),
        Value::Array(_) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Array(ids) => token_ids(&format!("input[{i}]"), ids),
                other => Err(ApiError::wrong_type_at(
                    format!("input[{i}]"),
                    format_args!(
                        "expected an array of token ids like input[0], got {}",
                        kind_of(other)
                    ),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Inputs::Tokens),
        other => Err(ApiError::wrong_type_at(
            "input[0]",
            format_args!(
                "expected a string, a token id or an array of token ids, got {}",
                kind_of(other)
            ),
        )),
    }
}

/// TEI's `inputs`: a string or an array of strings.
fn tei_inputs(value: &Value) -> Result<Inputs, ApiError> {
    match value {
        Value::String(text) => Ok(Inputs::Texts(vec![text.clone()])),
        Value::Array(items) if items.is_empty() => {
            Err(ApiError::empty("inputs must not be empty").at("inputs"))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(ApiError::wrong_type_at(
                    format!("inputs[{i}]"),
                    format_args!("expected a string, got {}", kind_of(other)),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Inputs::Texts),
        other => Err(ApiError::wrong_type_at(
            "inputs",
            format_args!(
                "expected a string or an array of strings, got {}",
                kind_of(other)
            ),
        )),
    }
}

/// `dimensions` as a count; its upper bound (the model's width) is checked
/// when the inputs are prepared. `null` is the same as leaving it out.
fn dimensions(value: Option<&Value>) -> Result<Option<usize>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            _ => Err(ApiError::invalid_at(
                "dimensions",
                format_args!(
                    "must be an integer of at least 1 (at most the model's width), got {n}"
                ),
            )),
        },
        Some(other) => Err(ApiError::wrong_type_at(
            "dimensions",
            format_args!("expected an integer, got {}", kind_of(other)),
        )),
    }
}

fn check_count(options: &ServerOptions, field: &str, count: usize) -> Result<(), ApiError> {
    let max = options.max_documents;
    if count > max {
        return Err(ApiError::invalid_at(
            field,
            format_args!("{count} items, more than the maximum of {max} (--max-documents)"),
        ));
    }
    Ok(())
}

/// The engine's preparation error in the route's words.
fn prepare_error(field: &str, flat_tokens: bool, error: EmbedError) -> ApiError {
    match error {
        EmbedError::Tokenizer { index, source } => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Tokenizer,
            format!("{field}[{index}]: cannot tokenize: {source}"),
        )
        .at(format!("{field}[{index}]")),
        EmbedError::TooLong { index, tokens, max } => ApiError::invalid_at(
            format!("{field}[{index}]"),
            format_args!(
                "{tokens} tokens (with the end-of-text token), more than the {max} the model \
                 takes; shorten it or send truncate: true"
            ),
        ),
        EmbedError::TokenOutOfRange {
            index,
            position,
            id,
            rows,
        } => {
            let path = if flat_tokens {
                format!("{field}[{position}]")
            } else {
                format!("{field}[{index}][{position}]")
            };
            ApiError::invalid_at(
                path,
                format_args!("token id {id} is not in the vocabulary (ids are below {rows})"),
            )
        }
        EmbedError::InstructionTooLong { tokens, max } => ApiError::invalid_at(
            "instruction",
            format_args!("{tokens} tokens on its own; the model takes {max} with the query"),
        ),
        EmbedError::EmptyTokens { index } => ApiError::empty_at(
            format!("{field}[{index}]"),
            "an array of token ids must not be empty",
        ),
        EmbedError::Dimensions { requested, max } => ApiError::invalid_at(
            "dimensions",
            format_args!("must be between 1 and {max} (the model's width), got {requested}"),
        ),
        EmbedError::Engine(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Backend,
            e.to_string(),
        ),
    }
}

/// Embeds through the service (prepared in its pool, queued, awaited within
/// the deadline). Dropping the returned future (the client went away)
/// abandons the queued work.
async fn embed(state: &Arc<AppState>, route: &str, job: EmbedJob) -> Result<Embedded, ApiError> {
    let inputs = job.job.inputs.len();
    let (field, flat_tokens) = (job.field, job.flat_tokens);
    let embedded = state
        .service
        .embed(job.job)
        .await
        .map_err(|error| match error {
            ServiceError::Embed(error) => prepare_error(field, flat_tokens, error),
            other => other.into(),
        })?;
    let timings = embedded.timings;
    state
        .metrics
        .record_embedded(inputs, timings.queue, timings.compute);
    tracing::info!(
        route,
        inputs,
        tokens = embedded.tokens,
        truncated = embedded.truncated.len(),
        tokenize_ms = millis(timings.tokenize),
        queue_ms = millis(timings.queue),
        inference_ms = millis(timings.compute),
        batches = timings.batches,
        "embedded"
    );
    Ok(Embedded {
        vectors: embedded.vectors,
        truncated: embedded.truncated,
    })
}

#[utoipa::path(
    post, path = "/v1/embeddings", tag = "embeddings",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "One vector per input, in input order", body = EmbeddingsResponse,
         headers(("x-truncated-inputs" = String, description = "Indices of inputs cut to the context"))),
        (status = 400, description = "Invalid value, or a field of the wrong type", body = crate::error::OpenAiError),
        (status = 401, description = "Missing or wrong API key", body = crate::error::OpenAiError),
        (status = 404, description = "No embedding model here, or an unknown model name", body = crate::error::OpenAiError),
        (status = 429, description = "Overloaded; see Retry-After", body = crate::error::OpenAiError),
        (status = 503, description = "Not ready or shutting down", body = crate::error::OpenAiError),
    )
)]
pub async fn embeddings(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let result = async {
        let bytes = json_body(request).await?;
        let body: EmbeddingsRequest = parse(&bytes)?;
        openai_embeddings(&state, body).await
    }
    .await;
    result.unwrap_or_else(|e| e.in_dialect(Dialect::OpenAi).into_response())
}

/// An OpenAI body checked field by field: the job, and whether vectors go
/// back in base64.
fn openai_job(
    options: &ServerOptions,
    body: &EmbeddingsRequest,
) -> Result<(EmbedJob, bool), ApiError> {
    options.check_embedding_model(body.model.as_deref())?;
    let inputs = openai_inputs(&body.input)?;
    check_count(options, "input", inputs.len())?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_at(
                "encoding_format",
                format_args!("expected \"float\" or \"base64\", got {other:?}"),
            ))
        }
    };
    let side = parse_side("truncation_direction", body.truncation_direction.as_deref())?;
    let instruction = match &body.instruction {
        Some(task) if task.trim().is_empty() => {
            return Err(ApiError::invalid_at(
                "instruction",
                "must not be empty (leave it out for documents)",
            ))
        }
        other => other.clone(),
    };
    let flat_tokens =
        matches!(&body.input, Value::Array(items) if items.first().is_some_and(Value::is_number));
    let job = EmbedJob {
        field: "input",
        flat_tokens,
        job: tessera_service::EmbedJob {
            inputs,
            options: EmbedOptions {
                instruction,
                dimensions: dimensions(body.dimensions.as_ref())?,
                truncation: body.truncate.unwrap_or(true).then_some(side),
            },
            normalize: true,
        },
    };
    Ok((job, base64))
}

/// A TEI `/embed` body checked field by field.
fn tei_job(options: &ServerOptions, body: &TeiEmbedRequest) -> Result<EmbedJob, ApiError> {
    let inputs = tei_inputs(&body.inputs)?;
    check_count(options, "inputs", inputs.len())?;
    let side = parse_side("truncation_direction", body.truncation_direction.as_deref())?;
    Ok(EmbedJob {
        field: "inputs",
        flat_tokens: false,
        job: tessera_service::EmbedJob {
            inputs,
            options: EmbedOptions {
                instruction: None,
                dimensions: dimensions(body.dimensions.as_ref())?,
                truncation: body.truncate.unwrap_or(true).then_some(side),
            },
            normalize: body.normalize.unwrap_or(true),
        },
    })
}

/// Everything an embedding route does to a body short of computing it: its
/// dialect's parsing, every field check, and the preparation with `format`.
/// Errors are what the route would answer. For fuzzing and tests; the routes
/// share the code.
pub fn validate_embeddings(
    options: &ServerOptions,
    format: &EmbedFormat,
    path: &str,
    bytes: &[u8],
) -> Result<PreparedEmbeddings, Failure> {
    let endpoint = crate::route_table::route_of(path).map(|route| route.endpoint);
    let (dialect, job) = match endpoint {
        Some(Endpoint::Embeddings) => (
            Dialect::OpenAi,
            parse::<EmbeddingsRequest>(bytes).and_then(|b| openai_job(options, &b).map(|j| j.0)),
        ),
        Some(Endpoint::EmbedTei) => (
            Dialect::Tei,
            parse::<TeiEmbedRequest>(bytes).and_then(|b| tei_job(options, &b)),
        ),
        _ => {
            let error = ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorKind::Validation,
                format!("{path} is not an embedding route"),
            );
            return Err(error.in_dialect(Dialect::OpenAi));
        }
    };
    job.and_then(|job| job.prepare(format))
        .map_err(|e| e.in_dialect(dialect))
}

async fn openai_embeddings(
    state: &Arc<AppState>,
    body: EmbeddingsRequest,
) -> Result<Response, ApiError> {
    let own_name = state.model(ModelKind::Embedding)?.info.name.clone();
    let (job, base64) = openai_job(&state.options, &body)?;
    let embedded = embed(state, "/v1/embeddings", job).await?;
    let model = state.embedding_model_name(body.model.as_deref(), &own_name);
    let response = EmbeddingsResponse::new(embedded.vectors, base64, model);
    Ok(with_truncated_header(
        Json(response).into_response(),
        TRUNCATED_INPUTS_HEADER,
        &embedded.truncated,
    ))
}

#[utoipa::path(
    post, path = "/embed", tag = "embeddings",
    request_body = TeiEmbedRequest,
    responses(
        (status = 200, description = "One vector per input, in input order", body = Vec<Vec<f32>>),
        (status = 400, description = "Invalid value", body = crate::error::TeiError),
        (status = 404, description = "No embedding model here", body = crate::error::TeiError),
        (status = 422, description = "Field of the wrong type", body = crate::error::TeiError),
        (status = 429, description = "Overloaded; see Retry-After", body = crate::error::TeiError),
    )
)]
pub async fn embed_tei(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let result = async {
        let bytes = json_body(request).await?;
        let body: TeiEmbedRequest = parse(&bytes)?;
        state.model(ModelKind::Embedding)?;
        let job = tei_job(&state.options, &body)?;
        let embedded = embed(&state, "/embed", job).await?;
        let vectors: Vec<Vec<f32>> = embedded.vectors.into_iter().map(|e| e.values).collect();
        Ok::<_, ApiError>(with_truncated_header(
            Json(vectors).into_response(),
            TRUNCATED_INPUTS_HEADER,
            &embedded.truncated,
        ))
    }
    .await;
    result.unwrap_or_else(|e| e.in_dialect(Dialect::Tei).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_input_shapes() {
        match openai_inputs(&json!("one")).expect("string") {
            Inputs::Texts(t) => assert_eq!(t, ["one"]),
            other => panic!("{other:?}"),
        }
        match openai_inputs(&json!([1, 2, 3])).expect("ids") {
            Inputs::Tokens(t) => assert_eq!(t, [vec![1, 2, 3]]),
            other => panic!("{other:?}"),
        }
        match openai_inputs(&json!([[1], [2, 3]])).expect("arrays") {
            Inputs::Tokens(t) => assert_eq!(t, [vec![1], vec![2, 3]]),
            other => panic!("{other:?}"),
        }
        let mixed = openai_inputs(&json!(["a", 2])).unwrap_err();
        assert_eq!(mixed.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(mixed.message.starts_with("input[1]: "), "{}", mixed.message);
        let negative = openai_inputs(&json!([[1], [-4]])).unwrap_err();
        assert_eq!(negative.status, StatusCode::BAD_REQUEST);
        assert!(
            negative.message.starts_with("input[1][0]: "),
            "{}",
            negative.message
        );
        assert_eq!(
            openai_inputs(&json!([])).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            openai_inputs(&json!({"text": "x"})).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
