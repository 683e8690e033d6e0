//! How pattern embeddings are made and searched: the provider, its endpoint and model, the
//! background backfill and the HNSW search width.

use std::fmt;

use crate::env::{Env, Var};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_EMBEDDING_PROVIDER",
        default: "openai with OPENAI_API_KEY, else builtin",
        meaning: "openai (any OpenAI-compatible /v1/embeddings endpoint), builtin (local hashed word n-grams, no network) or none (free-text search is full-text only)",
    },
    Var {
        name: "NEXUSD_EMBEDDING_URL",
        default: "https://api.openai.com/v1",
        meaning: "OpenAI-compatible API base",
    },
    Var {
        name: "NEXUSD_EMBEDDING_MODEL",
        default: "text-embedding-3-small",
        meaning: "embeddings model; 1536 dimensions",
    },
    Var {
        name: "OPENAI_API_KEY",
        default: "unset",
        meaning: "bearer token for the embeddings API (required for OpenAI's own endpoint, optional for a local server)",
    },
    Var {
        name: "NEXUSD_EMBEDDING_TIMEOUT",
        default: "30",
        meaning: "seconds per embeddings request (429 and 5xx are retried with backoff; a timeout is not)",
    },
    Var {
        name: "NEXUSD_EMBEDDING_BACKFILL",
        default: "true",
        meaning: "serve embeds patterns that have no embedding, in the background",
    },
    Var {
        name: "NEXUSD_SEARCH_EF_SEARCH",
        default: "100",
        meaning: "HNSW candidates per vector query (hnsw.ef_search): recall against latency",
    },
];

/// How pattern embeddings are made and searched (see the README's "Search and embeddings").
#[derive(Clone)]
pub struct EmbeddingConfig {
    /// `NEXUSD_EMBEDDING_PROVIDER`: `openai` when `OPENAI_API_KEY` is set, else `builtin`.
    pub provider: EmbeddingProvider,
    /// `NEXUSD_EMBEDDING_URL`: base URL of an OpenAI-compatible API (`…/v1`).
    pub url: String,
    /// `NEXUSD_EMBEDDING_MODEL` (default `text-embedding-3-small`).
    pub model: String,
    /// `OPENAI_API_KEY`: sent as a bearer token; never logged.
    pub api_key: Option<String>,
    /// `NEXUSD_EMBEDDING_TIMEOUT` seconds (30): one embeddings request, before retries.
    pub timeout: std::time::Duration,
    /// `NEXUSD_EMBEDDING_BACKFILL` (true): `nexusd serve` embeds patterns that have no embedding.
    pub backfill: bool,
    /// `NEXUSD_SEARCH_EF_SEARCH` (100): `hnsw.ef_search`, the HNSW candidate list per query.
    pub ef_search: u32,
}

impl fmt::Debug for EmbeddingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingConfig")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("backfill", &self.backfill)
            .field("ef_search", &self.ef_search)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProvider {
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    OpenAi,
    /// nexusd's own local, deterministic embedder.
    Builtin,
    /// Embeddings off: free-text search is full-text only.
    None,
}

impl EmbeddingProvider {
    pub fn name(self) -> &'static str {
        match self {
            EmbeddingProvider::OpenAi => "openai",
            EmbeddingProvider::Builtin => "builtin",
            EmbeddingProvider::None => "none",
        }
    }
}

pub const DEFAULT_EMBEDDING_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

impl EmbeddingConfig {
    pub fn from_env(env: &mut Env<'_>) -> EmbeddingConfig {
        embedding_config(env)
    }
}

fn embedding_config(env: &mut Env<'_>) -> EmbeddingConfig {
    let api_key = env.get("OPENAI_API_KEY");
    let provider = match env
        .get("NEXUSD_EMBEDDING_PROVIDER")
        .map(|p| p.to_ascii_lowercase())
        .as_deref()
    {
        None if api_key.is_some() => EmbeddingProvider::OpenAi,
        None => EmbeddingProvider::Builtin,
        Some("openai") => EmbeddingProvider::OpenAi,
        Some("builtin") => EmbeddingProvider::Builtin,
        Some("none" | "off") => EmbeddingProvider::None,
        Some(other) => {
            env.error(
                "NEXUSD_EMBEDDING_PROVIDER",
                format!("{other:?} is not valid: expected openai, builtin or none"),
            );
            EmbeddingProvider::None
        }
    };
    let url = env
        .url("NEXUSD_EMBEDDING_URL")
        .unwrap_or_else(|| DEFAULT_EMBEDDING_URL.to_string());
    // OpenAI itself needs a key; a local OpenAI-compatible server (Ollama, vLLM, …) may not.
    if provider == EmbeddingProvider::OpenAi && api_key.is_none() && url == DEFAULT_EMBEDDING_URL {
        env.error(
            "OPENAI_API_KEY",
            "is not set, but NEXUSD_EMBEDDING_PROVIDER is openai with OpenAI's API: set the key, point \
             NEXUSD_EMBEDDING_URL at another OpenAI-compatible server, or use NEXUSD_EMBEDDING_PROVIDER=builtin",
        );
    }
    let model = env
        .get("NEXUSD_EMBEDDING_MODEL")
        .unwrap_or_else(|| DEFAULT_EMBEDDING_MODEL.to_string());
    let timeout = env.bounded(
        "NEXUSD_EMBEDDING_TIMEOUT",
        30,
        1,
        600,
        "a number of seconds, 1 to 600",
    );
    let ef_search = env.bounded(
        "NEXUSD_SEARCH_EF_SEARCH",
        100,
        10,
        1000,
        "a whole number, 10 to 1000",
    );
    EmbeddingConfig {
        provider,
        url,
        model,
        api_key,
        timeout: std::time::Duration::from_secs(timeout.into()),
        backfill: env.bool("NEXUSD_EMBEDDING_BACKFILL").unwrap_or(true),
        ef_search,
    }
}
