//! Documentation skills over the GitHub REST API: `check_documentation_standards` reads a
//! repository's documents and applies nexusd's rules (`rules/docs.rs`; `docs/skill-rules.md`,
//! "Documentation standards"); `validate_documentation_update` lists the commits of a timeframe
//! and says whether documentation kept pace with code ("Documentation updates").

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{
    Skill, SkillOutput, example, github_repository_schema, handler, output, parse, render,
};
use crate::github::{
    CommitDetail, CommitSummary, GitHub, GitHubError, MAX_FILE_BYTES, parse_repository,
};
use crate::rules::Tree;
use crate::rules::docs::{self, ChangedFile, FileKind, FileReport, Selected, Selection};

/// Commits listed per call at most.
const MAX_COMMITS_LISTED: usize = 300;
/// Commits whose changed files are read, newest first.
const MAX_COMMITS_EXAMINED: usize = 30;
/// Change items returned per list.
const MAX_CHANGE_ITEMS: usize = 10;

/// The repository field: any string, so that a malformed one gets the message the original
/// server gave.
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

/// `check_documentation_standards`' answer.
#[derive(Serialize)]
struct CheckResponse<'a> {
    repository: &'a str,
    status: &'static str,
    status_emoji: &'static str,
    compliance_score: f64,
    summary: CheckSummary,
    file_results: Vec<FileResult<'a>>,
    critical_violations: Vec<FileViolation<'a>>,
    recommendations: Vec<String>,
    branch: &'a str,
    files_skipped: Vec<&'a str>,
    tree_truncated: bool,
}

#[derive(Serialize)]
struct CheckSummary {
    total_files_checked: usize,
    total_checks: usize,
    total_violations: usize,
    critical_violations: usize,
    high_violations: usize,
    medium_violations: usize,
    low_violations: usize,
}

#[derive(Serialize)]
struct ViolationJson<'a> {
    check: &'static str,
    severity: &'static str,
    message: &'a str,
    recommendation: &'a str,
}

impl<'a> From<&'a docs::Violation> for ViolationJson<'a> {
    fn from(v: &'a docs::Violation) -> Self {
        ViolationJson {
            check: v.check,
            severity: v.severity.as_str(),
            message: &v.message,
            recommendation: &v.recommendation,
        }
    }
}

/// A violation with the file it was found in.
#[derive(Serialize)]
struct FileViolation<'a> {
    #[serde(flatten)]
    violation: ViolationJson<'a>,
    file: &'a str,
}

/// One file's result; `licence` only for a licence file whose licence was recognised.
#[derive(Serialize)]
struct FileResult<'a> {
    file: &'a str,
    priority: &'static str,
    violations: Vec<ViolationJson<'a>>,
    checks_performed: usize,
    violation_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    licence: Option<&'static str>,
}

impl<'a> From<&'a FileReport> for FileResult<'a> {
    fn from(report: &'a FileReport) -> Self {
        FileResult {
            file: &report.file,
            priority: report.priority.as_str(),
            violations: report.violations.iter().map(ViolationJson::from).collect(),
            checks_performed: report.checks_performed,
            violation_count: report.violations.len(),
            licence: report.licence,
        }
    }
}

/// What `check_documentation_standards` read from GitHub.
struct DocumentsRead {
    branch: String,
    tree: Tree,
    selection: Selection,
    /// The selected documents within the size limit, which were read.
    readable: Vec<Selected>,
    /// The selected documents over it, which were not.
    too_large: Vec<Selected>,
    /// Path → text of the readable documents GitHub still has.
    contents: BTreeMap<String, String>,
}

/// Reads the repository's tree and the documents to check; fails when it has none.
async fn read_documents(
    ctx: &SkillContext,
    repository: &str,
    check_all_docs: bool,
) -> Result<DocumentsRead, SkillError> {
    let gh = GitHub::new(&ctx.config.external.github)
        .map_err(|e| SkillError::github_repository(e, repository))?;
    parse_repository(repository).map_err(|e| SkillError::github_repository(e, repository))?;
    ctx.may_read_github(repository).await?;
    let info = gh
        .repository(repository)
        .await
        .map_err(|e| SkillError::github_repository(e, repository))?;
    let failed = |e: GitHubError| {
        let message = format!("Failed to check documentation standards: {e}");
        SkillError::github(e, message)
    };
    let branch = info.default_branch;
    let tree = gh.tree(repository, &branch).await.map_err(failed)?;
    if !docs::has_documentation(&tree) {
        return Err(SkillError::Failed {
            error: "No documentation files found".into(),
            extra: output(json!({"repository": repository, "branch": branch})),
        });
    }
    let selection = docs::select(&tree, check_all_docs);
    let (readable, too_large): (Vec<Selected>, Vec<Selected>) =
        selection.documents.iter().cloned().partition(|d| {
            tree.files
                .get(&d.path)
                .is_none_or(|size| *size <= MAX_FILE_BYTES)
        });
    let paths = readable.iter().map(|d| d.path.clone()).collect();
    let contents = gh.files(repository, &branch, paths).await.map_err(failed)?;
    Ok(DocumentsRead {
        branch,
        tree,
        selection,
        readable,
        too_large,
        contents,
    })
}

