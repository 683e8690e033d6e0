//! Credentials for protected skills (`docs/skills-api.md`, rule 8): a Google-signed ID token verified locally
//! (RS256 against Google's JWKS, cached; `iss`, `exp`, `nbf`, `aud` = `NEXUSD_AUTH_AUDIENCE`, `email` in
//! `ALLOWED_SERVICE_ACCOUNTS`), or one of the static `NEXUSD_API_TOKENS`, compared in constant
//! time. Failures are logged with their reason; clients only learn that authentication failed.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, RwLock};

use crate::env::{Env, Var};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "REQUIRE_AUTH_FOR_WRITE",
        default: "true",
        meaning: PROTECTION,
    },
    Var {
        name: "NEXUSD_API_TOKENS",
        default: "empty",
        meaning: "comma-separated static bearer tokens (16+ characters each) accepted for protected skills, compared in constant time",
    },
    Var {
        name: "NEXUSD_AUTH_AUDIENCE",
        default: "unset: ID tokens refused",
        meaning: "the aud a Google ID token must carry",
    },
    Var {
        name: "ALLOWED_SERVICE_ACCOUNTS",
        default: "empty",
        meaning: "service-account emails whose Google ID tokens are accepted",
    },
    Var {
        name: "NEXUSD_GOOGLE_CERTS_URL",
        default: "Google's JWKS URL",
        meaning: "where ID-token signing keys come from (cached as its Cache-Control says)",
    },
];

/// `REQUIRE_AUTH_FOR_WRITE`'s meaning in `--help` and the README. The list is the skills the
/// registry declares protected (a test in `skills/mod.rs` holds them together).
const PROTECTION: &str = "true: these skills need a bearer token: record_analysis, \
    add_lesson_learned, update_dependency_info, add_deployment_info, add_runtime_issue, \
    scan_repository_components, analyze_repository_complexity, discover_repository_dependencies, \
    update_dependency_verification, trigger_full_analysis_workflow, extract_repository_patterns, \
    update_pattern, deprecate_pattern, archive_pattern, create_pattern_from_component; so do \
    GET /a2a/workflow/{id} and cancelling a workflow; every other skill (add_repository \
    included) is public unless \
    NEXUSD_PROTECTED_SKILLS names it. false: every skill is public";

/// Who may call the protected (write) skills.
#[derive(Clone)]
pub struct AuthConfig {
    /// `REQUIRE_AUTH_FOR_WRITE` (default true).
    pub required: bool,
    /// `NEXUSD_API_TOKENS`: static bearer tokens, for agents that are not on Google.
    pub api_tokens: Vec<String>,
    /// `NEXUSD_AUTH_AUDIENCE`: the `aud` a Google ID token must carry (unset: ID tokens refused).
    pub audience: Option<String>,
    /// `ALLOWED_SERVICE_ACCOUNTS`: the `email`s whose ID tokens are accepted (empty: none).
    pub allowed_accounts: Vec<String>,
    /// `NEXUSD_GOOGLE_CERTS_URL`: where Google's token signing keys (JWKS) come from.
    pub certs_url: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("required", &self.required)
            .field(
                "api_tokens",
                &format_args!("[{} redacted]", self.api_tokens.len()),
            )
            .field("audience", &self.audience)
            .field("allowed_accounts", &self.allowed_accounts)
            .field("certs_url", &self.certs_url)
            .finish()
    }
}

pub const DEFAULT_GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

impl AuthConfig {
    pub fn from_env(env: &mut Env<'_>) -> AuthConfig {
        let auth = AuthConfig {
            required: env.bool("REQUIRE_AUTH_FOR_WRITE").unwrap_or(true),
            api_tokens: env.list("NEXUSD_API_TOKENS").unwrap_or_default(),
            audience: env.get("NEXUSD_AUTH_AUDIENCE"),
            allowed_accounts: env.list("ALLOWED_SERVICE_ACCOUNTS").unwrap_or_default(),
            certs_url: env
                .url("NEXUSD_GOOGLE_CERTS_URL")
                .unwrap_or_else(|| DEFAULT_GOOGLE_CERTS_URL.to_string()),
        };
        if auth.api_tokens.iter().any(|t| t.len() < 16) {
            env.error(
                "NEXUSD_API_TOKENS",
                "holds a token shorter than 16 characters: use long random tokens (e.g. openssl rand -hex 32)",
            );
        }
        auth
    }
}

impl AuthConfig {
    /// Whether any credential could pass: an API token, or ID tokens (an audience and at least
    /// one allowed account).
    pub fn accepts_any_credential(&self) -> bool {
        !self.api_tokens.is_empty()
            || (self.audience.is_some() && !self.allowed_accounts.is_empty())
    }

