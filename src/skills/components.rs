//! Component sensibility skills (`docs/skill-rules.md`, "Component placement"):
//! `detect_misplaced_components`, `analyze_component_centrality` and
//! `recommend_consolidation_plan` score where a reusable component belongs from the knowledge
//! base (`component_scoring.rs`, which also plans the consolidation) and write nothing;
//! `scan_repository_components` (protected) re-reads a repository's components from its source
//! on GitHub (`component_scan.rs`) and replaces its `reusable_components` rows in one
//! transaction.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::context::now_rfc3339;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, render};
use crate::github::{GitHub, GitHubError, parse_repository};
use crate::kb::{self, components};
use crate::rules::component_scan;
use crate::rules::component_scoring::{
    self, CandidateScore, Component, Knowledge, MISPLACED_MARGIN, round3, terms,
};
use crate::rules::consolidation::{
    self, DeepAnalysis, ImpactAnalysis, Phases, PlanRequest, Recommendation, score_of,
};

/// Misplaced components listed at most.
const MAX_LISTED: usize = 10;

fn name_field(description: &str) -> Value {
    json!({"type": "string", "description": description, "minLength": 1, "maxLength": 500})
}

fn repository_field(description: &str) -> Value {
    json!({"type": "string", "description": description, "minLength": 1, "maxLength": 255})
}

/// The knowledge base, read in one snapshot.
async fn load(ctx: &SkillContext, context: &str) -> Result<Knowledge, SkillError> {
    async {
        let mut tx = kb::snapshot(ctx.pool()).await?;
        let knowledge = components::knowledge(&mut tx).await?;
        tx.commit().await?;
        Ok(knowledge)
    }
    .await
    .map_err(|e: sqlx::Error| SkillError::from(e).context(context))
}

fn not_found(repository: &str) -> SkillError {
    SkillError::failed(format!("Repository not found: {repository}"))
}

fn require(k: &Knowledge, repository: &str) -> Result<(), SkillError> {
    k.repository(repository)
        .map(|_| ())
        .ok_or_else(|| not_found(repository))
}

fn all_scores_map(scores: &[CandidateScore]) -> Map<String, Value> {
    scores
        .iter()
        .map(|s| (s.repository.clone(), json!(s.score)))
        .collect()
}

/// A component as the skills list it, with its similarity to the component in question.
fn implementation_json(c: &Component, similarity: Option<f64>) -> Value {
    json!({
        "component_id": c.id,
        "component_name": c.name,
        "repository": c.repository,
        "location": c.location,
        "similarity": similarity,
        "sync_status": c.sync_status,
    })
}

pub fn detect_misplaced_components() -> Skill {
    Skill {
        id: "detect_misplaced_components",
        name: "Detect Misplaced Components",
        description: "Find reusable components that would be better placed in another repository: for each \
                      component, its similar copies elsewhere and the canonical score of every repository as \
                      its home (keyword overlap, usage by dependent repositories, dependency centrality, \
                      maintenance, size and complexity, first implementation). Read-only.",
        tags: &[
            "architecture",
            "component-sensibility",
            "consolidation",
            "code-reuse",
        ],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_field("Only this repository's components (default: all)"),
                "component_types": {
                    "type": "array",
                    "description": "Only components of these types",
                    "items": {"type": "string", "minLength": 1, "maxLength": 50},
                    "maxItems": 20,
                },
                "min_similarity_score": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                "include_diverged": {
                    "type": "boolean",
                    "description": "Count copies whose sync_status is 'diverged' as similar",
                    "default": true,
                },
                "top_k_matches": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
            },
        }),
        examples: vec![
            example(json!({}), "Every component of the knowledge base"),
            example(
                json!({"repository": "acme/payments-api", "min_similarity_score": 0.7, "top_k_matches": 3}),
                "One repository's components, close copies only",
            ),
        ],
        aliases: &[],
        empty: json!({"misplaced_components": [], "component_issues": [], "total_duplicates": 0, "total_misplaced": 0}),
        uses_database: true,
        handler: handler(run_detect),
    }
}

#[derive(Deserialize)]
struct DetectInput {
    repository: Option<String>,
    component_types: Option<Vec<String>>,
    min_similarity_score: Option<f64>,
    include_diverged: Option<bool>,
    top_k_matches: Option<usize>,
}

