//! A loaded reranker for callers that score directly (no server): the one
//! front door's path — [`prepare`], [`PackedRequest::passes`], the forward pass,
//! [`PreparedRequest::output`] — run on the caller's thread.

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_gguf::GgufFile;
use tessera_model::{ModelKind, PromptBuilder, RerankTokenizer, Weights};

use crate::pack::PackedRequest;
use crate::request::{prepare, PreparedRequest, RequestError, RerankOptions, RerankOutput};
use crate::{Engine, EngineError, LoadError, PairScore, PrefixGroup};

#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    #[error(transparent)]
    Request(#[from] RequestError),
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
        if let (ModelKind::Embedding, pooling) = ModelKind::from_gguf(file)? {
            return Err(LoadError::WrongKind { pooling });
        }
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

    /// Scores every document against the query, exactly as a server's
    /// `/v1/rerank` does with the same options.
    pub fn rerank(
        &self,
        query: &str,
        documents: &[&str],
        options: &RerankOptions,
    ) -> Result<RerankOutput, RerankError> {
        let prepared = prepare(&self.prompt, query, documents, options)?;
        let scores = self.score_request(&prepared.score, options.max_batch_tokens)?;
        Ok(prepared.output(&scores))
    }

    /// [`prepare`] with this model's prompt.
    pub fn prepare(
        &self,
        query: &str,
        documents: &[impl AsRef<str>],
        options: &RerankOptions,
    ) -> Result<PreparedRequest, RequestError> {
        prepare(&self.prompt, query, documents, options)
    }

    /// Every pair of `request`, in passes of at most `budget` tokens.
    pub fn score_request(
        &self,
        request: &PackedRequest,
        budget: usize,
    ) -> Result<Vec<PairScore>, EngineError> {
        let mut scores = Vec::with_capacity(request.documents.len());
        for pass in request.passes(budget) {
            let group = PrefixGroup {
                prefix: &request.prefix,
                documents: request.documents[pass].iter().map(Vec::as_slice).collect(),
            };
            scores.extend(self.engine.score_groups(&[group])?.into_iter().flatten());
        }
        Ok(scores)
    }
}
