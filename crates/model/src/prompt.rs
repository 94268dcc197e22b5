//! The Qwen3-Reranker prompt as token ids: system prefix, the query's
//! `<Instruct>/<Query>/<Document>:` block, the document, and the assistant suffix.
//!
//! The official recipe tokenizes `PREFIX`, the body
//! `"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"` and `SUFFIX`
//! separately and concatenates the ids. The Qwen2 pre-tokenizer always splits between
//! the `:` after `<Document>` and the space that follows, so the body's ids are those of
//! the text up to `<Document>:` followed by those of `" " + doc`. That makes everything
//! up to `<Document>:` one token prefix shared by every document of a query, which the
//! prefix cache computes once; a property test holds the equivalence.

use std::sync::Arc;

use crate::tokenizer::{RerankTokenizer, TokenizerError};

pub const DEFAULT_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";
pub const SYSTEM_PREFIX: &str = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
pub const ASSISTANT_SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
/// The model's context length; a pair (prefix, document, suffix) never exceeds it.
pub const DEFAULT_MAX_PAIR_TOKENS: usize = 8192;

/// Which end of a too-long document is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TruncationSide {
    /// Keep the head, drop the tail.
    #[default]
    Right,
    /// Keep the tail, drop the head.
    Left,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("the pair limit of {max_pair_tokens} tokens leaves no room for a document: the system prompt and assistant suffix alone take {fixed_tokens} tokens")]
    LimitTooSmall {
        fixed_tokens: usize,
        max_pair_tokens: usize,
    },
    #[error("the query (with instruction and prompt) takes {prefix_tokens} tokens, which with the assistant suffix leaves no room for a document within the {max_pair_tokens}-token limit per pair")]
    QueryTooLong {
        prefix_tokens: usize,
        max_pair_tokens: usize,
    },
    #[error(
        "the document is {doc_tokens} tokens long but only {room} tokens fit beside the query"
    )]
    DocumentTooLong { doc_tokens: usize, room: usize },
}

/// One (query, document) prompt as token ids: `prefix ++ document ++ suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairTokens {
    /// The full sequence: prefix ++ document ++ suffix.
    pub ids: Vec<u32>,
    /// System prompt plus `<Instruct>: ..\n<Query>: ..\n<Document>:`, identical for every
    /// document of one query.
    pub prefix_len: usize,
    /// Document tokens kept.
    pub doc_len: usize,
    /// Document tokens dropped by truncation (0 unless truncated).
    pub doc_tokens_dropped: usize,
}

impl PairTokens {
    pub fn truncated(&self) -> bool {
        self.doc_tokens_dropped > 0
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn doc_ids(&self) -> &[u32] {
        &self.ids[self.prefix_len..self.prefix_len + self.doc_len]
    }
}

/// Builds reranker prompts; the fixed system prompt and suffix are encoded once.
#[derive(Clone, Debug)]
pub struct PromptBuilder {
    tokenizer: Arc<RerankTokenizer>,
    system_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    max_pair_tokens: usize,
}

impl PromptBuilder {
    pub fn new(
        tokenizer: Arc<RerankTokenizer>,
        max_pair_tokens: usize,
    ) -> Result<Self, PromptError> {
        let system_ids = tokenizer.encode(SYSTEM_PREFIX)?;
        let suffix_ids = tokenizer.encode(ASSISTANT_SUFFIX)?;
        let fixed_tokens = system_ids.len() + suffix_ids.len();
        if fixed_tokens >= max_pair_tokens {
            return Err(PromptError::LimitTooSmall {
                fixed_tokens,
                max_pair_tokens,
            });
        }
        Ok(Self {
            tokenizer,
            system_ids,
            suffix_ids,
            max_pair_tokens,
        })
    }

    pub fn tokenizer(&self) -> &RerankTokenizer {
        &self.tokenizer
    }

    pub fn max_pair_tokens(&self) -> usize {
        self.max_pair_tokens
    }

    /// The system prompt's tokens: the start of every query prefix.
    pub fn system_ids(&self) -> &[u32] {
        &self.system_ids
    }

    pub fn suffix_ids(&self) -> &[u32] {
        &self.suffix_ids
    }

    /// `encode(SYSTEM_PREFIX) ++ encode("<Instruct>: {instruction}\n<Query>: {query}\n<Document>:")`,
    /// the tokens shared by every document of one query (`None` ⇒ [`DEFAULT_INSTRUCTION`]).
    /// Errors when prefix and suffix leave no room for a single document token.
    pub fn query_prefix(
        &self,
        instruction: Option<&str>,
        query: &str,
    ) -> Result<Vec<u32>, PromptError> {
        let instruction = instruction.unwrap_or(DEFAULT_INSTRUCTION);
        let body = format!("<Instruct>: {instruction}\n<Query>: {query}\n<Document>:");
        let body_ids = self.tokenizer.encode(&body)?;
        let mut prefix = Vec::with_capacity(self.system_ids.len() + body_ids.len());
        prefix.extend_from_slice(&self.system_ids);
        prefix.extend_from_slice(&body_ids);
        self.room_for_document(prefix.len())?;
        Ok(prefix)
    }

    /// `encode(" " + doc)`: the document as it follows `<Document>:`.
    pub fn document_ids(&self, doc: &str) -> Result<Vec<u32>, PromptError> {
        Ok(self.tokenizer.encode(&format!(" {doc}"))?)
    }

    /// `prefix ++ doc ++ suffix`. A document longer than the room left
    /// (`max_pair_tokens − prefix − suffix`) is cut on `truncation`'s side, or with
    /// `truncation = None` refused with [`PromptError::DocumentTooLong`].
    pub fn pair(
        &self,
        prefix: &[u32],
        doc_ids: &[u32],
        truncation: Option<TruncationSide>,
    ) -> Result<PairTokens, PromptError> {
        let room = self.room_for_document(prefix.len())?;
        let kept = if doc_ids.len() <= room {
            doc_ids
        } else {
            match truncation {
                None => {
                    return Err(PromptError::DocumentTooLong {
                        doc_tokens: doc_ids.len(),
                        room,
                    })
                }
                Some(TruncationSide::Right) => &doc_ids[..room],
                Some(TruncationSide::Left) => &doc_ids[doc_ids.len() - room..],
            }
        };
        let mut ids = Vec::with_capacity(prefix.len() + kept.len() + self.suffix_ids.len());
        ids.extend_from_slice(prefix);
        ids.extend_from_slice(kept);
        ids.extend_from_slice(&self.suffix_ids);
        Ok(PairTokens {
            ids,
            prefix_len: prefix.len(),
            doc_len: kept.len(),
            doc_tokens_dropped: doc_ids.len() - kept.len(),
        })
    }

    /// [`Self::query_prefix`], [`Self::document_ids`] and [`Self::pair`] in one call.
    pub fn build(
        &self,
        instruction: Option<&str>,
        query: &str,
        doc: &str,
        truncation: Option<TruncationSide>,
    ) -> Result<PairTokens, PromptError> {
        let prefix = self.query_prefix(instruction, query)?;
        let doc_ids = self.document_ids(doc)?;
        self.pair(&prefix, &doc_ids, truncation)
    }

    /// Document tokens that fit beside a prefix of `prefix_len` tokens; at least one.
    fn room_for_document(&self, prefix_len: usize) -> Result<usize, PromptError> {
        self.max_pair_tokens
            .checked_sub(prefix_len + self.suffix_ids.len())
            .filter(|&room| room > 0)
            .ok_or(PromptError::QueryTooLong {
                prefix_tokens: prefix_len,
                max_pair_tokens: self.max_pair_tokens,
            })
    }
}
