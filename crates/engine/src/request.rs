//! The front door, both ends of it: a rerank call's texts and options become
//! token ids ([`prepare`]: query prefix, each document cut to
//! `max_tokens_per_doc`, split into chunks that fit beside the query or
//! truncated or refused, billing), and the chunks' scores become the call's
//! result ([`PreparedRequest::output`]: best chunk per document, ranking).
//! `/v1/rerank`, `/rerank`, `tessera rerank` and `tessera bench` all go
//! through here, so they prepare and rank a request identically.

use std::ops::Range;

use tessera_model::prompt::PromptError;
use tessera_model::{PromptBuilder, TokenizerError, TruncationSide};

use crate::pack::{PackedRequest, DEFAULT_MAX_BATCH_TOKENS};
use crate::PairScore;

/// How one rerank call treats its documents (the API's options).
#[derive(Clone, Debug)]
pub struct RerankOptions {
    /// Task instruction; `None` is the model's default.
    pub instruction: Option<String>,
    /// A document longer than its room beside the query (over all its chunks)
    /// is cut on this side; `None` refuses it instead
    /// ([`RequestError::DocumentTooLong`]).
    pub truncation: Option<TruncationSide>,
    /// Every document is first cut to this many tokens, on `max_tokens_side`,
    /// whatever `truncation` says (Cohere's `max_tokens_per_doc`).
    pub max_tokens_per_doc: Option<usize>,
    pub max_tokens_side: TruncationSide,
    /// A document longer than its room is split into up to this many
    /// consecutive chunks, each scored as its own pair; the document scores the
    /// best of them. 1 (the default) never splits.
    pub max_chunks_per_doc: usize,
    /// Tokens per forward pass for callers that score directly
    /// ([`crate::Reranker::rerank`]); a server's scheduler has its own.
    pub max_batch_tokens: usize,
}

impl Default for RerankOptions {
    fn default() -> Self {
        RerankOptions {
            instruction: None,
            truncation: Some(TruncationSide::Right),
            max_tokens_per_doc: None,
            max_tokens_side: TruncationSide::Right,
            max_chunks_per_doc: 1,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
        }
    }
}

/// Why a request cannot be prepared: always the caller's input.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The query cannot be tokenized, or leaves no room for a document.
    #[error("query: {0}")]
    Query(PromptError),
    /// The document's text cannot be tokenized.
    #[error("document {index}: cannot tokenize: {source}")]
    Tokenizer {
        index: usize,
        source: TokenizerError,
    },
    /// The document does not fit (`truncation` is `None`).
    #[error("document {index} is {tokens} tokens long but only {capacity} fit beside the query{}", chunk_note(*.chunks, *.room))]
    DocumentTooLong {
        index: usize,
        tokens: usize,
        /// `room × chunks`.
        capacity: usize,
        /// Document tokens one pair has room for.
        room: usize,
        chunks: usize,
    },
}

/// `" (3 chunks of 500)"` when a document may be split, else nothing.
pub fn chunk_note(chunks: usize, room: usize) -> String {
    if chunks > 1 {
        format!(" ({chunks} chunks of {room})")
    } else {
        String::new()
    }
}

/// A request as token ids, ready for a scheduler or [`crate::Reranker`].
#[derive(Debug, Default)]
pub struct PreparedRequest {
    /// The query prefix and every pair's document part (a chunk plus the suffix).
    pub score: PackedRequest,
    /// For each document, its chunks' positions in `score.documents`.
    pub chunks: Vec<Range<usize>>,
    /// Documents that lost tokens (to `max_tokens_per_doc` or truncation), ascending.
    pub truncated: Vec<usize>,
    /// Per document, the full lengths of its pairs: what is billed for it.
    pub document_tokens: Vec<usize>,
}

