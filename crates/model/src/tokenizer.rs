//! The Qwen3 byte-level BPE tokenizer, built from a GGUF's `tokenizer.ggml.*` metadata
//! (so the model file is all a user needs) or loaded from a Hugging Face `tokenizer.json`.
//!
//! Both paths end in the same [`tokenizers::Tokenizer`]; the GGUF path rebuilds exactly
//! what Hugging Face's Qwen2 fast tokenizer does (NFC, the Qwen2 split regex, byte-level
//! BPE, added tokens matched in raw text), so ids agree with the reference tokenizer.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use tessera_gguf::{GgufError, GgufFile};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, ModelWrapper, SplitDelimiterBehavior, Tokenizer};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// The only `tokenizer.ggml.model` handled: llama.cpp's name for byte-level BPE.
const GGUF_MODEL_BYTE_LEVEL_BPE: &str = "gpt2";

/// llama.cpp's `llama_token_type` values, as its converters write `tokenizer.ggml.token_type`.
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
}

/// Qwen2's pre-tokenizer split pattern (shared by Qwen2, 2.5 and 3).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A `tokenizer.ggml.pre` value this crate can rebuild, and how.
struct PreTokenizerKind {
    name: &'static str,
    build: fn() -> tokenizers::Result<PreTokenizerWrapper>,
}

/// Supported `tokenizer.ggml.pre` values; adding a pre-tokenizer is one entry here.
const PRE_TOKENIZERS: &[PreTokenizerKind] = &[PreTokenizerKind {
    name: "qwen2",
    build: qwen2_pre_tokenizer,
}];

fn qwen2_pre_tokenizer() -> tokenizers::Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(QWEN2_PATTERN.to_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )?;
    let byte_level = ByteLevel::new(false, false, false);
    Ok(Sequence::new(vec![split.into(), byte_level.into()]).into())
}

fn supported_pre_tokenizers() -> String {
    let names: Vec<&str> = PRE_TOKENIZERS.iter().map(|kind| kind.name).collect();
    names.join(", ")
}

/// Everything that can go wrong building or using a [`RerankTokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A `tokenizer.ggml.*` key is missing or has the wrong type (the GGUF error names it).
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    #[error(
        "{KEY_MODEL} is {got:?}; only {GGUF_MODEL_BYTE_LEVEL_BPE:?} (byte-level BPE) is supported"
    )]
    UnsupportedModel { got: String },
    #[error("{KEY_PRE} is {got:?}; supported pre-tokenizers: {supported}")]
    UnsupportedPreTokenizer { got: String, supported: String },
    #[error("{KEY_TOKENS} is empty")]
    EmptyVocabulary,
    #[error("{KEY_TOKENS} has {count} entries; token ids must fit in u32")]
    TooManyTokens { count: usize },
    #[error("{KEY_TOKEN_TYPE} has {got} entries but {KEY_TOKENS} has {expected}")]
    TokenTypeLength { expected: usize, got: usize },
    #[error("{KEY_TOKEN_TYPE}[{id}] is {value}, not a type a byte-level BPE vocabulary uses (1 normal, 3 control, 4 user-defined, 5 unused)")]
    UnsupportedTokenType { id: u32, value: i32 },
    #[error("{KEY_TOKENS}: token {token:?} appears at ids {first} and {second}")]
    DuplicateToken {
        token: String,
        first: u32,
        second: u32,
    },
    #[error("{KEY_MERGES}[{index}] is {merge:?}, not two tokens separated by a space")]
    MalformedMerge { index: usize, merge: String },
    #[error("building the BPE model from {KEY_TOKENS} and {KEY_MERGES}: {source}")]
    Bpe {
        #[source]
        source: tokenizers::Error,
    },
    #[error("building the {name:?} pre-tokenizer: {source}")]
    PreTokenizer {
        name: &'static str,
        #[source]
        source: tokenizers::Error,
    },
    #[error("added token {content:?} should have id {expected} but resolves to {got:?}")]
    AddedTokenId {
        content: String,
        expected: u32,
        got: Option<u32>,
    },
    #[error("reading tokenizer file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing tokenizer.json: {source}")]
    ParseJson {
        #[source]
        source: tokenizers::Error,
    },
    #[error("serialising the tokenizer to JSON: {source}")]
    SerializeJson {
        #[source]
        source: tokenizers::Error,
    },
    #[error("encoding text: {source}")]
    Encode {
        #[source]
        source: tokenizers::Error,
    },
    #[error("decoding ids: {source}")]
    Decode {
        #[source]
        source: tokenizers::Error,
    },
    #[error("token id {id} is not in the vocabulary")]
    UnknownId { id: u32 },
}

/// What `tessera inspect` prints about the tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerSummary {
    /// `"gguf"`, or the path of the `tokenizer.json` it was loaded from.
    pub source: String,
    /// Model kind: `"BPE"`, `"WordPiece"`, `"WordLevel"` or `"Unigram"`.
    pub model: String,
    /// The `tokenizer.ggml.pre` name (`"qwen2"`) when recognised, else `"custom"` / `"none"`.
    pub pre_tokenizer: String,
    /// Tokens addressable by id, added tokens included.
    pub vocab_size: usize,
    pub merges: usize,
    pub added_tokens: usize,
    /// Of the added tokens, those marked special (control tokens).
    pub special_tokens: usize,
    /// GGUF `[PAD…]` rows (token type UNUSED) that pad the embedding matrix and never match.
    pub unused_padding: usize,
}

