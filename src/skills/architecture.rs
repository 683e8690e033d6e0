//! Architectural compliance skills, registered only with `GITHUB_TOKEN`:
//! `validate_repository_architecture`, `check_specific_standard`, `suggest_improvements`
//! (`docs/skill-rules.md`, "Architecture standards").
//! Each reads the repository's tree and the few files its categories need from GitHub, then
//! applies nexusd's rules (`rules/architecture.rs`, `docs/skill-rules.md`). No language model is
//! involved and nothing is written.

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::integration::configured_agents;
use super::registry::{
    Skill, SkillOutput, example, github_repository_schema, handler, output, parse, render,
};
use crate::github::{GitHub, GitHubError, MAX_FILE_BYTES, RepoInfo, parse_repository};
use crate::rules::architecture::{self, CATEGORIES, CategoryResult, Finding, RepoFiles};
use crate::rules::docs::Priority;

/// The tree and files of `repository` that `categories` need.
async fn inspect(
    ctx: &SkillContext,
    repository: &str,
    categories: &[&str],
) -> Result<(RepoInfo, RepoFiles), SkillError> {
    let gh = GitHub::new(&ctx.config.external.github)
        .map_err(|e| SkillError::github_repository(e, repository))?;
    parse_repository(repository).map_err(|e| SkillError::github_repository(e, repository))?;
    ctx.may_read_github(repository).await?;
    let info = gh
        .repository(repository)
        .await
        .map_err(|e| SkillError::github_repository(e, repository))?;
    let failed = |e: GitHubError| {
        let message = format!("Failed to validate repository architecture: {e}");
        SkillError::github(e, message)
    };
    let tree = gh
        .tree(repository, &info.default_branch)
        .await
        .map_err(failed)?;
    let wanted: Vec<String> = architecture::files_to_read(&tree, categories)
        .into_iter()
        .filter(|p| tree.files.get(p).is_none_or(|size| *size <= MAX_FILE_BYTES))
        .collect();
    let contents = gh
        .files(repository, &info.default_branch, wanted)
        .await
        .map_err(failed)?;
    Ok((info, RepoFiles { tree, contents }))
}

/// A violation as the architecture skills list it.
#[derive(Serialize)]
struct ViolationJson<'a> {
    severity: &'static str,
    rule_id: &'static str,
    message: &'a str,
    recommendation: &'a str,
    file_path: &'a str,
}

impl<'a> From<&'a Finding> for ViolationJson<'a> {
    fn from(v: &'a Finding) -> Self {
        ViolationJson {
            severity: v.severity.as_str(),
            rule_id: v.rule_id,
            message: &v.message,
            recommendation: &v.recommendation,
            file_path: &v.file_path,
        }
    }
}

/// A violation with its category.
#[derive(Serialize)]
struct CategoryViolation<'a> {
    #[serde(flatten)]
    violation: ViolationJson<'a>,
    category: &'a str,
}

/// A violation as a fix to make.
#[derive(Serialize)]
struct RecommendationJson<'a> {
    priority: String,
    category: &'a str,
    rule_id: &'static str,
    title: &'static str,
    description: &'a str,
    file_path: &'a str,
}

impl<'a> RecommendationJson<'a> {
    fn new(category: &'a str, v: &'a Finding) -> Self {
        RecommendationJson {
            priority: v.severity.as_str().to_uppercase(),
            category,
            rule_id: v.rule_id,
            title: v.title,
            description: &v.recommendation,
            file_path: &v.file_path,
        }
    }
}

/// One category's outcome.
#[derive(Serialize)]
struct CategoryJson<'a> {
    compliance_score: f64,
    passed: bool,
    checks_performed: usize,
    violations: Vec<ViolationJson<'a>>,
}

impl<'a> From<&'a CategoryResult> for CategoryJson<'a> {
    fn from(r: &'a CategoryResult) -> Self {
        CategoryJson {
            compliance_score: r.score(),
            passed: r.passed(),
            checks_performed: r.checks_performed,
            violations: r.violations.iter().map(ViolationJson::from).collect(),
        }
    }
}

/// The categories' outcomes as an object keyed by category, in evaluation order.
struct Categories<'a>(&'a [CategoryResult]);

impl Serialize for Categories<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for r in self.0 {
            map.serialize_entry(r.category, &CategoryJson::from(r))?;
        }
        map.end()
    }
}

/// `validate_repository_architecture`' answer; `recommendations` and `a2a_integration` only
/// when asked for.
#[derive(Serialize)]
struct ValidateResponse<'a> {
    repository: &'a str,
    overall_compliance_score: f64,
    compliance_grade: &'static str,
    summary: ValidateSummary,
    categories: Categories<'a>,
    critical_violations: Vec<CategoryViolation<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recommendations: Option<Vec<RecommendationJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    a2a_integration: Option<Value>,
    branch: &'a str,
    files_read: Vec<&'a str>,
    tree_truncated: bool,
}

