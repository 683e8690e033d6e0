//! `runtime_issues`: production issues reported against repositories and patterns.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::{Repo, iso_opt};

/// Severity order used by `get_pattern_health` thresholds.
fn severity_rank(severity: &str) -> i32 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// SQL for the same ranking, so filters run in the database.
const RANK_SQL: &str = "CASE i.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END";

/// An issue with its repository's name.
#[derive(Debug, sqlx::FromRow)]
pub struct Issue {
    pub repository: String,
    pub issue_id: String,
    pub detected_at: DateTime<Utc>,
    pub issue_type: String,
    pub severity: String,
    pub service_type: String,
    pub log_snippet: Option<String>,
    pub root_cause: Option<String>,
    pub suggested_fix: Option<String>,
    pub pattern_reference: Option<String>,
    pub github_issue_url: Option<String>,
    pub status: Option<String>,
    pub metrics: Option<Value>,
    pub resolution_time: Option<DateTime<Utc>>,
}

impl Issue {
    /// The issue object, with both spellings the original's clients know (`log_snippet`/`logs`,
    /// `github_issue_url`/`github_issue`).
    pub fn to_json(&self) -> Value {
        json!({
            "issue_id": self.issue_id,
            "detected_at": iso_opt(Some(self.detected_at)),
            "issue_type": self.issue_type,
            "severity": self.severity,
            "service_type": self.service_type,
            "log_snippet": self.log_snippet,
            "logs": self.log_snippet,
            "root_cause": self.root_cause,
            "suggested_fix": self.suggested_fix,
            "pattern_reference": self.pattern_reference,
            "github_issue_url": self.github_issue_url,
            "github_issue": self.github_issue_url,
            "status": self.status,
            "metrics": self.metrics,
            "resolution_time": iso_opt(self.resolution_time),
            "repository": self.repository,
        })
    }
}

const ISSUE_COLUMNS: &str = "r.name::text AS repository, i.issue_id::text AS issue_id, i.detected_at,
    i.issue_type::text AS issue_type, i.severity::text AS severity, i.service_type::text AS service_type,
    i.log_snippet, i.root_cause, i.suggested_fix, i.pattern_reference::text AS pattern_reference,
    i.github_issue_url::text AS github_issue_url, i.status::text AS status, i.metrics, i.resolution_time";

/// A new issue (`log_snippet` is cut to 1000 characters, as the original did).
pub struct NewIssue<'a> {
    pub issue_id: &'a str,
    pub issue_type: &'a str,
    pub severity: &'a str,
    pub service_type: &'a str,
    pub log_snippet: &'a str,
    pub root_cause: Option<&'a str>,
    pub suggested_fix: Option<&'a str>,
    pub pattern_reference: Option<&'a str>,
    pub github_issue_url: Option<&'a str>,
    pub metrics: Option<&'a Value>,
}

const ISSUE_INSERT: (&str, &str) = super::by_repo!(
    "INSERT INTO runtime_issues
         (repo_id, issue_id, detected_at, issue_type, severity, service_type, log_snippet, root_cause,
          suggested_fix, pattern_reference, github_issue_url, status, metrics)",
    "$2, now(), $3, $4, $5, $6, $7, $8, $9, $10, 'open', $11",
    "RETURNING repo_id, detected_at"
);

/// Inserts an issue in one statement; returns the repository's id and the detection time, or
/// `None` when `repo` names a repository that does not exist.
pub async fn insert(
    conn: &mut PgConnection,
    repo: Repo<'_>,
    issue: &NewIssue<'_>,
) -> Result<Option<(i32, DateTime<Utc>)>, sqlx::Error> {
    let snippet: String = issue.log_snippet.chars().take(1000).collect();
    repo.bind_first(ISSUE_INSERT)
        .bind(issue.issue_id)
        .bind(issue.issue_type)
        .bind(issue.severity)
        .bind(issue.service_type)
        .bind(snippet)
        .bind(issue.root_cause)
        .bind(issue.suggested_fix)
        .bind(issue.pattern_reference)
        .bind(issue.github_issue_url)
        .bind(issue.metrics)
        .fetch_optional(conn)
        .await
}

/// Whether the repository has a pattern named exactly `pattern`.
pub async fn repository_has_pattern(
    conn: &mut PgConnection,
    repo_id: i32,
    pattern: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM patterns WHERE repo_id = $1 AND name = $2)")
        .bind(repo_id)
        .bind(pattern)
        .fetch_one(conn)
        .await
}