    /// What an operator should know at start about who may call the protected skills.
    pub fn warning(&self) -> Option<&'static str> {
        if !self.required {
            Some(
                "REQUIRE_AUTH_FOR_WRITE is false: anyone who reaches the API may call every skill, \
                 writes included, without credentials",
            )
        } else if !self.accepts_any_credential() {
            Some(
                "no credential is configured (NEXUSD_API_TOKENS is empty, and Google ID tokens need \
                 both NEXUSD_AUTH_AUDIENCE and ALLOWED_SERVICE_ACCOUNTS): nobody can call the \
                 protected skills; set one of them, or REQUIRE_AUTH_FOR_WRITE=false to open them",
            )
        } else {
            None
        }
    }
}

const GOOGLE_ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;
/// Keys are kept this long when the JWKS response names no max-age.
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(3600);
const MAX_KEYS_TTL: Duration = Duration::from_secs(24 * 3600);
/// An unknown `kid` triggers a refetch at most this often.
const MIN_REFETCH: Duration = Duration::from_secs(30);

/// Who called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    ApiToken,
    ServiceAccount(String),
}

/// Why a request was refused (logged, not returned).
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("no Authorization header")]
    Missing,
    #[error("Authorization is not 'Bearer <token>'")]
    NotBearer,
    #[error("unknown API token")]
    UnknownToken,
    #[error("ID token rejected: {0}")]
    InvalidIdToken(String),
    #[error("ID tokens are refused: NEXUSD_AUTH_AUDIENCE is not set")]
    NoAudience,
    #[error("ID tokens are refused: ALLOWED_SERVICE_ACCOUNTS is empty")]
    NoAllowedAccounts,
    #[error("{0} is not in ALLOWED_SERVICE_ACCOUNTS")]
    NotAllowed(String),
    #[error("cannot fetch Google's signing keys: {0}")]
    Keys(String),
}

impl AuthFailure {
    /// The `WWW-Authenticate` challenge of a 401 for this failure (RFC 6750, section 3): no
    /// error code when the request carried no bearer token, `invalid_token` when its token was
    /// refused (why is logged, not told).
    pub fn challenge(&self) -> &'static str {
        match self {
            AuthFailure::Missing | AuthFailure::NotBearer => BEARER_CHALLENGE,
            _ => INVALID_TOKEN_CHALLENGE,
        }
    }
}

/// The challenge of a 401 to a request without a bearer token.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"nexusd\"";
/// The challenge of a 401 to a request whose bearer token was refused.
pub const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"nexusd\", error=\"invalid_token\"";

#[derive(Debug, Deserialize)]
struct GoogleClaims {
    email: Option<String>,
    email_verified: Option<bool>,
}

/// Checks `Authorization` headers.
pub struct Authenticator {
    token_hashes: Vec<[u8; 32]>,
    audience: Option<String>,
    allowed: Vec<String>,
    keys: KeyCache,
}

impl Authenticator {
    /// Warns at start when the protected skills are open to anyone, or closed to everyone.
    pub fn new(config: &AuthConfig) -> Self {
        if let Some(warning) = config.warning() {
            tracing::warn!("{warning}");
        }
        Authenticator {
            token_hashes: config
                .api_tokens
                .iter()
                .map(|t| sha256(t.as_bytes()))
                .collect(),
            audience: config.audience.clone(),
            allowed: config.allowed_accounts.clone(),
            keys: KeyCache::new(config.certs_url.clone()),
        }
    }

    /// Verifies a header value; `Bearer ` is case-sensitive, as in the original.
    pub async fn verify(&self, header: Option<&HeaderValue>) -> Result<Principal, AuthFailure> {
        let header = header.ok_or(AuthFailure::Missing)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::NotBearer)?;