async fn run_detect(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: DetectInput = parse(input)?;
    let filters = filters_applied(&q);
    let k = load(&ctx, "Failed to detect misplaced components").await?;
    if let Some(r) = &q.repository {
        require(&k, r)?;
    }
    let min = q.min_similarity_score.unwrap_or(0.5);
    let include_diverged = q.include_diverged.unwrap_or(true);
    let top_k = q.top_k_matches.unwrap_or(5);
    let types: Option<Vec<String>> = q
        .component_types
        .map(|t| t.iter().map(|s| s.to_lowercase()).collect());
    let candidates: Vec<&str> = k.repositories.iter().map(|r| r.name.as_str()).collect();

    let in_scope: Vec<&Component> = k
        .components
        .iter()
        .filter(|c| q.repository.as_deref().is_none_or(|r| c.repository == r))
        .filter(|c| {
            types
                .as_ref()
                .is_none_or(|t| t.contains(&c.component_type.to_lowercase()))
        })
        .collect();
    let mut misplaced: Vec<(f64, Value)> = Vec::new();
    for c in &in_scope {
        let similar = k.similar_to(c, min, include_diverged);
        let mut implementations: Vec<&Component> = vec![c];
        implementations.extend(similar.iter().map(|(s, _)| *s));
        let scores = k.score(&terms(c), &implementations, &candidates);
        let Some(best) = scores.first() else { continue };
        let current = score_of(&scores, &c.repository);
        let improvement = round3(best.score - current);
        if best.repository == c.repository || improvement < MISPLACED_MARGIN {
            continue;
        }
        misplaced.push((
            improvement,
            json!({
                "component_id": c.id,
                "component_name": c.name,
                "component_type": c.component_type,
                "current_location": c.repository,
                "current_files": c.location.iter().collect::<Vec<_>>(),
                "similar_components": similar.iter().take(top_k).map(|(s, similarity)| implementation_json(s, Some(*similarity))).collect::<Vec<_>>(),
                "similar_count": similar.len(),
                "potential_consolidation": !similar.is_empty(),
                "canonical_recommendation": {
                    "repository": best.repository,
                    "canonical_score": best.score,
                    "current_score": current,
                    "improvement": improvement,
                    "reasoning": best.reasoning(),
                    "all_scores": all_scores_map(&scores),
                },
            }),
        ));
    }
    misplaced.sort_by(|a, b| b.0.total_cmp(&a.0));
    let found = misplaced.len();
    let issues: Vec<Value> = misplaced.iter().map(|(_, m)| component_issue(m)).collect();
    let duplicated = issues
        .iter()
        .filter(|i| i["issue_type"] == "duplicated")
        .count();
    let summary = if in_scope.is_empty() {
        "No components found matching criteria".to_string()
    } else {
        format!(
            "{found} of {} component(s) would be better placed in another repository",
            in_scope.len()
        )
    };
    Ok(output(json!({
        "analyzed_repository": q.repository.as_deref().unwrap_or("all"),
        "components_analyzed": in_scope.len(),
        "misplaced_components_found": found,
        "misplaced_components": misplaced.into_iter().take(MAX_LISTED).map(|(_, v)| v).collect::<Vec<_>>(),
        "summary": summary,
        "analysis_timestamp": now_rfc3339(),
        "component_issues": issues,
        "total_duplicates": duplicated,
        "total_misplaced": found - duplicated,
        "filters_applied": filters,
    })))
}

/// The web frontend's view of a misplaced component (docs/skills-api.md): `duplicated` when
/// copies exist elsewhere, `misplaced` otherwise; the similarity is the closest copy's (1.0
/// when there is none: the component itself is what would move).
fn component_issue(m: &Value) -> Value {
    let copies = m["similar_components"].as_array();
    let similarity = copies
        .and_then(|c| {
            c.iter()
                .filter_map(|s| s["similarity"].as_f64())
                .reduce(f64::max)
        })
        .unwrap_or(1.0);
    let duplicated = copies.is_some_and(|c| !c.is_empty());
    json!({
        "component_name": m["component_name"],
        "component_id": m["component_id"],
        "current_location": m["current_location"],
        "suggested_location": m["canonical_recommendation"]["repository"],
        "similarity_score": similarity,
        "issue_type": if duplicated { "duplicated" } else { "misplaced" },
        "reason": m["canonical_recommendation"]["reasoning"],
    })
}

