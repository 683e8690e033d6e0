//! Why a request to the skills API did not succeed: one type for the whole HTTP edge.
//!
//! Protocol errors (no such route, wrong method, a body too large, malformed or too slow, missing
//! credentials, an unknown skill) and skill-level ones (bad input, a failure the skill reports,
//! the database unreachable, an internal error) are variants of [`SkillError`]; one
//! [`IntoResponse`] renders them with the status and JSON body the original server's clients
//! expect (the rules are in `docs/skills-api.md`). The outcome `/metrics` counts comes from the
//! variant, and an internal error is logged with its whole chain of causes — the caller sees only
//! its message.

use std::time::Duration;

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::db::is_connection_error;
use crate::github::GitHubError;
use crate::http::body::BodyError;
use crate::http::json_response;
use crate::metrics::SkillOutcome;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why a request or a skill did not succeed.
#[derive(Debug)]
pub enum SkillError {
    /// No such route: 404 `{"detail": "Not Found"}`, as FastAPI answered.
    NotFound,
    /// The route exists with other methods: 405.
    MethodNotAllowed,
    /// The body is over the 1 MiB limit: 413.
    BodyTooLarge,
    /// The body did not arrive whole within `NEXUSD_HTTP_BODY_TIMEOUT`: 408.
    BodyTimeout(Duration),
    /// The body could not be read as a request (not JSON, not an object, a field missing or of
    /// the wrong type): 400 with the reason.
    BadRequest(String),
    /// A protected skill called without valid credentials: 401, with `challenge` as its
    /// `WWW-Authenticate` header.
    Unauthorized {
        skill: &'static str,
        challenge: &'static str,
    },
    /// No skill has this id: 200 with `success: false` and the ids there are.
    UnknownSkill {
        id: String,
        available: Vec<&'static str>,
    },
    /// The input breaks a rule the schema cannot express; HTTP 200, `success: false`.
    Invalid(String),
    /// A skill-level failure with extra response keys (e.g. `available_repositories`).
    Failed {
        error: String,
        extra: Map<String, Value>,
    },
    /// The database cannot be reached: HTTP 503.
    Unavailable(String),
    /// Anything else (a database error, a bug): HTTP 200 with `message`; `source`, when there is
    /// one, is logged with its causes.
    Internal {
        message: String,
        source: Option<Source>,
    },
}

impl SkillError {
    pub fn failed(error: impl Into<String>) -> Self {
        SkillError::Failed {
            error: error.into(),
            extra: Map::new(),
        }
    }

    /// An internal error known only by its message.
    pub fn internal(message: impl Into<String>) -> Self {
        SkillError::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// Prefixes an internal error's message ("Failed to add repository: …").
    pub fn context(self, prefix: &str) -> Self {
        match self {
            SkillError::Internal { message, source } => SkillError::Internal {
                message: format!("{prefix}: {message}"),
                source,
            },
            other => other,
        }
    }

    /// A GitHub failure: `message` as the error, plus `error_type` and, when rate limited,
    /// `rate_limit_reset`.
    pub fn github(e: GitHubError, message: String) -> Self {
        let mut extra = object(json!({"error_type": e.kind()}));
        if let GitHubError::RateLimited { reset, .. } = &e {
            extra.insert(
                "rate_limit_reset".into(),
                reset
                    .map(|r| r.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .into(),
            );
        }
        SkillError::Failed {
            error: message,
            extra,
        }
    }

    /// A GitHub failure while reading `repository`, in the reference's words.
    pub fn github_repository(e: GitHubError, repository: &str) -> Self {
        let message = e.describe_for(repository);
        SkillError::github(e, message)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            SkillError::NotFound => StatusCode::NOT_FOUND,
            SkillError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SkillError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SkillError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            SkillError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SkillError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            SkillError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SkillError::UnknownSkill { .. }
            | SkillError::Invalid(_)
            | SkillError::Failed { .. }
            | SkillError::Internal { .. } => StatusCode::OK,
        }
    }

    /// How `/metrics` counts a call that ended with this error.
    pub fn outcome(&self) -> SkillOutcome {
        match self {
            SkillError::Unavailable(_) => SkillOutcome::Unavailable,
            SkillError::Unauthorized { .. } => SkillOutcome::Unauthorized,
            _ => SkillOutcome::Failure,
        }
    }

    /// Logs what the operator needs and the caller does not see: an internal error's causes.
    pub fn log(&self, skill: &str) {
        if let SkillError::Internal {
            message,
            source: Some(source),
        } = self
        {
            tracing::error!(
                skill,
                %message,
                error = %crate::telemetry::error_chain(source.as_ref()),
                "skill failed"
            );
        }
    }

    /// The JSON body: `success: false` and the message first, then `skill_keys` (a skill's id and
    /// the empty shape of its answer), then the error's own keys.
    pub fn into_body(self, skill_keys: Map<String, Value>) -> Value {
        let (message, extra) = match self {
            SkillError::NotFound => return json!({"detail": "Not Found"}),
            SkillError::MethodNotAllowed => return json!({"detail": "Method Not Allowed"}),
            SkillError::BodyTooLarge => (
                "Request body too large: the limit is 1 MiB".to_string(),
                Map::new(),
            ),
            SkillError::BodyTimeout(after) => (
                format!(
                    "Request body timed out: not received within {} s",
                    after.as_secs()
                ),
                Map::new(),
            ),
            SkillError::BadRequest(message)
            | SkillError::Invalid(message)
            | SkillError::Internal { message, .. } => (message, Map::new()),
            SkillError::Unauthorized { skill, .. } => (
                "Authentication required".to_string(),
                object(json!({
                    "message": format!("Skill '{skill}' requires A2A authentication"),
                    "skill": skill,
                })),
            ),
            SkillError::UnknownSkill { id, available } => (
                format!("Unknown skill: {id}"),
                object(json!({"available_skills": available})),
            ),
            SkillError::Failed { error, extra } => (error, extra),
            SkillError::Unavailable(reason) => {
                (format!("Database unavailable: {reason}"), Map::new())
            }
        };
        let mut body = Map::from_iter([
            ("success".to_string(), Value::Bool(false)),
            ("error".to_string(), Value::String(message)),
        ]);
        body.extend(skill_keys);
        body.extend(extra);
        Value::Object(body)
    }
}

/// The keys of a `json!({...})` object.
fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl IntoResponse for SkillError {
    fn into_response(self) -> Response {
        let status = self.status();
        let challenge = match &self {
            SkillError::Unauthorized { challenge, .. } => Some(*challenge),
            _ => None,
        };
        let mut response = json_response(status, self.into_body(Map::new()));
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// Why a request body could not be read: too large (413), malformed or cut off (400 with the
/// reason), or too slow (408).
impl From<BodyError> for SkillError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => SkillError::BodyTooLarge,
            BodyError::Malformed(why) => {
                SkillError::BadRequest(format!("Invalid request body: {why}"))
            }
            BodyError::TimedOut(after) => SkillError::BodyTimeout(after),
        }
    }
}

impl From<sqlx::Error> for SkillError {
    fn from(e: sqlx::Error) -> Self {
        if is_connection_error(&e) {
            return SkillError::Unavailable(e.to_string());
        }
        // The database's own words, no SQL text.
        let message = match e.as_database_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        SkillError::Internal {
            message,
            source: Some(Box::new(e)),
        }
    }
}
