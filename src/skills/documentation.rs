//! Documentation skills over the GitHub REST API (reference §3.6):
//! `check_documentation_standards` reads a repository's documents and applies nexusd's rules
//! (`doc_rules.rs`, `docs/skill-rules.md`); `validate_documentation_update` lists the commits of
//! a timeframe and says whether documentation kept pace with code.

use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{
    Skill, SkillOutput, example, github_repository_schema, handler, output, parse,
};
use crate::github::{GitHub, GitHubError, MAX_FILE_BYTES, parse_repository};
use crate::rules::docs::{self, ChangedFile, FileKind, FileReport, Priority};

/// Commits listed per call at most.
pub const MAX_COMMITS_LISTED: usize = 300;
/// Commits whose changed files are read, newest first.
pub const MAX_COMMITS_EXAMINED: usize = 30;
/// Change items returned per list.
const MAX_CHANGE_ITEMS: usize = 10;

/// The repository field: any string, so that a malformed one gets the reference's message.
pub fn check_documentation_standards() -> Skill {
    Skill {
        id: "check_documentation_standards",
        name: "Check Documentation Standards",
        description: "Read a GitHub repository's documentation and check it against nexusd's documentation \
                      rules: required files by priority (README, licence, contributing guide, changelog, …), \
                      completeness, stale update stamps, file paths and relative links that must exist, code \
                      examples, and a recognisable licence. Needs GITHUB_TOKEN.",
        tags: &[
            "documentation",
            "standards",
            "quality",
            "compliance",
            "review",
        ],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": github_repository_schema(),
                "check_all_docs": {
                    "type": "boolean",
                    "description": "Check every Markdown file of the repository, not only the priority documents",
                    "default": false,
                },
            },
            "required": ["repository"],
        }),
        examples: vec![
            example(
                json!({"repository": "acme/payments-api"}),
                "Check the priority documents",
            ),
            example(
                json!({"repository": "acme/payments-api", "check_all_docs": true}),
                "Check every Markdown file",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: false,
        handler: handler(run_check),
    }
}

#[derive(Deserialize)]
struct CheckInput {
    repository: String,
    check_all_docs: Option<bool>,
}

fn violation_json(v: &docs::Violation) -> Value {
    json!({
        "check": v.check,
        "severity": v.severity.as_str(),
        "message": v.message,
        "recommendation": v.recommendation,
    })
}

fn file_result(report: &FileReport) -> Value {
    let mut value = json!({
        "file": report.file,
        "priority": report.priority.as_str(),
        "violations": report.violations.iter().map(violation_json).collect::<Vec<_>>(),
        "checks_performed": report.checks_performed,
        "violation_count": report.violations.len(),
    });
    if let Some(licence) = report.licence {
        value["licence"] = json!(licence);
    }
    value
}

