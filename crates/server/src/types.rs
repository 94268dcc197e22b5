//! Request and response bodies of every route; the OpenAPI document is generated
//! from these types. Unknown request fields are ignored. Integers a client may get
//! wrong (`top_n: 0`) are read as signed so that a bad value is a 400 naming it
//! rather than a type error.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tessera_service::{Embedding, RerankOutput};
use utoipa::ToSchema;

/// A document: a string, or an object with a `text` field (other keys are kept and
/// returned with the document; `rank_fields` picks which keys are scored).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DocumentInput {
    Text(String),
    Object(Map<String, Value>),
}

impl utoipa::PartialSchema for DocumentInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("text", ObjectBuilder::new().schema_type(Type::String))
                    .additional_properties(Some(AdditionalProperties::FreeForm(true))),
            )
            .description(Some(
                "A string, or an object with a `text` field (other keys are kept; `rank_fields` picks the scored keys)",
            ))
            .into()
    }
}

impl ToSchema for DocumentInput {}

impl<'de> Deserialize<'de> for DocumentInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(DocumentInput::Text(text)),
            Value::Object(map) => Ok(DocumentInput::Object(map)),
            other => Err(D::Error::custom(format!(
                "invalid type: {}, expected a string or an object with a `text` field",
                kind_of(&other)
            ))),
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `POST /v1/rerank` and `POST /v2/rerank` (Cohere; also Jina-compatible).
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct RerankRequest {
    /// Checked against `--served-model-name` when any is configured; else any value.
    #[serde(default)]
    pub model: Option<String>,
    #[schema(example = "how do I reset my password")]
    pub query: String,
    /// 1 ..= max_documents items.
    pub documents: Vec<DocumentInput>,
    /// Keep the best N results (≥ 1); default all.
    #[serde(default)]
    pub top_n: Option<i64>,
    /// Include each result's document (default false: no `document` key at all).
    #[serde(default)]
    pub return_documents: Option<bool>,
    /// Qwen3-Reranker task instruction.
    #[serde(default)]
    pub instruction: Option<String>,
    /// Truncate each document to this many tokens (≥ 1).
    #[serde(default)]
    pub max_tokens_per_doc: Option<i64>,
    /// Object documents: these fields, in order, as `key: value` lines.
    #[serde(default)]
    pub rank_fields: Option<Vec<String>>,
    /// Split a too-long document into up to this many chunks (default 1); its score
    /// is the maximum over its chunks.
    #[serde(default)]
    pub max_chunks_per_doc: Option<i64>,
    /// Default true; false makes a document that does not fit a 400.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// `right` (default: drop the tail) or `left` (drop the head).
    #[serde(default)]
    pub truncation_direction: Option<String>,
    /// Accepted (Cohere v2) and ignored.
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RerankResult {
    /// Position in the request's `documents`.
    pub index: usize,
    /// P("yes") in [0, 1].
    pub relevance_score: f32,
    /// Only with `return_documents: true`: `{"text": …}` or the object as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub document: Option<Value>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ApiVersion {
    pub version: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BilledUnits {
    /// ceil(documents / 100).
    pub search_units: u64,
    pub total_tokens: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TokenCounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Meta {
    pub api_version: ApiVersion,
    pub billed_units: BilledUnits,
    pub tokens: TokenCounts,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Usage {
    pub total_tokens: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RerankResponse {
    pub id: String,
    /// Sorted by relevance, highest first (ties: lower index first), cut to `top_n`.
    pub results: Vec<RerankResult>,
    pub meta: Meta,
    pub model: String,
    pub usage: Usage,
}

impl RerankResponse {
    /// The Cohere-dialect response to a scored call: results ranked and cut to
    /// `top_n`, each with `document(index)` when given, billing from the
    /// engine's counts, and the truncation warning.
    pub fn new(
        output: &RerankOutput,
        top_n: Option<usize>,
        document: Option<impl Fn(usize) -> Value>,
        version: &str,
        model: String,
    ) -> RerankResponse {
        let results = output
            .top(top_n)
            .into_iter()
            .map(|d| RerankResult {
                index: d.index,
                relevance_score: d.relevance,
                document: document.as_ref().map(|echo| echo(d.index)),
            })
            .collect();
        let total = output.total_tokens as u64;
        RerankResponse {
            id: uuid::Uuid::new_v4().to_string(),
            results,
            meta: Meta {
                api_version: ApiVersion {
                    version: version.to_string(),
                },
                billed_units: BilledUnits {
                    search_units: output.search_units(),
                    total_tokens: total,
                },
                tokens: TokenCounts {
                    input_tokens: total,
                    output_tokens: 0,
                },
                warnings: output.truncation_warning().into_iter().collect(),
            },
            model,
            usage: Usage {
                total_tokens: total,
            },
        }
    }
}

/// `POST /rerank` (text-embeddings-inference).
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct TeiRerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    /// Default true (the server's rule); false makes a too-long text a 400.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// `right` (default) or `left`.
    #[serde(default)]
    pub truncation_direction: Option<String>,
    /// Scores as the logit difference yes − no instead of P(yes).
    #[serde(default)]
    pub raw_scores: Option<bool>,
    #[serde(default)]
    pub return_text: Option<bool>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TeiRank {
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `POST /tokenize`: one text or several.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct TokenizeRequest {
    pub inputs: TokenizeInputs,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TokenizeInputs {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Token {
    pub id: u32,
    pub text: String,
    pub special: bool,
    /// Byte offsets of the token in its input.
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (some device out of rotation, the others serving),
    /// `loading`, `shutting down`, or why the server cannot serve.
    pub status: String,
    /// With `degraded`: which devices are out and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// `reranker` or `embedding` (an extension of OpenAI's shape).
    pub kind: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CohereModel {
    pub name: String,
    pub endpoints: Vec<String>,
    pub context_length: usize,
}

/// OpenAI's list shape (`data`) and Cohere's (`models`) in one body.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
    pub models: Vec<CohereModel>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Limits {
    pub max_pair_tokens: usize,
    pub max_documents: usize,
    pub max_body_bytes: usize,
    pub max_batch_tokens: usize,
    pub max_queue_tokens: usize,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Info {
    pub model_id: String,
    pub served_model_names: Vec<String>,
    /// True for the embedded tiny random model, whose scores are meaningless.
    pub placeholder_model: bool,
    pub model_type: String,
    pub backend: String,
    pub device: String,
    pub limits: Limits,
    pub auth_required: bool,
    pub version: String,
    /// The embedding model, when this server hosts one beside the reranker
    /// (when it hosts only that, the fields above describe it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<EmbeddingModelInfo>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EmbeddingModelInfo {
    pub model_id: String,
    pub served_model_names: Vec<String>,
    pub backend: String,
    pub device: String,
    /// The vector's full width (the largest `dimensions`).
    pub dimensions: usize,
    /// Tokens one input may have, the end-of-text token included.
    pub max_input_tokens: usize,
}

/// `POST /v1/embeddings` (OpenAI). Unknown fields (`user` among them) are
/// ignored.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// A string, an array of strings, an array of token ids, or an array of
    /// arrays of token ids.
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default)]
    pub model: Option<String>,
    /// Keep the first N components of each vector, renormalised
    /// (1 ..= the model's width).
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub dimensions: Option<Value>,
    /// `float` (default) or `base64` (little-endian f32).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Extension: the task of a query, embedded as
    /// `Instruct: {instruction}\nQuery:{input}` (documents go without).
    #[serde(default)]
    pub instruction: Option<String>,
    /// Extension: default true; false makes a too-long input a 400.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Extension: `right` (default) or `left`.
    #[serde(default)]
    pub truncation_direction: Option<String>,
}

/// One vector: numbers, or (`encoding_format: base64`) its little-endian f32
/// bytes in base64.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EmbeddingData {
    pub object: String,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    pub object: String,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

impl EmbeddingsResponse {
    /// The body for `vectors` (in input order), as floats or base64, billed
    /// their tokens.
    pub fn new(vectors: Vec<Embedding>, base64: bool, model: String) -> EmbeddingsResponse {
        let tokens = vectors.iter().map(|e| e.tokens).sum();
        EmbeddingsResponse {
            object: "list".into(),
            data: vectors
                .into_iter()
                .enumerate()
                .map(|(index, e)| EmbeddingData {
                    object: "embedding".into(),
                    index,
                    embedding: if base64 {
                        EmbeddingVector::Base64(crate::encode::base64_f32(&e.values))
                    } else {
                        EmbeddingVector::Float(e.values)
                    },
                })
                .collect(),
            model,
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        }
    }
}

/// `POST /embed` (text-embeddings-inference).
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct TeiEmbedRequest {
    /// A string or an array of strings.
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Default true: unit vectors; false returns the pooled hidden state as it is.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Default true (the server's rule); false makes a too-long input a 400.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// `right` (default) or `left`.
    #[serde(default)]
    pub truncation_direction: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub dimensions: Option<Value>,
}
