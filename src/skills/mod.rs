//! The HTTP surface of the skills API: the Dev-Nexus A2A endpoints, with honest health and
//! JSON errors for every protocol problem.

mod health;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;

/// Service identity the original reported; clients display and compare it.
pub const SERVICE_NAME: &str = "pattern-discovery-agent";
/// The API version of the original server that nexusd is compatible with.
pub const API_VERSION: &str = "2.0.0";

/// All API routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"detail": "Not Found"})),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"detail": "Method Not Allowed"})),
    )
        .into_response()
}

/// Current time as RFC 3339 in UTC with microseconds, e.g. `2026-11-24T05:03:00.123456Z`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
