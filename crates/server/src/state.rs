//! What every handler shares: the options, the service (which hosts the
//! models), metrics, and whether shutdown has begun.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tessera_service::{kind_name, ModelKind, Service, ServiceError, ServiceOptions};

use crate::error::{ApiError, ErrorKind};
use crate::metrics::Metrics;

/// Server limits and identity; every field has a command-line flag.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Accepted bearer keys; empty ⇒ no authentication.
    pub api_keys: Vec<String>,
    /// Names clients may send as `model` to the reranker; empty ⇒ any name
    /// is accepted.
    pub served_model_names: Vec<String>,
    /// The same for the embedding model (`/v1/embeddings`, `/embed`).
    pub embedding_served_model_names: Vec<String>,
    pub max_documents: usize,
    pub max_body_bytes: usize,
    /// Longest a client may take to send a request's headers, counted from when
    /// the connection is ready for them (an idle keep-alive connection is closed
    /// after it too); past it the connection is closed without an answer.
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body once its headers are
    /// in; past it the answer is 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Open connections at most; at the limit new ones wait in the kernel's
    /// accept backlog until one closes.
    pub max_connections: usize,
    /// The service under the routes: which models it hosts (the routes of a
    /// model it does not host answer 404 naming what it serves; those of one
    /// still loading, 503), what it loads, its queue, the request deadline and
    /// the tokenising pool.
    pub service: ServiceOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_keys: Vec::new(),
            served_model_names: Vec::new(),
            embedding_served_model_names: Vec::new(),
            max_documents: 10_000,
            max_body_bytes: 32 << 20,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            service: ServiceOptions::default(),
        }
    }
}

pub struct AppState {
    pub options: ServerOptions,
    pub metrics: Arc<Metrics>,
    pub service: Service,
}

impl AppState {
    /// The hosted model of `kind`, or the answer that says why there is none:
    /// 404 naming what this server serves, 503 while it loads.
    pub fn model(&self, kind: ModelKind) -> Result<&tessera_service::HostedModel, ApiError> {
        self.service.model(kind).map_err(ApiError::from)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.service.is_shutting_down()
    }

    /// The name echoed in responses: the requested one when it is served, else the
    /// first served name, else the model's own.
    pub fn response_model_name(&self, requested: Option<&str>, own: &str) -> String {
        let served = &self.options.served_model_names;
        match requested {
            Some(name) if served.iter().any(|s| s == name) => name.to_string(),
            _ => served.first().cloned().unwrap_or_else(|| own.to_string()),
        }
    }

    /// With served names configured, a `model` naming none of them is a 404.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        self.options.check_model(requested)
    }

    /// [`Self::response_model_name`] for the embedding model.
    pub fn embedding_model_name(&self, requested: Option<&str>, own: &str) -> String {
        let served = &self.options.embedding_served_model_names;
        match requested {
            Some(name) if served.iter().any(|s| s == name) || served.is_empty() => name.to_string(),
            _ => served.first().cloned().unwrap_or_else(|| own.to_string()),
        }
    }
}

/// The 404 for a model kind this server does not host, naming what it serves
/// and the route of each.
pub(crate) fn not_hosted(wanted: ModelKind, hosted: &[(ModelKind, Option<String>)]) -> ApiError {
    let route = |kind| match kind {
        ModelKind::Reranker => "/v1/rerank",
        ModelKind::Embedding => "/v1/embeddings",
    };
    let serves: Vec<String> = hosted
        .iter()
        .map(|(kind, name)| {
            format!(
                "{} '{}' (POST {})",
                kind_name(*kind),
                name.as_deref().unwrap_or("(loading)"),
                route(*kind)
            )
        })
        .collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorKind::Validation,
        format!(
            "model: this server hosts no {} ({}); it serves {}",
            kind_name(wanted),
            route(wanted),
            serves.join(" and ")
        ),
    )
    .at("model")
}

/// Keeps [`ServiceError`] out of handlers' signatures: every service call's
/// failure that is not the caller's request becomes its HTTP answer here.
impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        crate::error::from_service(error)
    }
}

impl ServerOptions {
    /// With served names configured, a `model` naming none of them is a 404.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        check_served(&self.served_model_names, requested)
    }

    /// [`Self::check_model`] against the embedding model's served names.
    pub fn check_embedding_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        check_served(&self.embedding_served_model_names, requested)
    }
}

fn check_served(served: &[String], requested: Option<&str>) -> Result<(), ApiError> {
    match requested {
        Some(name) if !served.is_empty() && !served.iter().any(|s| s == name) => {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorKind::Validation,
                format!(
                    "model: '{name}' is not served here; available: {}",
                    served.join(", ")
                ),
            )
            .at("model"))
        }
        _ => Ok(()),
    }
}
