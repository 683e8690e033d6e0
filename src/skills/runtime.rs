//! Runtime monitoring skills over `runtime_issues`: `add_runtime_issue` (protected write),
//! `get_pattern_health`, `query_known_issues`.

use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::kb::runtime::{IssueFilter, NewIssue};
use crate::kb::{self, Repo, iso_naive, runtime};

const SERVICE_TYPES: [&str; 7] = [
    "cloud_run",
    "cloud_functions",
    "cloud_build",
    "gce",
    "gke",
    "app_engine",
    "other",
];
const ISSUE_TYPES: [&str; 7] = [
    "error",
    "performance",
    "crash",
    "timeout",
    "memory",
    "security",
    "other",
];
const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];
const STATUSES: [&str; 4] = ["open", "investigating", "fixed", "false_positive"];

pub fn add_runtime_issue() -> Skill {
    Skill {
        id: "add_runtime_issue",
        name: "Add Runtime Issue",
        description: "Record a production issue for a repository (created if unknown), optionally tied to a \
                      pattern; returns earlier issues of the same type on the same pattern.",
        tags: &[
            "runtime",
            "monitoring",
            "issues",
            "production",
            "operations",
        ],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_schema("Repository in owner/repo form"),
                "service_type": {"type": "string", "enum": SERVICE_TYPES},
                "issue_type": {"type": "string", "enum": ISSUE_TYPES},
                "severity": {"type": "string", "enum": SEVERITIES},
                "log_snippet": {"type": "string", "description": "Relevant log lines (first 1000 characters are kept)", "minLength": 1, "maxLength": 100000},
                "root_cause": {"type": "string", "maxLength": 20000},
                "suggested_fix": {"type": "string", "maxLength": 20000},
                "pattern_reference": {"type": "string", "description": "Name of the pattern involved", "maxLength": 500},
                "github_issue_url": {"type": "string", "maxLength": 500},
                "metrics": {
                    "type": "object",
                    "properties": {
                        "error_rate": {"type": "number"},
                        "latency_p95": {"type": "number"},
                        "throughput": {"type": "number"},
                    },
                },
            },
            "required": ["repository", "service_type", "issue_type", "severity", "log_snippet"],
        }),
        examples: vec![example(
            json!({
                "repository": "acme/payments-api",
                "service_type": "cloud_run",
                "issue_type": "timeout",
                "severity": "high",
                "log_snippet": "upstream request timeout after 30s",
                "pattern_reference": "Retry with exponential backoff",
                "metrics": {"error_rate": 0.05, "latency_p95": 30000},
            }),
            "Report a timeout tied to a pattern",
        )],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_add_issue),
    }
}

#[derive(Deserialize)]
struct IssueInput {
    repository: String,
    service_type: String,
    issue_type: String,
    severity: String,
    log_snippet: String,
    root_cause: Option<String>,
    suggested_fix: Option<String>,
    pattern_reference: Option<String>,
    github_issue_url: Option<String>,
    metrics: Option<Value>,
}

/// A unique, sortable issue id: the original's naive ISO timestamp plus a random suffix, so two
/// reports in the same microsecond do not collide.
fn new_issue_id() -> String {
    let now = Utc::now().naive_utc();
    let suffix: u32 = rand_u32();
    format!("{}-{:06x}", iso_naive(now), suffix & 0xff_ffff)
}

/// A random number from the standard library's per-process randomised hasher.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