/// Tokenizes and lays out one call. Errors are the caller's.
pub fn prepare(
    prompt: &PromptBuilder,
    query: &str,
    documents: &[impl AsRef<str>],
    options: &RerankOptions,
) -> Result<PreparedRequest, RequestError> {
    let prefix = prompt
        .query_prefix(options.instruction.as_deref(), query)
        .map_err(RequestError::Query)?;
    let suffix = prompt.suffix_ids();
    // `query_prefix` guarantees at least one token of room.
    let room = prompt
        .max_pair_tokens()
        .saturating_sub(prefix.len() + suffix.len())
        .max(1);
    let chunks_per_doc = options.max_chunks_per_doc.max(1);
    let capacity = room.saturating_mul(chunks_per_doc);
    let mut units = Vec::with_capacity(documents.len());
    let mut chunks = Vec::with_capacity(documents.len());
    let mut truncated = Vec::new();
    let mut document_tokens = Vec::with_capacity(documents.len());
    for (index, text) in documents.iter().enumerate() {
        let mut ids = prompt.document_ids(text.as_ref()).map_err(|e| match e {
            PromptError::Tokenizer(source) => RequestError::Tokenizer { index, source },
            // `document_ids` only tokenizes.
            other => RequestError::Query(other),
        })?;
        let mut cut = false;
        if let Some(max) = options.max_tokens_per_doc {
            cut |= keep(&mut ids, max, options.max_tokens_side);
        }
        if ids.len() > capacity {
            let Some(side) = options.truncation else {
                return Err(RequestError::DocumentTooLong {
                    index,
                    tokens: ids.len(),
                    capacity,
                    room,
                    chunks: chunks_per_doc,
                });
            };
            cut |= keep(&mut ids, capacity, side);
        }
        if cut {
            truncated.push(index);
        }
        let start = units.len();
        // An empty document still makes one pair (prefix ++ suffix).
        let pieces: Vec<&[u32]> = if ids.is_empty() {
            vec![&[]]
        } else {
            ids.chunks(room).collect()
        };
        let mut billed = 0;
        for piece in pieces {
            let mut unit = Vec::with_capacity(piece.len() + suffix.len());
            unit.extend_from_slice(piece);
            unit.extend_from_slice(suffix);
            billed += prefix.len() + unit.len();
            units.push(unit);
        }
        chunks.push(start..units.len());
        document_tokens.push(billed);
    }
    Ok(PreparedRequest {
        score: PackedRequest {
            prefix,
            documents: units,
        },
        chunks,
        truncated,
        document_tokens,
    })
}

/// Cuts `ids` to `max` tokens on `side`; whether anything was dropped.
fn keep(ids: &mut Vec<u32>, max: usize, side: TruncationSide) -> bool {
    if ids.len() <= max {
        return false;
    }
    match side {
        TruncationSide::Right => ids.truncate(max),
        TruncationSide::Left => {
            ids.drain(..ids.len() - max);
        }
    }
    true
}

/// One document's result, in request order.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentScore {
    pub index: usize,
    /// P(yes), in [0, 1].
    pub relevance: f32,
    /// The best chunk's logits (by `yes − no`, which orders chunks as P(yes) does).
    pub logits: PairScore,
    /// Full prompt lengths of the document's pairs (what is billed for it).
    pub tokens: usize,
    pub truncated: bool,
}

/// A scored call: every document in request order, and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct RerankOutput {
    pub documents: Vec<DocumentScore>,
    pub total_tokens: usize,
}

impl PreparedRequest {
    /// Sum of the full lengths of every scored pair: what is billed.
    pub fn total_tokens(&self) -> usize {
        self.document_tokens.iter().sum()
    }

    /// Documents in the call.
    pub fn documents(&self) -> usize {
        self.chunks.len()
    }

