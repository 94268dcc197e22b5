//! Benchmark records of `tessera bench` read back and drawn: each op kind's
//! FLOPs and minimum bytes (`op_cost`), the roofline arithmetic (`roofline`),
//! and `tessera report`'s page — one self-contained HTML file of inline SVG
//! charts and the tables under them (`runs`, `charts`, `page`).

pub mod charts;
pub mod op_cost;
mod page;
pub mod record;
pub mod roofline;
pub mod runs;

use std::path::Path;

pub use record::{device_name, OpShare, Profile, Record};

/// Why a report could not be made; each names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a bench record: {message}")]
    Malformed {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{paths}: no bench records (make them with `tessera bench --format json` or `--sweep --out FILE`)")]
    Empty { paths: String },
    #[error("drawing the chart '{chart}': {message}")]
    Draw { chart: String, message: String },
}

/// The records of one JSON Lines file (blank lines skipped).
pub fn read_records(path: &Path) -> Result<Vec<Record>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_records(&path.display().to_string(), &text)
}

/// The records of `text`, a JSON Lines file called `path` in errors.
pub fn parse_records(path: &str, text: &str) -> Result<Vec<Record>, ReportError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let malformed = |message: String| ReportError::Malformed {
                path: path.to_string(),
                line: index + 1,
                message,
            };
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| malformed(e.to_string()))?;
            if let Some(field) = beyond_measure(&value, "") {
                return Err(malformed(format!(
                    "{field} is not a measurement (magnitude above {MAX_MAGNITUDE:e})"
                )));
            }
            serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
        })
        .collect()
}

/// The largest magnitude a record's number may have. Times, rates, FLOPs and
/// bytes sit far below it; numbers near `f64::MAX` overflow to infinity once
/// summed or scaled, and an infinite chart range never ends its ticks.
const MAX_MAGNITUDE: f64 = 1e100;

/// The path of the first number in `value` beyond [`MAX_MAGNITUDE`].
fn beyond_measure(value: &serde_json::Value, at: &str) -> Option<String> {
    match value {
        serde_json::Value::Number(n) => n
            .as_f64()
            .is_some_and(|v| v.abs() > MAX_MAGNITUDE)
            .then(|| at.to_string()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| beyond_measure(item, &format!("{at}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            beyond_measure(item, &path)
        }),
        _ => None,
    }
}

/// The report page of `records` (read from `sources`, named on the page),
/// `progress` told of each step.
pub fn render(
    records: Vec<Record>,
    sources: &[String],
    progress: &mut dyn FnMut(&str),
) -> Result<String, ReportError> {
    if records.is_empty() {
        return Err(ReportError::Empty {
            paths: sources.join(", "),
        });
    }
    let runs = runs::group(records);
    progress(&format!(
        "{} {} in the records",
        runs.len(),
        if runs.len() == 1 { "run" } else { "runs" }
    ));
    page::render(&runs, sources, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_line_is_named_by_file_and_line() {
        let err = parse_records("r.jsonl", "\n{\"tessera\": 1}\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("r.jsonl:2: not a bench record"), "{text}");
        let err = parse_records("r.jsonl", "not json").unwrap_err();
        assert!(err.to_string().starts_with("r.jsonl:1:"), "{err}");
    }

    #[test]
    fn no_records_is_an_error_naming_the_files() {
        assert!(parse_records("r.jsonl", "\n  \n").unwrap().is_empty());
        let err = render(Vec::new(), &["a.jsonl".into()], &mut |_| {}).unwrap_err();
        assert!(err.to_string().starts_with("a.jsonl: no bench records"));
    }

    #[test]
    fn a_number_near_the_float_limit_is_refused_by_its_field() {
        // An op time of 1e307 once made the page's chart range infinite and
        // `tessera report` never returned.
        let line = r#"{"profile": {"ops": [{"op": "o", "ms": 1e307}]}}"#;
        let err = parse_records("r.jsonl", line).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "r.jsonl:1: not a bench record: profile.ops[0].ms is not a measurement"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read_records(Path::new("/nonexistent/r.jsonl")).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/r.jsonl: "),
            "{err}"
        );
    }
}
