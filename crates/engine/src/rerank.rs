//! From texts to scores: builds each (query, document) prompt, packs the pairs
//! into batches under a token budget, and returns P(yes) per document.

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_gguf::GgufFile;
use tessera_model::prompt::PromptError;
use tessera_model::{PromptBuilder, RerankTokenizer, TruncationSide, Weights};

use crate::{Engine, EngineError, PairScore, PrefixGroup};

/// How one rerank call treats its documents.
#[derive(Clone, Debug)]
pub struct RerankOptions {
    /// Task instruction; `None` is the model's default.
    pub instruction: Option<String>,
    /// Which end of a too-long document is dropped; `None` rejects it instead.
    pub truncation: Option<TruncationSide>,
    /// Tokens per forward pass (a longer single pair still runs alone).
    pub max_batch_tokens: usize,
}

impl Default for RerankOptions {
    fn default() -> Self {
        RerankOptions {
            instruction: None,
            truncation: Some(TruncationSide::Right),
            max_batch_tokens: 16_384,
        }
    }
}

/// One document's result, in request order.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentScore {
    pub index: usize,
    /// P(yes), in [0, 1].
    pub relevance: f32,
    pub logits: PairScore,
    /// Full prompt length of the pair (what is billed).
    pub tokens: usize,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RerankOutput {
    pub documents: Vec<DocumentScore>,
    pub total_tokens: usize,
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
        let mut ranked = self.documents.clone();
        ranked.sort_by(|a, b| {
            b.relevance
                .total_cmp(&a.relevance)
                .then(a.index.cmp(&b.index))
        });
        ranked
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    #[error("document {index}: {source}")]
    Document { index: usize, source: PromptError },
    #[error("query: {0}")]
    Query(PromptError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A loaded reranker: tokenizer, prompt builder and engine.
pub struct Reranker<B: Backend> {
    engine: Engine<B>,
    prompt: PromptBuilder,
}

impl<B: Backend> Reranker<B> {
    /// Loads weights and tokenizer from one GGUF (or the tokenizer from an override).
    pub fn load(
        backend: B,
        file: &Arc<GgufFile>,
        tokenizer: Option<RerankTokenizer>,
    ) -> Result<Reranker<B>, LoadError> {
        let tokenizer = match tokenizer {
            Some(t) => t,
            None => RerankTokenizer::from_gguf(file)?,
        };
        let token = |text: &str| {
            tokenizer
                .token_to_id(text)
                .ok_or_else(|| LoadError::MissingToken(text.to_string()))
        };
        let yes_no = [token("yes")?, token("no")?];
        let weights = Weights::load(file, yes_no)?;
        let max_pair = weights
            .config
            .context_length
            .min(tessera_model::prompt::DEFAULT_MAX_PAIR_TOKENS);
        let prompt =
            PromptBuilder::new(Arc::new(tokenizer), max_pair).map_err(LoadError::Prompt)?;
        let engine = Engine::new(backend, &weights)?;
        // Every query prefix starts with the system prompt: its K/V are computed
        // once, here, and every query's prefix extends them.
        engine.pin_prefix(prompt.system_ids())?;
        Ok(Reranker { engine, prompt })
    }

    pub fn engine(&self) -> &Engine<B> {
        &self.engine
    }

    pub fn prompt(&self) -> &PromptBuilder {
        &self.prompt
    }

    /// Scores every document against the query.
    pub fn rerank(
        &self,
        query: &str,
        documents: &[&str],
        options: &RerankOptions,
    ) -> Result<RerankOutput, RerankError> {
        let prefix = self
            .prompt
            .query_prefix(options.instruction.as_deref(), query)
            .map_err(RerankError::Query)?;
        let mut pairs = Vec::with_capacity(documents.len());
        for (index, doc) in documents.iter().enumerate() {
            let doc_ids = self
                .prompt
                .document_ids(doc)
                .map_err(|source| RerankError::Document { index, source })?;
            let pair = self
                .prompt
                .pair(&prefix, &doc_ids, options.truncation)
                .map_err(|source| RerankError::Document { index, source })?;
            pairs.push(pair);
        }
        let mut scores = Vec::with_capacity(pairs.len());
        let mut batch = PrefixGroup {
            prefix: &prefix,
            documents: Vec::new(),
        };
        let mut batch_tokens = 0;
        for pair in &pairs {
            if !batch.documents.is_empty()
                && batch_tokens + pair.ids.len() > options.max_batch_tokens
            {
                scores.extend(
                    self.engine
                        .score_groups(std::slice::from_ref(&batch))?
                        .remove(0),
                );
                batch.documents.clear();
                batch_tokens = 0;
            }
            batch.documents.push(&pair.ids[pair.prefix_len..]);
            batch_tokens += pair.ids.len();
        }
        if !batch.documents.is_empty() {
            scores.extend(
                self.engine
                    .score_groups(std::slice::from_ref(&batch))?
                    .remove(0),
            );
        }
        let documents: Vec<DocumentScore> = pairs
            .iter()
            .zip(scores)
            .enumerate()
            .map(|(index, (pair, logits))| DocumentScore {
                index,
                relevance: logits.probability(),
                logits,
                tokens: pair.ids.len(),
                truncated: pair.truncated(),
            })
            .collect();
        let total_tokens = documents.iter().map(|d| d.tokens).sum();
        Ok(RerankOutput {
            documents,
            total_tokens,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Tokenizer(#[from] tessera_model::TokenizerError),
    #[error("the tokenizer has no token '{0}' (needed for the score head)")]
    MissingToken(String),
    #[error(transparent)]
    Model(#[from] tessera_model::ModelError),
    #[error("prompt: {0}")]
    Prompt(PromptError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}
