//! From validated request fields to token ids: document text from strings or object
//! fields, the query prefix, each document cut into chunks that fit beside it (or
//! truncated, or refused), and the bookkeeping to map chunk scores back to documents.
//! Runs on a blocking thread, never on the compute thread.

use std::ops::Range;

use serde_json::Value;
use tessera_engine::scheduler::ScoreRequest;
use tessera_engine::PairScore;
use tessera_model::{PromptBuilder, PromptError, TruncationSide};

use crate::error::{ApiError, ErrorKind};
use crate::types::DocumentInput;

/// Everything about one rerank call that does not depend on the dialect.
#[derive(Clone, Debug)]
pub struct RerankJob {
    /// The request's name for its document list (`documents`, or TEI's `texts`),
    /// used in error messages.
    pub list: &'static str,
    pub query: String,
    pub instruction: Option<String>,
    pub documents: Vec<String>,
    pub truncate: bool,
    pub side: TruncationSide,
    pub max_tokens_per_doc: Option<usize>,
    pub max_chunks_per_doc: usize,
}

/// The job as token ids, ready for the scheduler.
#[derive(Debug)]
pub struct PreparedJob {
    pub request: ScoreRequest,
    /// For each document, its chunks' positions in `request.documents`.
    pub chunks: Vec<Range<usize>>,
    /// Documents that lost tokens to truncation, ascending.
    pub truncated: Vec<usize>,
    /// Sum of the full lengths of every scored pair.
    pub total_tokens: usize,
}

impl PreparedJob {
    /// Per document, the best of its chunks' scores (by `yes − no`, which orders
    /// chunks exactly as P(yes) does).
    pub fn document_scores(&self, chunk_scores: &[PairScore]) -> Vec<PairScore> {
        self.chunks
            .iter()
            .map(|range| {
                chunk_scores[range.clone()]
                    .iter()
                    .copied()
                    .max_by(|a, b| a.logit_diff().total_cmp(&b.logit_diff()))
                    .unwrap_or(PairScore {
                        yes_logit: 0.0,
                        no_logit: 0.0,
                    })
            })
            .collect()
    }
}

pub fn parse_side(field: &str, value: Option<&str>) -> Result<TruncationSide, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("right") | Some("end") => Ok(TruncationSide::Right),
        Some("left") | Some("start") => Ok(TruncationSide::Left),
        Some(other) => Err(ApiError::invalid(format!(
            "{field}: expected \"right\" or \"left\", got {other:?}"
        ))),
    }
}

/// A positive integer option, or a 400 naming it.
pub fn positive(field: &str, value: Option<i64>) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(n) => Err(ApiError::invalid(format!(
            "{field} must be at least 1, got {n}"
        ))),
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
            return Err(ApiError::invalid("rank_fields must not be empty"));
        }
    }
    documents
        .iter()
        .enumerate()
        .map(|(index, document)| match (document, rank_fields) {
            (DocumentInput::Text(text), _) => Ok(text.clone()),
            (DocumentInput::Object(map), None) => match map.get("text") {
                Some(Value::String(text)) => Ok(text.clone()),
                Some(_) => Err(ApiError::wrong_type(format!(
                    "documents[{index}].text: expected a string"
                ))),
                None => Err(ApiError::invalid(format!(
                    "documents[{index}]: an object document needs a `text` field (or name its fields in rank_fields)"
                ))),
            },
            (DocumentInput::Object(map), Some(fields)) => {
                let mut lines = Vec::with_capacity(fields.len());
                for field in fields {
                    let value = map.get(field).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "documents[{index}]: has no field `{field}` named in rank_fields"
                        ))
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

fn tokenizer_error(what: &str, error: PromptError) -> ApiError {
    match error {
        PromptError::Tokenizer(e) => ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            ErrorKind::Tokenizer,
            format!("{what}: cannot tokenize: {e}"),
        ),
        other => ApiError::invalid(format!("{what}: {other}")),
    }
}

/// Tokenizes and lays out a job. Errors are the client's (400).
pub fn prepare(prompt: &PromptBuilder, job: &RerankJob) -> Result<PreparedJob, ApiError> {
    let prefix = prompt
        .query_prefix(job.instruction.as_deref(), &job.query)
        .map_err(|e| tokenizer_error("query", e))?;
    let suffix = prompt.suffix_ids();
    // `query_prefix` guarantees at least one token of room.
    let room = prompt
        .max_pair_tokens()
        .saturating_sub(prefix.len() + suffix.len())
        .max(1);
    let capacity = room.saturating_mul(job.max_chunks_per_doc.max(1));
    let mut units = Vec::with_capacity(job.documents.len());
    let mut chunks = Vec::with_capacity(job.documents.len());
    let mut truncated = Vec::new();
    let mut total_tokens = 0;
    for (index, text) in job.documents.iter().enumerate() {
        let what = format!("{}[{index}]", job.list);
        let mut ids = prompt
            .document_ids(text)
            .map_err(|e| tokenizer_error(&what, e))?;
        let mut cut = false;
        if let Some(max) = job.max_tokens_per_doc {
            cut |= keep(&mut ids, max, job.side);
        }
        if ids.len() > capacity {
            if !job.truncate {
                let chunks_note = if job.max_chunks_per_doc > 1 {
                    format!(" ({} chunks of {room})", job.max_chunks_per_doc)
                } else {
                    String::new()
                };
                return Err(ApiError::invalid(format!(
                    "{what} is {} tokens long but only {capacity} fit beside the query{chunks_note}, and truncate is false",
                    ids.len()
                )));
            }
            cut |= keep(&mut ids, capacity, job.side);
        }
        if cut {
            truncated.push(index);
        }
        let start = units.len();
        // An empty document still makes one pair (prefix ++ suffix).
        let pieces: Vec<&[u32]> = if ids.is_empty() {
            vec![&[]]
        } else {
            ids.chunks(room).collect()
        };
        for piece in pieces {
            let mut unit = Vec::with_capacity(piece.len() + suffix.len());
            unit.extend_from_slice(piece);
            unit.extend_from_slice(suffix);
            total_tokens += prefix.len() + unit.len();
            units.push(unit);
        }
        chunks.push(start..units.len());
    }
    Ok(PreparedJob {
        request: ScoreRequest {
            prefix,
            documents: units,
        },
        chunks,
        truncated,
        total_tokens,
    })
}

/// Cuts `ids` to `max` tokens on `side`; whether anything was dropped.
fn keep(ids: &mut Vec<u32>, max: usize, side: TruncationSide) -> bool {
    if ids.len() <= max {
        return false;
    }
    match side {
        TruncationSide::Right => ids.truncate(max),
        TruncationSide::Left => {
            ids.drain(..ids.len() - max);
        }
    }
    true
}

/// `meta.warnings` and the `x-truncated-documents` header value.
pub fn truncation_notes(truncated: &[usize]) -> Option<(String, String)> {
    if truncated.is_empty() {
        return None;
    }
    let list: Vec<String> = truncated.iter().map(usize::to_string).collect();
    Some((
        format!(
            "documents truncated to fit the context: [{}]",
            list.join(", ")
        ),
        list.join(","),
    ))
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
    fn keep_cuts_the_requested_side() {
        let mut right = vec![1, 2, 3, 4];
        assert!(keep(&mut right, 2, TruncationSide::Right));
        assert_eq!(right, [1, 2]);
        let mut left = vec![1, 2, 3, 4];
        assert!(keep(&mut left, 3, TruncationSide::Left));
        assert_eq!(left, [2, 3, 4]);
        assert!(!keep(&mut left, 3, TruncationSide::Left));
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
