//! Repository complexity (`docs/workflows.md`, "Complexity"): `analyze_repository_complexity`
//! (protected) measures a repository from its GitHub tree and stores the measurement;
//! `get_repository_complexity_details` reads what is stored, in the shape the frontend reads.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use super::workflows::steps;
use crate::kb::{self, complexity};

/// The score's formula, as the answers and `docs/workflows.md` state it.
pub const SCORE_FORMULA: &str = "score = size + branching + languages + dependencies, 0-100: \
     size = min(40, 10 * log10(1 + lines_of_code / 100)); \
     branching = min(30, 3 * line-weighted average McCabe number per function); \
     languages = min(10, 2.5 * (languages - 1)); \
     dependencies = min(20, runtime dependencies / 5)";

fn repository_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "repository": repository_schema("A repository of the knowledge base (owner/repo)"),
            "include_components": {"type": "boolean", "default": true, "description": "List the most complex files"},
        },
        "required": ["repository"],
    })
}

pub fn analyze_repository_complexity() -> Skill {
    Skill {
        id: "analyze_repository_complexity",
        name: "Analyze Repository Complexity",
        description: "Measure a repository from its GitHub tree — files, lines, languages, largest files, \
                      dependency counts from its manifests, McCabe numbers per source file and a 0-100 score — \
                      and store the measurement. Needs GITHUB_TOKEN (without it: error_type not_configured).",
        tags: &["complexity", "metrics", "analysis"],
        requires_authentication: true,
        input_schema: repository_input(),
        examples: vec![example(
            json!({"repository": "acme/payments-api"}),
            "Measure one repository",
        )],
        aliases: &[("repository_name", "repository")],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_analyze),
    }
}

#[derive(Deserialize)]
struct RepositoryInput {
    repository: String,
    include_components: Option<bool>,
}

async fn run_analyze(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: RepositoryInput = parse(input)?;
    let repo_id = steps::known_repository(&ctx, &q.repository).await?;
    let never = CancellationToken::new();
    let source = steps::open(&ctx, &never, &q.repository).await?;
    let (m, analyzed_at) = steps::measure_complexity(&ctx, &never, &source, repo_id).await?;
    let mut answer = output(json!({
        "repository": q.repository,
        "message": format!(
            "Complexity of {} measured: score {} (grade {}), {} files, {} lines of code",
            q.repository, m.score, m.grade, m.files, m.lines_of_code
        ),
        "analyzed_at": analyzed_at,
        "score": m.score,
        "grade": m.grade,
        "score_formula": SCORE_FORMULA,
    }));
    answer.extend(output(
        serde_json::to_value(&m).unwrap_or_else(|_| json!({})),
    ));
    Ok(answer)
}

pub fn get_repository_complexity_details() -> Skill {
    Skill {
        id: "get_repository_complexity_details",
        name: "Get Repository Complexity Details",
        description: "The complexity stored for a repository by analyze_repository_complexity: its metrics, \
                      score and grade, the most complex files, and how many days old the measurement is. Read-only.",
        tags: &["complexity", "metrics", "read"],
        requires_authentication: false,
        input_schema: repository_input(),
        examples: vec![example(
            json!({"repository": "acme/payments-api", "include_components": true}),
            "One repository's stored complexity",
        )],
        aliases: &[("repository_name", "repository")],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_details),
    }
}

async fn run_details(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: RepositoryInput = parse(input)?;
    let repo_id = steps::known_repository(&ctx, &q.repository).await?;
    let stored = {
        let mut conn = ctx.pool().acquire().await?;
        complexity::get(&mut conn, repo_id).await?
    };
    let Some(stored) = stored else {
        return Err(SkillError::Failed {
            error: format!(
                "No complexity analysis stored for {}: run analyze_repository_complexity first",
                q.repository
            ),
            extra: Map::from_iter([
                ("error_type".to_string(), json!("not_analyzed")),
                ("repository".to_string(), json!(q.repository)),
            ]),
        });
    };
    let m = &stored.metrics;
    let days = (chrono::Utc::now() - stored.analyzed_at).num_days().max(0);
    let analyzed_at = kb::iso_opt(Some(stored.analyzed_at));
    let components = if q.include_components.unwrap_or(true) {
        stored.files.clone()
    } else {
        json!([])
    };
    let mut answer = output(json!({
        "repository": q.repository,
        "complexity_metrics": {
            "grade": m["grade"],
            "mccabe": m["mccabe"],
            "simple": m["simple"],
            "primary": m["primary"],
            "cognitive": m["cognitive"],
            "analyzed_at": analyzed_at,
            "component_count": m["component_count"],
            "staleness_days": days,
        },
        "top_complex_components": components,
        "score": stored.score,
        "score_formula": SCORE_FORMULA,
        "analyzed_at": analyzed_at,
    }));
    for key in [
        "files",
        "directories",
        "files_measured",
        "lines_of_code",
        "languages",
        "largest_files",
        "dependencies",
        "score_parts",
        "tree_truncated",
    ] {
        answer.insert(key.to_string(), m[key].clone());
    }
    Ok(answer)
}