/// The filters a detection applied, as `name=value` strings.
fn filters_applied(q: &DetectInput) -> Vec<String> {
    [
        ("repository", q.repository.clone()),
        (
            "component_types",
            q.component_types.as_ref().map(|t| t.join(",")),
        ),
        (
            "min_similarity_score",
            q.min_similarity_score.map(|m| m.to_string()),
        ),
        (
            "include_diverged",
            q.include_diverged.map(|d| d.to_string()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
    .collect()
}

pub fn analyze_component_centrality() -> Skill {
    Skill {
        id: "analyze_component_centrality",
        name: "Analyze Component Centrality",
        description: "Score candidate repositories as the home of a component: six weighted factors computed \
                      from the knowledge base, the best location, and the improvement over the current one. \
                      Read-only.",
        tags: &[
            "architecture",
            "component-sensibility",
            "scoring",
            "analysis",
        ],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "component_name": name_field("The component's name"),
                "current_location": repository_field("The repository that holds it now"),
                "candidate_locations": {
                    "type": "array",
                    "description": "Repositories to score (default: all; the current one is always included)",
                    "items": {"type": "string", "minLength": 1, "maxLength": 255},
                    "maxItems": 100,
                },
            },
            "required": ["component_name", "current_location"],
        }),
        examples: vec![
            example(
                json!({"component_name": "retry-policy", "current_location": "acme/payments-api"}),
                "Score every repository",
            ),
            example(
                json!({"component_name": "retry-policy", "current_location": "acme/payments-api", "candidate_locations": ["acme/platform-lib"]}),
                "Compare with one candidate",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_centrality),
    }
}

#[derive(Deserialize)]
struct CentralityInput {
    component_name: String,
    current_location: String,
    candidate_locations: Option<Vec<String>>,
}

/// The candidates asked for (each must exist), plus the current location.
fn candidates<'a>(
    k: &'a Knowledge,
    current: &'a str,
    asked: Option<&'a [String]>,
) -> Result<Vec<&'a str>, SkillError> {
    let Some(asked) = asked else {
        return Ok(k.repositories.iter().map(|r| r.name.as_str()).collect());
    };
    let mut list: Vec<&str> = vec![current];
    for c in asked {
        require(k, c)?;
        if !list.contains(&c.as_str()) {
            list.push(c);
        }
    }
    Ok(list)
}

async fn run_centrality(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: CentralityInput = parse(input)?;
    let k = load(&ctx, "Failed to analyze component centrality").await?;
    require(&k, &q.current_location)?;
    let candidates = candidates(&k, &q.current_location, q.candidate_locations.as_deref())?;
    let (implementations, subject, found) =
        k.implementations(&q.component_name, &q.current_location);
    let scores = k.score(&subject, &implementations, &candidates);
    let current = score_of(&scores, &q.current_location);
    let best = scores
        .first()
        .map_or((q.current_location.clone(), current), |b| {
            (b.repository.clone(), b.score)
        });
    let reference = implementations
        .iter()
        .find(|c| c.repository == q.current_location)
        .copied();
    let all_scores: Map<String, Value> = scores
        .iter()
        .map(|s| (s.repository.clone(), s.to_json()))
        .collect();
    let improvement = round3(best.1 - current);
    Ok(output(json!({
        "component_name": q.component_name,
        "current_location": q.current_location,
        "component_found": found,
        "implementations": implementations.iter().map(|c| implementation_json(c, reference.map(|r| component_scoring::similarity(r, c)))).collect::<Vec<_>>(),
        "analysis": {
            "best_location": best.0,
            "best_score": best.1,
            "all_scores": all_scores,
            "recommendation": {
                "from": q.current_location,
                "to": best.0,
                "improvement": improvement,
            },
        },
        "analysis_timestamp": now_rfc3339(),
        // The web frontend reads these at the top level (docs/skills-api.md).
        "best_location": best.0,
        "improvement_score": improvement,
        "all_scores": all_scores,
    })))
}

pub fn recommend_consolidation_plan() -> Skill {
    Skill {
        id: "recommend_consolidation_plan",
        name: "Recommend Consolidation Plan",
        description: "Plan moving a component into the repository that should own it: four phases with tasks \
                      and effort estimated from the component's size and the repositories affected, benefits \
                      and risks, and optional impact/deep analysis from the dependency-orchestrator and \
                      pattern-miner agents. Nothing is stored.",
        tags: &[
            "architecture",
            "component-sensibility",
            "planning",
            "consolidation",
        ],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "component_name": name_field("The component's name"),
                "from_repository": repository_field("Where it is now"),
                "to_repository": repository_field("Where it should go (default: the highest-scoring repository)"),
                "include_impact_analysis": {"type": "boolean", "default": true},
                "include_deep_analysis": {"type": "boolean", "default": true},
            },
            "required": ["component_name", "from_repository"],
        }),
        examples: vec![
            example(
                json!({"component_name": "retry-policy", "from_repository": "acme/payments-api"}),
                "Plan a move to the best-scoring repository",
            ),
            example(
                json!({"component_name": "retry-policy", "from_repository": "acme/payments-api", "to_repository": "acme/platform-lib", "include_deep_analysis": false}),
                "Plan a move to a chosen repository",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_plan),
    }
}

