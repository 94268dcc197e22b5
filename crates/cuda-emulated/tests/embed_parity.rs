//! The embedding model end to end through the emulated CUDA kernels: every
//! input of the `tiny-embed-q8` fixture, the unit vector within the bounds
//! below of the Hugging Face reference that matches the arithmetic — W8A8
//! (int8 activations into every Q8_0 matmul, as the kernels compute) and, for
//! the W8A16 arithmetic, W8A32.

use std::sync::Arc;

use tessera_cuda_emulated::{emulated, emulated_w8a16, EmulatedCudaBackend};
use tessera_engine::Embedder;
use tessera_gguf::GgufFile;
use tessera_tests::{check_embeddings, fixture, EmbedBounds, Reference, EMBED_FIXTURE};

/// W8A8 against W8A8: the CPU int8 path's rounding in another summation order.
/// Measured: 1 − cosine ≤ 3e-14, max |Δ| 1.5e-7 per component.
const W8A8_BOUNDS: EmbedBounds = EmbedBounds {
    min_cosine: 0.99999,
    max_abs: 2e-6,
};

/// W8A16 against W8A32: each matmul input and each `q · d` rounded to f16
/// (≈ 3e-4 relative r.m.s. per product). Measured: 1 − cosine ≤ 5.8e-7, max
/// |Δ| 4.2e-4 per component; the bounds leave 17× and 5× of headroom.
const W8A16_BOUNDS: EmbedBounds = EmbedBounds {
    min_cosine: 0.99999,
    max_abs: 2e-3,
};

fn load(backend: EmulatedCudaBackend) -> Embedder<EmulatedCudaBackend> {
    let path = fixture(&format!("{EMBED_FIXTURE}.gguf"));
    let file = Arc::new(GgufFile::open(path).expect("fixture opens"));
    Embedder::load(backend, &file, None).expect("the embedding fixture loads")
}

#[test]
fn emulated_kernels_match_the_w8a8_vectors() {
    check_embeddings(
        "emulated w8a8",
        &load(emulated()),
        Reference::W8A8,
        W8A8_BOUNDS,
    );
}

#[test]
fn emulated_w8a16_kernels_match_the_w8a32_vectors() {
    check_embeddings(
        "emulated w8a16",
        &load(emulated_w8a16()),
        Reference::W8A32,
        W8A16_BOUNDS,
    );
}