#[derive(Serialize)]
struct ValidateSummary {
    total_checks: usize,
    passed_checks: usize,
    failed_checks: usize,
    critical_violations: usize,
    high_violations: usize,
    medium_violations: usize,
    low_violations: usize,
}

impl ValidateSummary {
    fn new(results: &[CategoryResult]) -> Self {
        let (total, failed, _) = overall(results);
        ValidateSummary {
            total_checks: total,
            passed_checks: total - failed,
            failed_checks: failed,
            critical_violations: count(results, Priority::Critical),
            high_violations: count(results, Priority::High),
            medium_violations: count(results, Priority::Medium),
            low_violations: count(results, Priority::Low),
        }
    }
}

/// Every violation with its category, most severe first (stable within a severity).
fn ranked(results: &[CategoryResult]) -> Vec<(&'static str, &Finding)> {
    let mut all: Vec<(&'static str, &Finding)> = results
        .iter()
        .flat_map(|r| r.violations.iter().map(move |v| (r.category, v)))
        .collect();
    all.sort_by_key(|(_, v)| v.severity);
    all
}

/// `passed / total` over every check of every category.
fn overall(results: &[CategoryResult]) -> (usize, usize, f64) {
    let total: usize = results.iter().map(|r| r.checks_performed).sum();
    let failed: usize = results.iter().map(|r| r.violations.len()).sum();
    (total, failed, architecture::ratio(total - failed, total))
}

fn count(results: &[CategoryResult], severity: Priority) -> usize {
    results
        .iter()
        .flat_map(|r| &r.violations)
        .filter(|v| v.severity == severity)
        .count()
}

pub fn validate_repository_architecture() -> Skill {
    Skill {
        id: "validate_repository_architecture",
        name: "Validate Repository Architecture",
        description: "Check a GitHub repository against nexusd's architectural standards — documentation, \
                      licence, Terraform layout and state, environments, disaster recovery, deployment, \
                      PostgreSQL migrations, CI/CD and containers — and grade it (A ≥ 0.9 … F).",
        tags: &[
            "architecture",
            "standards",
            "validation",
            "compliance",
            "quality",
        ],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": github_repository_schema(),
                "validation_scope": {
                    "type": "array",
                    "description": "Categories to check (default: all)",
                    "items": {"type": "string", "enum": CATEGORIES},
                    "minItems": 1,
                    "maxItems": 10,
                },
                "include_recommendations": {"type": "boolean", "default": true},
                "notify_agents": {
                    "type": "boolean",
                    "description": "Report what would be sent to the other A2A agents",
                    "default": true,
                },
            },
            "required": ["repository"],
        }),
        examples: vec![
            example(json!({"repository": "acme/payments-api"}), "Every category"),
            example(
                json!({"repository": "acme/payments-api", "validation_scope": ["containerization", "ci_cd"], "include_recommendations": false}),
                "Containers and CI only, without recommendations",
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
    validation_scope: Option<Vec<String>>,
    include_recommendations: Option<bool>,
    notify_agents: Option<bool>,
}

/// The categories asked for, in the order of [`CATEGORIES`], each once.
fn scope(requested: Option<&[String]>) -> Vec<&'static str> {
    match requested {
        None => CATEGORIES.to_vec(),
        Some(list) => CATEGORIES
            .iter()
            .copied()
            .filter(|c| list.iter().any(|r| r == c))
            .collect(),
    }
}

fn evaluate_all(categories: &[&str], files: &RepoFiles) -> Vec<CategoryResult> {
    categories
        .iter()
        .filter_map(|c| architecture::evaluate(c, files))
        .collect()
}

async fn run_validate(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: ValidateInput = parse(input)?;
    let repository = q.repository.trim().to_string();
    let categories = scope(q.validation_scope.as_deref());
    let (info, files) = inspect(&ctx, &repository, &categories).await?;
    let results = evaluate_all(&categories, &files);
    let (_, _, score) = overall(&results);
    let ranked = ranked(&results);
    render(&ValidateResponse {
        repository: &repository,
        overall_compliance_score: score,
        compliance_grade: architecture::grade(score),
        summary: ValidateSummary::new(&results),
        categories: Categories(&results),
        critical_violations: ranked
            .iter()
            .filter(|(_, v)| v.severity == Priority::Critical)
            .map(|(category, v)| CategoryViolation {
                violation: ViolationJson::from(*v),
                category,
            })
            .collect(),
        recommendations: q.include_recommendations.unwrap_or(true).then(|| {
            ranked
                .iter()
                .map(|(c, v)| RecommendationJson::new(c, v))
                .collect()
        }),
        a2a_integration: q
            .notify_agents
            .unwrap_or(true)
            .then(|| a2a_integration(&ctx)),
        branch: &info.default_branch,
        files_read: files.contents.keys().map(String::as_str).collect(),
        tree_truncated: files.tree.truncated,
    })
}

