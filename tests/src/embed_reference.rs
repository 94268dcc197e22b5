//! The embedding fixture's reference (`tiny-embed-q8.json`, Hugging Face
//! transformers following the official Qwen3-Embedding recipe) and the check
//! every backend's embedding parity test makes against it.

use serde::Deserialize;
use tessera_backend::Backend;
use tessera_engine::{EmbedOptions, Embedder};

use crate::{fixture, Reference};

/// Stem of the embedding fixture (`.gguf` and `.json`).
pub const EMBED_FIXTURE: &str = "tiny-embed-q8";

#[derive(Debug, Deserialize)]
pub struct EmbedReference {
    pub model: String,
    pub end_of_text_id: u32,
    pub default_instruction: String,
    pub cases: Vec<EmbedCase>,
}

/// One input and its reference unit vectors.
#[derive(Debug, Deserialize)]
pub struct EmbedCase {
    pub name: String,
    pub text: String,
    /// The query's task; `None` embeds the text as it is (a document).
    pub instruction: Option<String>,
    /// The whole (instructed) text's ids, `<|endoftext|>` appended.
    pub ids: Vec<u32>,
    /// The unquantised weights, f32 activations.
    pub fp32: Vec<f64>,
    pub w8a32: Vec<f64>,
    pub w8a8: Vec<f64>,
}

impl EmbedCase {
    pub fn options(&self) -> EmbedOptions {
        EmbedOptions {
            instruction: self.instruction.clone(),
            ..EmbedOptions::default()
        }
    }

    pub fn vector(&self, reference: Reference) -> &[f64] {
        match reference {
            Reference::W8A32 => &self.w8a32,
            Reference::W8A8 => &self.w8a8,
        }
    }
}

impl EmbedReference {
    /// The cases by instruction (first appearance order), each group in
    /// fixture order: what one `Embedder::embed` call can take together.
    pub fn groups(&self) -> Vec<(EmbedOptions, Vec<&EmbedCase>)> {
        let mut groups: Vec<(EmbedOptions, Vec<&EmbedCase>)> = Vec::new();
        for case in &self.cases {
            match groups
                .iter_mut()
                .find(|(options, _)| options.instruction == case.instruction)
            {
                Some((_, cases)) => cases.push(case),
                None => groups.push((case.options(), vec![case])),
            }
        }
        groups
    }
}

pub fn load_embed_reference() -> EmbedReference {
    let path = fixture(&format!("{EMBED_FIXTURE}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths");
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

pub fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// How close a path's vectors must lie to a reference: each vector's cosine
/// with its reference at least `min_cosine`, each component within `max_abs`.
#[derive(Clone, Copy, Debug)]
pub struct EmbedBounds {
    pub min_cosine: f64,
    pub max_abs: f64,
}

/// Embeds every case of the fixture with `embedder`, the cases of one
/// instruction in one call, and checks each vector against its `reference`
/// vector within `bounds`, with its billed tokens equal to the reference ids'
/// length. Prints and returns the worst (smallest cosine, largest |Δ|); `label`
/// names the run.
pub fn check_embeddings<B: Backend>(
    label: &str,
    embedder: &Embedder<B>,
    reference: Reference,
    bounds: EmbedBounds,
) -> (f64, f64) {
    let fixture_reference = load_embed_reference();
    let (mut worst_cosine, mut worst_abs) = (1.0f64, 0.0f64);
    for (options, cases) in fixture_reference.groups() {
        let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
        let got = embedder.embed(&texts, &options).expect("embed");
        assert_eq!(got.len(), cases.len(), "{label}: one vector per input");
        for (case, embedding) in cases.iter().zip(&got) {
            let want = case.vector(reference);
            let values = to_f64(&embedding.values);
            assert_eq!(values.len(), want.len(), "{label}: {} width", case.name);
            assert_eq!(
                embedding.tokens,
                case.ids.len(),
                "{label}: {} billed tokens",
                case.name
            );
            assert!(!embedding.truncated, "{label}: {} truncated", case.name);
            let cos = cosine(&values, want);
            let diff = max_abs_diff(&values, want);
            assert!(
                cos >= bounds.min_cosine && diff <= bounds.max_abs,
                "{label}: {}: cosine {cos:.8} (bound {}), max |Δ| {diff:.2e} (bound {:.0e}) against {reference:?}",
                case.name,
                bounds.min_cosine,
                bounds.max_abs
            );
            worst_cosine = worst_cosine.min(cos);
            worst_abs = worst_abs.max(diff);
        }
    }
    println!(
        "{label}: {} inputs, against {reference:?}: 1 − cosine ≤ {:.1e}, max |Δ| {worst_abs:.2e}",
        fixture_reference.cases.len(),
        1.0 - worst_cosine
    );
    (worst_cosine, worst_abs)
}
