//! Shared helpers of the integration tests: fixture paths and the reference
//! files written by `tools/make_fixtures.py`.

use std::path::PathBuf;

use serde::Deserialize;

/// Path of a committed fixture file.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The reference for one model fixture.
#[derive(Debug, Deserialize)]
pub struct ModelReference {
    pub model: String,
    pub yes_id: u32,
    pub no_id: u32,
    pub cases: Vec<ReferenceCase>,
}

#[derive(Debug, Deserialize)]
pub struct ReferenceCase {
    pub instruction: Option<String>,
    pub query: String,
    pub documents: Vec<String>,
    pub pairs: Vec<ReferencePair>,
}

#[derive(Debug, Deserialize)]
pub struct ReferencePair {
    pub ids: Vec<u32>,
    pub prefix_len: usize,
    pub fp32: f64,
    pub w8a32: f64,
    pub w8a8: f64,
}

/// The model fixtures and their reference files.
pub const MODEL_FIXTURES: [&str; 3] = ["tiny-q8", "tiny-q8-untied", "tiny-f32"];

pub fn load_reference(stem: &str) -> ModelReference {
    let path = fixture(&format!("{stem}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Indices sorted by score, highest first (ties: lower index first).
pub fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}
