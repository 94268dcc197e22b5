//! Errors as clients see them: a status, a message naming the field at fault, and
//! the body shape of the route's dialect (Cohere `{id, message}`, TEI
//! `{error, error_type}`, or OpenAI `{error: {message, type, param, code}}`).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tessera_service::{SchedulerError, ServiceError};
use utoipa::ToSchema;

/// Which API's conventions a response follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `/v1/rerank`, `/v2/rerank` and every other route but the TEI ones.
    Cohere,
    /// `/rerank`, `/embed` and `/tokenize` (text-embeddings-inference).
    Tei,
    /// `/v1/embeddings` (OpenAI).
    OpenAi,
    /// `/v1/models`, read by both SDKs: Cohere's `{id, message}` and OpenAI's
    /// `error` object in one body.
    CohereAndOpenAi,
}

impl Dialect {
    /// The dialect of the route `path` reaches (the route table's), Cohere's
    /// for a path that reaches none.
    pub fn of_path(path: &str) -> Dialect {
        crate::route_table::route_of(path).map_or(Dialect::Cohere, |route| route.dialect)
    }
}

/// TEI's error classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Empty,
    Validation,
    Tokenizer,
    Overloaded,
    Backend,
    Unhealthy,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty",
            ErrorKind::Validation => "validation",
            ErrorKind::Tokenizer => "tokenizer",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Backend => "backend",
            ErrorKind::Unhealthy => "unhealthy",
        }
    }
}

/// Cohere's error body.
#[derive(Serialize, ToSchema)]
pub struct CohereError {
    pub id: String,
    pub message: String,
}

/// text-embeddings-inference's error body.
#[derive(Serialize, ToSchema)]
pub struct TeiError {
    pub error: String,
    /// One of `empty`, `validation`, `tokenizer`, `overloaded`, `backend`, `unhealthy`.
    pub error_type: String,
}

/// OpenAI's error body: `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    pub code: Option<String>,
}

impl OpenAiError {
    fn new(status: StatusCode, message: String, param: Option<String>) -> OpenAiError {
        let (kind, code) = match status.as_u16() {
            401 => ("authentication_error", Some("invalid_api_key")),
            404 => ("invalid_request_error", Some("model_not_found")),
            429 => ("rate_limit_error", Some("rate_limit_exceeded")),
            500..=599 => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        // `model_not_found` only when the model named is what was not found.
        let code = match (status.as_u16(), param.as_deref()) {
            (404, Some("model")) => code,
            (404, _) => None,
            _ => code,
        };
        OpenAiError {
            error: OpenAiErrorDetail {
                message,
                kind: kind.to_string(),
                param,
                code: code.map(str::to_string),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// Extra headers, e.g. `Allow` on a 405.
    pub allow: Option<&'static str>,
    /// The request field at fault (`dimensions`, `input[2]`,
    /// `documents[0].text`), when one is: OpenAI's `param`.
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            allow: None,
            param: None,
        }
    }

    /// The same error blamed on `field` (its path in the request body).
    pub fn at(mut self, field: impl Into<String>) -> ApiError {
        self.param = Some(field.into());
        self
    }

    /// 400 on `field`: the message is `field: detail`.
    pub fn invalid_at(field: impl Into<String>, detail: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError::invalid(format!("{field}: {detail}")).at(field)
    }

    /// 400 on `field` for an empty required input: `field: detail`.
    pub fn empty_at(field: impl Into<String>, detail: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError::empty(format!("{field}: {detail}")).at(field)
    }

    /// 422 on `field` (the wrong type): `field: detail`.
    pub fn wrong_type_at(field: impl Into<String>, detail: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError::wrong_type(format!("{field}: {detail}")).at(field)
    }

    /// 400: valid types, invalid values.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Validation, message)
    }

    /// 400 for a required input that is empty.
    pub fn empty(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Empty, message)
    }

    /// 422: well-formed JSON, a field of the wrong type.
    pub fn wrong_type(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Validation,
            message,
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Validation,
            "missing or invalid API key: send `Authorization: Bearer <key>`",
        )
    }

    pub fn not_ready() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unhealthy,
            "the model is not loaded yet",
        )
    }

    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorKind::Validation,
                format!("{method} is not allowed on {path}; use {allow}"),
            )
        }
    }

    pub fn in_dialect(self, dialect: Dialect) -> Failure {
        Failure {
            dialect,
            error: self,
        }
    }
}

