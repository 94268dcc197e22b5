//! Where the score head comes from: cls.output.weight (either label order),
//! output.weight, or the tied embedding — all must give the same scores when
//! they hold the same rows.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::{GgufFile, GgufWriter, MetaArray, MetaValue};
use tessera_model::ScoreHeadSource;
use tessera_tests::fixture;

fn open(stem: &str) -> Arc<GgufFile> {
    Arc::new(GgufFile::open(fixture(&format!("{stem}.gguf"))).expect("fixture opens"))
}

/// Copies a GGUF, letting `edit` drop or replace metadata and tensors.
fn rewrite(
    file: &GgufFile,
    keep_key: impl Fn(&str) -> bool,
    tensor: impl Fn(&str, &[u8]) -> Option<Vec<u8>>,
    extra: Vec<(String, MetaValue)>,
) -> Arc<GgufFile> {
    let mut w = GgufWriter::new();
    if file.alignment() != 32 {
        w.set_alignment(file.alignment());
    }
    for (key, value) in file.metadata() {
        if keep_key(key) && key != "general.alignment" {
            w.add_metadata(key.clone(), value.clone());
        }
    }
    for (key, value) in extra {
        w.add_metadata(key, value);
    }
    for info in file.tensors() {
        if let Some(data) = tensor(&info.name, file.tensor_data(info)) {
            w.add_tensor(info.name.clone(), info.dims.clone(), info.ggml_type, data)
                .expect("same tensor");
        }
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).expect("in memory");
    Arc::new(GgufFile::from_bytes(bytes).expect("rewritten file parses"))
}

fn scores(file: &Arc<GgufFile>) -> (ScoreHeadSource, Vec<f32>) {
    let reranker = Reranker::load(CpuBackend::new(), file, None).expect("loads");
    let source = tessera_model::Weights::load(file, [9693, 2152])
        .expect("weights")
        .score_head
        .expect("a reranker has a head")
        .source;
    let docs = [
        "To reset your password, click forgot password on the login screen.",
        "Our office hours are Monday to Friday, 9 to 18.",
        "Password requirements: 12+ characters, one number, one symbol.",
    ];
    let out = reranker
        .rerank(
            "how do I reset my password",
            &docs,
            &RerankOptions::default(),
        )
        .expect("rerank");
    (source, out.documents.iter().map(|d| d.relevance).collect())
}

#[test]
fn fixtures_resolve_the_expected_head() {
    assert_eq!(scores(&open("tiny-q8")).0, ScoreHeadSource::ClsOutput);
    assert_eq!(scores(&open("tiny-f32")).0, ScoreHeadSource::ClsOutput);
    assert_eq!(scores(&open("tiny-q8-untied")).0, ScoreHeadSource::Output);
}

#[test]
fn tied_embedding_head_equals_the_cls_head_it_was_taken_from() {
    let file = open("tiny-q8");
    let (_, with_cls) = scores(&file);
    let without = rewrite(
        &file,
        |k| k != "qwen3.classifier.output_labels",
        |name, data| (name != "cls.output.weight").then(|| data.to_vec()),
        vec![],
    );
    let (source, tied) = scores(&without);
    assert_eq!(source, ScoreHeadSource::TiedEmbedding);
    assert_eq!(with_cls, tied);
}

#[test]
fn output_labels_order_the_cls_rows() {
    let file = open("tiny-q8");
    let (_, original) = scores(&file);
    // Swap the two rows and say so in the labels: same scores.
    let swapped = rewrite(
        &file,
        |k| k != "qwen3.classifier.output_labels",
        |name, data| {
            Some(if name == "cls.output.weight" {
                let half = data.len() / 2;
                [&data[half..], &data[..half]].concat()
            } else {
                data.to_vec()
            })
        },
        vec![(
            "qwen3.classifier.output_labels".into(),
            MetaValue::Array(MetaArray::String(vec!["no".into(), "yes".into()])),
        )],
    );
    assert_eq!(scores(&swapped).1, original);
    // Swapped rows with the original labels flip every score.
    let wrong = rewrite(
        &file,
        |_| true,
        |name, data| {
            Some(if name == "cls.output.weight" {
                let half = data.len() / 2;
                [&data[half..], &data[..half]].concat()
            } else {
                data.to_vec()
            })
        },
        vec![],
    );
    for (a, b) in scores(&wrong).1.iter().zip(&original) {
        assert!((a + b - 1.0).abs() < 1e-5, "{a} should be 1 − {b}");
    }
}

#[test]
fn a_label_list_without_yes_is_an_error() {
    let file = open("tiny-q8");
    let bad = rewrite(
        &file,
        |k| k != "qwen3.classifier.output_labels",
        |_, data| Some(data.to_vec()),
        vec![(
            "qwen3.classifier.output_labels".into(),
            MetaValue::Array(MetaArray::String(vec!["relevant".into(), "no".into()])),
        )],
    );
    let err = tessera_model::Weights::load(&bad, [9693, 2152]).expect_err("must fail");
    assert!(err.to_string().contains("yes"), "{err}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let file = open("tiny-q8");
    let missing = rewrite(
        &file,
        |_| true,
        |n, d| (n != "blk.1.ffn_up.weight").then(|| d.to_vec()),
        vec![],
    );
    let err = tessera_model::Weights::load(&missing, [9693, 2152]).expect_err("must fail");
    assert!(err.to_string().contains("blk.1.ffn_up.weight"), "{err}");

    let wrong_arch = rewrite(
        &file,
        |k| k != "general.architecture",
        |_, d| Some(d.to_vec()),
        vec![(
            "general.architecture".into(),
            MetaValue::String("llama".into()),
        )],
    );
    let err = tessera_model::Weights::load(&wrong_arch, [9693, 2152]).expect_err("must fail");
    assert!(err.to_string().contains("llama"), "{err}");
}
