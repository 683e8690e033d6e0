//! Async workflows (`docs/workflows.md`): `trigger_full_analysis_workflow` and
//! `extract_repository_patterns` queue a job and answer `async_queued` with its id;
//! `GET /a2a/workflow/{id}` and `get_workflow_metadata` read progress and results; `/a2a/cancel`
//! cancels a job; the workers (`worker.rs`) run them (`run.rs`) through the steps (`steps.rs`)
//! the complexity and dependency skills share.

mod run;
pub(crate) mod steps;
mod worker;

pub use worker::spawn;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use super::state::AppState;
use crate::http::json_response;
use crate::kb::{self, jobs};

/// How often the frontend is told to poll a job (`polling_interval_ms`).
const POLLING_INTERVAL_MS: u64 = 2000;
/// Repositories one full analysis may name.
const MAX_REPOSITORIES: usize = 50;

/// Whether `id` is a UUID in its text form (what job ids are).
pub fn is_workflow_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn phases_schema() -> Value {
    let flag = |d: &str| json!({"type": "boolean", "default": true, "description": d});
    json!({
        "type": "object",
        "description": "Which phases run for every repository (all by default)",
        "properties": {
            "pattern_extraction": flag("Rescan the components from GitHub, then derive patterns from them"),
            "dependency_discovery": flag("Discover dependencies from the manifests"),
            "metadata_analysis": flag("Measure the repository's complexity"),
        },
    })
}

pub fn trigger_full_analysis_workflow() -> Skill {
    Skill {
        id: "trigger_full_analysis_workflow",
        name: "Trigger Full Analysis Workflow",
        description: "Queue a full analysis of repositories of the knowledge base: for each, rescan its \
                      components from GitHub and derive patterns from them, discover its dependencies from its \
                      manifests and measure its complexity. Answers async_queued with a workflow_id; poll \
                      GET /a2a/workflow/{workflow_id}. The GitHub phases need GITHUB_TOKEN.",
        tags: &["workflow", "orchestration", "analysis", "async"],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repositories": {
                    "type": "array",
                    "description": "Repositories of the knowledge base (owner/repo)",
                    "items": repository_schema("A repository of the knowledge base"),
                    "minItems": 1,
                    "maxItems": MAX_REPOSITORIES,
                },
                "phases": phases_schema(),
            },
            "required": ["repositories"],
        }),
        examples: vec![example(
            json!({"repositories": ["acme/payments-api"], "phases": {"pattern_extraction": true, "dependency_discovery": true}}),
            "Analyse one repository",
        )],
        aliases: &[("repository_names", "repositories")],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_trigger),
    }
}

#[derive(Deserialize)]
struct TriggerInput {
    repositories: Vec<String>,
    #[serde(default)]
    phases: Map<String, Value>,
}

