//! The embedding front door on a tiny Qwen3 embedding model (the tiny reranker
//! fixture rewritten as llama.cpp's converter writes an embedding model:
//! `pooling_type` last, no `cls.output.weight`): unit vectors, the end-of-text
//! token appended, the query instruction in the official format, `dimensions`
//! as the renormalised prefix, truncation, and a reranker refused.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_engine::{normalise, EmbedError, EmbedInput, EmbedOptions, Embedder, LoadError};
use tessera_gguf::{GgufFile, GgufWriter, MetaValue};
use tessera_model::TruncationSide;
use tessera_tests::fixture;

/// The tiny reranker fixture as an embedding model.
fn embedding_model() -> Arc<GgufFile> {
    let source = GgufFile::open(fixture("tiny-q8.gguf")).expect("fixture");
    let mut writer = GgufWriter::new();
    for (key, value) in source.metadata() {
        match key.as_str() {
            "qwen3.pooling_type" => writer.add_metadata(key.clone(), MetaValue::U32(3)),
            "qwen3.classifier.output_labels" => {}
            _ => writer.add_metadata(key.clone(), value.clone()),
        }
    }
    for tensor in source.tensors() {
        if tensor.name != "cls.output.weight" {
            writer
                .add_tensor(
                    tensor.name.clone(),
                    tensor.dims.clone(),
                    tensor.ggml_type,
                    source.tensor_data(tensor).to_vec(),
                )
                .expect("tensor");
        }
    }
    let mut bytes = Vec::new();
    writer.write_to(&mut bytes).expect("written");
    Arc::new(GgufFile::from_bytes(bytes).expect("reads back"))
}

fn norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn embeddings_are_unit_vectors_of_the_last_token_with_instructions_and_dimensions() {
    let file = embedding_model();
    let embedder = Embedder::load(CpuBackend::reference(), &file, None).expect("loads");
    let texts = ["how do I reset my password", "Office hours are 9 to 18."];
    let plain = embedder
        .embed(&texts, &EmbedOptions::default())
        .expect("embeds");
    let width = embedder.width();
    for e in &plain {
        assert_eq!(e.values.len(), width);
        assert!((norm(&e.values) - 1.0).abs() < 1e-6);
        assert!(!e.truncated);
    }

    // The vector is the engine's pooled hidden state of the text's tokens plus
    // the end-of-text token, normalised.
    let (ids, _) = embedder
        .input_ids(0, texts[0], &EmbedOptions::default())
        .expect("ids");
    assert_eq!(plain[0].tokens, ids.len());
    let mut pooled = embedder.engine().embed(&[&ids]).expect("pooled").remove(0);
    normalise(&mut pooled);
    assert_eq!(pooled, plain[0].values);

    // A query instruction changes the input as the official recipe writes it.
    let instructed = EmbedOptions {
        instruction: Some("Given a web search query, retrieve relevant passages".into()),
        ..EmbedOptions::default()
    };
    let (with_task, _) = embedder.input_ids(0, texts[0], &instructed).expect("ids");
    let (spelled, _) = embedder
        .input_ids(
            0,
            "Instruct: Given a web search query, retrieve relevant passages\nQuery:how do I reset my password",
            &EmbedOptions::default(),
        )
        .expect("ids");
    assert_eq!(with_task, spelled);
    let query = embedder.embed(&texts[..1], &instructed).expect("embeds");
    assert_ne!(query[0].values, plain[0].values);

    // `dimensions`: the first N components, normalised again.
    let short = embedder
        .embed(
            &texts,
            &EmbedOptions {
                dimensions: Some(8),
                ..EmbedOptions::default()
            },
        )
        .expect("embeds");
    for (s, full) in short.iter().zip(&plain) {
        let mut prefix = full.values[..8].to_vec();
        normalise(&mut prefix);
        assert_eq!(s.values.len(), 8);
        for (a, b) in s.values.iter().zip(&prefix) {
            assert!((a - b).abs() < 1e-6);
        }
    }
    let too_wide = EmbedOptions {
        dimensions: Some(width + 1),
        ..EmbedOptions::default()
    };
    assert!(matches!(
        embedder.embed(&texts, &too_wide),
        Err(EmbedError::Dimensions { .. })
    ));

    // Longer than the context: cut (keeping the end-of-text token) or refused.
    let long: String = (0..9000).map(|i| format!("w{} ", i % 97)).collect();
    let cut = embedder
        .embed(&[long.as_str()], &EmbedOptions::default())
        .expect("truncated");
    assert!(cut[0].truncated);
    assert_eq!(cut[0].tokens, 8192);
    let refuse = EmbedOptions {
        truncation: None,
        ..EmbedOptions::default()
    };
    assert!(matches!(
        embedder.embed(&[long.as_str()], &refuse),
        Err(EmbedError::TooLong { index: 0, .. })
    ));
    let left = EmbedOptions {
        truncation: Some(TruncationSide::Left),
        ..EmbedOptions::default()
    };
    let (kept, truncated) = embedder.input_ids(0, &long, &left).expect("ids");
    assert!(truncated && kept.len() == 8192);
}

