//! The engine's embed pass: each sequence's last-token hidden state after the
//! final norm (what an embedding model pools). On a reranker fixture its dot
//! products with the score head's yes/no rows are the score pass's logits, it
//! does not depend on what else is in the batch, and the fast CPU path agrees
//! with the reference.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_engine::{Engine, RerankOptions};
use tessera_gguf::{BlockQ8_0, GgmlType, GgufFile, QK8_0};
use tessera_model::{PromptBuilder, RerankTokenizer, Weights};
use tessera_tests::{fixture, load_reference};

/// Row `row` of a Q8_0 or F32 tensor as f32 values.
fn tensor_row(tensor: &tessera_gguf::HostTensor, row: usize) -> Vec<f32> {
    let cols = tensor.cols;
    match tensor.ggml_type {
        GgmlType::Q8_0 => {
            let per_row = cols / QK8_0;
            (0..per_row)
                .flat_map(|b| {
                    let block = BlockQ8_0::read(tensor.bytes(), row * per_row + b).expect("block");
                    let d = block.d.to_f32();
                    block.qs.map(|q| f32::from(q) * d)
                })
                .collect()
        }
        GgmlType::F32 => tensor.bytes()[row * cols * 4..(row + 1) * cols * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => panic!("the fixture's head is {other:?}"),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

#[test]
fn embeddings_reproduce_the_score_head_and_do_not_depend_on_the_batch() {
    let file = Arc::new(GgufFile::open(fixture("tiny-q8.gguf")).expect("fixture"));
    let tokenizer = RerankTokenizer::from_gguf(&file).expect("tokenizer");
    let yes_no = [
        tokenizer.token_to_id("yes").expect("yes"),
        tokenizer.token_to_id("no").expect("no"),
    ];
    let weights = Weights::load(&file, yes_no).expect("weights");
    let prompt = PromptBuilder::new(Arc::new(tokenizer), 8192).expect("prompt");
    let case = &load_reference("tiny-q8").cases[0];
    let pairs: Vec<Vec<u32>> = case
        .documents
        .iter()
        .map(|doc| {
            prompt
                .build(None, &case.query, doc, RerankOptions::default().truncation)
                .expect("pair")
                .ids
        })
        .collect();
    let sequences: Vec<&[u32]> = pairs.iter().map(Vec::as_slice).collect();

    let engine = Engine::new(CpuBackend::reference(), &weights).expect("engine");
    let embeddings = engine.embed(&sequences).expect("embed");
    let scores = engine.score(&sequences).expect("score");
    assert_eq!(embeddings.len(), sequences.len());
    let head = weights.score_head.as_ref().expect("a reranker has a head");
    let (yes, no) = (
        tensor_row(&head.tensor, head.rows[0]),
        tensor_row(&head.tensor, head.rows[1]),
    );
    for (i, (e, s)) in embeddings.iter().zip(&scores).enumerate() {
        assert_eq!(e.len(), weights.config.hidden);
        for (got, want) in [(dot(e, &yes), s.yes_logit), (dot(e, &no), s.no_logit)] {
            let want = f64::from(want);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "sequence {i}: head · embedding {got} against the score pass's {want}"
            );
        }
    }

    // One at a time, the same bits as in the batch.
    for (i, sequence) in sequences.iter().enumerate() {
        let alone = engine.embed(&[sequence]).expect("embed");
        assert_eq!(alone[0], embeddings[i], "sequence {i}");
    }

    // The fast path (int8 activations) points the same way.
    let fast = Engine::new(CpuBackend::fast(), &weights).expect("engine");
    for (a, b) in fast
        .embed(&sequences)
        .expect("embed")
        .iter()
        .zip(&embeddings)
    {
        let cosine = dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt());
        assert!(cosine > 0.999, "cosine {cosine}");
    }
    assert!(engine.embed(&[]).expect("nothing").is_empty());
    assert!(
        engine.embed(&[&[]]).is_err(),
        "an empty sequence is refused"
    );
}