/// The repositories named, each once, all of them in the knowledge base.
async fn known(ctx: &SkillContext, names: &[String]) -> Result<Vec<String>, SkillError> {
    let mut conn = ctx.pool().acquire().await?;
    let all = kb::repository_names(&mut conn).await?;
    let mut list: Vec<String> = Vec::new();
    for name in names.iter().map(|n| n.trim().to_string()) {
        if !list.contains(&name) {
            list.push(name);
        }
    }
    let missing: Vec<&str> = list
        .iter()
        .filter(|n| !all.contains(n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(SkillError::failed(format!(
            "Repositories not found in knowledge base: {}",
            missing.join(", ")
        )));
    }
    Ok(list)
}

/// Queues a job and wakes this replica's workers; returns its id.
async fn enqueue(
    ctx: &SkillContext,
    kind: &str,
    input: &Value,
    repositories: &[String],
) -> Result<String, SkillError> {
    let mut conn = ctx.pool().acquire().await?;
    let id = jobs::enqueue(&mut conn, kind, input, repositories)
        .await
        .map_err(|e| SkillError::from(e).context("Failed to queue the workflow"))?;
    ctx.workflow_wake.notify_waiters();
    Ok(id)
}

fn queued(id: &str) -> Value {
    json!({
        "state": "async_queued",
        "workflow_id": id,
        "status": "queued",
        "polling_interval_ms": POLLING_INTERVAL_MS,
        "polling_url": format!("/a2a/workflow/{id}"),
    })
}

async fn run_trigger(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: TriggerInput = parse(input)?;
    let repositories = known(&ctx, &q.repositories).await?;
    let on = |key: &str| q.phases.get(key).and_then(Value::as_bool).unwrap_or(true);
    let state = |key: &str| json!({"status": if on(key) { "queued" } else { "skipped" }});
    let stored = json!({"repositories": repositories, "phases": q.phases});
    let id = enqueue(&ctx, run::FULL_ANALYSIS, &stored, &repositories).await?;
    let mut answer = output(queued(&id));
    answer.extend(output(json!({
        "repositories_count": repositories.len(),
        "repositories": repositories,
        "repositories_processed": 0,
        "phases": {
            "pattern_extraction": state("pattern_extraction"),
            "dependency_discovery": state("dependency_discovery"),
            "component_analysis": state("metadata_analysis"),
        },
        "workflow_steps": [],
        "phase_results": {},
        "message": format!("Full analysis of {} repositories queued", repositories.len()),
    })));
    Ok(answer)
}

pub fn extract_repository_patterns() -> Skill {
    Skill {
        id: "extract_repository_patterns",
        name: "Extract Repository Patterns",
        description: "Queue the derivation of patterns from a repository's stored components (one pattern per \
                      component type and language, upserted by name). Answers async_queued with a workflow_id; \
                      the count is in the job's result (GET /a2a/workflow/{workflow_id}). Needs no GitHub token.",
        tags: &["workflow", "patterns", "extraction", "async"],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository_name": repository_schema("A repository of the knowledge base"),
            },
            "required": ["repository_name"],
        }),
        examples: vec![example(
            json!({"repository_name": "acme/payments-api"}),
            "Derive patterns from one repository's components",
        )],
        aliases: &[("repository", "repository_name")],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_extract),
    }
}

#[derive(Deserialize)]
struct ExtractInput {
    repository_name: String,
}

async fn run_extract(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: ExtractInput = parse(input)?;
    let repositories = known(&ctx, std::slice::from_ref(&q.repository_name)).await?;
    let stored = json!({"repositories": repositories});
    let id = enqueue(&ctx, run::EXTRACT_PATTERNS, &stored, &repositories).await?;
    let mut answer = output(queued(&id));
    answer.extend(output(json!({
        "repository": q.repository_name,
        // Known when the job ends: its result counts them.
        "patterns_extracted": 0,
        "message": format!("Pattern extraction for {} queued", q.repository_name),
    })));
    Ok(answer)
}

pub fn get_workflow_metadata() -> Skill {
    Skill {
        id: "get_workflow_metadata",
        name: "Get Workflow Metadata",
        description: "Per repository of the knowledge base: how many patterns, dependencies and components are \
                      stored and when anything about it last changed; and how many workflows are queued and running.",
        tags: &["workflow", "metadata", "statistics"],
        requires_authentication: false,
        input_schema: json!({"type": "object", "properties": {}}),
        examples: vec![example(json!({}), "Every repository's counts")],
        aliases: &[],
        empty: json!({"metadata": []}),
        uses_database: true,
        handler: handler(run_metadata),
    }
}

async fn run_metadata(
    ctx: SkillContext,
    _input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let (metadata, (queued, running)) = async {
        let mut tx = kb::snapshot(ctx.pool()).await?;
        let metadata = kb::manifests::metadata(&mut tx).await?;
        let depth = jobs::depth_on(&mut tx).await?;
        tx.commit().await?;
        Ok((metadata, depth))
    }
    .await
    .map_err(|e: sqlx::Error| SkillError::from(e).context("Failed to read workflow metadata"))?;
    Ok(output(json!({
        "total_repositories": metadata.len(),
        "metadata": metadata,
        "workflows": {"queued": queued, "running": running},
    })))
}

/// What the job's status says to the frontend's `metadata.state` (queued, running, completed,
/// failed, cancelled).
fn state_of(status: &str) -> &str {
    match status {
        "partial_success" => "completed",
        other => other,
    }
}

fn job_json(job: &jobs::Job) -> Value {
    let iso = |t| kb::iso_opt(t);
    json!({
        "success": true,
        "workflow_id": job.id,
        "kind": job.kind,
        "status": job.status,
        "repositories": job.repositories,
        "repositories_count": job.repositories.len(),
        "repositories_completed": job.repositories_completed,
        "progress_percent": job.progress_percent,
        "current_step": job.current_step,
        "results": job.results,
        "error": job.error,
        "metadata": {
            "state": state_of(&job.status),
            "progress_percent": job.progress_percent,
            "current_step": job.current_step,
            "kind": job.kind,
            "attempt": job.attempt,
            "cancel_requested": job.cancel_requested,
        },
        "created_at": iso(Some(job.created_at)),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    })
}