#[derive(Deserialize)]
struct PlanInput {
    component_name: String,
    from_repository: String,
    to_repository: Option<String>,
    include_impact_analysis: Option<bool>,
    include_deep_analysis: Option<bool>,
}

/// Eight hex characters, random per call.
fn recommendation_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", h.finish() as u32)
}

/// The plan as `recommend_consolidation_plan` answers it: the pure plan with this call's
/// recommendation id and timestamp.
#[derive(Serialize)]
struct PlanResponse<'a> {
    recommendation_id: &'a str,
    component_name: &'a str,
    from_repository: &'a str,
    to_repository: &'a str,
    consolidation_plan: &'a Phases,
    impact_analysis: &'a Option<ImpactAnalysis>,
    deep_analysis: &'a Option<DeepAnalysis>,
    recommendation: StampedRecommendation<'a>,
    recommendation_timestamp: &'a str,
    // The web frontend's keys, at the top level (docs/skills-api.md).
    consolidation_recommendation_id: &'a str,
    best_location: &'a str,
    improvement_score: f64,
    confidence: f64,
    priority: String,
    phases: Vec<Value>,
    benefits: &'a [String],
    risks: &'a [String],
    estimated_total_effort_hours: f64,
}

/// The plan's four phases as the list the web frontend reads.
fn phase_list(plan: &Phases) -> Vec<Value> {
    let phases = [
        (&plan.analysis, "Analyze", "low"),
        (&plan.consolidate, "Merge", "medium"),
        (&plan.migrate_consumers, "Update", "high"),
        (&plan.clean_up, "Monitor", "low"),
    ];
    phases
        .iter()
        .enumerate()
        .map(|(i, (phase, label, risk))| {
            let details = serde_json::to_value(&phase.details).unwrap_or_else(|_| json!({}));
            let affected = details
                .get("affected_repositories")
                .or_else(|| details.get("implementations"))
                .cloned()
                .unwrap_or_else(|| json!([]));
            json!({
                "phase": i + 1,
                "phase_number": i + 1,
                "phase_name": label,
                "name": phase.name,
                "description": phase.description,
                "tasks": phase.tasks,
                "blockers": [],
                "estimated_effort_hours": phase.hours,
                "risk_level": risk,
                "affected_files": affected,
            })
        })
        .collect()
}

#[derive(Serialize)]
struct StampedRecommendation<'a> {
    recommendation_id: &'a str,
    timestamp: &'a str,
    #[serde(flatten)]
    recommendation: &'a Recommendation,
}

async fn run_plan(ctx: SkillContext, input: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let q: PlanInput = parse(input)?;
    let k = load(&ctx, "Failed to recommend consolidation plan").await?;
    require(&k, &q.from_repository)?;
    if let Some(to) = &q.to_repository {
        require(&k, to)?;
    }
    let external = &ctx.config.external;
    let plan = consolidation::consolidation_plan(
        &k,
        &PlanRequest {
            component: &q.component_name,
            from: &q.from_repository,
            to: q.to_repository.as_deref(),
            impact_analysis: q.include_impact_analysis.unwrap_or(true),
            deep_analysis: q.include_deep_analysis.unwrap_or(true),
            orchestrator_configured: external.orchestrator.is_some(),
            pattern_miner_configured: external.pattern_miner.is_some(),
        },
    );
    let id = recommendation_id();
    let timestamp = now_rfc3339();
    render(&PlanResponse {
        recommendation_id: &id,
        component_name: &plan.component_name,
        from_repository: &plan.from_repository,
        to_repository: &plan.to_repository,
        consolidation_plan: &plan.consolidation_plan,
        impact_analysis: &plan.impact_analysis,
        deep_analysis: &plan.deep_analysis,
        recommendation: StampedRecommendation {
            recommendation_id: &id,
            timestamp: &timestamp,
            recommendation: &plan.recommendation,
        },
        recommendation_timestamp: &timestamp,
        consolidation_recommendation_id: &id,
        best_location: &plan.to_repository,
        improvement_score: plan.recommendation.improvement,
        confidence: plan.recommendation.confidence,
        priority: plan.recommendation.priority.to_uppercase(),
        phases: phase_list(&plan.consolidation_plan),
        benefits: &plan.recommendation.benefits,
        risks: &plan.recommendation.risks,
        estimated_total_effort_hours: plan.consolidation_plan.total_estimated_hours,
    })
}