async fn run_check(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: CheckInput = parse(input)?;
    let repository = q.repository.trim().to_string();
    let gh = GitHub::new(&ctx.config.external.github)
        .map_err(|e| SkillError::github_repository(e, &repository))?;
    parse_repository(&repository).map_err(|e| SkillError::github_repository(e, &repository))?;
    let info = gh
        .repository(&repository)
        .await
        .map_err(|e| SkillError::github_repository(e, &repository))?;
    let failed = |e: GitHubError| {
        let message = format!("Failed to check documentation standards: {e}");
        SkillError::github(e, message)
    };
    let tree = gh
        .tree(&repository, &info.default_branch)
        .await
        .map_err(failed)?;
    if !docs::has_documentation(&tree) {
        return Err(SkillError::Failed {
            error: "No documentation files found".into(),
            extra: output(json!({"repository": repository, "branch": info.default_branch})),
        });
    }
    let selection = docs::select(&tree, q.check_all_docs.unwrap_or(false));
    let (readable, too_large): (Vec<_>, Vec<_>) = selection.documents.iter().partition(|d| {
        tree.files
            .get(&d.path)
            .is_none_or(|size| *size <= MAX_FILE_BYTES)
    });
    let contents = gh
        .files(
            &repository,
            &info.default_branch,
            readable.iter().map(|d| d.path.clone()).collect(),
        )
        .await
        .map_err(failed)?;

    let now = Utc::now();
    let mut reports: Vec<FileReport> = selection
        .missing
        .iter()
        .map(|doc| docs::missing_report(doc))
        .collect();
    for doc in &readable {
        if let Some(text) = contents.get(&doc.path) {
            reports.push(docs::check_document(doc, text, &tree, now));
        }
    }
    reports.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.file.cmp(&b.file)));

    let totals = docs::totals(&reports);
    let score = docs::compliance_score(&totals);
    let (status, emoji) = docs::status(score, totals.critical);
    let critical: Vec<Value> = reports
        .iter()
        .flat_map(|r| r.violations.iter().map(move |v| (r, v)))
        .filter(|(_, v)| v.severity == Priority::Critical)
        .take(10)
        .map(|(r, v)| {
            let mut value = violation_json(v);
            value["file"] = json!(r.file);
            value
        })
        .collect();
    let mut violations: Vec<&docs::Violation> =
        reports.iter().flat_map(|r| &r.violations).collect();
    violations.sort_by_key(|v| v.severity);
    let mut recommendations: Vec<String> = Vec::new();
    for v in violations {
        let line = format!(
            "[{}] {}",
            v.severity.as_str().to_uppercase(),
            v.recommendation
        );
        if !recommendations.contains(&line) && recommendations.len() < 15 {
            recommendations.push(line);
        }
    }
    let skipped: Vec<&str> = selection
        .skipped
        .iter()
        .map(String::as_str)
        .chain(too_large.iter().map(|d| d.path.as_str()))
        .collect();

    Ok(output(json!({
        "repository": repository,
        "status": status,
        "status_emoji": emoji,
        "compliance_score": score,
        "summary": {
            "total_files_checked": reports.len(),
            "total_checks": totals.checks,
            "total_violations": totals.violations,
            "critical_violations": totals.critical,
            "high_violations": totals.high,
            "medium_violations": totals.medium,
            "low_violations": totals.low,
        },
        "file_results": reports.iter().map(file_result).collect::<Vec<_>>(),
        "critical_violations": critical,
        "recommendations": recommendations,
        "branch": info.default_branch,
        "files_skipped": skipped,
        "tree_truncated": tree.truncated,
    })))
}

pub fn validate_documentation_update() -> Skill {
    Skill {
        id: "validate_documentation_update",
        name: "Validate Documentation Update",
        description: "List a GitHub repository's commits since a commit or for the last N days, classify the \
                      changed files as code or documentation, and report whether documentation was updated \
                      along with the code. Needs GITHUB_TOKEN.",
        tags: &["documentation", "validation", "git", "compliance"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": github_repository_schema(),
                "since_commit": {
                    "type": "string",
                    "description": "Examine commits after this one (sha); overrides days",
                    "minLength": 4,
                    "maxLength": 64,
                    "pattern": "^[0-9A-Fa-f]+$",
                    "x-pattern-message": "must be a commit sha (hexadecimal)",
                },
                "days": {
                    "type": "integer",
                    "description": "Examine the commits of the last N days",
                    "minimum": 1,
                    "maximum": 365,
                    "default": 7,
                },
            },
            "required": ["repository"],
        }),
        examples: vec![
            example(
                json!({"repository": "acme/payments-api"}),
                "The last 7 days",
            ),
            example(
                json!({"repository": "acme/payments-api", "since_commit": "3f2a9c1"}),
                "Everything after a commit",
            ),
            example(
                json!({"repository": "acme/payments-api", "days": 30}),
                "The last 30 days",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: false,
        handler: handler(run_validate),
    }
}

#[derive(Deserialize)]
struct ValidateInput {
    repository: String,
    since_commit: Option<String>,
    days: Option<i64>,
}