async fn run_add_issue(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: IssueInput = parse(input)?;
    let issue_id = new_issue_id();
    let issue = NewIssue {
        issue_id: &issue_id,
        issue_type: &q.issue_type,
        severity: &q.severity,
        service_type: &q.service_type,
        log_snippet: &q.log_snippet,
        root_cause: q.root_cause.as_deref(),
        suggested_fix: q.suggested_fix.as_deref(),
        pattern_reference: q.pattern_reference.as_deref(),
        github_issue_url: q.github_issue_url.as_deref(),
        metrics: q.metrics.as_ref(),
    };
    let (pattern_updated, similar) = async {
        // Without a pattern to look at, an issue of a known repository is one statement.
        if q.pattern_reference.is_none() {
            let mut conn = ctx.pool().acquire().await?;
            let named = Repo::Name(&q.repository);
            if runtime::insert(&mut conn, named, &issue).await?.is_some() {
                return Ok((false, Vec::new()));
            }
        }
        let mut tx = crate::db::begin(ctx.pool()).await?;
        let repo_id = kb::ensure_repository(&mut tx, &q.repository).await?;
        runtime::insert(&mut tx, Repo::Id(repo_id), &issue).await?;
        let (pattern_updated, similar) = match q.pattern_reference.as_deref() {
            Some(pattern) => (
                runtime::repository_has_pattern(&mut tx, repo_id, pattern).await?,
                runtime::similar(&mut tx, &q.issue_type, pattern, &issue_id, 5).await?,
            ),
            None => (false, Vec::new()),
        };
        tx.commit().await?;
        Ok::<_, SkillError>((pattern_updated, similar))
    }
    .await
    .map_err(|e| e.context("Failed to add runtime issue"))?;
    Ok(output(json!({
        "issue_id": issue_id,
        "repository": q.repository,
        "severity": q.severity,
        "pattern_updated": pattern_updated,
        "similar_issues": similar,
        "message": format!("Runtime issue recorded for {}", q.repository),
    })))
}

pub fn get_pattern_health() -> Skill {
    Skill {
        id: "get_pattern_health",
        name: "Get Pattern Health",
        description: "How healthy a pattern is in production: the share of repositories using it that reported \
                      issues against it in a time window, with a breakdown by severity and a recommendation.",
        tags: &["patterns", "health", "analysis", "runtime", "monitoring"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "pattern_name": {"type": "string", "description": "Exact pattern name", "minLength": 1, "maxLength": 500},
                "time_range_days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 30},
                "severity_threshold": {"type": "string", "enum": SEVERITIES, "default": "low", "description": "Count issues of this severity or worse"},
            },
            "required": ["pattern_name"],
        }),
        examples: vec![example(
            json!({"pattern_name": "Retry with exponential backoff", "time_range_days": 30, "severity_threshold": "medium"}),
            "Health of a pattern over the last 30 days",
        )],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_pattern_health),
    }
}

#[derive(Deserialize)]
struct HealthInput {
    pattern_name: String,
    time_range_days: Option<i64>,
    severity_threshold: Option<String>,
}

/// The original's recommendation texts.
fn recommendation(pattern: &str, score: f64, with_issues: usize, total: usize) -> String {
    if total == 0 {
        format!("Pattern '{pattern}' is not currently in use.")
    } else if score < 0.5 {
        format!(
            "⚠️ CRITICAL: Pattern '{pattern}' has issues in {with_issues}/{total} repos. Immediate review recommended."
        )
    } else if score < 0.7 {
        format!(
            "⚠️ WARNING: Pattern '{pattern}' has issues in {with_issues}/{total} repos. Monitor closely."
        )
    } else if score < 0.9 {
        format!(
            "✓ Pattern '{pattern}' is mostly healthy with minor issues in {with_issues}/{total} repos."
        )
    } else {
        format!("✅ Pattern '{pattern}' is healthy across all {total} repositories.")
    }
}

