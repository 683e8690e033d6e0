//! Knowledge-management skills (protected writes): `add_lesson_learned`,
//! `update_dependency_info`, `add_deployment_info`. Each runs in one transaction that first
//! ensures the repository exists — a lesson for a known repository is a single statement.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::kb::knowledge::{NewDependency, NewDeployment, NewLesson};
use crate::kb::{self, Repo, iso_naive, knowledge, parse_datetime};

const LESSON_CATEGORIES: [&str; 5] = [
    "performance",
    "security",
    "reliability",
    "cost",
    "observability",
];
const LESSON_SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

pub fn add_lesson_learned() -> Skill {
    Skill {
        id: "add_lesson_learned",
        name: "Add Lesson Learned",
        description: "Record a lesson learned for a repository (created if unknown): what was learned, in \
                      which context, its category and severity.",
        tags: &["knowledge", "documentation", "lessons"],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_schema("Repository in owner/repo form"),
                "category": {"type": "string", "enum": LESSON_CATEGORIES},
                "lesson": {"type": "string", "description": "The lesson; its first 500 characters are its title", "minLength": 1, "maxLength": 10000},
                "context": {"type": "string", "description": "What happened", "minLength": 1, "maxLength": 50000},
                "severity": {"type": "string", "enum": LESSON_SEVERITIES, "default": "info"},
                "recorded_by": {"type": "string", "description": "Who recorded it", "maxLength": 200},
                "related_files": {"type": "array", "items": {"type": "string", "maxLength": 1000}, "maxItems": 200},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 50},
                "title": {"type": "string", "description": "Alias of lesson (the Dev-Nexus frontend's field)"},
                "description": {"type": "string", "description": "Alias of context (the Dev-Nexus frontend's field)"},
                "impact": {"type": "string", "description": "Alias of severity (the Dev-Nexus frontend's field)"},
            },
            "required": ["repository", "category", "lesson", "context"],
        }),
        examples: vec![example(
            json!({
                "repository": "acme/payments-api",
                "category": "reliability",
                "lesson": "Pin minor versions of the HTTP client",
                "context": "A minor release changed retry defaults and doubled p99 latency",
                "severity": "warning",
            }),
            "Record a reliability lesson",
        )],
        aliases: &[
            ("title", "lesson"),
            ("description", "context"),
            ("impact", "severity"),
        ],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_add_lesson),
    }
}

#[derive(Deserialize)]
struct LessonInput {
    repository: String,
    category: String,
    lesson: String,
    context: String,
    severity: Option<String>,
    recorded_by: Option<String>,
    #[serde(default)]
    related_files: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

async fn run_add_lesson(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: LessonInput = parse(input)?;
    let severity = q.severity.as_deref().unwrap_or("info");
    let lesson = NewLesson {
        title: &q.lesson,
        description: &q.context,
        category: &q.category,
        impact: severity,
        recorded_by: q.recorded_by.as_deref(),
        related_files: &q.related_files,
        tags: &q.tags,
        date: None,
    };
    let (id, date) = async {
        // The repository usually exists: then the lesson is one statement, one round trip.
        let mut conn = ctx.pool().acquire().await?;
        let named = Repo::Name(&q.repository);
        if let Some(written) = knowledge::insert_lesson(&mut conn, named, &lesson).await? {
            return Ok(written);
        }
        drop(conn);
        let mut tx = crate::db::begin(ctx.pool()).await?;
        let repo_id = kb::ensure_repository(&mut tx, &q.repository).await?;
        let written = knowledge::insert_lesson(&mut tx, Repo::Id(repo_id), &lesson)
            .await?
            .ok_or_else(|| {
                SkillError::internal("the repository vanished inside its transaction")
            })?;
        tx.commit().await?;
        Ok::<_, SkillError>(written)
    }
    .await
    .map_err(|e| e.context("Failed to add lesson learned"))?;
    Ok(output(json!({
        "message": format!("Lesson learned recorded for {}", q.repository),
        "lesson_id": iso_naive(date.naive_utc()),
        "id": id,
        "repository": q.repository,
        "category": q.category,
        "severity": severity,
    })))
}

/// A consumer or derivative: a repository name, or an object naming it.
fn dependency_item_schema() -> Value {
    json!({
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 500},
            {
                "type": "object",
                "properties": {
                    "repository": {"type": "string", "minLength": 1, "maxLength": 500},
                    "name": {"type": "string", "minLength": 1, "maxLength": 500},
                    "target_repo": {"type": "string", "minLength": 1, "maxLength": 500},
                    "version": {"type": "string", "maxLength": 100},
                },
                "anyOf": [{"required": ["repository"]}, {"required": ["name"]}, {"required": ["target_repo"]}],
            },
        ],
    })
}

