//! A repository's measured complexity (`repository_complexity`): one row per repository,
//! replaced by each analysis.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// Stores a repository's measurement (`metrics`) and its most complex files (`files`).
pub async fn store(
    conn: &mut PgConnection,
    repo_id: i32,
    score: f64,
    metrics: &Value,
    files: &Value,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO repository_complexity (repo_id, score, metrics, files) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id) DO UPDATE
            SET score = EXCLUDED.score, metrics = EXCLUDED.metrics, files = EXCLUDED.files,
                analyzed_at = now()
         RETURNING analyzed_at",
    )
    .bind(repo_id)
    .bind(score)
    .bind(metrics)
    .bind(files)
    .fetch_one(conn)
    .await
}

/// What is stored for a repository.
#[derive(Debug, sqlx::FromRow)]
pub struct Stored {
    pub analyzed_at: DateTime<Utc>,
    pub score: f64,
    pub metrics: Value,
    pub files: Value,
}

pub async fn get(conn: &mut PgConnection, repo_id: i32) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as(
        "SELECT analyzed_at, score, metrics, files FROM repository_complexity WHERE repo_id = $1",
    )
    .bind(repo_id)
    .fetch_optional(conn)
    .await
}
