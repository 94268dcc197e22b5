//! Every route in one table: its path, method, what it serves, the dialect its
//! errors take, and whether it answers without an API key. The router, the
//! error dialect of any path (`Dialect::of_path`), the key check and the
//! validation entry points (`validate_request`, `validate_embeddings`) all read
//! it, so a route is added or changed in one place.

use std::sync::Arc;

use axum::routing::{get, post, MethodRouter};

use crate::error::Dialect;
use crate::state::AppState;
use crate::{embed, rerank, routes};

/// What a route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    RerankV1,
    RerankV2,
    /// `/rerank`: TEI's body, or Cohere's v1 sent to TEI's path.
    RerankTei,
    /// `/v1/embeddings` (OpenAI).
    Embeddings,
    /// `/embed` (TEI).
    EmbedTei,
    Tokenize,
    Health,
    Models,
    Model,
    Info,
    Metrics,
    OpenApi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// axum's path syntax; a `{*rest}` tail matches any further segments.
    pub path: &'static str,
    pub method: Method,
    pub endpoint: Endpoint,
    /// How its errors (and only its errors) are shaped.
    pub dialect: Dialect,
    /// Answers without an API key (probes and scrapers).
    pub open: bool,
}

const fn route(
    path: &'static str,
    method: Method,
    endpoint: Endpoint,
    dialect: Dialect,
    open: bool,
) -> Route {
    Route {
        path,
        method,
        endpoint,
        dialect,
        open,
    }
}

/// The routes, in the order the router registers them.
pub const ROUTES: &[Route] = &[
    route(
        "/v1/rerank",
        Method::Post,
        Endpoint::RerankV1,
        Dialect::Cohere,
        false,
    ),
    route(
        "/v2/rerank",
        Method::Post,
        Endpoint::RerankV2,
        Dialect::Cohere,
        false,
    ),
    route(
        "/rerank",
        Method::Post,
        Endpoint::RerankTei,
        Dialect::Tei,
        false,
    ),
    route(
        "/v1/embeddings",
        Method::Post,
        Endpoint::Embeddings,
        Dialect::OpenAi,
        false,
    ),
    route(
        "/embed",
        Method::Post,
        Endpoint::EmbedTei,
        Dialect::Tei,
        false,
    ),
    route(
        "/tokenize",
        Method::Post,
        Endpoint::Tokenize,
        Dialect::Tei,
        false,
    ),
    route(
        "/health",
        Method::Get,
        Endpoint::Health,
        Dialect::Cohere,
        true,
    ),
    route(
        "/v1/models",
        Method::Get,
        Endpoint::Models,
        Dialect::CohereAndOpenAi,
        false,
    ),
    route(
        "/v1/models/{*id}",
        Method::Get,
        Endpoint::Model,
        Dialect::OpenAi,
        false,
    ),
    route("/info", Method::Get, Endpoint::Info, Dialect::Cohere, false),
    route(
        "/metrics",
        Method::Get,
        Endpoint::Metrics,
        Dialect::Cohere,
        true,
    ),
    route(
        "/openapi.json",
        Method::Get,
        Endpoint::OpenApi,
        Dialect::Cohere,
        false,
    ),
];

/// The route a request path reaches, if any; a path under a `{*rest}` route
/// belongs to it even with nothing after the slash (`/v1/models/`: the router
/// answers it 404, in that route's dialect).
pub fn route_of(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| match r.path.split_once("/{*") {
        Some((prefix, _)) => path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/')),
        None => r.path == path,
    })
}

/// The handler of `route`, with its method; any other method answers 405
/// naming the allowed one.
pub fn method_router(route: &Route) -> MethodRouter<Arc<AppState>> {
    let handler = match route.endpoint {
        Endpoint::RerankV1 => post(rerank::rerank_v1),
        Endpoint::RerankV2 => post(rerank::rerank_v2),
        Endpoint::RerankTei => post(rerank::rerank_tei),
        Endpoint::Embeddings => post(embed::embeddings),
        Endpoint::EmbedTei => post(embed::embed_tei),
        Endpoint::Tokenize => post(routes::tokenize),
        Endpoint::Health => get(routes::health),
        Endpoint::Models => get(routes::models),
        Endpoint::Model => get(routes::model),
        Endpoint::Info => get(routes::info),
        Endpoint::Metrics => get(routes::metrics),
        Endpoint::OpenApi => get(routes::openapi),
    };
    match route.method {
        Method::Post => handler.fallback(routes::post_only),
        Method::Get => handler.fallback(routes::get_only),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_routes_and_tails_need_a_segment() {
        assert_eq!(
            route_of("/v1/rerank").map(|r| r.endpoint),
            Some(Endpoint::RerankV1)
        );
        assert_eq!(
            route_of("/v1/models").map(|r| r.endpoint),
            Some(Endpoint::Models)
        );
        assert_eq!(
            route_of("/v1/models/Qwen/Qwen3").map(|r| r.endpoint),
            Some(Endpoint::Model)
        );
        assert_eq!(
            route_of("/v1/models/").map(|r| r.dialect),
            Some(Dialect::OpenAi)
        );
        assert!(route_of("/v1/rerank/").is_none());
        assert!(route_of("/nope").is_none());
        let open: Vec<&str> = ROUTES.iter().filter(|r| r.open).map(|r| r.path).collect();
        assert_eq!(open, ["/health", "/metrics"]);
        let paths: std::collections::HashSet<&str> = ROUTES.iter().map(|r| r.path).collect();
        assert_eq!(paths.len(), ROUTES.len(), "a path appears twice");
    }
}