pub fn scan_repository_components() -> Skill {
    Skill {
        id: "scan_repository_components",
        name: "Scan Repository Components",
        description: "Re-read a repository's reusable components from its source on GitHub (public items, \
                      imports, size and complexity of each source file with a public API) and make them the \
                      repository's recorded components in one transaction. Needs GITHUB_TOKEN.",
        tags: &[
            "architecture",
            "component-sensibility",
            "scanning",
            "repository-analysis",
        ],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": {"type": "string", "description": "Repository in owner/repo form, as recorded in the knowledge base", "maxLength": 255},
            },
            "required": ["repository"],
        }),
        examples: vec![example(
            json!({"repository": "acme/payments-api"}),
            "Rescan a repository's components",
        )],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_scan),
    }
}

#[derive(Deserialize)]
struct ScanInput {
    repository: String,
}

fn scan_error(e: GitHubError, repository: &str) -> SkillError {
    match e {
        GitHubError::NotConfigured | GitHubError::InvalidRepository | GitHubError::NotFound(_) => {
            SkillError::github_repository(e, repository)
        }
        other => {
            let message = format!("Failed to scan repository components: {other}");
            SkillError::github(other, message)
        }
    }
}

async fn run_scan(ctx: SkillContext, input: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let q: ScanInput = parse(input)?;
    let repository = q.repository.trim().to_string();
    if repository.is_empty() {
        return Err(SkillError::failed(
            "Repository name is required (format: 'owner/repo')",
        ));
    }
    let missing = || {
        SkillError::failed(format!(
            "Repository '{repository}' not found in knowledge base"
        ))
    };
    {
        let mut conn = ctx.pool().acquire().await?;
        kb::repository_id(&mut conn, &repository)
            .await?
            .ok_or_else(missing)?;
    }

    if ctx.config.external.github.token.is_none() {
        return stored_components(&ctx, &repository).await;
    }
    // Read from GitHub before any transaction is open.
    let gh = GitHub::new(&ctx.config.external.github).map_err(|e| scan_error(e, &repository))?;
    parse_repository(&repository).map_err(|e| scan_error(e, &repository))?;
    let info = gh
        .repository(&repository)
        .await
        .map_err(|e| scan_error(e, &repository))?;
    let tree = gh
        .tree(&repository, &info.default_branch)
        .await
        .map_err(|e| scan_error(e, &repository))?;
    let files = component_scan::candidate_files(&tree);
    let contents = gh
        .files(&repository, &info.default_branch, files.clone())
        .await
        .map_err(|e| scan_error(e, &repository))?;
    let found = component_scan::extract_all(&contents);
    let replaced = components::replace_named(ctx.pool(), &repository, &found)
        .await
        .map_err(|e| SkillError::from(e).context("Failed to scan repository components"))?
        .ok_or_else(missing)?;

    Ok(output(json!({
        "repository": repository,
        "components_found": found.len(),
        "vectors_generated": 0,
        "pattern_extraction": "disabled",
        "extraction": "static",
        "components": found.iter().map(|c| json!({
            "name": c.name,
            "type": c.component_type,
            "files": [c.location],
            "loc": c.lines_of_code,
            "methods": c.public_methods,
            "description": c.purpose,
            "language": c.language,
            "cyclomatic_complexity": c.cyclomatic_complexity,
        })).collect::<Vec<_>>(),
        "branch": info.default_branch,
        "files_scanned": contents.len(),
        "components_inserted": replaced.inserted,
        "components_updated": replaced.updated,
        "components_unchanged": replaced.unchanged,
        "components_removed": replaced.removed,
    })))
}

/// Without GITHUB_TOKEN, as the original did: success with `pattern_extraction: "disabled"` and
/// the components already stored for the repository (nothing is read or written).
async fn stored_components(
    ctx: &SkillContext,
    repository: &str,
) -> Result<SkillOutput, SkillError> {
    let mut conn = ctx.pool().acquire().await?;
    let page = kb::catalog::list(&mut conn, Some(repository), None, 1000, 0).await?;
    let components: Vec<Value> = page["components"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    json!({
                        "name": c["name"],
                        "type": c["type"],
                        "files": c["files"],
                        "loc": c["loc"],
                        "methods": c["public_methods"],
                        "description": c["purpose"],
                        "language": c["language"],
                        "cyclomatic_complexity": c["cyclomatic_complexity"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(output(json!({
        "repository": repository,
        "components_found": components.len(),
        "vectors_generated": 0,
        "pattern_extraction": "disabled",
        "extraction": "stored",
        "components": components,
        "message": "GITHUB_TOKEN is not configured: these are the components already stored; set it to rescan the source",
    })))
}
