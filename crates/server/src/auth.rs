//! Bearer-key authentication for every route but `/health` and `/metrics`. Keys are
//! compared in constant time, and every configured key is always compared, so the
//! time taken says nothing about which key (or how much of one) matched.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Dialect};
use crate::state::AppState;

pub async fn require_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let keys = &state.options.api_keys;
    let path = request.uri().path();
    let open = crate::route_table::route_of(path).is_some_and(|route| route.open);
    if keys.is_empty() || open {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if key_matches(keys, token) => next.run(request).await,
        _ => ApiError::unauthorized()
            .in_dialect(Dialect::of_path(path))
            .into_response(),
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn key_matches(keys: &[String], token: &str) -> bool {
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        // `ct_eq` on slices of different lengths is false without comparing bytes:
        // only the length can leak, never the content.
        matched |= key.as_bytes().ct_eq(token.as_bytes());
    }
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_key_matching() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        let keys = ["k1".to_string(), "secret".to_string()];
        assert!(key_matches(&keys, "secret"));
        assert!(!key_matches(&keys, "secre"));
        assert!(!key_matches(&keys, ""));
    }
}
