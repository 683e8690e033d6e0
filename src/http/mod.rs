//! What every HTTP listener of nexusd shares: the server with its timeouts and connection cap
//! (`server`, configured by `config`), reading request bodies within size and time (`body`),
//! JSON responses, the request-body limit, CORS (the skills API and `nexusd proxy` answer
//! browsers the same way) and callers' credentials (`auth`).

pub(crate) mod auth;
pub(crate) mod body;
mod config;
pub(crate) mod cors;
pub(crate) mod server;

pub use config::{HttpConfig, VARIABLES};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON response with a status.
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}
