//! Benchmark records of `tessera bench` and how to read them: each op kind's
//! FLOPs and minimum bytes (`op_cost`), the records as written and read back
//! (`record`), and the roofline arithmetic (`roofline`).

pub mod op_cost;
pub mod record;
pub mod roofline;

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
            serde_json::from_str(line).map_err(|e| ReportError::Malformed {
                path: path.to_string(),
                line: index + 1,
                message: e.to_string(),
            })
        })
        .collect()
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
    fn blank_lines_are_no_records() {
        assert!(parse_records("r.jsonl", "\n  \n").unwrap().is_empty());
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
