//! The `openai` embedder: any OpenAI-compatible `POST {base}/embeddings` endpoint (OpenAI itself,
//! Azure-style gateways, Ollama, vLLM, …). Texts go in batches of at most [`MAX_INPUTS`]; HTTP
//! 429 and 5xx answers and refused connections are retried with exponential backoff and jitter,
//! honouring `Retry-After`; each request has a timeout (`NEXUSD_EMBEDDING_TIMEOUT`) and a timed-out
//! request is not retried, so a hung endpoint costs one timeout, not four. Every error names the
//! endpoint and, for HTTP errors, the status and the start of the body. The API key is sent as a
//! bearer token and never logged or shown in `Debug`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::config::EmbeddingConfig;
use super::{DIMENSIONS, EmbedError, normalise};
use crate::env::redact_url;

/// Inputs per request (OpenAI accepts up to 2048; smaller requests retry cheaper).
const MAX_INPUTS: usize = 100;
/// Attempts per request, the first included.
const MAX_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `Retry-After` waited for; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Characters of an error body quoted in messages.
const SNIPPET_CHARS: usize = 300;

#[derive(Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    /// `{base}/embeddings`.
    endpoint: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAi")
            .field("endpoint", &redact_url(&self.endpoint))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAi {
    pub fn new(config: &EmbeddingConfig) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("nexusd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EmbedError(format!("cannot build an HTTP client: {e}")))?;
        Ok(OpenAi {
            client,
            endpoint: endpoint(&config.url),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
            timeout: config.timeout,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The endpoint as it may be shown (credentials in the URL hidden).
    pub fn endpoint(&self) -> String {
        redact_url(&self.endpoint)
    }

    /// Embeds `texts` in order, [`MAX_INPUTS`] per request.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(MAX_INPUTS) {
            out.extend(self.request(batch).await?);
        }
        Ok(out)
    }

    async fn request(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut body = json!({"model": self.model, "input": inputs, "encoding_format": "float"});
        // The text-embedding-3 models shorten to any size; older and non-OpenAI models reject
        // the field, and their own size is checked below instead.
        if self.model.starts_with("text-embedding-3") {
            body["dimensions"] = json!(DIMENSIONS);
        }
        let shown = self.endpoint();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .post(&self.endpoint)
                .timeout(self.timeout)
                .json(&body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let bytes = response.bytes().await.map_err(|e| self.transport(&e))?;
                    return self.parse(&bytes, inputs.len());
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let text = response.text().await.unwrap_or_default();
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    let message = format!(
                        "the embeddings endpoint {shown} answered HTTP {status}: {}{}",
                        self.snippet(&text),
                        hint(status.as_u16())
                    );
                    if !retryable {
                        return Err(EmbedError(message));
                    }
                    (message, retry_after)
                }
                Err(e) if e.is_connect() => (self.transport(&e).0, None),
                Err(e) => return Err(self.transport(&e)),
            };
            let (message, retry_after) = failure;
            if attempt >= MAX_ATTEMPTS {
                return Err(EmbedError(format!(
                    "{message} (gave up after {MAX_ATTEMPTS} attempts)"
                )));
            }
            let wait = retry_after
                .map(|d| d.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| backoff(attempt, jitter()));
            tracing::warn!(endpoint = %shown, attempt, retry_in = ?wait, error = %message, "embeddings request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// A transport error in the operator's terms.
    fn transport(&self, e: &reqwest::Error) -> EmbedError {
        let shown = self.endpoint();
        if e.is_timeout() {
            EmbedError(format!(
                "the embeddings endpoint {shown} did not answer within {} s (NEXUSD_EMBEDDING_TIMEOUT)",
                self.timeout.as_secs()
            ))
        } else if e.is_connect() {
            EmbedError(format!(
                "cannot connect to the embeddings endpoint {shown}: {}; check NEXUSD_EMBEDDING_URL",
                root_cause(e)
            ))
        } else {
            EmbedError(format!(
                "the request to the embeddings endpoint {shown} failed: {}",
                root_cause(e)
            ))
        }
    }

    fn parse(&self, bytes: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let unexpected = |why: String| {
            EmbedError(format!(
                "the embeddings endpoint {} sent an unexpected answer: {why}",
                self.endpoint()
            ))
        };
        let mut response: Response = serde_json::from_slice(bytes).map_err(|e| {
            unexpected(format!(
                "{e} in {}",
                self.snippet(&String::from_utf8_lossy(bytes))
            ))
        })?;
        response.data.sort_by_key(|item| item.index);
        let indexes: Vec<usize> = response.data.iter().map(|item| item.index).collect();
        if indexes != (0..expected).collect::<Vec<_>>() {
            return Err(unexpected(format!(
                "{} embeddings for {expected} inputs",
                indexes.len()
            )));
        }
        response
            .data
            .into_iter()
            .map(|item| {
                let mut v = item.embedding;
                if v.len() != DIMENSIONS {
                    return Err(EmbedError(format!(
                        "model {} at {} returns {}-dimension embeddings, but patterns.embedding holds \
                         {DIMENSIONS}: choose a model with {DIMENSIONS} dimensions (NEXUSD_EMBEDDING_MODEL; \
                         text-embedding-3-small and -large are shortened to {DIMENSIONS})",
                        self.model,
                        self.endpoint(),
                        v.len()
                    )));
                }
                if v.iter().any(|x| !x.is_finite()) || v.iter().all(|x| *x == 0.0) {
                    return Err(unexpected("an embedding that is zero or not finite".into()));
                }
                normalise(&mut v);
                Ok(v)
            })
            .collect()
    }

    /// The start of a response body, with the API key blanked should a server echo it.
    fn snippet(&self, text: &str) -> String {
        let mut s: String = text.trim().chars().take(SNIPPET_CHARS).collect();
        if text.trim().chars().count() > SNIPPET_CHARS {
            s.push('…');
        }
        match &self.api_key {
            Some(key) if !key.is_empty() => s.replace(key.as_str(), "***"),
            _ => s,
        }
    }
}

/// `{base}/embeddings`; a URL already ending in `/embeddings` is taken as it is.
fn endpoint(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/embeddings") {
        base.to_string()
    } else {
        format!("{base}/embeddings")
    }
}

/// What to check for an HTTP error status.
fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (check OPENAI_API_KEY)",
        404 => " (check NEXUSD_EMBEDDING_URL, which ends in /v1, and NEXUSD_EMBEDDING_MODEL)",
        _ => "",
    }
}