fn error_response(status: StatusCode, error: String, id: &str) -> Response {
    json_response(
        status,
        json!({"success": false, "error": error, "workflow_id": id}),
    )
}

/// Credentials, when the workflow skills need them: the job's status and its cancellation are
/// guarded like the skill that queued it.
async fn authorise(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let skill = "trigger_full_analysis_workflow";
    let protected = state
        .skills
        .get(skill)
        .is_some_and(|s| state.skills.is_protected(s));
    if !protected {
        return Ok(());
    }
    let header = headers.get(axum::http::header::AUTHORIZATION);
    match state.auth.verify(header).await {
        Ok(_) => Ok(()),
        Err(failure) => Err(SkillError::Unauthorized {
            skill,
            challenge: failure.challenge(),
        }
        .into_response()),
    }
}

/// `GET /a2a/workflow/{id}`: a job's status, progress and result.
pub async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    if let Err(refused) = authorise(&state, &headers).await {
        return refused;
    }
    if !is_workflow_id(&id) {
        let why = format!(
            "Invalid workflow id '{id}': expected a UUID such as 0b7c9a6e-8f3d-4c1a-9e2b-5d4f6a7b8c9d"
        );
        return error_response(StatusCode::BAD_REQUEST, why, &id);
    }
    let job = async {
        let mut conn = state.ctx.pool().acquire().await?;
        jobs::get(&mut conn, &id).await
    }
    .await;
    match job {
        Ok(Some(job)) => {
            let mut body = job_json(&job);
            body["timestamp"] = json!(super::context::now_rfc3339());
            body["execution_time_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
            json_response(StatusCode::OK, body)
        }
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            format!("Workflow not found: {id}"),
            &id,
        ),
        Err(e) => {
            let e = SkillError::from(e);
            e.log("workflow_status");
            let status = e.status();
            let mut body = e.into_body(Map::new());
            body["workflow_id"] = json!(id);
            json_response(
                if status == StatusCode::OK {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    status
                },
                body,
            )
        }
    }
}

/// `/a2a/cancel` for a workflow id: a queued job ends cancelled at once, a running one at its
/// worker's next heartbeat.
pub async fn cancel(state: &AppState, headers: &HeaderMap, id: &str) -> Response {
    if let Err(refused) = authorise(state, headers).await {
        return refused;
    }
    match jobs::cancel(state.ctx.pool(), id).await {
        Ok((jobs::Cancelled::Queued, status)) => json_response(
            StatusCode::OK,
            json!({"success": true, "task_id": id, "workflow_id": id, "status": status,
                   "message": "Workflow cancelled before it started"}),
        ),
        Ok((jobs::Cancelled::Running, _)) => json_response(
            StatusCode::OK,
            json!({"success": true, "task_id": id, "workflow_id": id, "status": "cancelling",
                   "message": "Workflow is running: it stops within seconds and ends cancelled"}),
        ),
        Ok((jobs::Cancelled::Finished, status)) => json_response(
            StatusCode::CONFLICT,
            json!({"success": false, "task_id": id, "workflow_id": id, "status": status,
                   "error": format!("Workflow already ended ({status}); nothing to cancel")}),
        ),
        Ok((jobs::Cancelled::NotFound, _)) => error_response(
            StatusCode::NOT_FOUND,
            format!("Workflow not found: {id}"),
            id,
        ),
        Err(e) => SkillError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_ids_are_uuids() {
        assert!(is_workflow_id("0b7c9a6e-8f3d-4c1a-9e2b-5d4f6a7b8c9d"));
        assert!(!is_workflow_id("t-1"));
        assert!(!is_workflow_id("0b7c9a6e-8f3d-4c1a-9e2b-5d4f6a7b8c9"));
        assert!(!is_workflow_id("0b7c9a6e+8f3d-4c1a-9e2b-5d4f6a7b8c9d"));
        assert!(!is_workflow_id("zb7c9a6e-8f3d-4c1a-9e2b-5d4f6a7b8c9d"));
    }
}
