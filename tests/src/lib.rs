//! Shared helpers of the integration tests: fixture paths and the reference
//! files written by `tools/make_fixtures.py`.

mod embed_reference;

use std::path::PathBuf;

use serde::Deserialize;
use tessera_backend::Backend;
use tessera_engine::{RerankOptions, Reranker};

pub use embed_reference::{
    check_embeddings, cosine, load_embed_reference, max_abs_diff, to_f64, EmbedBounds, EmbedCase,
    EmbedReference, EMBED_FIXTURE,
};

/// Path of a fixture file: a model GGUF is rebuilt (and hash-checked) by
/// `tessera-fixtures` on first use; the references (`*.json`) are committed.
pub fn fixture(name: &str) -> PathBuf {
    if name.ends_with(".gguf") {
        return tessera_fixtures::path(name);
    }
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

/// The reranker's P(yes) for every document of a reference case, in order.
pub fn case_scores<B: Backend>(reranker: &Reranker<B>, case: &ReferenceCase) -> Vec<f64> {
    let docs: Vec<&str> = case.documents.iter().map(String::as_str).collect();
    let options = RerankOptions {
        instruction: case.instruction.clone(),
        ..RerankOptions::default()
    };
    reranker
        .rerank(&case.query, &docs, &options)
        .expect("rerank")
        .documents
        .iter()
        .map(|d| f64::from(d.relevance))
        .collect()
}

/// End-to-end bounds of an int8-activation path against the W8A8 reference:
/// tiny random models amplify single rounding flips, so they are loose; the
/// op-level parity cases are the precise checks.
pub const W8A8_MAX_ABS: f64 = 1.5e-2;
pub const W8A8_MEAN_ABS: f64 = 2e-3;

/// Checks `reranker` on every case of fixture `stem` against its W8A8 scores:
/// each within [`W8A8_MAX_ABS`], the mean within [`W8A8_MEAN_ABS`], and with
/// `check_ranking` any two documents the reference puts more than 2·max apart
/// keep their order. Prints and returns (max, mean) |Δ|; `label` names the run.
pub fn check_w8a8<B: Backend>(
    label: &str,
    reranker: &Reranker<B>,
    stem: &str,
    check_ranking: bool,
) -> (f64, f64) {
    check_reference(
        label,
        reranker,
        stem,
        Reference::W8A8,
        (W8A8_MAX_ABS, W8A8_MEAN_ABS),
        check_ranking,
    )
}

/// Which reference scores of a fixture a run is held to.
#[derive(Clone, Copy, Debug)]
pub enum Reference {
    /// f32 activations, the weights' exact Q8_0 values.
    W8A32,
    /// int8 activations in per-32 blocks, as ggml's `q8_0 × q8_0`.
    W8A8,
}

impl Reference {
    fn score(self, pair: &ReferencePair) -> f64 {
        match self {
            Reference::W8A32 => pair.w8a32,
            Reference::W8A8 => pair.w8a8,
        }
    }
}

/// Checks `reranker` on every case of fixture `stem` against the `reference`
/// scores: each within `max`, the mean within `mean`, and with `check_ranking`
/// any two documents the reference puts more than 2·max apart keep their order.
/// Prints and returns (max, mean) |Δ|; `label` names the run.
pub fn check_reference<B: Backend>(
    label: &str,
    reranker: &Reranker<B>,
    stem: &str,
    reference: Reference,
    (max, mean_bound): (f64, f64),
    check_ranking: bool,
) -> (f64, f64) {
    let fixture_reference = load_reference(stem);
    let (mut worst, mut sum, mut count) = (0.0f64, 0.0f64, 0usize);
    for case in &fixture_reference.cases {
        let got = case_scores(reranker, case);
        let want: Vec<f64> = case.pairs.iter().map(|p| reference.score(p)).collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = (g - w).abs();
            assert!(
                diff <= max,
                "{label}: query {:?} doc {i}: score {g:.6}, {reference:?} reference {w:.6} (|Δ| = {diff:.2e})",
                case.query
            );
            worst = worst.max(diff);
            sum += diff;
            count += 1;
        }
        if !check_ranking {
            continue;
        }
        for i in 0..want.len() {
            for j in 0..want.len() {
                if want[i] - want[j] > 2.0 * max {
                    assert!(
                        got[i] > got[j],
                        "{label}: query {:?}: docs {i} and {j} swapped ({:.4} vs {:.4}; reference {:.4} vs {:.4})",
                        case.query,
                        got[i],
                        got[j],
                        want[i],
                        want[j]
                    );
                }
            }
        }
    }
    let mean = sum / count as f64;
    println!("{label}: {count} pairs, |score − {reference:?}| max {worst:.2e}, mean {mean:.2e}");
    assert!(
        mean <= mean_bound,
        "{label}: mean |Δ| {mean:.2e} > {mean_bound:.0e}"
    );
    (worst, mean)
}