impl fmt::Display for TokenizerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tokenizer from {}, pre-tokenizer {}: {} tokens ({} added, {} special), {} merges",
            self.model,
            self.source,
            self.pre_tokenizer,
            self.vocab_size,
            self.added_tokens,
            self.special_tokens,
            self.merges
        )?;
        if self.unused_padding > 0 {
            write!(f, ", {} unused padding rows", self.unused_padding)?;
        }
        Ok(())
    }
}

/// The reranker's tokenizer: a Hugging Face [`Tokenizer`] plus where it came from.
#[derive(Clone)]
pub struct RerankTokenizer {
    inner: Tokenizer,
    summary: TokenizerSummary,
    /// `inner.get_vocab_size(true)`, which copies the whole vocabulary: once.
    vocab_size: usize,
}

/// A token from the GGUF vocabulary that becomes an added token.
struct GgufAddedToken<'a> {
    id: u32,
    content: &'a str,
    special: bool,
}

impl RerankTokenizer {
    /// Builds the tokenizer from the GGUF's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let model = file.get_str(KEY_MODEL)?;
        if model != GGUF_MODEL_BYTE_LEVEL_BPE {
            return Err(TokenizerError::UnsupportedModel {
                got: model.to_owned(),
            });
        }
        let pre = file.get_str(KEY_PRE)?;
        let pre_kind = PRE_TOKENIZERS
            .iter()
            .find(|kind| kind.name == pre)
            .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer {
                got: pre.to_owned(),
                supported: supported_pre_tokenizers(),
            })?;

        let tokens = file.get_str_array(KEY_TOKENS)?;
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if u32::try_from(tokens.len() - 1).is_err() {
            return Err(TokenizerError::TooManyTokens {
                count: tokens.len(),
            });
        }
        let types = file.get_i32_array(KEY_TOKEN_TYPE)?;
        if types.len() != tokens.len() {
            return Err(TokenizerError::TokenTypeLength {
                expected: tokens.len(),
                got: types.len(),
            });
        }

        // Added tokens go into the BPE vocabulary too, at their GGUF ids: the added
        // vocabulary then takes the id from the model instead of numbering them itself.
        let mut vocab = Vocab::default();
        let mut added = Vec::new();
        let mut unused_padding = 0;
        for ((id, token), &kind) in (0u32..).zip(tokens).zip(&types) {
            let special = match kind {
                token_type::NORMAL => None,
                token_type::CONTROL => Some(true),
                token_type::USER_DEFINED => Some(false),
                token_type::UNUSED => {
                    unused_padding += 1;
                    continue;
                }
                value => return Err(TokenizerError::UnsupportedTokenType { id, value }),
            };
            if let Some(first) = vocab.insert(token.clone(), id) {
                return Err(TokenizerError::DuplicateToken {
                    token: token.clone(),
                    first,
                    second: id,
                });
            }
            if let Some(special) = special {
                added.push(GgufAddedToken {
                    id,
                    content: token,
                    special,
                });
            }
        }

        let merges = file
            .get_str_array(KEY_MERGES)?
            .iter()
            .enumerate()
            .map(|(index, merge)| split_merge(merge).ok_or_else(|| malformed(index, merge)))
            .collect::<Result<Vec<_>, _>>()?;
        let merges_count = merges.len();

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(false)
            .build()
            .map_err(|source| TokenizerError::Bpe { source })?;
        let pre_tokenizer = (pre_kind.build)().map_err(|source| TokenizerError::PreTokenizer {
            name: pre_kind.name,
            source,
        })?;

        let mut inner = Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(NFC))
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_post_processor(Some(ByteLevel::new(false, false, false)))
            .with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        let added_tokens: Vec<AddedToken> = added
            .iter()
            // Matched in the raw text, before NFC, like Hugging Face's Qwen added tokens.
            .map(|token| AddedToken::from(token.content, token.special).normalized(false))
            .collect();
        inner.add_tokens(&added_tokens);
        check_added_ids(&inner, added.iter().map(|token| (token.content, token.id)))?;

        let summary = summarize(&inner, "gguf".to_owned(), merges_count, unused_padding);
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            summary,
            vocab_size,
        })
    }

    /// Loads a Hugging Face `tokenizer.json` (the `--tokenizer` override).
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let mut tokenizer = Self::from_json_bytes(&bytes)?;
        tokenizer.summary.source = path.display().to_string();
        Ok(tokenizer)
    }

    /// Parses a Hugging Face `tokenizer.json` held in memory.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let inner =
            Tokenizer::from_bytes(bytes).map_err(|source| TokenizerError::ParseJson { source })?;
        // The `tokenizers` loader numbers added tokens missing from the model's vocabulary
        // itself and only logs a mismatch; a file whose ids disagree is refused here.
        let outline: TokenizerJsonOutline =
            serde_json::from_slice(bytes).map_err(|err| TokenizerError::ParseJson {
                source: Box::new(err),
            })?;
        check_added_ids(
            &inner,
            outline
                .added_tokens
                .iter()
                .map(|token| (token.content.as_str(), token.id)),
        )?;
        let merges = outline.model.merges.map_or(0, |merges| merges.len());
        let summary = summarize(&inner, "tokenizer.json".to_owned(), merges, 0);
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            summary,
            vocab_size,
        })
    }

    /// Encodes `text` without adding any special tokens; special and added tokens written
    /// inside the text (`<|im_end|>`, `<think>`) are recognised, as Hugging Face and llama.cpp do.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|source| TokenizerError::Encode { source })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids back to text, special tokens included; an id with no token is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(TokenizerError::UnknownId { id });
        }
        self.inner
            .decode(ids, false)
            .map_err(|source| TokenizerError::Decode { source })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens addressable by id, added tokens included (GGUF padding rows excluded).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn summary(&self) -> TokenizerSummary {
        self.summary.clone()
    }

    /// Serialises to a Hugging Face `tokenizer.json` that [`Self::from_json_bytes`] reads back.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner
            .to_string(false)
            .map_err(|source| TokenizerError::SerializeJson { source })
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