fn change_json(c: &ChangedFile) -> Value {
    json!({
        "file": c.file,
        "commit": c.commit.chars().take(7).collect::<String>(),
        "date": c.date.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "message": c.message.lines().next().unwrap_or("").trim(),
    })
}

async fn run_validate(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: ValidateInput = parse(input)?;
    let repository = q.repository.trim().to_string();
    let gh = GitHub::new(&ctx.config.external.github)
        .map_err(|e| SkillError::github_repository(e, &repository))?;
    parse_repository(&repository).map_err(|e| SkillError::github_repository(e, &repository))?;
    gh.repository(&repository)
        .await
        .map_err(|e| SkillError::github_repository(e, &repository))?;
    let failed = |e: GitHubError| {
        let message = format!("Failed to validate documentation update: {e}");
        SkillError::github(e, message)
    };

    let since = match &q.since_commit {
        Some(sha) => {
            let commit = gh.commit(&repository, sha).await.map_err(|e| match e {
                GitHubError::NotFound(_) | GitHubError::Api { status: 422, .. } => {
                    SkillError::github(e, format!("Commit not found: {sha} (404) in {repository}"))
                }
                other => failed(other),
            })?;
            commit
                .summary
                .date
                .ok_or_else(|| SkillError::failed(format!("Commit {sha} has no author date")))?
        }
        None => Utc::now() - Duration::days(q.days.unwrap_or(7)),
    };
    let (mut commits, more) = gh
        .commits_since(&repository, since, MAX_COMMITS_LISTED)
        .await
        .map_err(failed)?;
    if let Some(sha) = &q.since_commit {
        let sha = sha.to_lowercase();
        commits.retain(|c| !c.sha.to_lowercase().starts_with(&sha));
    }
    let listed = commits.len();
    let mut details = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, commit) in commits.into_iter().take(MAX_COMMITS_EXAMINED).enumerate() {
        let gh = gh.clone();
        let repository = repository.clone();
        tasks.spawn(async move { (index, gh.commit(&repository, &commit.sha).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (index, detail) = joined.map_err(|e| SkillError::Internal {
            message: format!("Failed to validate documentation update: {e}"),
            source: Some(Box::new(e)),
        })?;
        details.push((index, detail.map_err(failed)?));
    }
    details.sort_by_key(|(index, _)| *index);

    let mut code = Vec::new();
    let mut docs = Vec::new();
    for (_, detail) in &details {
        for file in &detail.files {
            let change = ChangedFile {
                file: file.clone(),
                commit: detail.summary.sha.clone(),
                date: detail.summary.date,
                message: detail.summary.message.clone(),
            };
            match docs::classify_file(file) {
                FileKind::Doc => docs.push(change),
                FileKind::Code { .. } => code.push(change),
                FileKind::Other => {}
            }
        }
    }
    let verdict = docs::judge_update(&code, &docs);
    let recommendations: Vec<&str> = verdict
        .warnings
        .iter()
        .map(|w| w.recommendation.as_str())
        .collect();

    Ok(output(json!({
        "repository": repository,
        "timeframe": {
            "since_date": since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "since_commit": q.since_commit,
        },
        "validation": {"status": verdict.status, "message": verdict.message},
        "changes": {
            "code_files": docs::distinct_files(&code).len(),
            "doc_files": docs::distinct_files(&docs).len(),
            "code_changes": code.iter().take(MAX_CHANGE_ITEMS).map(change_json).collect::<Vec<_>>(),
            "doc_changes": docs.iter().take(MAX_CHANGE_ITEMS).map(change_json).collect::<Vec<_>>(),
        },
        "warnings": verdict.warnings.iter().map(|w| json!({
            "severity": w.severity.as_str(),
            "message": w.message,
            "recommendation": w.recommendation,
        })).collect::<Vec<_>>(),
        "recommendations": recommendations,
        "commits_in_timeframe": listed,
        "commits_examined": details.len(),
        "commits_truncated": more || listed > details.len(),
    })))
}
