//! `GET /health`: 200 with `status: "healthy"` only when a database query just succeeded and the
//! schema is current; 503 `unhealthy` otherwise (the original always said healthy).
//!
//! `/health` is public (Cloud Run's `nexusd proxy` forwards it), so where things run is for
//! authenticated callers only: when credentials are configured, a caller without valid ones (the
//! protected skills' `Authorization: Bearer` check) gets the same keys with the database's host,
//! name and versions, the backup store and the free-text errors (which name hosts and buckets)
//! replaced by `"redacted"`. Only with `REQUIRE_AUTH_FOR_WRITE=false` (a deployment open to
//! anyone) does everything show to everyone; with auth required and no credential configured,
//! nobody sees them here (`nexusd check` and the log say the same things to the operator).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::context::{API_VERSION, SERVICE_NAME, now_rfc3339};
use super::state::AppState;
use crate::bootstrap::Readiness;
use crate::bootstrap::latest_known_migration;

/// Longer than the pool's acquire timeout, so the pool's own verdict arrives first.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// What an unauthenticated caller sees instead of a hidden value.
const REDACTED: &str = "redacted";

/// The values hidden from callers without credentials, as `(object, key)` of the body.
const HIDDEN: [(&str, &str); 11] = [
    ("database", "host"),
    ("database", "database"),
    ("database", "version"),
    ("database", "pgvector_version"),
    ("database", "message"),
    ("migrations", "error"),
    ("backup", "store"),
    ("backup", "last_error"),
    ("backup", "unavailable"),
    ("backup", "retention_error"),
    ("leader", "replica"),
];

/// The server version and pgvector version, or why the database cannot answer.
async fn probe(state: &AppState) -> Result<(String, Option<String>), String> {
    let answer = tokio::time::timeout(
        PROBE_TIMEOUT,
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT split_part(version(), ',', 1),
                    (SELECT extversion FROM pg_extension WHERE extname = 'vector')",
        )
        .fetch_one(state.ctx.db.pool()),
    )
    .await;
    match answer {
        Ok(Ok(row)) => Ok(row),
        Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => Err(state.ctx.db.unavailable_reason().await),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

pub async fn health(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let readiness = state.ctx.readiness.borrow().clone();
    // Until the first bootstrap attempt ends (the embedded cluster may still be initialising),
    // there is nothing to probe yet.
    let probe = if matches!(readiness, Readiness::Starting) {
        Err("nexusd is starting: waiting for the database".to_string())
    } else {
        probe(&state).await
    };

    let migrations = migrations_summary(&readiness);

    let (database, pgvector_enabled, db_ok) = match probe {
        Ok((version, pgvector_version)) => {
            let enabled = pgvector_version.is_some();
            (
                json!({
                    "status": "healthy",
                    "version": version,
                    "pgvector_version": pgvector_version,
                    "pool": state.ctx.db.stats(),
                    "host": state.ctx.db.host,
                    "database": state.ctx.db.name,
                }),
                enabled,
                true,
            )
        }
        Err(message) => (
            json!({
                "status": "disconnected",
                "message": message,
                "pool": state.ctx.db.stats(),
                "host": state.ctx.db.host,
                "database": state.ctx.db.name,
            }),
            false,
            false,
        ),
    };
    let healthy = db_ok && matches!(readiness, Readiness::Ready(_));
    let mut body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "service": SERVICE_NAME,
        "version": API_VERSION,
        "nexusd_version": env!("CARGO_PKG_VERSION"),
        "knowledge_base_repo": state.ctx.config.knowledge_base_repo,
        "skills_registered": state.skills.len(),
        "skills": state.skills.ids(),
        "database": database,
        "database_type": "postgresql",
        "pgvector_enabled": pgvector_enabled,
        "migrations": migrations,
        "backup": backup_summary(&state.ctx.backup_status.snapshot()),
        "leader": state.ctx.db.leader().status(),
        "read_replicas": state.ctx.db.read_replicas().map(|r| r.states()).unwrap_or_default(),
        "timestamp": now_rfc3339(),
    });
    if !may_see_details(&state, &headers).await {
        redact(&mut body);
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Where the schema stands: current once bootstrap succeeded, pending before, failed with why.
fn migrations_summary(readiness: &Readiness) -> Value {
    match readiness {
        Readiness::Ready(report) => json!({
            "status": "current",
            "version": report.migration_version,
            "latest_known": latest_known_migration(),
        }),
        Readiness::Starting => json!({
            "status": "pending",
            "version": null,
            "latest_known": latest_known_migration(),
        }),
        Readiness::Failed { error, attempts } => json!({
            "status": "failed",
            "version": null,
            "latest_known": latest_known_migration(),
            "error": error,
            "attempts": attempts,
        }),
    }
}

/// Whether this caller sees where the database and backups are: always when auth is off,
/// otherwise only with valid credentials.
async fn may_see_details(state: &AppState, headers: &HeaderMap) -> bool {
    if !state.ctx.config.api.auth.required {
        return true;
    }
    match state.auth.verify(headers.get(AUTHORIZATION)).await {
        Ok(_) => true,
        Err(failure) => {
            // Uptime checks call without credentials all the time: not worth a warning.
            tracing::debug!(reason = %failure, "/health details redacted");
            false
        }
    }
}

/// Replaces the hidden values that are set (a `null` stays `null`: it says "none", not where).
fn redact(body: &mut Value) {
    for (object, key) in HIDDEN {
        if let Some(value) = body.get_mut(object).and_then(|o| o.get_mut(key))
            && !value.is_null()
        {
            *value = Value::String(REDACTED.to_string());
        }
    }
}

/// The backup facts an operator looks for first; failures show here but do not make the service
/// unhealthy (the database is what `status` is about).
fn backup_summary(status: &crate::backup::status::BackupStatus) -> Value {
    let last = status.last_attempt.as_ref();
    json!({
        "store": status.store,
        "last_success_at": status.last_success.as_ref().map(|s| s.finished_at),
        "last_backup": status.last_success.as_ref().map(|s| &s.name),
        "last_outcome": last.map(|a| &a.outcome),
        "last_error": last.and_then(|a| a.error.as_ref()),
        "failures_total": status.failures_total,
        "running": status.running,
        "next_run_at": status.next_backup_at,
        "last_verify_ok": status.last_verify.as_ref().map(|v| v.ok),
        "last_verify_success_at": status.last_verify_success_at,
        "unavailable": status.unavailable,
        "retention_error": status.retention_error,
        "pitr": status.pitr,
    })
}
