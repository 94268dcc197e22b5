//! Reading a JSON request body: content type (415), syntax (400), and
//! typed fields whose errors name the field (422 for a wrong type, 400 for a missing
//! one) — instead of axum's generic rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::{ApiError, ErrorKind};

/// The body's bytes after checking that it is JSON (the size limit and the body
/// timeout were applied when `edge::read_body` read it).
pub async fn json_body(request: Request) -> Result<Bytes, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        let got = if content_type.is_empty() {
            "no Content-Type".to_string()
        } else {
            format!("Content-Type `{content_type}`")
        };
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Validation,
            format!("the body must be JSON (Content-Type: application/json); got {got}"),
        ));
    }
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            ApiError::invalid(format!("cannot read the request body: {rejection}"))
        })
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses `bytes` as `T`. Syntax errors and missing fields are 400; a field of the
/// wrong type is 422. Messages start with the field's path (`documents[2]: …`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would read a struct from an array too; a body must be an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Err(e) => ApiError::invalid(format!("malformed JSON: {e}")),
            Ok(_) => ApiError::wrong_type("the body must be a JSON object"),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        classify(&path, &inner)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::invalid(format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn classify(path: &str, error: &serde_json::Error) -> ApiError {
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::invalid(format!("malformed JSON: {error}"))
        }
        Category::Data => {
            // serde_json's data errors carry the position; the path is more useful.
            let text = error.to_string();
            let text = match text.rfind(" at line ") {
                Some(at) => &text[..at],
                None => &text,
            };
            let text = &plain_type_names(text);
            if text.starts_with("missing field") {
                let field = text.trim_start_matches("missing field ").trim_matches('`');
                let full = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                ApiError::invalid_at(full, "this field is required")
            } else if path == "." {
                ApiError::wrong_type(format!("the body must be a JSON object: {text}"))
            } else {
                ApiError::wrong_type_at(path.to_string(), text)
            }
        }
    }
}

/// serde's names for what it expected (`i64`, `usize`, `a sequence`) in the
/// words of a JSON API.
fn plain_type_names(text: &str) -> String {
    let Some(at) = text.rfind("expected ") else {
        return text.to_string();
    };
    let (head, expected) = text.split_at(at + "expected ".len());
    // What came: serde's `invalid type: map, ...` / `sequence` / `unit value`.
    let head = [
        ("type: map,", "type: object,"),
        ("type: sequence,", "type: array,"),
        ("type: unit value,", "type: null,"),
        ("type: floating point", "type: number"),
    ]
    .iter()
    .fold(head.to_string(), |h, (from, to)| h.replacen(from, to, 1));
    let plain = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a map" => "an object",
        "a borrowed string" => "a string",
        other => other,
    };
    format!("{head}{plain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Probe {
        query: String,
        top_n: Option<i64>,
        documents: Vec<String>,
    }

    #[test]
    fn errors_name_the_field_and_pick_the_status() {
        let e = parse::<Probe>(br#"{"query": "q", "documents": ["a", 3]}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.message.starts_with("documents[1]: invalid type"),
            "{}",
            e.message
        );
        let e = parse::<Probe>(br#"{"query": "q", "top_n": "3", "documents": []}"#).unwrap_err();
        // In JSON's words, not Rust's type names.
        assert_eq!(
            e.message,
            r#"top_n: invalid type: string "3", expected an integer"#
        );
        let e = parse::<Probe>(br#"{"query": "q", "documents": {"a": 1}}"#).unwrap_err();
        assert_eq!(
            e.message,
            "documents: invalid type: object, expected an array"
        );
        let e = parse::<Probe>(br#"{"documents": []}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "query: this field is required");
        let e = parse::<Probe>(br#"{"query": "#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse::<Probe>(br#"[1]"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = parse::<Probe>(br#"{"query": "q", "documents": []} x"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