impl ApiError {
    /// The request did not get its scores within the server's deadline.
    pub fn timed_out(deadline: Duration) -> ApiError {
        ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unhealthy,
                format!(
                    "the request was not scored within {:.1} s (--request-timeout); its work was dropped",
                    deadline.as_secs_f64()
                ),
            )
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(error: SchedulerError) -> ApiError {
        let message = error.to_string();
        match error {
            SchedulerError::Overloaded { retry_after, .. } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorKind::Overloaded,
                    message,
                )
            },
            SchedulerError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::Validation,
                message,
            ),
            SchedulerError::ShuttingDown | SchedulerError::ComputeThreadGone => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unhealthy,
                message,
            ),
            SchedulerError::Compute(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Backend,
                message,
            ),
            // A fault of ours, though not of the request: logged as an error,
            // answered 503 so the client (or its load balancer) retries.
            SchedulerError::Device(ref failure) => {
                tracing::error!("the device failed a batch: {failure}");
                ApiError {
                    retry_after: Some(Duration::from_secs(1)),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorKind::Unhealthy,
                        message,
                    )
                }
            }
        }
    }
}

/// A service call's failure as the client sees it. A rerank or embedding
/// call's own errors name the dialect's fields and are mapped by the routes
/// first; here they are only the fallback.
pub(crate) fn from_service(error: ServiceError) -> ApiError {
    let message = error.to_string();
    match error {
        ServiceError::NotHosted { wanted, hosted } => crate::state::not_hosted(wanted, &hosted),
        ServiceError::NotReady => ApiError::not_ready(),
        ServiceError::Rerank(_) | ServiceError::Embed(_) => ApiError::invalid(message),
        ServiceError::Tokenize { index, message } => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Tokenizer,
            format!("inputs[{index}]: cannot tokenize: {message}"),
        ),
        ServiceError::Queue(error) => error.into(),
        ServiceError::TimedOut(deadline) => ApiError::timed_out(deadline),
        // The request itself may have been fine.
        ServiceError::TaskFailed(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Tokenizer,
            message,
        ),
        ServiceError::Load(_) | ServiceError::Internal(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Backend,
            message,
        ),
    }
}

/// An [`ApiError`] bound to the dialect it is rendered in.
#[derive(Debug)]
pub struct Failure {
    pub dialect: Dialect,
    pub error: ApiError,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let ApiError {
            status,
            kind,
            message,
            retry_after,
            allow,
            param,
        } = self.error;
        // OpenAI answers a field of the wrong type with a 400, and its SDK
        // raises BadRequestError only for that status.
        let status = match self.dialect {
            Dialect::OpenAi if status == StatusCode::UNPROCESSABLE_ENTITY => {
                StatusCode::BAD_REQUEST
            }
            _ => status,
        };
        let mut response = match self.dialect {
            Dialect::Cohere => Json(CohereError {
                id: uuid::Uuid::new_v4().to_string(),
                message,
            })
            .into_response(),
            Dialect::Tei => Json(TeiError {
                error: message,
                error_type: kind.as_str().to_string(),
            })
            .into_response(),
            Dialect::OpenAi => Json(OpenAiError::new(status, message, param)).into_response(),
            Dialect::CohereAndOpenAi => Json(serde_json::json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "message": message.clone(),
                "error": OpenAiError::new(status, message, param).error,
            }))
            .into_response(),
        };
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if let Some(after) = retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        if let Some(allow) = allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body is never read, so the connection cannot carry
            // another request: say so, or a client reusing it sees a reset.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_param_is_the_field_the_error_names_not_its_message() {
        let field = ApiError::invalid_at("input[2]", "a token id is an integer");
        assert_eq!(field.message, "input[2]: a token id is an integer");
        assert_eq!(field.param.as_deref(), Some("input[2]"));
        let detail = |e: ApiError| OpenAiError::new(e.status, e.message, e.param).error;
        assert_eq!(detail(field).param.as_deref(), Some("input[2]"));
        // A message that merely looks like `path: text` names no field.
        let plain = ApiError::invalid("malformed JSON: expected value");
        assert_eq!(detail(plain).param, None);
        // A field can be blamed without the `field: ` prefix in the message.
        let blamed = ApiError::empty("inputs must not be empty").at("inputs");
        assert_eq!(detail(blamed).param.as_deref(), Some("inputs"));
        // 404s say `model_not_found` only when the model is at fault.
        let model = ApiError::new(StatusCode::NOT_FOUND, ErrorKind::Validation, "m").at("model");
        assert_eq!(detail(model).code.as_deref(), Some("model_not_found"));
        let route = ApiError::new(StatusCode::NOT_FOUND, ErrorKind::Validation, "no route").at("x");
        assert_eq!(detail(route).code, None);
        let unnamed = ApiError::new(StatusCode::NOT_FOUND, ErrorKind::Validation, "no route");
        assert_eq!(detail(unnamed).code, None);
    }
}
