//! The server's edge against slow, oversized and too many clients: the accept
//! loop (a connection limit, a header timeout that also closes idle keep-alive
//! connections, accept errors such as running out of descriptors logged and
//! survived) and the body reader (an announced oversize refused from its
//! `Content-Length` before any byte is read, a body that stops arriving answered
//! 408). `docs/reliability.md` lists the limits and their defaults.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{ApiError, Dialect, ErrorKind};
use crate::state::AppState;

/// Reads the whole request body before the handler runs, within the size limit
/// and the body timeout: a `Content-Length` over the limit is refused at once
/// (413), a chunked body as soon as it crosses it, and a body that has not
/// fully arrived within `--body-timeout` gets 408; both close the connection.
pub async fn read_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let dialect = Dialect::of_path(request.uri().path());
    let limit = state.options.max_body_bytes;
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        // Answered from the header. A client already sending the body is let
        // go on for a moment (read and thrown away: at most the announced
        // bytes, for at most DRAIN_GRACE), so a fast upload ends and reads the
        // 413 instead of a broken pipe; then the connection closes, whether or
        // not anything came.
        let body = request.into_body();
        let timeout = DRAIN_GRACE.min(state.options.body_timeout);
        tokio::spawn(async move {
            let drain = http_body_util::BodyExt::collect(http_body_util::Limited::new(
                body,
                usize::try_from(announced.unwrap_or(0)).unwrap_or(usize::MAX),
            ));
            let _ = tokio::time::timeout(timeout, drain).await;
        });
        return too_large(announced, limit)
            .in_dialect(dialect)
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        state.options.body_timeout,
        axum::body::to_bytes(body, limit),
    );
    match read.await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(error)) => {
            let too_big = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            let error = if too_big {
                too_large(None, limit)
            } else {
                ApiError::invalid(format!("cannot read the request body: {error}"))
            };
            error.in_dialect(dialect).into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Validation,
            format!(
                "the request body did not arrive within {} s (--body-timeout)",
                state.options.body_timeout.as_secs_f64()
            ),
        )
        .in_dialect(dialect)
        .into_response(),
    }
}

/// How long an oversized request's body is read and thrown away after its 413
/// has been sent.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

fn too_large(announced: Option<u64>, limit: usize) -> ApiError {
    let what = match announced {
        Some(n) => format!("the request announces {n} bytes of body"),
        None => "the request body is".to_string(),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Validation,
        format!(
            "{what} larger than the server's limit of {limit} bytes (--max-body-bytes {})",
            human_bytes(limit)
        ),
    )
}

/// `limit` as `--max-body-bytes` takes it: in whole GiB, MiB or KiB when it is one.
fn human_bytes(limit: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if limit >= 1 << shift && limit.is_multiple_of(1 << shift) {
            return format!("{}{unit}", limit >> shift);
        }
    }
    limit.to_string()
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the
/// connections to finish their requests in flight (idle ones close at once).
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let options = &state.options;
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    let mut last_descriptor_log: Option<tokio::time::Instant> = None;
    loop {
        // At the limit, wait here: new connections queue in the kernel's backlog.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.map_err(io::Error::other)?,
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    state.metrics.record_accept_error();
                    if is_per_connection(&error) {
                        continue;
                    }
                    // Out of descriptors (or another resource): say so at most
                    // every 10 s, back off, and keep serving the open connections.
                    let now = tokio::time::Instant::now();
                    if last_descriptor_log.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                        tracing::error!(
                            "cannot accept connections: {error} (raise `ulimit -n` or lower \
                             --max-connections); retrying"
                        );
                        last_descriptor_log = Some(now);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        let state = Arc::clone(&state);
        state.metrics.connection_delta(1);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                if error.is_timeout() {
                    state.metrics.record_header_timeout();
                    tracing::debug!(
                        "connection closed: headers not received within --header-timeout"
                    );
                } else {
                    tracing::debug!("connection ended: {error}");
                }
            }
            state.metrics.connection_delta(-1);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Accept errors that concern one connection only (it went away before it was
/// accepted): nothing to report.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