pub fn update_dependency_info() -> Skill {
    Skill {
        id: "update_dependency_info",
        name: "Update Dependency Information",
        description: "Replace a repository's dependency graph: the repositories that consume it, those derived \
                      from it, and its external dependencies (dependency_info). Or add one edge to it, as the \
                      Dev-Nexus frontend's form does (dependent_repo with dependency_type), leaving the rest.",
        tags: &["dependencies", "graph", "orchestration"],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_schema("Repository in owner/repo form"),
                "dependency_info": {
                    "type": "object",
                    "description": "The complete dependency information; lists not given are emptied. Leave out to add one edge with dependent_repo",
                    "minProperties": 1,
                    "properties": {
                        "consumers": {"type": "array", "items": dependency_item_schema(), "maxItems": 1000},
                        "derivatives": {"type": "array", "items": dependency_item_schema(), "maxItems": 1000},
                        "external_dependencies": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1, "maxLength": 500},
                            "maxItems": 5000,
                        },
                    },
                },
                "dependent_repo": repository_schema("A repository that depends on (consumer) or derives from (derivative) this one, added to its graph"),
                "dependency_type": {"type": "string", "enum": ["consumer", "derivative"], "description": "How dependent_repo relates to the repository"},
                "description": {"type": "string", "maxLength": 10000, "description": "Sent by the frontend's form with dependent_repo; dependencies have no description, so it is not stored"},
            },
            "required": ["repository"],
            "oneOf": [{"required": ["dependency_info"]}, {"required": ["dependent_repo", "dependency_type"]}],
        }),
        examples: vec![
            example(
                json!({
                    "repository": "acme/payments-api",
                    "dependency_info": {
                        "consumers": ["acme/web", {"repository": "acme/mobile", "relationship_type": "api"}],
                        "derivatives": [],
                        "external_dependencies": ["fastapi", "asyncpg"],
                    },
                }),
                "Set consumers and external dependencies",
            ),
            example(
                json!({
                    "repository": "acme/payments-api",
                    "dependency_type": "consumer",
                    "dependent_repo": "acme/checkout",
                    "description": "Calls the charge endpoint",
                }),
                "Add one consumer, keeping the others",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_update_dependencies),
    }
}

#[derive(Deserialize)]
struct DependencyInput {
    repository: String,
    dependency_info: Option<DependencyInfo>,
    dependent_repo: Option<String>,
    dependency_type: Option<String>,
}

#[derive(Deserialize)]
struct DependencyInfo {
    #[serde(default)]
    consumers: Vec<Value>,
    #[serde(default)]
    derivatives: Vec<Value>,
    #[serde(default)]
    external_dependencies: Vec<String>,
}

/// The repository a consumer/derivative item names (validated to be there).
fn item_name(item: &Value) -> Option<(String, Option<String>)> {
    match item {
        Value::String(s) => Some((s.clone(), None)),
        Value::Object(o) => {
            let name = ["repository", "name", "target_repo"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))?;
            let version = o.get("version").and_then(Value::as_str).map(str::to_string);
            Some((name.to_string(), version))
        }
        _ => None,
    }
}

async fn run_update_dependencies(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: DependencyInput = parse(input)?;
    let Some(info) = &q.dependency_info else {
        return add_dependency_edge(ctx, q).await;
    };
    let mut deps = Vec::new();
    for (items, kind) in [
        (&info.consumers, "consumer"),
        (&info.derivatives, "derivative"),
    ] {
        for item in items {
            if let Some((name, version)) = item_name(item) {
                deps.push(NewDependency {
                    name,
                    kind,
                    version,
                });
            }
        }
    }
    for name in &info.external_dependencies {
        deps.push(NewDependency {
            name: name.clone(),
            kind: "external",
            version: None,
        });
    }
    let written = async {
        let mut tx = crate::db::begin(ctx.pool()).await?;
        let repo_id = kb::ensure_repository(&mut tx, &q.repository).await?;
        let written = knowledge::replace_dependencies(&mut tx, repo_id, &deps).await?;
        tx.commit().await?;
        Ok::<_, SkillError>(written)
    }
    .await
    .map_err(|e| e.context("Failed to update dependency info"))?;
    Ok(output(json!({
        "message": format!("Dependency info updated for {}", q.repository),
        "repository": q.repository,
        "dependencies_written": written,
    })))
}

/// The frontend's form: one consumer or derivative added to the graph (kept if already there).
async fn add_dependency_edge(
    ctx: SkillContext,
    q: DependencyInput,
) -> Result<SkillOutput, SkillError> {
    // The schema's oneOf guarantees both when dependency_info is absent.
    let (Some(dependent), Some(kind)) = (q.dependent_repo, q.dependency_type) else {
        return Err(SkillError::Invalid(
            "Missing required parameter: 'dependent_repo' with 'dependency_type'".into(),
        ));
    };
    let kind = if kind == "derivative" {
        "derivative"
    } else {
        "consumer"
    };
    let dep = NewDependency {
        name: dependent.clone(),
        kind,
        version: None,
    };
    let added = async {
        let mut tx = crate::db::begin(ctx.pool()).await?;
        let repo_id = kb::ensure_repository(&mut tx, &q.repository).await?;
        let added = knowledge::add_dependencies(&mut tx, repo_id, &[dep]).await?;
        tx.commit().await?;
        Ok::<_, SkillError>(added)
    }
    .await
    .map_err(|e| e.context("Failed to update dependency info"))?;
    Ok(output(json!({
        "message": format!("Dependency info updated for {}: {dependent} recorded as {kind}", q.repository),
        "repository": q.repository,
        "dependencies_written": added,
    })))
}