async fn run_check(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: CheckInput = parse(input)?;
    let repository = q.repository.trim().to_string();
    let read = read_documents(&ctx, &repository, q.check_all_docs.unwrap_or(false)).await?;
    let documents: Vec<(&Selected, &str)> = read
        .readable
        .iter()
        .filter_map(|d| read.contents.get(&d.path).map(|text| (d, text.as_str())))
        .collect();
    let reports =
        docs::check_documents(&read.selection.missing, &documents, &read.tree, Utc::now());
    render(&check_response(&repository, &read, &reports))
}

fn check_response<'a>(
    repository: &'a str,
    read: &'a DocumentsRead,
    reports: &'a [FileReport],
) -> CheckResponse<'a> {
    let totals = docs::totals(reports);
    let score = docs::compliance_score(&totals);
    let (status, emoji) = docs::status(score, totals.critical);
    let skipped: Vec<&str> = read
        .selection
        .skipped
        .iter()
        .map(String::as_str)
        .chain(read.too_large.iter().map(|d| d.path.as_str()))
        .collect();
    CheckResponse {
        repository,
        status,
        status_emoji: emoji,
        compliance_score: score,
        summary: CheckSummary {
            total_files_checked: reports.len(),
            total_checks: totals.checks,
            total_violations: totals.violations,
            critical_violations: totals.critical,
            high_violations: totals.high,
            medium_violations: totals.medium,
            low_violations: totals.low,
        },
        file_results: reports.iter().map(FileResult::from).collect(),
        critical_violations: docs::critical_violations(reports)
            .into_iter()
            .map(|(file, v)| FileViolation {
                violation: v.into(),
                file,
            })
            .collect(),
        recommendations: docs::recommendations(reports),
        branch: &read.branch,
        files_skipped: skipped,
        tree_truncated: read.tree.truncated,
    }
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

/// A GitHub failure while validating, past the repository lookup.
fn validate_failed(e: GitHubError) -> SkillError {
    let message = format!("Failed to validate documentation update: {e}");
    SkillError::github(e, message)
}

/// The start of the timeframe: the author date of `since_commit`, or `days` (default 7) ago.
async fn since_date(
    gh: &GitHub,
    repository: &str,
    q: &ValidateInput,
) -> Result<DateTime<Utc>, SkillError> {
    let Some(sha) = &q.since_commit else {
        return Ok(Utc::now() - Duration::days(q.days.unwrap_or(7)));
    };
    let commit = gh.commit(repository, sha).await.map_err(|e| match e {
        GitHubError::NotFound(_) | GitHubError::Api { status: 422, .. } => {
            SkillError::github(e, format!("Commit not found: {sha} (404) in {repository}"))
        }
        other => validate_failed(other),
    })?;
    commit
        .summary
        .date
        .ok_or_else(|| SkillError::failed(format!("Commit {sha} has no author date")))
}

/// The changed files of the newest [`MAX_COMMITS_EXAMINED`] commits, read concurrently, in
/// the commits' order.
async fn commit_details(
    gh: &GitHub,
    repository: &str,
    commits: Vec<CommitSummary>,
) -> Result<Vec<CommitDetail>, SkillError> {
    let mut details = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, commit) in commits.into_iter().take(MAX_COMMITS_EXAMINED).enumerate() {
        let gh = gh.clone();
        let repository = repository.to_string();
        tasks.spawn(async move { (index, gh.commit(&repository, &commit.sha).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (index, detail) = joined.map_err(|e| SkillError::Internal {
            message: format!("Failed to validate documentation update: {e}"),
            source: Some(Box::new(e)),
        })?;
        details.push((index, detail.map_err(validate_failed)?));
    }
    details.sort_by_key(|(index, _)| *index);
    Ok(details.into_iter().map(|(_, detail)| detail).collect())
}

/// The changed files of the commits, split into code and documentation (other files are
/// left out).
fn split_changes(details: &[CommitDetail]) -> (Vec<ChangedFile>, Vec<ChangedFile>) {
    let mut code = Vec::new();
    let mut docs = Vec::new();
    for detail in details {
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
    (code, docs)
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
    ctx.may_read_github(&repository).await?;
    gh.repository(&repository)
        .await
        .map_err(|e| SkillError::github_repository(e, &repository))?;

    let since = since_date(&gh, &repository, &q).await?;
    let (mut commits, more) = gh
        .commits_since(&repository, since, MAX_COMMITS_LISTED)
        .await
        .map_err(validate_failed)?;
    if let Some(sha) = &q.since_commit {
        let sha = sha.to_lowercase();
        commits.retain(|c| !c.sha.to_lowercase().starts_with(&sha));
    }
    let listed = commits.len();
    let details = commit_details(&gh, &repository, commits).await?;
    let (code, docs) = split_changes(&details);
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