impl fmt::Debug for RerankTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RerankTokenizer")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// Splits a GGUF merge `"a b"` into its two tokens. Byte-level tokens encode a space
/// as `Ġ`, so the separator is the only literal space; the search starts after the
/// first character as llama.cpp's does.
fn split_merge(merge: &str) -> Option<(String, String)> {
    let first_len = merge.chars().next()?.len_utf8();
    let at = first_len + merge[first_len..].find(' ')?;
    let (left, right) = (&merge[..at], &merge[at + 1..]);
    (!right.is_empty()).then(|| (left.to_owned(), right.to_owned()))
}

fn malformed(index: usize, merge: &str) -> TokenizerError {
    TokenizerError::MalformedMerge {
        index,
        merge: merge.to_owned(),
    }
}

fn check_added_ids<'a>(
    tokenizer: &Tokenizer,
    expected: impl IntoIterator<Item = (&'a str, u32)>,
) -> Result<(), TokenizerError> {
    for (content, id) in expected {
        let got = tokenizer.token_to_id(content);
        if got != Some(id) {
            return Err(TokenizerError::AddedTokenId {
                content: content.to_owned(),
                expected: id,
                got,
            });
        }
    }
    Ok(())
}

fn summarize(
    tokenizer: &Tokenizer,
    source: String,
    merges: usize,
    unused_padding: usize,
) -> TokenizerSummary {
    let model = match tokenizer.get_model() {
        ModelWrapper::BPE(_) => "BPE",
        ModelWrapper::WordPiece(_) => "WordPiece",
        ModelWrapper::WordLevel(_) => "WordLevel",
        ModelWrapper::Unigram(_) => "Unigram",
    };
    let pre_tokenizer = match tokenizer.get_pre_tokenizer() {
        None => "none",
        Some(pre) => PRE_TOKENIZERS
            .iter()
            .find(|kind| (kind.build)().is_ok_and(|known| &known == pre))
            .map_or("custom", |kind| kind.name),
    };
    let added = tokenizer.get_added_tokens_decoder();
    TokenizerSummary {
        source,
        model: model.to_owned(),
        pre_tokenizer: pre_tokenizer.to_owned(),
        vocab_size: tokenizer.get_vocab_size(true),
        merges,
        added_tokens: added.len(),
        special_tokens: added.values().filter(|token| token.special).count(),
        unused_padding,
    }
}

/// The parts of a `tokenizer.json` read beside the `tokenizers` loader.
#[derive(Deserialize)]
struct TokenizerJsonOutline {
    #[serde(default)]
    added_tokens: Vec<AddedTokenEntry>,
    model: ModelOutline,
}

#[derive(Deserialize)]
struct AddedTokenEntry {
    id: u32,
    content: String,
}

#[derive(Deserialize)]
struct ModelOutline {
    #[serde(default)]
    merges: Option<Vec<IgnoredAny>>,
}

#[cfg(test)]
mod tests {
    use super::split_merge;

    fn pair(left: &str, right: &str) -> Option<(String, String)> {
        Some((left.to_owned(), right.to_owned()))
    }

    #[test]
    fn merges_split_at_the_first_space_after_the_first_character() {
        assert_eq!(split_merge("Ġ t"), pair("Ġ", "t"));
        assert_eq!(split_merge("Ġt he"), pair("Ġt", "he"));
        assert_eq!(split_merge("é e"), pair("é", "e"));
        assert_eq!(split_merge("  x"), pair(" ", "x"));
        assert_eq!(split_merge("a b c"), pair("a", "b c"));
    }

    #[test]
    fn merges_without_two_parts_are_refused() {
        assert_eq!(split_merge(""), None);
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge("a "), None);
        assert_eq!(split_merge(" "), None);
    }
}