/// Earlier issues of the same type against the same pattern, newest first, without `exclude`.
pub async fn similar(
    conn: &mut PgConnection,
    issue_type: &str,
    pattern: &str,
    exclude: &str,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT r.name::text, i.issue_id::text, i.severity::text, i.root_cause
           FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id
          WHERE i.issue_type = $1 AND i.pattern_reference = $2 AND i.issue_id <> $3
          ORDER BY i.detected_at DESC, i.id DESC
          LIMIT $4",
    )
    .bind(issue_type)
    .bind(pattern)
    .bind(exclude)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(repository, issue_id, severity, root_cause)| {
            json!({"repository": repository, "issue_id": issue_id, "severity": severity, "root_cause": root_cause})
        })
        .collect())
}

/// Filters of `query_known_issues`; each given one must match exactly.
#[derive(Default)]
pub struct IssueFilter<'a> {
    pub issue_type: Option<&'a str>,
    pub pattern: Option<&'a str>,
    pub service_type: Option<&'a str>,
    pub severity: Option<&'a str>,
    pub status: Option<&'a str>,
}

const FILTER_SQL: &str = "($1::text IS NULL OR i.issue_type = $1)
    AND ($2::text IS NULL OR i.pattern_reference = $2)
    AND ($3::text IS NULL OR i.service_type = $3)
    AND ($4::text IS NULL OR i.severity = $4)
    AND ($5::text IS NULL OR i.status = $5)";

/// `query_known_issues` in one statement: the matching issues are gathered once; the page (newest
/// first, at most $6) is cut from them, and each of its rows carries the count of all of them and
/// their repositories. Was two statements, the page and the count, each scanning the matches
/// (`tests/read_sql.rs` holds the two to the same answers).
pub static SEARCH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH matching AS (SELECT {ISSUE_COLUMNS}, i.id
                             FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id
                            WHERE {FILTER_SQL}),
              overall AS (SELECT count(*) AS total,
                                 coalesce(array_agg(DISTINCT repository ORDER BY repository), '{{}}') AS repositories
                            FROM matching)
         SELECT page.*, overall.total, overall.repositories
           FROM (SELECT * FROM matching ORDER BY detected_at DESC, id DESC LIMIT $6) page
          CROSS JOIN overall"
    )
});

#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    issue: Issue,
    total: i64,
    repositories: Vec<String>,
}

/// Matching issues newest first (at most `limit`, which is at least 1), the total count, and
/// every affected repository (sorted).
pub async fn search(
    conn: &mut PgConnection,
    filter: &IssueFilter<'_>,
    limit: i64,
) -> Result<(i64, Vec<Issue>, Vec<String>), sqlx::Error> {
    let rows: Vec<PageRow> = sqlx::query_as(&SEARCH_SQL)
        .bind(filter.issue_type)
        .bind(filter.pattern)
        .bind(filter.service_type)
        .bind(filter.severity)
        .bind(filter.status)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    // A page with no row means no match: `limit` is at least 1 (the skill's schema says so).
    let Some(first) = rows.first() else {
        return Ok((0, Vec::new(), Vec::new()));
    };
    let (total, repositories) = (first.total, first.repositories.clone());
    Ok((
        total,
        rows.into_iter().map(|r| r.issue).collect(),
        repositories,
    ))
}

/// Repositories (id, name) having a pattern named exactly `pattern`, by name.
pub async fn repositories_using(
    conn: &mut PgConnection,
    pattern: &str,
) -> Result<Vec<(i32, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT r.id, r.name::text FROM patterns p JOIN repositories r ON r.id = p.repo_id
          WHERE p.name = $1 ORDER BY 2",
    )
    .bind(pattern)
    .fetch_all(conn)
    .await
}

/// Issues against `pattern` in `repo_ids` since `since`, at `min_severity` or worse, newest first.
pub async fn pattern_issues(
    conn: &mut PgConnection,
    pattern: &str,
    repo_ids: &[i32],
    since: DateTime<Utc>,
    min_severity: &str,
) -> Result<Vec<Issue>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ISSUE_COLUMNS} FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id
          WHERE i.pattern_reference = $1 AND i.repo_id = ANY($2) AND i.detected_at >= $3
            AND {RANK_SQL} >= $4
          ORDER BY i.detected_at DESC, i.id DESC"
    ))
    .bind(pattern)
    .bind(repo_ids)
    .bind(since)
    .bind(severity_rank(min_severity))
    .fetch_all(conn)
    .await
}