        // Hashing first makes every comparison the same length, so timing says nothing.
        let presented = sha256(token.as_bytes());
        let mut matched = subtle::Choice::from(0);
        for known in &self.token_hashes {
            matched |= presented.ct_eq(known);
        }
        if bool::from(matched) {
            return Ok(Principal::ApiToken);
        }
        if token.split('.').count() != 3 {
            return Err(AuthFailure::UnknownToken);
        }
        // Boxed: its future (it may fetch Google's signing keys) is large, and every request's
        // future would be as large.
        Box::pin(self.verify_id_token(token)).await
    }

    async fn verify_id_token(&self, token: &str) -> Result<Principal, AuthFailure> {
        let audience = self.audience.as_deref().ok_or(AuthFailure::NoAudience)?;
        if self.allowed.is_empty() {
            return Err(AuthFailure::NoAllowedAccounts);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthFailure::InvalidIdToken(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthFailure::InvalidIdToken(format!(
                "algorithm {:?}, expected RS256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthFailure::InvalidIdToken("no key id (kid)".into()))?;
        let key = self.keys.get(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token not valid yet is refused like an expired one (jsonwebtoken skips `nbf` unless told).
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<GoogleClaims>(token, &key, &validation)
            .map_err(|e| AuthFailure::InvalidIdToken(e.to_string()))?;
        let email = data
            .claims
            .email
            .ok_or_else(|| AuthFailure::InvalidIdToken("no email claim".into()))?;
        if data.claims.email_verified == Some(false) {
            return Err(AuthFailure::InvalidIdToken(format!(
                "email {email} is not verified"
            )));
        }
        if !self.allowed.iter().any(|a| a.eq_ignore_ascii_case(&email)) {
            return Err(AuthFailure::NotAllowed(email));
        }
        Ok(Principal::ServiceAccount(email))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Google's signing keys by `kid`, refreshed when they expire or an unknown `kid` shows up.
struct KeyCache {
    url: String,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
    /// One fetch at a time.
    fetching: Mutex<()>,
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Instant,
    ttl: Duration,
}

impl KeyCache {
    fn new(url: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        KeyCache {
            url,
            http,
            keys: RwLock::new(None),
            fetching: Mutex::new(()),
        }
    }

    async fn get(&self, kid: &str) -> Result<DecodingKey, AuthFailure> {
        if let Some(key) = self.cached(kid, true).await {
            return Ok(key);
        }
        let _one_fetch = self.fetching.lock().await;
        // Another request may have refreshed while we waited.
        if let Some(key) = self.cached(kid, true).await {
            return Ok(key);
        }
        let recently = self
            .keys
            .read()
            .await
            .as_ref()
            .is_some_and(|k| k.fetched.elapsed() < MIN_REFETCH);
        if !recently {
            match self.fetch().await {
                Ok(keys) => *self.keys.write().await = Some(keys),
                Err(e) => {
                    // Google rotates keys slowly: an expired copy beats refusing everyone.
                    tracing::warn!(error = %e, url = %self.url, "fetching Google's signing keys failed");
                    return self.cached(kid, false).await.ok_or(AuthFailure::Keys(e));
                }
            }
        }
        self.cached(kid, false)
            .await
            .ok_or_else(|| AuthFailure::InvalidIdToken(format!("unknown key id {kid}")))
    }

    async fn cached(&self, kid: &str, fresh_only: bool) -> Option<DecodingKey> {
        let guard = self.keys.read().await;
        let keys = guard.as_ref()?;
        if fresh_only && keys.fetched.elapsed() > keys.ttl {
            return None;
        }
        keys.by_kid.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<Keys, String> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let ttl = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_KEYS_TTL)
            .min(MAX_KEYS_TTL);
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| format!("not a JWK set: {e}"))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
                by_kid.insert(kid.clone(), key);
            }
        }
        tracing::debug!(keys = by_kid.len(), ?ttl, "fetched Google's signing keys");
        Ok(Keys {
            by_kid,
            fetched: Instant::now(),
            ttl,
        })
    }
}

/// `max-age=N` from a Cache-Control header.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|part| {
        part.trim()
            .strip_prefix("max-age=")
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &[&str]) -> Authenticator {
        Authenticator::new(&AuthConfig {
            required: true,
            api_tokens: tokens.iter().map(|t| t.to_string()).collect(),
            audience: None,
            allowed_accounts: vec![],
            certs_url: "http://127.0.0.1:9/certs".into(),
        })
    }

    #[tokio::test]
    async fn static_tokens_need_the_exact_bearer_form() {
        let a = auth(&["0123456789abcdef-token"]);
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            a.verify(Some(&hv("Bearer 0123456789abcdef-token")))
                .await
                .unwrap(),
            Principal::ApiToken
        );
        assert!(matches!(
            a.verify(Some(&hv("bearer 0123456789abcdef-token"))).await,
            Err(AuthFailure::NotBearer)
        ));
        assert!(matches!(
            a.verify(Some(&hv("Basic abc"))).await,
            Err(AuthFailure::NotBearer)
        ));
        assert!(matches!(
            a.verify(Some(&hv("Bearer wrong"))).await,
            Err(AuthFailure::UnknownToken)
        ));
        assert!(matches!(a.verify(None).await, Err(AuthFailure::Missing)));
    }

    #[tokio::test]
    async fn id_tokens_are_refused_without_audience_or_allow_list() {
        let a = auth(&[]);
        let hv = HeaderValue::from_static("Bearer a.b.c");
        assert!(matches!(
            a.verify(Some(&hv)).await,
            Err(AuthFailure::NoAudience)
        ));
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=19800, must-revalidate"),
            Some(Duration::from_secs(19800))
        );
        assert_eq!(max_age("no-cache"), None);
    }
}