    /// The call's result from its pairs' scores (in `score.documents` order;
    /// `score` itself may have been handed to a scheduler).
    pub fn output(&self, pair_scores: &[PairScore]) -> RerankOutput {
        let documents = self
            .chunks
            .iter()
            .enumerate()
            .map(|(index, range)| {
                let logits = pair_scores[range.clone()]
                    .iter()
                    .copied()
                    .max_by(|a, b| a.logit_diff().total_cmp(&b.logit_diff()))
                    .unwrap_or(PairScore {
                        yes_logit: 0.0,
                        no_logit: 0.0,
                    });
                DocumentScore {
                    index,
                    relevance: logits.probability(),
                    logits,
                    tokens: self.document_tokens[index],
                    truncated: self.truncated.binary_search(&index).is_ok(),
                }
            })
            .collect();
        RerankOutput {
            documents,
            total_tokens: self.total_tokens(),
        }
    }
}

impl RerankOutput {
    /// Indices of documents that were truncated.
    pub fn truncated(&self) -> Vec<usize> {
        self.documents
            .iter()
            .filter(|d| d.truncated)
            .map(|d| d.index)
            .collect()
    }

    /// Results sorted by relevance, highest first; ties keep the lower index first.
    pub fn ranked(&self) -> Vec<DocumentScore> {
        let relevance: Vec<f32> = self.documents.iter().map(|d| d.relevance).collect();
        ranking(&relevance)
            .into_iter()
            .map(|index| self.documents[index].clone())
            .collect()
    }

    /// [`Self::ranked`], the best `top_n` (all with `None`).
    pub fn top(&self, top_n: Option<usize>) -> Vec<DocumentScore> {
        let mut ranked = self.ranked();
        ranked.truncate(top_n.unwrap_or(usize::MAX));
        ranked
    }

    /// Cohere's billing unit: one per started hundred documents.
    pub fn search_units(&self) -> u64 {
        self.documents.len().div_ceil(100) as u64
    }

    /// The warning the API reports for truncated documents, if any.
    pub fn truncation_warning(&self) -> Option<String> {
        let truncated = self.truncated();
        (!truncated.is_empty()).then(|| {
            let list: Vec<String> = truncated.iter().map(usize::to_string).collect();
            format!(
                "documents truncated to fit the context: [{}]",
                list.join(", ")
            )
        })
    }
}

/// Indices by score, descending; ties keep the lower index first.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_cuts_the_requested_side() {
        let mut right = vec![1, 2, 3, 4];
        assert!(keep(&mut right, 2, TruncationSide::Right));
        assert_eq!(right, [1, 2]);
        let mut left = vec![1, 2, 3, 4];
        assert!(keep(&mut left, 3, TruncationSide::Left));
        assert_eq!(left, [2, 3, 4]);
        assert!(!keep(&mut left, 3, TruncationSide::Left));
    }

    #[test]
    fn ranking_is_descending_with_ties_by_index() {
        assert_eq!(ranking(&[0.1, 0.9, 0.5, 0.9]), [1, 3, 2, 0]);
        assert_eq!(ranking(&[]), Vec::<usize>::new());
    }

    fn score(diff: f32) -> PairScore {
        PairScore {
            yes_logit: diff,
            no_logit: 0.0,
        }
    }

    #[test]
    fn a_document_scores_its_best_chunk_and_bills_every_pair() {
        let prepared = PreparedRequest {
            score: PackedRequest {
                prefix: vec![0; 10],
                documents: vec![vec![0; 3], vec![0; 4], vec![0; 5], vec![0; 2]],
            },
            chunks: vec![0..3, 3..4],
            truncated: vec![1],
            document_tokens: vec![42, 12],
        };
        let output = prepared.output(&[score(-1.0), score(2.0), score(0.5), score(1.0)]);
        assert_eq!(output.documents[0].logits, score(2.0));
        assert_eq!(output.documents[0].tokens, 42);
        assert_eq!(output.total_tokens, 54);
        assert_eq!(output.truncated(), [1]);
        assert_eq!(output.top(Some(1))[0].index, 0);
        assert_eq!(output.search_units(), 1);
        assert_eq!(
            output.truncation_warning().as_deref(),
            Some("documents truncated to fit the context: [1]")
        );
    }
}