#[test]
fn a_reranker_is_not_loaded_as_an_embedding_model() {
    let file = Arc::new(GgufFile::open(fixture("tiny-q8.gguf")).expect("fixture"));
    match Embedder::load(CpuBackend::reference(), &file, None) {
        Err(LoadError::NotEmbedding { pooling }) => assert_eq!(pooling, "rank"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a reranker loaded as an embedding model"),
    }
}

/// Instructed queries share the instruction's tokens as a prefix computed once
/// — only as far as every query's own tokens agree with them: in Italian the
/// prompt's final `:` merges with the query's first letter (`:D`), so the
/// shared part stops before it. The vectors equal those of the whole sequences.
#[test]
fn instructed_queries_share_only_their_common_token_prefix() {
    let file = embedding_model();
    let embedder = Embedder::load(CpuBackend::reference(), &file, None).expect("loads");
    let task = "Given a web search query, retrieve relevant passages that answer the query";
    let options = EmbedOptions {
        instruction: Some(task.into()),
        ..EmbedOptions::default()
    };
    let format = embedder.format();
    let prompt = format
        .tokenizer()
        .encode(&format!("Instruct: {task}\nQuery:"))
        .expect("prompt ids");
    let english = format
        .prepare(&[EmbedInput::Text("how do I reset my password")], &options)
        .expect("prepared");
    assert_eq!(english.shared, prompt.len(), "the whole prompt is shared");
    let queries = ["how do I reset my password", "Dove si trova Roma?"];
    let inputs: Vec<EmbedInput<'_>> = queries.iter().map(|q| EmbedInput::Text(q)).collect();
    let mixed = format.prepare(&inputs, &options).expect("prepared");
    let colon_d = format.tokenizer().token_to_id(":D").expect("a `:D` token");
    assert!(
        mixed.sequences[1].contains(&colon_d),
        "{:?}",
        mixed.sequences[1]
    );
    assert_eq!(
        mixed.shared,
        prompt.len() - 1,
        "the merged `:` is not shared"
    );
    let request = mixed.packed_request();
    assert_eq!(request.prefix, prompt[..prompt.len() - 1]);
    for (document, whole) in request.documents.iter().zip(&mixed.sequences) {
        assert_eq!([&request.prefix[..], document].concat(), *whole);
    }

    let shared = embedder.embed(&queries, &options).expect("embeds");
    let sequences: Vec<&[u32]> = mixed.sequences.iter().map(Vec::as_slice).collect();
    let whole = embedder.engine().embed(&sequences).expect("whole");
    for (s, mut w) in shared.iter().zip(whole) {
        normalise(&mut w);
        let cosine: f64 = s
            .values
            .iter()
            .zip(&w)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        assert!(cosine >= 0.999_999, "cosine {cosine}");
        for (a, b) in s.values.iter().zip(&w) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

/// A query longer than the context is cut, never its instruction: cut on the
/// left it keeps the prompt at its head and the end of its text; an
/// instruction that alone fills the context is refused.
#[test]
fn a_cut_query_keeps_its_instruction() {
    let file = embedding_model();
    let embedder = Embedder::load(CpuBackend::reference(), &file, None).expect("loads");
    let format = embedder.format();
    let task = "Given a web search query, retrieve relevant passages that answer the query";
    let prompt = format
        .tokenizer()
        .encode(&format!("Instruct: {task}\nQuery:"))
        .expect("prompt ids");
    let long: String = (0..9000).map(|i| format!(" w{}", i % 97)).collect();
    let whole = format
        .tokenizer()
        .encode(&format!("Instruct: {task}\nQuery:{long}"))
        .expect("whole ids");
    for side in [TruncationSide::Left, TruncationSide::Right] {
        let options = EmbedOptions {
            instruction: Some(task.into()),
            truncation: Some(side),
            ..EmbedOptions::default()
        };
        let (ids, truncated) = format
            .input_ids(0, EmbedInput::Text(&long), &options)
            .expect("cut");
        assert!(truncated);
        assert_eq!(ids.len(), format.max_tokens());
        assert_eq!(ids[..prompt.len()], prompt[..], "{side:?} keeps the prompt");
        let kept = &ids[..ids.len() - 1];
        match side {
            // The end of the text, after the prompt.
            TruncationSide::Left => assert_eq!(
                kept[prompt.len()..],
                whole[whole.len() - (kept.len() - prompt.len())..]
            ),
            TruncationSide::Right => assert_eq!(kept, &whole[..kept.len()]),
        }
    }
    let huge: String = "word ".repeat(9000);
    let options = EmbedOptions {
        instruction: Some(huge),
        ..EmbedOptions::default()
    };
    assert!(matches!(
        format.input_ids(0, EmbedInput::Text("q"), &options),
        Err(EmbedError::InstructionTooLong { .. })
    ));
}
