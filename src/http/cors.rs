//! CORS as the original's custom middleware did it (`docs/skills-api.md`, rule 9), plus
//! `Vary: Origin` and `ALLOWED_ORIGIN_REGEX`: allowed origins are the `CORS_ORIGINS` entries, any
//! `https://….vercel.app` origin, and origins matching the regex as a whole. A preflight
//! (`OPTIONS` on any path) answers 204 before routing and auth; allowed origins get the same four
//! headers on every response, errors included.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::env::{Env, Var, split_list};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "CORS_ORIGINS",
        default: "the original's four",
        meaning: "browser origins allowed, comma-separated (any https://….vercel.app origin is allowed too)",
    },
    Var {
        name: "ALLOWED_ORIGIN_REGEX",
        default: "unset",
        meaning: "origins matching this regular expression as a whole are allowed too",
    },
];

/// Which browser origins may call the API.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// `CORS_ORIGINS`: exact origins, comma-separated.
    pub origins: Vec<String>,
    /// `ALLOWED_ORIGIN_REGEX`: origins matching it entirely are allowed too.
    pub origin_regex: Option<regex::Regex>,
}

/// The original's default `CORS_ORIGINS`.
const DEFAULT_CORS_ORIGINS: &str = "http://localhost:3000,http://localhost:5173,\
https://dev-nexus-frontend.vercel.app,\
https://dev-nexus-frontend-noig7bsv5-milan-patels-projects-187b35de.vercel.app";

impl CorsConfig {
    pub fn from_env(env: &mut Env<'_>) -> CorsConfig {
        let origins = env
            .list("CORS_ORIGINS")
            .unwrap_or_else(|| split_list(DEFAULT_CORS_ORIGINS));
        let origin_regex = env.get("ALLOWED_ORIGIN_REGEX").and_then(|raw| {
            // Anchored: an origin must match as a whole, as Starlette's allow_origin_regex does.
            match regex::Regex::new(&format!("^(?:{raw})$")) {
                Ok(re) => Some(re),
                Err(e) => {
                    env.error(
                        "ALLOWED_ORIGIN_REGEX",
                        format!("{raw:?} is not a valid regular expression ({e})"),
                    );
                    None
                }
            }
        });
        CorsConfig {
            origins,
            origin_regex,
        }
    }
}

/// Whether `origin` may call the API from a browser.
pub fn allows(config: &CorsConfig, origin: &str) -> bool {
    config.origins.iter().any(|o| o == origin)
        || (origin.starts_with("https://") && origin.ends_with(".vercel.app"))
        || config
            .origin_regex
            .as_ref()
            .is_some_and(|re| re.is_match(origin))
}

/// The middleware.
pub async fn layer(
    State(config): State<Arc<CorsConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| allows(&config, o));
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if let (true, Some(origin)) = (allowed, origin) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,POST,OPTIONS"),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type,Authorization"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_allowed_as_the_original_did_plus_the_regex() {
        let config = CorsConfig {
            origins: vec!["http://localhost:5173".into()],
            origin_regex: Some(regex::Regex::new(r"^(?:https://.*\.example\.org)$").unwrap()),
        };
        assert!(allows(&config, "http://localhost:5173"));
        assert!(!allows(&config, "http://localhost:3000"));
        assert!(allows(&config, "https://preview-123.vercel.app"));
        assert!(
            !allows(&config, "http://preview-123.vercel.app"),
            "https only"
        );
        assert!(allows(&config, "https://app.example.org"));
        assert!(!allows(&config, "https://app.example.org.evil.net"));
    }
}
