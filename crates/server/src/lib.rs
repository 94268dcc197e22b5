//! The HTTP server: Cohere v1/v2 and text-embeddings-inference rerank dialects,
//! and OpenAI and TEI embeddings, with bearer-key auth, body and queue limits,
//! errors in each dialect's shape, Prometheus metrics and a generated OpenAPI
//! document. One server hosts a reranker, an embedding model, or both.
//!
//! The models, their queues and the bounded tokenising pool belong to the
//! service ([`tessera_service`], the only crate under this one): handlers
//! validate a body in their dialect, call the service, and render its answer —
//! or its error, with the field at fault in the dialect's words. Start one with
//! [`Server::start`] (a service that loads its models meanwhile) or
//! [`Server::new`] and [`Service::install`], then [`Server::serve`].

mod auth;
mod edge;
pub mod embed;
mod encode;
pub mod error;
mod json;
pub mod metrics;
pub mod openapi;
mod prepare;
mod rerank;
mod route_table;
mod routes;
pub mod state;
pub mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tessera_service::{Loading, SchedulerObserver, Service};

use crate::metrics::{EmbeddingObserver, Metrics};
use tokio::net::TcpListener;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};

pub use embed::validate_embeddings;
pub use error::{ApiError, Dialect};
pub use rerank::{validate_request, ValidatedRequest, TRUNCATED_HEADER};
pub use state::{AppState, ServerOptions};
pub use tessera_service::{Hosted, Model, ModelInfo, ServiceOptions};

/// The server: its state (the models it hosts, their queues, the limits) and
/// its routes.
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// A server over a new [`Service`] started from `options.service`: with a
    /// load plan its models load meanwhile, and `/health` answers 503 until
    /// every hosted model is in; the returned [`Loading`] says when they are,
    /// or why they could not be. Without one, install the hosted models with
    /// [`Service::install`] on [`Self::service`].
    pub fn start(options: ServerOptions) -> (Server, Loading) {
        let metrics = Arc::new(Metrics::new());
        let mut service_options = options.service.clone();
        let observers = &mut service_options.observers;
        observers.reranker = Some(Arc::clone(&metrics) as Arc<dyn SchedulerObserver>);
        observers.embedder = Some(Arc::new(EmbeddingObserver(Arc::clone(&metrics))));
        observers.tokenize_pool = metrics.tokenize_pool_gauges();
        let recorder = Arc::clone(&metrics);
        observers.tokenized = Some(Arc::new(move |elapsed| recorder.record_tokenize(elapsed)));
        let (service, loading) = Service::start(service_options);
        let state = AppState {
            options,
            metrics,
            service,
        };
        (
            Server {
                state: Arc::new(state),
            },
            loading,
        )
    }

    /// [`Self::start`] with nothing to load: the caller installs the models.
    pub fn new(options: ServerOptions) -> Server {
        Server::start(options).0
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The service under the routes.
    pub fn service(&self) -> &Service {
        &self.state.service
    }

    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.state);
        route_table::ROUTES
            .iter()
            .fold(Router::new(), |router, route| {
                router.route(route.path, route_table::method_router(route))
            })
            .fallback(routes::not_found)
            .layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                edge::read_body,
            ))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                auth::require_key,
            ))
            // The size limit is enforced once, by edge::read_body, which has read
            // the whole body before any handler runs; axum's own default limit
            // (2 MiB) must not cut in again.
            .layer(DefaultBodyLimit::disable())
            .layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                count_requests,
            ))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                    .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                    .on_failure(log_failure),
            )
            .with_state(state)
    }

    /// Serves until `shutdown` resolves; then stops accepting connections, answers
    /// every request in flight, and stops the compute thread.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        let signal = async move {
            shutdown.await;
            state.service.begin_shutdown();
            tracing::info!("shutting down: no new connections; finishing requests in flight");
        };
        edge::serve(listener, self.router(), Arc::clone(&self.state), signal).await?;
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || state.service.stop())
            .await
            .map_err(std::io::Error::other)?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The trace layer's report of a 5xx answer: ERROR only for a fault of ours
/// (500); a 503 is an expected state — loading, shutting down, a request past
/// its deadline — and is logged at DEBUG, so an orchestrator probing `/health`
/// while the model loads does not fill the log with errors.
fn log_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    match class {
        ServerErrorsFailureClass::StatusCode(status)
            if status == StatusCode::SERVICE_UNAVAILABLE =>
        {
            tracing::debug!(%status, ?latency, "answered 503")
        }
        class => tracing::error!(%class, ?latency, "request failed"),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// Counts every answer by route (the matched pattern, so unknown paths cannot blow
/// up the label set) and status. A request whose client hung up before its answer
/// (the handler is dropped) counts as status 499, as nginx logs it.
async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let mut pending = Unanswered {
        state: &state,
        route: Some(route),
    };
    let response = next.run(request).await;
    if let Some(route) = pending.route.take() {
        state
            .metrics
            .record_request(&route, response.status().as_u16());
    }
    response
}

/// Records a 499 when dropped before the answer was counted.
struct Unanswered<'a> {
    state: &'a AppState,
    route: Option<String>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(route) = self.route.take() {
            self.state
                .metrics
                .record_request(&route, CLIENT_CLOSED_REQUEST);
        }
    }
}

/// nginx's status for a request whose client closed the connection first.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;
