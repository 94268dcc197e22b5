//! The API's side of preparing a call: document text from strings or object
//! fields, option values checked field by field, and the engine's
//! [`RequestError`]s named the way the dialect names its fields. Tokenizing,
//! truncation, chunking and billing are the service's (the engine's front
//! door), shared with `tessera rerank`.

use serde_json::Value;
use tessera_service::{chunk_note, PromptError, RequestError, RerankOptions, TruncationSide};

use crate::error::{ApiError, ErrorKind};
use crate::types::DocumentInput;

/// Everything about one rerank call that does not depend on the dialect.
#[derive(Clone, Debug)]
pub struct RerankJob {
    /// The request's name for its document list (`documents`, or TEI's `texts`),
    /// used in error messages.
    pub list: &'static str,
    pub query: String,
    pub documents: Vec<String>,
    pub options: RerankOptions,
}

impl RerankJob {
    /// What the service is asked to do; `list` stays here, for messages.
    pub fn into_service_job(self) -> tessera_service::RerankJob {
        tessera_service::RerankJob {
            query: self.query,
            documents: self.documents,
            options: self.options,
        }
    }

    /// A job's options from the API's fields: `truncate: false` refuses a
    /// document that does not fit; `max_tokens_per_doc` always cuts, on the
    /// truncation side.
    pub fn options(
        instruction: Option<String>,
        truncate: bool,
        side: TruncationSide,
        max_tokens_per_doc: Option<usize>,
        max_chunks_per_doc: usize,
    ) -> RerankOptions {
        RerankOptions {
            instruction,
            truncation: truncate.then_some(side),
            max_tokens_per_doc,
            max_tokens_side: side,
            max_chunks_per_doc,
            ..RerankOptions::default()
        }
    }
}

pub fn parse_side(field: &str, value: Option<&str>) -> Result<TruncationSide, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("right") | Some("end") => Ok(TruncationSide::Right),
        Some("left") | Some("start") => Ok(TruncationSide::Left),
        Some(other) => Err(ApiError::invalid_at(
            field,
            format_args!("expected \"right\" or \"left\", got {other:?}"),
        )),
    }
}

/// A positive integer option, or a 400 naming it.
pub fn positive(field: &str, value: Option<i64>) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(n) => Err(ApiError::invalid(format!("{field} must be at least 1, got {n}")).at(field)),
    }
}

/// The text scored for each document: a string as is; an object's `text`, or with
/// `rank_fields` the named fields as `key: value` lines.
pub fn document_texts(
    documents: &[DocumentInput],
    rank_fields: Option<&[String]>,
) -> Result<Vec<String>, ApiError> {
    if let Some(fields) = rank_fields {
        if fields.is_empty() {
            return Err(ApiError::invalid("rank_fields must not be empty").at("rank_fields"));
        }
    }
    documents
        .iter()
        .enumerate()
        .map(|(index, document)| match (document, rank_fields) {
            (DocumentInput::Text(text), _) => Ok(text.clone()),
            (DocumentInput::Object(map), None) => match map.get("text") {
                Some(Value::String(text)) => Ok(text.clone()),
                Some(_) => Err(ApiError::wrong_type_at(
                    format!("documents[{index}].text"),
                    "expected a string",
                )),
                None => Err(ApiError::invalid_at(
                    format!("documents[{index}]"),
                    "an object document needs a `text` field (or name its fields in rank_fields)",
                )),
            },
            (DocumentInput::Object(map), Some(fields)) => {
                let mut lines = Vec::with_capacity(fields.len());
                for field in fields {
                    let value = map.get(field).ok_or_else(|| {
                        ApiError::invalid_at(
                            format!("documents[{index}]"),
                            format_args!("has no field `{field}` named in rank_fields"),
                        )
                    })?;
                    let value = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    lines.push(format!("{field}: {value}"));
                }
                Ok(lines.join("\n"))
            }
        })
        .collect()
}

/// The document as sent, for `return_documents`.
pub fn echo_document(document: &DocumentInput) -> Value {
    match document {
        DocumentInput::Text(text) => serde_json::json!({ "text": text }),
        DocumentInput::Object(map) => Value::Object(map.clone()),
    }
}

/// A rerank call's preparation error (the client's, 400) named with the
/// dialect's field names: `list` is its name for the documents.
pub fn request_error(list: &str, error: RequestError) -> ApiError {
    match error {
            RequestError::Query(PromptError::Tokenizer(e)) => ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorKind::Tokenizer,
                format!("query: cannot tokenize: {e}"),
            )
            .at("query"),
            RequestError::Query(other) => ApiError::invalid_at("query", other),
            RequestError::Tokenizer { index, source } => ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorKind::Tokenizer,
                format!("{list}[{index}]: cannot tokenize: {source}"),
            )
            .at(format!("{list}[{index}]")),
            RequestError::DocumentTooLong {
                index,
                tokens,
                capacity,
                room,
                chunks,
            } => ApiError::invalid(format!(
                "{list}[{index}] is {tokens} tokens long but only {capacity} fit beside the query{}, and truncate is false",
                chunk_note(chunks, room)
            ))
            .at(format!("{list}[{index}]")),
    }
}

/// `response` with header `name` listing `truncated` (indices of documents or
/// inputs cut to fit), comma-separated; unchanged when none was cut.
pub fn with_truncated_header(
    mut response: axum::response::Response,
    name: &'static str,
    truncated: &[usize],
) -> axum::response::Response {
    if !truncated.is_empty() {
        let list: Vec<String> = truncated.iter().map(usize::to_string).collect();
        if let Ok(value) = axum::http::HeaderValue::from_str(&list.join(",")) {
            response
                .headers_mut()
                .insert(axum::http::HeaderName::from_static(name), value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> DocumentInput {
        match value {
            Value::Object(map) => DocumentInput::Object(map),
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn rank_fields_render_key_value_lines_in_order() {
        let docs = [
            object(json!({"title": "T", "body": "B", "n": 3})),
            DocumentInput::Text("plain".into()),
        ];
        let fields = ["body".to_string(), "title".to_string(), "n".to_string()];
        let texts = document_texts(&docs, Some(&fields)).expect("rendered");
        assert_eq!(texts, ["body: B\ntitle: T\nn: 3", "plain"]);
        let missing = document_texts(&docs, Some(&["nope".to_string()])).unwrap_err();
        assert!(missing.message.contains("documents[0]") && missing.message.contains("nope"));
    }

    #[test]
    fn object_documents_need_text_without_rank_fields() {
        let docs = [object(json!({"text": "hello", "id": 7}))];
        assert_eq!(document_texts(&docs, None).expect("text"), ["hello"]);
        let bad = document_texts(&[object(json!({"id": 7}))], None).unwrap_err();
        assert!(bad.message.starts_with("documents[0]"));
    }

    #[test]
    fn option_values_are_checked() {
        assert!(positive("top_n", Some(0)).is_err());
        assert_eq!(positive("top_n", Some(3)).expect("ok"), Some(3));
        assert!(parse_side("truncation_direction", Some("up")).is_err());
        assert_eq!(
            parse_side("truncation_direction", Some("LEFT")).expect("ok"),
            TruncationSide::Left
        );
    }
}
