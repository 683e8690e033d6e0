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

/// `find_similar_patterns`' `min_similarity` when the caller names none, for OpenAI's models
/// (and other OpenAI-compatible ones): related texts score well above it.
pub const OPENAI_MIN_SIMILARITY: f64 = 0.5;
/// The same for the builtin embedder, whose scores are lower: it compares words, and a short
/// query shares few of a pattern's words ("rate limiting" against "Token bucket rate limiting"
/// with its description scores about 0.29). Measured on 36 realistic queries against 16
/// pattern texts (the test `builtin_default_keeps_related_patterns_and_drops_the_rest` below):
/// the pattern a query is about scores 0.03–0.62 (median 0.29), the 540 other pairs 0.26 at most
/// (95th percentile 0.095). 0.1 keeps 35 of the 36 related pairs and 516 of the 540 unrelated
/// out — the best of the thresholds tried (0.05 to 0.5, by true minus false positive rate);
/// 0.5 kept 3 of 36. Answers are nearest first and capped by `limit`, so the few unrelated
/// patterns above 0.1 come after the related ones.
pub const BUILTIN_MIN_SIMILARITY: f64 = 0.1;

/// The default `min_similarity` for vectors made by `model_id` (`provider:model`).
pub fn default_min_similarity(model_id: &str) -> f64 {
    if model_id.starts_with("builtin:") {
        BUILTIN_MIN_SIMILARITY
    } else {
        OPENAI_MIN_SIMILARITY
    }
}

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

    /// Sixteen patterns as analyses record them (name, description, context).
    const SAMPLE_PATTERNS: [(&str, &str, &str); 16] = [
        (
            "Token bucket rate limiting",
            "Limits how many requests each client may send per second; excess requests are throttled with HTTP 429",
            "Edge proxy in front of the public API",
        ),
        (
            "JWT bearer authentication",
            "Verifies signed JSON Web Tokens from the Authorization header before handlers run and rejects expired ones",
            "",
        ),
        (
            "Transactional outbox",
            "Writes domain events to an outbox table in the same database transaction and publishes them to the message broker afterwards",
            "",
        ),
        (
            "Circuit breaker",
            "Stops calling a failing downstream service after repeated errors and tries again after a cool-down period",
            "",
        ),
        (
            "Read-through cache",
            "Serves repeated database reads from Redis with a time-to-live and invalidates entries on writes",
            "",
        ),
        (
            "Blue-green deployment",
            "Deploys the new version beside the old one and switches traffic once health checks pass",
            "",
        ),
        (
            "Retry with exponential backoff",
            "Retries failed calls to the card processor with exponential backoff and jitter",
            "Payment gateway client",
        ),
        (
            "Idempotency keys",
            "Stores the first response per Idempotency-Key header and replays it to retries",
            "POST /charges",
        ),
        (
            "Feature flags",
            "Turns features on and off per tenant at runtime without a deploy, read from a config service",
            "",
        ),
        (
            "Structured logging",
            "Logs JSON lines with a request id and trace fields so Cloud Logging can index them",
            "",
        ),
        (
            "Database migrations",
            "Versioned SQL migrations applied at start-up, forward-only, checked into the repository",
            "sqlx migrate",
        ),
        (
            "Health check endpoint",
            "GET /health reports database connectivity and version for the load balancer",
            "",
        ),
        (
            "Connection pooling",
            "A bounded pool of PostgreSQL connections shared by request handlers with an acquire timeout",
            "",
        ),
        (
            "Background job queue",
            "Long-running work is queued in a table and processed by workers with SKIP LOCKED",
            "",
        ),
        (
            "Secrets from Secret Manager",
            "Reads API keys and passwords from Google Secret Manager at boot instead of environment files",
            "",
        ),
        (
            "CQRS read models",
            "Separate read models projected from events serve queries while commands write to the event store",
            "",
        ),
    ];

    /// What users search for, and the pattern (index above) each is about.
    const SAMPLE_QUERIES: [(&str, usize); 36] = [
        ("rate limiting", 0),
        ("throttle clients", 0),
        ("limit requests per client", 0),
        ("jwt auth", 1),
        ("verify bearer tokens", 1),
        ("authentication middleware", 1),
        ("outbox pattern", 2),
        ("publish events reliably", 2),
        ("circuit breaker", 3),
        ("stop calling failing services", 3),
        ("caching", 4),
        ("redis cache", 4),
        ("cache database reads", 4),
        ("blue green deploy", 5),
        ("zero downtime deployment", 5),
        ("retry", 6),
        ("exponential backoff", 6),
        ("retries with jitter", 6),
        ("idempotency", 7),
        ("idempotent requests", 7),
        ("feature toggles", 8),
        ("feature flag", 8),
        ("json logs", 9),
        ("structured logging", 9),
        ("schema migrations", 10),
        ("migrations", 10),
        ("health endpoint", 11),
        ("liveness check", 11),
        ("connection pool", 12),
        ("database pool", 12),
        ("job queue", 13),
        ("background workers", 13),
        ("secrets management", 14),
        ("where to keep passwords", 14),
        ("cqrs", 15),
        ("read models", 15),
    ];

    /// How [`BUILTIN_MIN_SIMILARITY`] was chosen, kept as a test: at it, nearly every query
    /// keeps the pattern it is about and nearly every other pattern is dropped; at OpenAI's 0.5
    /// most related patterns were lost.
    #[test]
    fn builtin_default_keeps_related_patterns_and_drops_the_rest() {
        let cosine =
            |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum() };
        let patterns: Vec<Vec<f32>> = SAMPLE_PATTERNS
            .iter()
            .map(|(n, d, c)| builtin::embed(&pattern_text(n, Some(d), Some(c))))
            .collect();
        let (mut related, mut unrelated) = (Vec::new(), Vec::new());
        for (query, about) in SAMPLE_QUERIES {
            let q = builtin::embed(query);
            for (i, p) in patterns.iter().enumerate() {
                let score = cosine(&q, p);
                if i == about {
                    related.push(score);
                } else {
                    unrelated.push(score);
                }
            }
        }
        let kept = |scores: &[f64], at: f64| scores.iter().filter(|s| **s >= at).count();
        assert_eq!(kept(&related, BUILTIN_MIN_SIMILARITY), 35, "{related:?}");
        assert_eq!(kept(&unrelated, BUILTIN_MIN_SIMILARITY), 24);
        assert_eq!(kept(&related, OPENAI_MIN_SIMILARITY), 3);
        assert_eq!(default_min_similarity("builtin:hash-ngrams-v1"), 0.1);
        assert_eq!(default_min_similarity("openai:text-embedding-3-small"), 0.5);
    }
}
