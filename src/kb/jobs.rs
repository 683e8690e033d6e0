//! The workflow queue (`workflow_jobs`, migrations/0006_workflows.sql): enqueue, claim with
//! `FOR UPDATE SKIP LOCKED`, heartbeat, progress, finish and cancel. Every write of a worker is
//! fenced by the job's `attempt`, so a worker whose job was claimed again after its lease ran
//! out or its session ended can no longer change it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// A job as a worker runs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub input: Value,
    pub repositories: Vec<String>,
    pub attempt: i32,
}

/// A job as `GET /a2a/workflow/{id}` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub repositories: Vec<String>,
    pub repositories_completed: i32,
    pub progress_percent: i32,
    pub current_step: Option<String>,
    pub results: Value,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub attempt: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const JOB_COLUMNS: &str = "id::text AS id, kind, status, repositories, repositories_completed, \
     progress_percent, current_step, results, error, cancel_requested, attempt, created_at, \
     started_at, finished_at";

/// Queues a job; returns its id.
pub async fn enqueue(
    conn: &mut PgConnection,
    kind: &str,
    input: &Value,
    repositories: &[String],
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO workflow_jobs (kind, input, repositories) VALUES ($1, $2, $3)
         RETURNING id::text",
    )
    .bind(kind)
    .bind(input)
    .bind(repositories)
    .fetch_one(conn)
    .await
}

/// The job `id` (a UUID in text form), if there is one.
pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM workflow_jobs WHERE id = $1::uuid"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Claims the oldest job that is queued, or running under a worker that is gone (its session
/// ended or its lease ran out), for `worker` on the session `conn`. Jobs whose cancellation was
/// asked while their worker was gone end cancelled first.
pub async fn claim(
    conn: &mut PgConnection,
    worker: &str,
    lease_seconds: f64,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query(
        "UPDATE workflow_jobs j
            SET status = 'cancelled', finished_at = now(), updated_at = now(),
                current_step = 'cancelled', lease_until = NULL
          WHERE j.status = 'running' AND j.cancel_requested
            AND (j.lease_until < now()
                 OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = j.worker_pid))",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "UPDATE workflow_jobs j
            SET status = 'running', attempt = j.attempt + 1, worker = $1,
                worker_pid = pg_backend_pid(),
                lease_until = now() + make_interval(secs => $2),
                started_at = coalesce(j.started_at, now()), updated_at = now(),
                results = '[]', repositories_completed = 0, progress_percent = 0,
                current_step = 'starting', error = NULL
          WHERE j.id = (SELECT c.id FROM workflow_jobs c
                         WHERE (c.status = 'queued' AND NOT c.cancel_requested)
                            OR (c.status = 'running' AND NOT c.cancel_requested
                                AND (c.lease_until < now()
                                     OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                                     WHERE a.pid = c.worker_pid)))
                         ORDER BY c.created_at
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED)
         RETURNING j.id::text AS id, j.kind, j.input, j.repositories, j.attempt",
    )
    .bind(worker)
    .bind(lease_seconds)
    .fetch_optional(conn)
    .await
}

/// Renews the lease of a job this worker holds; `None` when the job is no longer its own,
/// `Some(true)` when its cancellation has been asked.
pub async fn heartbeat(
    conn: &mut PgConnection,
    id: &str,
    attempt: i32,
    lease_seconds: f64,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE workflow_jobs SET lease_until = now() + make_interval(secs => $3), updated_at = now()
          WHERE id = $1::uuid AND attempt = $2 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(id)
    .bind(attempt)
    .bind(lease_seconds)
    .fetch_optional(conn)
    .await
}

/// Where a running job stands.
pub struct Progress<'a> {
    pub repositories_completed: i32,
    pub progress_percent: i32,
    pub current_step: &'a str,
    pub results: &'a Value,
}

/// Records a running job's progress (fenced by `attempt`); false when the job is not this
/// worker's any more.
pub async fn progress(
    conn: &mut PgConnection,
    id: &str,
    attempt: i32,
    p: &Progress<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE workflow_jobs
            SET repositories_completed = $3, progress_percent = $4, current_step = $5,
                results = $6, updated_at = now()
          WHERE id = $1::uuid AND attempt = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .bind(p.repositories_completed)
    .bind(p.progress_percent.clamp(0, 100))
    .bind(p.current_step)
    .bind(p.results)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a running job with `status` (fenced by `attempt`); false when it was not this worker's.
pub async fn finish(
    conn: &mut PgConnection,
    id: &str,
    attempt: i32,
    status: &str,
    results: &Value,
    error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE workflow_jobs
            SET status = $3, results = $4, error = $5, finished_at = now(), updated_at = now(),
                lease_until = NULL, current_step = $3,
                progress_percent = CASE WHEN $3 = 'cancelled' THEN progress_percent ELSE 100 END
          WHERE id = $1::uuid AND attempt = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .bind(status)
    .bind(results)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a cancellation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was queued and is now cancelled.
    Queued,
    /// It is running: its worker stops it at its next heartbeat.
    Running,
    /// It had already ended with this status.
    Finished,
    NotFound,
}

/// Cancels a queued job at once; asks a running one to stop.
pub async fn cancel(pool: &PgPool, id: &str) -> Result<(Cancelled, String), sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "WITH old AS (SELECT id, status FROM workflow_jobs WHERE id = $1::uuid FOR UPDATE)
         UPDATE workflow_jobs j
            SET cancel_requested = j.status IN ('queued', 'running') OR j.cancel_requested,
                status = CASE WHEN j.status = 'queued' THEN 'cancelled' ELSE j.status END,
                finished_at = CASE WHEN j.status = 'queued' THEN now() ELSE j.finished_at END,
                current_step = CASE WHEN j.status = 'queued' THEN 'cancelled' ELSE j.current_step END,
                updated_at = now()
           FROM old
          WHERE j.id = old.id
         RETURNING old.status, j.status",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => (Cancelled::NotFound, String::new()),
        Some((before, after)) => match before.as_str() {
            "queued" => (Cancelled::Queued, after),
            "running" => (Cancelled::Running, after),
            _ => (Cancelled::Finished, after),
        },
    })
}

/// Puts a running job back in the queue (its worker is shutting down), fenced by `attempt`.
pub async fn release(conn: &mut PgConnection, id: &str, attempt: i32) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE workflow_jobs
            SET status = 'queued', worker = NULL, worker_pid = NULL, lease_until = NULL,
                current_step = 'queued again (its worker stopped)', updated_at = now()
          WHERE id = $1::uuid AND attempt = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Jobs waiting and jobs running, for `/metrics`.
pub async fn depth_on(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued'),
                count(*) FILTER (WHERE status = 'running')
           FROM workflow_jobs WHERE status IN ('queued', 'running')",
    )
    .fetch_one(conn)
    .await
}
