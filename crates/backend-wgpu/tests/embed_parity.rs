//! The embedding model on wgpu against the Hugging Face reference of the
//! `tiny-embed-q8` fixture: the shaders compute in f32 with Q8_0 weights, so
//! every input's unit vector lies within the bounds below of W8A32.

mod common;

use std::sync::Arc;

use tessera_backend_wgpu::{WgpuBackend, WgpuOptions};
use tessera_engine::Embedder;
use tessera_gguf::GgufFile;
use tessera_tests::{check_embeddings, fixture, EmbedBounds, Reference, EMBED_FIXTURE};

/// f32 against f32, in another summation order. Measured on lavapipe:
/// 1 − cosine ≤ 3.2e-13, max |Δ| 3.2e-7 per component.
const BOUNDS: EmbedBounds = EmbedBounds {
    min_cosine: 0.99999,
    max_abs: 2e-6,
};

fn load(backend: WgpuBackend) -> Embedder<WgpuBackend> {
    let path = fixture(&format!("{EMBED_FIXTURE}.gguf"));
    let file = Arc::new(GgufFile::open(path).expect("fixture opens"));
    Embedder::load(backend, &file, None).expect("the embedding fixture loads")
}

#[test]
fn embeddings_match_the_w8a32_vectors() {
    let Some(backend) = common::backend("embed_parity", WgpuOptions::default()) else {
        return;
    };
    check_embeddings("wgpu", &load(backend), Reference::W8A32, BOUNDS);
}
