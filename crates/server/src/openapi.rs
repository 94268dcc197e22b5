//! The OpenAPI document, generated from the handlers' annotations and the
//! request/response types.

use utoipa::OpenApi;

use crate::error::{CohereError, OpenAiError, OpenAiErrorDetail, TeiError};
use crate::types::{
    ApiVersion, BilledUnits, CohereModel, DocumentInput, EmbeddingData, EmbeddingUsage,
    EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, Health, Info, Limits, Meta, ModelCard,
    ModelList, RerankRequest, RerankResponse, RerankResult, TeiEmbedRequest, TeiRank,
    TeiRerankRequest, Token, TokenCounts, TokenizeInputs, TokenizeRequest, Usage,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera rerank API",
        description = "Cohere-compatible reranking (v1, v2), OpenAI-compatible embeddings, and the text-embeddings-inference dialect of both, serving a Qwen3 reranker and a Qwen3 embedding model."
    ),
    paths(
        crate::rerank::rerank_v1,
        crate::rerank::rerank_v2,
        crate::rerank::rerank_tei,
        crate::embed::embeddings,
        crate::embed::embed_tei,
        crate::routes::health,
        crate::routes::models,
        crate::routes::model,
        crate::routes::info,
        crate::routes::metrics,
        crate::routes::tokenize,
        crate::routes::openapi,
    ),
    components(schemas(
        RerankRequest, DocumentInput, RerankResponse, RerankResult, Meta, ApiVersion,
        BilledUnits, TokenCounts, Usage, TeiRerankRequest, TeiRank, TokenizeRequest,
        TokenizeInputs, Token, Health, ModelList, ModelCard, CohereModel, Info, Limits,
        CohereError, TeiError, EmbeddingsRequest, EmbeddingsResponse, EmbeddingData,
        EmbeddingVector, EmbeddingUsage, TeiEmbedRequest, OpenAiError, OpenAiErrorDetail
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_pretty_json()
}
