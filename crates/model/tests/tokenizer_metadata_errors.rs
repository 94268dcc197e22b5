//! Corrupt `tokenizer.ggml.*` metadata is an error naming the key, never a panic: each
//! case copies the fixture GGUF's metadata into an in-memory file with one change.

use std::sync::OnceLock;

use tessera_gguf::{GgufError, GgufFile, GgufWriter, MetaArray, MetaValue};
use tessera_model::{RerankTokenizer, TokenizerError};

fn fixture_metadata() -> &'static [(String, MetaValue)] {
    static METADATA: OnceLock<Vec<(String, MetaValue)>> = OnceLock::new();
    METADATA.get_or_init(|| {
        let path = tessera_fixtures::path("tiny-q8.gguf");
        let file =
            GgufFile::open(&path).unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()));
        file.metadata()
            .iter()
            .filter(|(key, _)| key.starts_with("tokenizer.ggml."))
            .cloned()
            .collect()
    })
}

/// Builds the tokenizer from the fixture's tokenizer metadata after `edit`.
fn build_edited(
    edit: impl FnOnce(&mut Vec<(String, MetaValue)>),
) -> Result<RerankTokenizer, TokenizerError> {
    let mut metadata = fixture_metadata().to_vec();
    edit(&mut metadata);
    let mut writer = GgufWriter::new();
    for (key, value) in metadata {
        writer.add_metadata(key, value);
    }
    let file =
        GgufFile::from_bytes(writer.to_bytes().expect("write GGUF")).expect("read GGUF back");
    RerankTokenizer::from_gguf(&file)
}

fn value_mut<'a>(metadata: &'a mut [(String, MetaValue)], key: &str) -> &'a mut MetaValue {
    metadata
        .iter_mut()
        .find(|(k, _)| k == key)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("fixture has no {key}"))
}

fn remove(metadata: &mut Vec<(String, MetaValue)>, key: &str) {
    let before = metadata.len();
    metadata.retain(|(k, _)| k != key);
    assert_eq!(metadata.len(), before - 1, "fixture has no {key}");
}

fn assert_names(err: &TokenizerError, needles: &[&str]) {
    let message = err.to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "{message:?} does not name {needle:?}"
        );
    }
}

#[test]
fn unedited_metadata_builds() {
    let tokenizer = build_edited(|_| {}).expect("fixture metadata builds");
    assert_eq!(tokenizer.encode("yes").unwrap(), [9693]);
}

#[test]
fn missing_tokens_names_the_key() {
    let err = build_edited(|m| remove(m, "tokenizer.ggml.tokens")).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::Metadata(GgufError::MissingKey { key }) if key == "tokenizer.ggml.tokens"),
        "{err}"
    );
    assert_names(&err, &["tokenizer.ggml.tokens"]);
}

#[test]
fn missing_merges_names_the_key() {
    let err = build_edited(|m| remove(m, "tokenizer.ggml.merges")).unwrap_err();
    assert_names(&err, &["tokenizer.ggml.merges"]);
}

#[test]
fn token_type_length_mismatch_names_both_lengths() {
    let err = build_edited(|m| {
        let MetaValue::Array(MetaArray::I32(types)) = value_mut(m, "tokenizer.ggml.token_type")
        else {
            panic!("token_type is not an i32 array");
        };
        types.pop();
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::TokenTypeLength {
                expected: 151_936,
                got: 151_935
            }
        ),
        "{err}"
    );
    assert_names(&err, &["tokenizer.ggml.token_type", "151935", "151936"]);
}

#[test]
fn unknown_pre_tokenizer_names_the_value() {
    let err = build_edited(|m| {
        *value_mut(m, "tokenizer.ggml.pre") = MetaValue::String("llama-bpe".into());
    })
    .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnsupportedPreTokenizer { got, .. } if got == "llama-bpe"),
        "{err}"
    );
    assert_names(&err, &["tokenizer.ggml.pre", "llama-bpe", "qwen2"]);
}

#[test]
fn model_other_than_gpt2_names_the_value() {
    let err = build_edited(|m| {
        *value_mut(m, "tokenizer.ggml.model") = MetaValue::String("llama".into());
    })
    .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnsupportedModel { got } if got == "llama"),
        "{err}"
    );
    assert_names(&err, &["tokenizer.ggml.model", "\"llama\"", "gpt2"]);
}

#[test]
fn tokens_of_the_wrong_type_name_the_key() {
    let err = build_edited(|m| {
        *value_mut(m, "tokenizer.ggml.tokens") = MetaValue::Array(MetaArray::U32(vec![1, 2, 3]));
    })
    .unwrap_err();
    assert!(
        matches!(err, TokenizerError::Metadata(GgufError::WrongType { .. })),
        "{err}"
    );
    assert_names(&err, &["tokenizer.ggml.tokens"]);
}

#[test]
fn unknown_token_type_names_the_id() {
    let err = build_edited(|m| {
        let MetaValue::Array(MetaArray::I32(types)) = value_mut(m, "tokenizer.ggml.token_type")
        else {
            panic!("token_type is not an i32 array");
        };
        types[7] = 9;
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::UnsupportedTokenType { id: 7, value: 9 }
        ),
        "{err}"
    );
}

#[test]
fn malformed_merge_names_its_index() {
    let err = build_edited(|m| {
        let MetaValue::Array(MetaArray::String(merges)) = value_mut(m, "tokenizer.ggml.merges")
        else {
            panic!("merges is not a string array");
        };
        merges[3] = "nospace".into();
    })
    .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::MalformedMerge { index: 3, merge } if merge == "nospace"),
        "{err}"
    );
    assert_names(&err, &["tokenizer.ggml.merges[3]"]);
}

#[test]
fn merge_of_unknown_tokens_is_an_error() {
    let err = build_edited(|m| {
        let MetaValue::Array(MetaArray::String(merges)) = value_mut(m, "tokenizer.ggml.merges")
        else {
            panic!("merges is not a string array");
        };
        merges[0] = "Ġno-such-token x".into();
    })
    .unwrap_err();
    assert!(matches!(err, TokenizerError::Bpe { .. }), "{err}");
    assert_names(&err, &["tokenizer.ggml.merges", "no-such-token"]);
}

#[test]
fn duplicate_token_names_both_ids() {
    let err = build_edited(|m| {
        let MetaValue::Array(MetaArray::String(tokens)) = value_mut(m, "tokenizer.ggml.tokens")
        else {
            panic!("tokens is not a string array");
        };
        tokens[100] = tokens[99].clone();
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::DuplicateToken {
                first: 99,
                second: 100,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn empty_vocabulary_is_an_error() {
    let err = build_edited(|m| {
        *value_mut(m, "tokenizer.ggml.tokens") = MetaValue::Array(MetaArray::String(Vec::new()));
    })
    .unwrap_err();
    assert!(matches!(err, TokenizerError::EmptyVocabulary), "{err}");
}
