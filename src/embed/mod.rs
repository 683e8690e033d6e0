//! Embeddings: the providers that turn pattern text into 1536-dimension vectors — `openai` (any
//! OpenAI-compatible `/v1/embeddings` endpoint) and `builtin` (local hashed n-grams) — behind one
//! small enum, and the batch job that fills `patterns.embedding` (`nexusd embed` and the
//! background backfill of `nexusd serve`).
//!
//! Every stored embedding records the model that made it (`patterns.embedding_model`, e.g.
//! `builtin:hash-ngrams-v1`): vectors from different models cannot be compared, so searches and
//! writes refuse to mix them (see [`mixed_models_message`]).

mod builtin;
pub(crate) mod config;
pub(crate) mod job;
mod openai;

pub use builtin::embed as builtin_embed;
pub use config::{EmbeddingConfig, EmbeddingProvider, VARIABLES};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::kb::search::FrequentLexemes;

/// Dimensions of `patterns.embedding` (`vector(1536)`), whatever the provider.
pub const DIMENSIONS: usize = 1536;
/// Longest text embedded, in characters; longer pattern texts are cut (OpenAI's models take
/// about 8,000 tokens, which this stays well under).
const MAX_TEXT_CHARS: usize = 8000;

/// Why texts could not be embedded, phrased for the operator (endpoint, status, what to check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EmbedError(pub String);

/// One configured provider.
#[derive(Debug, Clone)]
pub enum Embedder {
    Builtin,
    OpenAi(openai::OpenAi),
}

impl Embedder {
    /// The configured embedder, or `None` when embeddings are off (`NEXUSD_EMBEDDING_PROVIDER=none`).
    pub fn from_config(config: &EmbeddingConfig) -> Result<Option<Embedder>, EmbedError> {
        Ok(match config.provider {
            EmbeddingProvider::None => None,
            EmbeddingProvider::Builtin => Some(Embedder::Builtin),
            EmbeddingProvider::OpenAi => Some(Embedder::OpenAi(openai::OpenAi::new(config)?)),
        })
    }

    /// `openai` or `builtin`.
    pub fn provider(&self) -> &'static str {
        match self {
            Embedder::Builtin => "builtin",
            Embedder::OpenAi(_) => "openai",
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Embedder::Builtin => builtin::MODEL,
            Embedder::OpenAi(o) => o.model(),
        }
    }

    /// What `patterns.embedding_model` records for vectors made here: `provider:model`.
    pub fn model_id(&self) -> String {
        format!("{}:{}", self.provider(), self.model())
    }

    /// One L2-normalised vector of [`DIMENSIONS`] per text, in order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self {
            Embedder::Builtin => Ok(texts.iter().map(|t| builtin::embed(t)).collect()),
            Embedder::OpenAi(o) => o.embed(texts).await,
        }
    }

    /// Embeds one text.
    pub async fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed(&[text.to_string()])
            .await?
            .pop()
            .ok_or_else(|| EmbedError("the embedder returned no vector".into()))
    }
}

/// What the search skills share: the embedder, the HNSW search width, the full-text term
/// statistics, and a doorbell for the background backfill.
#[derive(Debug)]
pub struct Search {
    pub embedder: Option<Embedder>,
    /// `hnsw.ef_search` for vector queries (at least the number of rows asked for).
    pub ef_search: u32,
    /// Whether `nexusd serve` embeds patterns that have none in the background.
    pub backfill: bool,
    /// Lexemes too frequent to rank on, as of when they were read.
    frequent: Mutex<Option<(Instant, Arc<FrequentLexemes>)>>,
    wake: Notify,
}

/// How long the frequent-lexeme list is used before it is read again: PostgreSQL's statistics
/// change only when the table is analysed.
const FREQUENT_TTL: Duration = Duration::from_secs(300);

impl Search {
    pub fn new(config: &EmbeddingConfig) -> Result<Arc<Self>, EmbedError> {
        Ok(Arc::new(Search {
            embedder: Embedder::from_config(config)?,
            ef_search: config.ef_search,
            backfill: config.backfill,
            frequent: Mutex::new(None),
            wake: Notify::new(),
        }))
    }

    /// The cached frequent lexemes, unless older than five minutes.
    pub fn frequent_lexemes(&self) -> Option<Arc<FrequentLexemes>> {
        let cached = self.frequent.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FREQUENT_TTL)
            .map(|(_, f)| f.clone())
    }

    pub fn remember_frequent_lexemes(&self, frequent: FrequentLexemes) -> Arc<FrequentLexemes> {
        let frequent = Arc::new(frequent);
        *self.frequent.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), frequent.clone()));
        frequent
    }

    /// Asks the background backfill to look for patterns without an embedding now.
    pub fn wake_backfill(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Search::wake_backfill`] was called.
    pub async fn backfill_wanted(&self) {
        self.wake.notified().await;
    }
}

/// The text embedded for a pattern: its name, description and context, one paragraph each,
/// cut to [`MAX_TEXT_CHARS`].
pub fn pattern_text(name: &str, description: Option<&str>, context: Option<&str>) -> String {
    let parts: Vec<&str> = [Some(name), description, context]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let text = parts.join("\n\n");
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text,
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// The refusal when stored embeddings come from other models than `configured`: which ones, how
/// many, and the command that rebuilds them.
pub fn mixed_models_message(configured: &str, stored: &[(String, i64)]) -> String {
    let others: Vec<String> = stored
        .iter()
        .map(|(model, n)| format!("{model} ({n} pattern{})", if *n == 1 { "" } else { "s" }))
        .collect();
    format!(
        "The knowledge base holds embeddings made by {}, but nexusd is configured for {configured} \
         (NEXUSD_EMBEDDING_PROVIDER / NEXUSD_EMBEDDING_MODEL); vectors from different models cannot \
         be compared. Run `nexusd embed --reembed` to rebuild them with {configured}, or configure \
         the provider that made them.",
        others.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_text_joins_what_is_there_and_is_bounded() {
        assert_eq!(
            pattern_text("Retry", Some(" Backoff on 429 "), None),
            "Retry\n\nBackoff on 429"
        );
        assert_eq!(pattern_text("Retry", Some(""), Some("ctx")), "Retry\n\nctx");
        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        assert_eq!(
            pattern_text("n", Some(&long), None).chars().count(),
            MAX_TEXT_CHARS
        );
    }

    #[test]
    fn normalised_vectors_have_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalise(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        normalise(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn the_mixing_refusal_names_both_sides_and_the_fix() {
        let m = mixed_models_message(
            "openai:text-embedding-3-small",
            &[("builtin:hash-ngrams-v1".into(), 12), ("unknown".into(), 1)],
        );
        assert!(m.contains("builtin:hash-ngrams-v1 (12 patterns), unknown (1 pattern)"));
        assert!(m.contains("configured for openai:text-embedding-3-small"));
        assert!(m.contains("nexusd embed --reembed"));
    }
}