async fn run_pattern_health(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: HealthInput = parse(input)?;
    let days = q.time_range_days.unwrap_or(30);
    let threshold = q.severity_threshold.as_deref().unwrap_or("low");
    let since = Utc::now() - Duration::days(days);
    let (using, issues) = async {
        let mut tx = kb::snapshot(ctx.pool()).await?;
        let using = runtime::repositories_using(&mut tx, &q.pattern_name).await?;
        let ids: Vec<i32> = using.iter().map(|(id, _)| *id).collect();
        let issues =
            runtime::pattern_issues(&mut tx, &q.pattern_name, &ids, since, threshold).await?;
        tx.commit().await?;
        Ok::<_, SkillError>((using, issues))
    }
    .await
    .map_err(|e| e.context("Failed to get pattern health"))?;

    let mut affected: Vec<String> = issues.iter().map(|i| i.repository.clone()).collect();
    affected.sort();
    affected.dedup();
    let total = using.len();
    let score = if total == 0 {
        1.0
    } else {
        ((1.0 - affected.len() as f64 / total as f64) * 100.0).round() / 100.0
    };
    let count = |s: &str| issues.iter().filter(|i| i.severity == s).count();
    Ok(output(json!({
        "pattern": q.pattern_name,
        "health_score": score,
        "total_repos": total,
        "repos_with_issues": affected.len(),
        "repos_with_issues_list": affected,
        "issue_count": issues.len(),
        "issue_breakdown": {"critical": count("critical"), "high": count("high"), "medium": count("medium"), "low": count("low")},
        "issues": issues.iter().take(10).map(|i| i.to_json()).collect::<Vec<_>>(),
        "recommendation": recommendation(&q.pattern_name, score, affected.len(), total),
        "time_range_days": days,
    })))
}

pub fn query_known_issues() -> Skill {
    Skill {
        id: "query_known_issues",
        name: "Query Known Issues",
        description: "Search recorded runtime issues by type, pattern, service, severity and status, newest first.",
        tags: &["issues", "search", "runtime", "history"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "issue_type": {"type": "string", "enum": ISSUE_TYPES},
                "pattern": {"type": "string", "description": "Exact pattern name the issues refer to", "maxLength": 500},
                "service_type": {"type": "string", "enum": SERVICE_TYPES},
                "severity": {"type": "string", "enum": SEVERITIES},
                "status": {"type": "string", "enum": STATUSES},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            },
        }),
        examples: vec![
            example(
                json!({"severity": "critical", "status": "open"}),
                "Open critical issues",
            ),
            example(
                json!({"pattern": "Retry with exponential backoff", "limit": 5}),
                "Issues against a pattern",
            ),
        ],
        aliases: &[],
        empty: json!({"count": 0, "returned": 0, "issues": []}),
        uses_database: true,
        handler: handler(run_query_issues),
    }
}

#[derive(Deserialize)]
struct QueryIssuesInput {
    issue_type: Option<String>,
    pattern: Option<String>,
    service_type: Option<String>,
    severity: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn run_query_issues(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    // The response echoes the query without its limit, as the original did.
    let mut echoed = input.clone();
    echoed.remove("limit");
    echoed.retain(|_, v| !v.is_null());
    let q: QueryIssuesInput = parse(input)?;
    let filter = IssueFilter {
        issue_type: q.issue_type.as_deref(),
        pattern: q.pattern.as_deref(),
        service_type: q.service_type.as_deref(),
        severity: q.severity.as_deref(),
        status: q.status.as_deref(),
    };
    let mut conn = ctx.pool().acquire().await?;
    let (total, issues, repositories) = runtime::search(&mut conn, &filter, q.limit.unwrap_or(10))
        .await
        .map_err(|e| SkillError::from(e).context("Failed to query known issues"))?;
    Ok(output(json!({
        "count": total,
        "returned": issues.len(),
        "issues": issues.iter().map(|i| i.to_json()).collect::<Vec<_>>(),
        "repositories_affected": repositories,
        "query": echoed,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommendations_follow_the_originals_thresholds() {
        assert_eq!(
            recommendation("P", 1.0, 0, 0),
            "Pattern 'P' is not currently in use."
        );
        assert!(recommendation("P", 0.33, 2, 3).starts_with("⚠️ CRITICAL"));
        assert!(recommendation("P", 0.5, 1, 2).starts_with("⚠️ WARNING"));
        assert!(recommendation("P", 0.75, 1, 4).starts_with("✓ Pattern 'P' is mostly healthy"));
        assert_eq!(
            recommendation("P", 1.0, 0, 3),
            "✅ Pattern 'P' is healthy across all 3 repositories."
        );
    }

    #[test]
    fn issue_ids_are_unique() {
        let a = new_issue_id();
        let b = new_issue_id();
        assert_ne!(a, b);
        assert!(a.len() <= 100);
    }
}