/// What happened with the other agents: nexusd does not push results to them (their APIs for
/// it are not part of the contract), so each is reported as skipped, with the reason.
fn a2a_integration(ctx: &SkillContext) -> Value {
    let configured = configured_agents(&ctx.config.external);
    let status = |name: &str| {
        if configured.iter().any(|(n, _)| *n == name) {
            json!({"status": "skipped", "reason": "notification_not_supported"})
        } else {
            json!({"status": "skipped", "reason": "agent_not_configured"})
        }
    };
    json!({
        "monitoring": {"status": "skipped", "reason": "agent_not_configured"},
        "orchestrator": status("dependency-orchestrator"),
        "pattern_miner": status("pattern-miner"),
        "dependency_context": status("dependency-orchestrator"),
    })
}

pub fn check_specific_standard() -> Skill {
    Skill {
        id: "check_specific_standard",
        name: "Check Specific Architectural Standard",
        description: "Check a GitHub repository against one category of nexusd's architectural standards.",
        tags: &["architecture", "standards", "validation", "focused-check"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": github_repository_schema(),
                "standard_category": {"type": "string", "enum": CATEGORIES},
            },
            "required": ["repository", "standard_category"],
        }),
        examples: vec![example(
            json!({"repository": "acme/payments-api", "standard_category": "containerization"}),
            "Is the Dockerfile sound?",
        )],
        aliases: &[],
        empty: json!({}),
        uses_database: false,
        handler: handler(run_specific),
    }
}

#[derive(Deserialize)]
struct SpecificInput {
    repository: String,
    standard_category: String,
}

async fn run_specific(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: SpecificInput = parse(input)?;
    let repository = q.repository.trim().to_string();
    let Some(category) = CATEGORIES
        .iter()
        .copied()
        .find(|c| *c == q.standard_category)
    else {
        return Err(SkillError::Failed {
            error: format!("Standard category '{}' not found", q.standard_category),
            extra: output(json!({"error_type": "unknown_category"})),
        });
    };
    let (_, files) = inspect(&ctx, &repository, &[category]).await?;
    let result = architecture::evaluate(category, &files)
        .ok_or_else(|| SkillError::failed(format!("Standard category '{category}' not found")))?;
    Ok(output(json!({
        "repository": repository,
        "standard_category": category,
        "passed": result.passed(),
        "compliance_score": result.score(),
        "checks_performed": result.checks_performed,
        "violations": result.violations.iter().map(ViolationJson::from).collect::<Vec<_>>(),
    })))
}

pub fn suggest_improvements() -> Skill {
    Skill {
        id: "suggest_improvements",
        name: "Suggest Architectural Improvements",
        description: "Check a GitHub repository against every category of nexusd's architectural standards \
                      and return the fixes, most important first, grouped by priority.",
        tags: &[
            "architecture",
            "recommendations",
            "improvements",
            "planning",
        ],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": github_repository_schema(),
                "max_recommendations": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            },
            "required": ["repository"],
        }),
        examples: vec![
            example(
                json!({"repository": "acme/payments-api"}),
                "The ten most important fixes",
            ),
            example(
                json!({"repository": "acme/payments-api", "max_recommendations": 3}),
                "The three most important fixes",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: false,
        handler: handler(run_suggest),
    }
}

#[derive(Deserialize)]
struct SuggestInput {
    repository: String,
    max_recommendations: Option<usize>,
}

async fn run_suggest(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: SuggestInput = parse(input)?;
    let repository = q.repository.trim().to_string();
    let (_, files) = inspect(&ctx, &repository, CATEGORIES).await?;
    let results = evaluate_all(CATEGORIES, &files);
    let (_, failed, score) = overall(&results);
    let chosen: Vec<(&'static str, &Finding)> = ranked(&results)
        .into_iter()
        .take(q.max_recommendations.unwrap_or(10))
        .collect();
    let mut by_priority = Map::new();
    for (category, v) in &chosen {
        let key = v.severity.as_str().to_uppercase();
        let entry = by_priority.entry(key).or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(json!(RecommendationJson::new(category, v)));
        }
    }
    let actions = |severity: Priority| -> Vec<String> {
        chosen
            .iter()
            .filter(|(_, v)| v.severity == severity)
            .map(|(_, v)| format!("{}: {}", v.title, v.recommendation))
            .collect()
    };
    Ok(output(json!({
        "repository": repository,
        "overall_compliance_score": score,
        "compliance_grade": architecture::grade(score),
        "total_violations": failed,
        "critical_violations_count": count(&results, Priority::Critical),
        "recommendations_count": chosen.len(),
        "recommendations_by_priority": by_priority,
        "summary": {
            "critical_actions": actions(Priority::Critical),
            "high_priority_actions": actions(Priority::High),
        },
    })))
}