pub fn add_deployment_info() -> Skill {
    Skill {
        id: "add_deployment_info",
        name: "Add Deployment Info",
        description: "Record how a repository is deployed: its CI/CD platform, deployment scripts, \
                      infrastructure, deployment frequency and last deployment. One record per platform; \
                      recording it again replaces it.",
        tags: &["deployment", "repository", "metadata"],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_schema("Repository in owner/repo form"),
                "deployment_info": {
                    "type": "object",
                    "minProperties": 1,
                    "properties": {
                        "scripts": {
                            "type": "array",
                            "maxItems": 200,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string", "minLength": 1, "maxLength": 500},
                                    "description": {"type": "string", "maxLength": 10000},
                                    "script_path": {"type": "string", "maxLength": 1000},
                                    "platform": {"type": "string", "maxLength": 200},
                                    "triggers": {"type": "array", "items": {"type": "string", "maxLength": 500}},
                                    "runtime": {"type": "string", "maxLength": 200},
                                },
                                "required": ["name"],
                            },
                        },
                        "ci_cd_platform": {"type": "string", "minLength": 1, "maxLength": 500},
                        "infrastructure": {
                            "type": "object",
                            "description": "Infrastructure facts as text values, e.g. {\"region\": \"us-central1\"}",
                            "additionalProperties": {"type": "string", "maxLength": 10000},
                        },
                        "deployment_frequency": {"type": "string", "maxLength": 100},
                        "last_deployed": {"type": "string", "description": "ISO 8601 date-time", "maxLength": 64},
                        "lessons_learned": {"type": "array", "description": "Accepted for compatibility and ignored: use add_lesson_learned"},
                        "reusable_components": {"type": "array", "description": "Accepted for compatibility and ignored"},
                    },
                },
            },
            "required": ["repository", "deployment_info"],
        }),
        examples: vec![example(
            json!({
                "repository": "acme/payments-api",
                "deployment_info": {
                    "ci_cd_platform": "cloud_build",
                    "scripts": [{"name": "deploy", "description": "Build and deploy to Cloud Run", "script_path": "cloudbuild.yaml", "platform": "gcp", "triggers": ["push:main"]}],
                    "infrastructure": {"region": "us-central1", "service": "cloud_run"},
                },
            }),
            "Record a Cloud Build deployment",
        )],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_add_deployment),
    }
}

#[derive(Deserialize)]
struct DeploymentInput {
    repository: String,
    deployment_info: DeploymentInfo,
}

#[derive(Deserialize)]
struct DeploymentInfo {
    #[serde(default)]
    scripts: Vec<Value>,
    ci_cd_platform: Option<String>,
    #[serde(default)]
    infrastructure: Map<String, Value>,
    deployment_frequency: Option<String>,
    last_deployed: Option<String>,
}

async fn run_add_deployment(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: DeploymentInput = parse(input)?;
    let info = &q.deployment_info;
    let last_deployed = match info.last_deployed.as_deref() {
        None => None,
        Some(text) => Some(parse_datetime(text).ok_or_else(|| {
            SkillError::Invalid(format!(
                "Invalid parameter 'deployment_info.last_deployed': {text:?} is not an ISO 8601 date-time"
            ))
        })?),
    };
    let infrastructure = Value::Object(info.infrastructure.clone());
    let scripts = Value::Array(info.scripts.clone());
    let deployment = NewDeployment {
        name: info.ci_cd_platform.as_deref().unwrap_or("deployment"),
        infrastructure: &infrastructure,
        scripts: &scripts,
        frequency: info.deployment_frequency.as_deref(),
        last_deployed,
    };
    let id = async {
        let mut tx = crate::db::begin(ctx.pool()).await?;
        let repo_id = kb::ensure_repository(&mut tx, &q.repository).await?;
        let id = knowledge::upsert_deployment(&mut tx, repo_id, &deployment).await?;
        tx.commit().await?;
        Ok::<_, SkillError>(id)
    }
    .await
    .map_err(|e| e.context("Failed to add deployment info"))?;
    Ok(output(json!({
        "message": format!("Deployment info added for {}", q.repository),
        "repository": q.repository,
        "deployment_id": id,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_items_name_a_repository() {
        assert_eq!(item_name(&json!("a/b")), Some(("a/b".into(), None)));
        assert_eq!(
            item_name(&json!({"target_repo": "c/d", "version": "1.2"})),
            Some(("c/d".into(), Some("1.2".into())))
        );
        assert_eq!(
            item_name(&json!({"name": "e/f", "repository": "g/h"})),
            Some(("g/h".into(), None))
        );
        assert_eq!(item_name(&json!(3)), None);
    }
}
