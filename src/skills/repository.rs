//! Repository information skills: `get_repository_list`, `get_deployment_info`,
//! `add_repository`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::patterns::not_found;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::kb::{self, iso_opt, repositories};

pub fn get_repository_list() -> Skill {
    Skill {
        id: "get_repository_list",
        name: "Get Repository List",
        description: "List every repository in the knowledge base with its pattern count, last analysis time, \
                      problem domain and top keywords.",
        tags: &["repositories", "list", "metadata"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "include_metadata": {
                    "type": "boolean",
                    "description": "Include pattern counts, dates, domains and keywords (false: names only)",
                    "default": true,
                },
            },
        }),
        examples: vec![
            example(json!({}), "All repositories with metadata"),
            example(json!({"include_metadata": false}), "Repository names only"),
        ],
        aliases: &[],
        empty: json!({"repositories": [], "total_count": 0, "total_repositories": 0}),
        uses_database: true,
        handler: handler(run_list),
    }
}

#[derive(Deserialize)]
struct ListInput {
    include_metadata: Option<bool>,
}

async fn run_list(ctx: SkillContext, input: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let q: ListInput = parse(input)?;
    let mut conn = ctx.pool().acquire().await?;
    let repositories: Vec<Value> = if q.include_metadata.unwrap_or(true) {
        repositories::summaries(&mut conn)
            .await
            .map_err(|e| SkillError::from(e).context("Failed to get repository list"))?
            .into_iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "pattern_count": r.pattern_count,
                    "last_updated": iso_opt(r.last_analyzed),
                    "problem_domain": r.problem_domain,
                    "keywords": r.keywords,
                })
            })
            .collect()
    } else {
        kb::repository_names(&mut conn)
            .await
            .map_err(|e| SkillError::from(e).context("Failed to get repository list"))?
            .into_iter()
            .map(Value::String)
            .collect()
    };
    let total = repositories.len();
    Ok(output(json!({
        "repositories": repositories,
        "total_count": total,
        // The frontend's dashboard reads this name.
        "total_repositories": total,
    })))
}

pub fn get_deployment_info() -> Skill {
    Skill {
        id: "get_deployment_info",
        name: "Get Deployment Information",
        description: "Everything known about how a repository is built and run: deployment scripts and \
                      infrastructure, reusable components, dependencies, test frameworks, security patterns, \
                      latest patterns, lessons learned and analysis history.",
        tags: &["deployment", "infrastructure", "devops"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_schema("Repository in owner/repo form"),
                "include_lessons": {"type": "boolean", "description": "Include lessons learned", "default": true},
                "include_history": {"type": "boolean", "description": "Include the analysis history", "default": false},
            },
            "required": ["repository"],
        }),
        examples: vec![
            example(
                json!({"repository": "acme/payments-api"}),
                "Deployment information with lessons",
            ),
            example(
                json!({"repository": "acme/payments-api", "include_lessons": false, "include_history": true}),
                "With analysis history, without lessons",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_deployment_info),
    }
}

#[derive(Deserialize)]
struct DeploymentInput {
    repository: String,
    include_lessons: Option<bool>,
    include_history: Option<bool>,
}

async fn run_deployment_info(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: DeploymentInput = parse(input)?;
    let include_history = q.include_history.unwrap_or(false);
    // One statement, so one snapshot: no transaction needed (docs/read-path.md).
    let result = async {
        let mut conn = ctx.pool().acquire().await?;
        match repositories::deployment_info(&mut conn, &q.repository, include_history).await? {
            Some(found) => Ok(found),
            None => Err(not_found(&mut conn, &q.repository).await),
        }
    }
    .await
    .map_err(|e: SkillError| e.context("Failed to get deployment info"))?;
    let (repo, details) = result;

    let mut out = output(json!({
        "repository": repo.name,
        "deployment": details.deployment,
        "dependencies": details.dependencies,
        "testing": details.testing,
        "security": details.security,
        "latest_patterns": {
            "patterns": details.patterns,
            "problem_domain": repo.problem_domain,
            "keywords": details.keywords,
            "analyzed_at": iso_opt(repo.last_analyzed),
            "commit_sha": repo.last_commit_sha,
        },
    }));
    if q.include_lessons.unwrap_or(true) {
        out.insert("lessons_learned".into(), Value::Array(details.lessons));
    }
    if include_history {
        out.insert("history".into(), Value::Array(details.history));
    }
    Ok(out)
}

pub fn add_repository() -> Skill {
    Skill {
        id: "add_repository",
        name: "Add Repository",
        description: "Add a repository to the knowledge base so that analyses, lessons and deployment \
                      information can be recorded for it.",
        tags: &["repositories", "management", "add"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_schema("Repository in owner/repo form"),
                "problem_domain": {"type": "string", "description": "What the repository is about", "maxLength": 2000, "default": ""},
            },
            "required": ["repository"],
        }),
        examples: vec![example(
            json!({"repository": "acme/payments-api", "problem_domain": "payments"}),
            "Register a repository",
        )],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_add_repository),
    }
}

#[derive(Deserialize)]
struct AddInput {
    repository: String,
    problem_domain: Option<String>,
}

async fn run_add_repository(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: AddInput = parse(input)?;
    let mut conn = ctx.pool().acquire().await?;
    let id = repositories::add(
        &mut conn,
        &q.repository,
        q.problem_domain.as_deref().unwrap_or(""),
    )
    .await
    .map_err(|e| SkillError::from(e).context("Failed to add repository"))?;
    let Some(id) = id else {
        return Err(SkillError::failed(format!(
            "Failed to add repository: repository '{}' already exists",
            q.repository
        )));
    };
    Ok(output(json!({
        "repository": q.repository,
        "repository_id": id,
        "message": format!("Repository '{}' added successfully", q.repository),
    })))
}
