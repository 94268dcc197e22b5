//! The embedding model end to end against the Hugging Face transformers
//! reference of `tiny-embed-q8` (the official Qwen3-Embedding recipe): token
//! ids of every input, the CPU reference against W8A32 and the fast CPU path on
//! every instruction set against W8A8, `dimensions`, output order and batch
//! independence.

use std::sync::Arc;

use tessera_backend_cpu::{CpuBackend, Isa, Precision};
use tessera_engine::{EmbedError, EmbedOptions, Embedder};
use tessera_gguf::GgufFile;
use tessera_tests::{
    check_embeddings, cosine, fixture, load_embed_reference, max_abs_diff, to_f64, EmbedBounds,
    Reference, EMBED_FIXTURE,
};

/// The CPU reference (f32 activations, exact Q8_0 weights) against W8A32:
/// both are f32 forwards of the same weights in different summation orders.
/// Measured: 1 − cosine ≤ 2e-13, max |Δ| 2.7e-7 per component (unit vectors).
const REFERENCE_BOUNDS: EmbedBounds = EmbedBounds {
    min_cosine: 0.99999,
    max_abs: 2e-6,
};

/// The int8-activation path against W8A8: the same quantisation in another
/// summation order (the fixture's seed was chosen so that an independent
/// forward flips no rounding). Measured, scalar / AVX2 / AVX-512 VNNI alike:
/// 1 − cosine ≤ 3e-14, max |Δ| 1.5e-7.
const FAST_BOUNDS: EmbedBounds = EmbedBounds {
    min_cosine: 0.99999,
    max_abs: 2e-6,
};

/// One input alone and in a batch: the same vector within this (measured:
/// bit-identical, reference and fast path).
const BATCH_TOLERANCE: f64 = 1e-7;

fn load(backend: CpuBackend) -> Embedder<CpuBackend> {
    let path = fixture(&format!("{EMBED_FIXTURE}.gguf"));
    let file = Arc::new(GgufFile::open(path).expect("fixture opens"));
    Embedder::load(backend, &file, None).expect("the embedding fixture loads")
}

#[test]
fn input_ids_match_the_reference() {
    let embedder = load(CpuBackend::reference());
    let reference = load_embed_reference();
    for (index, case) in reference.cases.iter().enumerate() {
        let (ids, truncated) = embedder
            .input_ids(index, &case.text, &case.options())
            .expect("ids");
        assert_eq!(ids, case.ids, "{}: ids of {:?}", case.name, case.text);
        assert!(!truncated, "{}", case.name);
        assert_eq!(ids.last(), Some(&reference.end_of_text_id), "{}", case.name);
    }
    // The cases the fixture is there for.
    let case = |name: &str| {
        reference
            .cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"))
    };
    let eot = reference.end_of_text_id;
    assert_eq!(case("doc_empty").ids, [eot]);
    let twice = &case("doc_text_then_end_of_text").ids;
    assert_eq!(twice[twice.len() - 2..], [eot, eot]);
    let colon_d = embedder
        .format()
        .tokenizer()
        .token_to_id(":D")
        .expect(":D is a token");
    assert!(
        case("query_rome_it").ids.contains(&colon_d),
        "the instruction's ':' merges with 'Dove'"
    );
    assert_eq!(
        case("query_password").instruction.as_deref(),
        Some(reference.default_instruction.as_str())
    );
}

#[test]
fn cpu_reference_matches_the_w8a32_vectors() {
    let embedder = load(CpuBackend::reference());
    check_embeddings(
        "cpu reference",
        &embedder,
        Reference::W8A32,
        REFERENCE_BOUNDS,
    );
}

#[test]
fn fast_cpu_path_matches_the_w8a8_vectors_on_every_isa() {
    for isa in Isa::ALL {
        if !isa.is_available() {
            println!("skipped: this CPU does not run the {} kernels", isa.name());
            continue;
        }
        let backend = CpuBackend::with_isa(Precision::Fast, Some(2), isa).expect("available");
        let embedder = load(backend);
        check_embeddings(
            &format!("cpu fast ({})", isa.name()),
            &embedder,
            Reference::W8A8,
            FAST_BOUNDS,
        );
    }
}

