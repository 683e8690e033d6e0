//! The activity feed: analyses, lessons, deployment records and runtime issues as one timeline.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// The four kinds of action, in the feed's vocabulary.
pub const ACTION_TYPES: [&str; 4] = ["analysis", "lesson", "deployment", "runtime_issue"];

#[derive(Debug, sqlx::FromRow)]
pub struct Action {
    pub action_type: String,
    pub repository: String,
    pub timestamp: Option<DateTime<Utc>>,
    pub reference_id: Option<String>,
    pub metadata: Value,
}

/// The feed's four-part union (`RECENT_SQL` and `COUNT_SQL` take it in place of `ACTIONS`).
/// Each branch runs only when its type is asked for ($1), so unneeded tables are not read.
pub const ACTIONS_SQL: &str = "
    SELECT 'analysis' AS action_type, r.name::text AS repository, h.analyzed_at AS timestamp,
           h.commit_sha::text AS reference_id,
           jsonb_build_object('commit_sha', h.commit_sha, 'patterns_count', h.patterns_count,
                              'decisions_count', h.decisions_count, 'components_count', h.components_count) AS metadata
      FROM analysis_history h JOIN repositories r ON r.id = h.repo_id
     WHERE 'analysis' = ANY($1) AND ($2::text IS NULL OR r.name = $2)
    UNION ALL
    SELECT 'lesson', r.name::text, l.date, l.title::text,
           jsonb_build_object('category', l.category, 'impact', l.impact, 'description', l.description)
      FROM lessons_learned l JOIN repositories r ON r.id = l.repo_id
     WHERE 'lesson' = ANY($1) AND ($2::text IS NULL OR r.name = $2)
    UNION ALL
    SELECT 'deployment', r.name::text, coalesce(d.updated_at, d.created_at), d.name::text,
           jsonb_build_object('name', d.name, 'description', d.description)
      FROM deployment_scripts d JOIN repositories r ON r.id = d.repo_id
     WHERE 'deployment' = ANY($1) AND ($2::text IS NULL OR r.name = $2)
    UNION ALL
    SELECT 'runtime_issue', r.name::text, i.detected_at, i.issue_id::text,
           jsonb_build_object('issue_type', i.issue_type, 'severity', i.severity, 'service_type', i.service_type,
                              'pattern_reference', i.pattern_reference, 'status', i.status,
                              'log_snippet', left(i.log_snippet, 200))
      FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id
     WHERE 'runtime_issue' = ANY($1) AND ($2::text IS NULL OR r.name = $2)";

/// One page of the feed, newest first, each row carrying the number of all matching actions:
/// the four-part `UNION ALL` runs once (the window count is taken over every row before the
/// page is cut). Public so `tests/read_sql.rs` can hold it against the two statements it replaced.
pub const RECENT_SQL: &str = "
    SELECT a.*, count(*) OVER () AS total FROM (ACTIONS) a
     ORDER BY timestamp DESC NULLS LAST, action_type, reference_id
     LIMIT $3 OFFSET $4";

/// Counts the feed alone: only for a page past the end, which carries no row to count in.
const COUNT_SQL: &str = "SELECT count(*) FROM (ACTIONS) a";

#[derive(sqlx::FromRow)]
struct CountedAction {
    #[sqlx(flatten)]
    action: Action,
    total: i64,
}

/// The total number of matching actions and one page of them, newest first.
pub async fn recent(
    conn: &mut PgConnection,
    types: &[String],
    repository: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(i64, Vec<Action>), sqlx::Error> {
    let rows: Vec<CountedAction> = sqlx::query_as(&RECENT_SQL.replace("ACTIONS", ACTIONS_SQL))
        .bind(types)
        .bind(repository)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *conn)
        .await?;
    let total = match rows.first() {
        Some(row) => row.total,
        None if offset == 0 => 0,
        None => {
            sqlx::query_scalar(&COUNT_SQL.replace("ACTIONS", ACTIONS_SQL))
                .bind(types)
                .bind(repository)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    Ok((total, rows.into_iter().map(|r| r.action).collect()))
}