/// `Retry-After` in seconds (whole or fractional); HTTP dates fall back to the backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// The wait before retry `attempt` (1-based): doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], scaled by `jitter` in [0, 1) to between half and all of it, so that many
/// clients turned away together do not come back together.
fn backoff(attempt: u32, jitter: f64) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A random number in [0, 1) from the standard library's per-process random hash keys.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The innermost error message (reqwest wraps hyper wraps io).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_accepts_a_base_url_or_the_full_path() {
        assert_eq!(
            endpoint("https://api.openai.com/v1"),
            "https://api.openai.com/v1/embeddings"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8000/v1/embeddings/"),
            "http://127.0.0.1:8000/v1/embeddings"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(1, 0.999_999).as_millis(), 499);
        assert_eq!(backoff(2, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(30, 0.0), MAX_BACKOFF / 2);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("3600"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    fn client(key: Option<&str>) -> OpenAi {
        let config = crate::config::Config::from_lookup(|_| None)
            .expect("defaults parse")
            .embedding;
        OpenAi {
            api_key: key.map(str::to_string),
            ..OpenAi::new(&config).expect("client")
        }
    }

    #[test]
    fn answers_are_put_in_input_order_and_checked() {
        let c = client(None);
        let v = |x: f32| {
            let mut v = vec![0.0; DIMENSIONS];
            v[0] = x;
            v
        };
        let body = json!({"object": "list", "model": "m", "data": [
            {"object": "embedding", "index": 1, "embedding": v(-2.0)},
            {"object": "embedding", "index": 0, "embedding": v(3.0)},
        ]});
        let out = c.parse(body.to_string().as_bytes(), 2).expect("parsed");
        assert_eq!((out[0][0], out[1][0]), (1.0, -1.0));

        let short = json!({"data": [{"index": 0, "embedding": [1.0, 2.0]}]});
        let e = c.parse(short.to_string().as_bytes(), 1).unwrap_err();
        assert!(e.0.contains("returns 2-dimension embeddings"), "{e}");
        let missing = json!({"data": [{"index": 0, "embedding": v(1.0)}]});
        let e = c.parse(missing.to_string().as_bytes(), 2).unwrap_err();
        assert!(e.0.contains("1 embeddings for 2 inputs"), "{e}");
        let e = c.parse(b"<html>busy</html>", 1).unwrap_err();
        assert!(
            e.0.contains("unexpected answer") && e.0.contains("<html>busy</html>"),
            "{e}"
        );
    }

    #[test]
    fn the_key_never_shows() {
        let c = client(Some("sk-very-secret"));
        assert!(!format!("{c:?}").contains("sk-very-secret"));
        assert_eq!(
            c.snippet("{\"error\": \"bad key sk-very-secret\"}"),
            "{\"error\": \"bad key ***\"}"
        );
    }
}