#[test]
fn dimensions_keep_the_leading_components_renormalised() {
    let embedder = load(CpuBackend::reference());
    let reference = load_embed_reference();
    let width = embedder.width();
    for (options, cases) in reference.groups() {
        let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
        let full = embedder.embed(&texts, &options).expect("full");
        let short_options = EmbedOptions {
            dimensions: Some(8),
            ..options.clone()
        };
        let short = embedder
            .embed(&texts, &short_options)
            .expect("8 dimensions");
        for ((case, f), s) in cases.iter().zip(&full).zip(&short) {
            assert_eq!(s.values.len(), 8, "{}", case.name);
            assert_eq!(s.tokens, f.tokens, "{}: same tokens billed", case.name);
            let head = to_f64(&f.values[..8]);
            let norm = head.iter().map(|v| v * v).sum::<f64>().sqrt();
            let want: Vec<f64> = head.iter().map(|v| v / norm).collect();
            let got = to_f64(&s.values);
            let diff = max_abs_diff(&got, &want);
            assert!(diff <= 1e-6, "{}: |Δ| {diff:.2e}", case.name);
            let length = got.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(
                (length - 1.0).abs() <= 1e-6,
                "{}: length {length}",
                case.name
            );
        }
        let all = EmbedOptions {
            dimensions: Some(width),
            ..options.clone()
        };
        assert_eq!(embedder.embed(&texts, &all).expect("all"), full);
    }
    for bad in [0, width + 1] {
        let options = EmbedOptions {
            dimensions: Some(bad),
            ..EmbedOptions::default()
        };
        assert!(
            matches!(
                embedder.embed(&["x"], &options),
                Err(EmbedError::Dimensions { requested, max }) if requested == bad && max == width
            ),
            "dimensions {bad} is refused"
        );
    }
}

#[test]
fn outputs_follow_the_inputs_and_do_not_depend_on_the_batch() {
    for backend in [CpuBackend::reference(), CpuBackend::fast()] {
        let label = backend.precision().name();
        let embedder = load(backend);
        let reference = load_embed_reference();
        let mut worst = 0.0f64;
        for (options, cases) in reference.groups() {
            let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
            let together = embedder.embed(&texts, &options).expect("batch");
            let reversed: Vec<&str> = texts.iter().rev().copied().collect();
            let together_reversed = embedder.embed(&reversed, &options).expect("batch");
            for (i, text) in texts.iter().enumerate() {
                let alone = embedder.embed(&[text], &options).expect("alone");
                let alone = to_f64(&alone[0].values);
                for other in [&together[i], &together_reversed[texts.len() - 1 - i]] {
                    let diff = max_abs_diff(&alone, &to_f64(&other.values));
                    worst = worst.max(diff);
                    assert!(
                        diff <= BATCH_TOLERANCE,
                        "{label}: {}: alone and in a batch differ by {diff:.2e}",
                        cases[i].name
                    );
                }
            }
        }
        println!("{label}: alone vs in a batch, max |Δ| {worst:.2e}");
    }
}

#[test]
fn reference_vectors_are_unit_length_and_tell_the_inputs_apart() {
    // Guards the fixture itself: vectors that sat together would let a wrong
    // pooled row or a mixed-up order pass.
    let reference = load_embed_reference();
    assert!(reference.cases.len() >= 10, "too few cases");
    for case in &reference.cases {
        for (variant, v) in [
            ("fp32", &case.fp32),
            ("w8a32", &case.w8a32),
            ("w8a8", &case.w8a8),
        ] {
            let length = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(
                (length - 1.0).abs() <= 1e-6,
                "{} {variant}: length {length}",
                case.name
            );
        }
        // Quantisation moves the vectors, but only a little.
        assert!(cosine(&case.fp32, &case.w8a32) >= 0.999, "{}", case.name);
        assert!(cosine(&case.w8a8, &case.w8a32) >= 0.999, "{}", case.name);
    }
    for (i, a) in reference.cases.iter().enumerate() {
        for b in &reference.cases[..i] {
            let c = cosine(&a.w8a32, &b.w8a32);
            assert!(c <= 0.95, "{} and {}: cosine {c}", a.name, b.name);
        }
    }
}
