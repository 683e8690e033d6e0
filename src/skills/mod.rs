//! The HTTP surface of the skills API: the Dev-Nexus A2A endpoints (`/`, `/health`,
//! `/.well-known/agent.json`, `/a2a/execute`, `/a2a/cancel`, `/openapi.json`), CORS, auth and
//! JSON errors for every protocol problem (`docs/skills-api.md`).

mod activity;
mod analysis;
mod analytics;
mod architecture;
mod backups;
mod cache;
mod catalog;
mod complexity;
mod components;
pub(crate) mod config;
mod context;
mod dependencies;
mod documentation;
mod error;
mod health;
mod integration;
mod knowledge;
mod lifecycle;
mod openapi;
mod patterns;
pub(crate) mod registry;
mod repository;
mod runtime;
mod search;
mod state;
mod unconfigured;
mod workflows;

pub use cache::{SkillCache, session_names, spawn_listener as spawn_cache_listener};
pub use config::{SkillsConfig, VARIABLES};
pub use context::{Caller, SkillContext};
pub use state::AppState;
pub use workflows::spawn as spawn_workflow_workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, ORIGIN};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::bootstrap::Readiness;
use crate::http::body::read_body;
use crate::http::{MAX_BODY_BYTES, cors, json_response};
use crate::metrics::SkillOutcome;
use crate::telemetry::trace::{TraceContext, request_span};
use context::{API_VERSION, now_rfc3339};
use error::SkillError;
use registry::{Registry, Skill, SkillOutput};

/// A skill that runs longer is answered as failed; its task is left to finish or fail on its own
/// (see [`call`]).
const SKILL_TIMEOUT: Duration = Duration::from_secs(120);

/// Every skill, in the reference's registration order (listed in `docs/skills-api.md`), then
/// nexusd's own. The one place to add a skill.
pub fn registry(config: &SkillsConfig) -> Result<Registry> {
    let mut skills: Vec<Skill> = vec![
        patterns::query_patterns(),
        patterns::get_cross_repo_patterns(),
        repository::get_repository_list(),
        repository::get_deployment_info(),
        repository::add_repository(),
        knowledge::add_lesson_learned(),
        knowledge::update_dependency_info(),
        knowledge::add_deployment_info(),
        integration::health_check_external(),
        documentation::check_documentation_standards(),
        documentation::validate_documentation_update(),
        runtime::add_runtime_issue(),
        runtime::get_pattern_health(),
        runtime::query_known_issues(),
        activity::get_recent_actions(),
    ];
    // 16-18: the original registered them only with GITHUB_TOKEN; without it nexusd answers
    // `not_configured` rather than "Unknown skill" (`unconfigured.rs`).
    let github = [
        architecture::validate_repository_architecture(),
        architecture::check_specific_standard(),
        architecture::suggest_improvements(),
    ];
    if config.external.github.token.is_some() {
        skills.extend(github);
    } else {
        skills.extend(github.map(unconfigured::not_configured));
    }
    skills.extend([
        components::detect_misplaced_components(),
        components::analyze_component_centrality(),
        components::recommend_consolidation_plan(),
        components::scan_repository_components(),
    ]);
    // The frontend's complexity, dependency and workflow skills (docs/workflows.md); the GitHub
    // ones answer `not_configured` without GITHUB_TOKEN rather than being left out.
    skills.extend([
        complexity::analyze_repository_complexity(),
        complexity::get_repository_complexity_details(),
        dependencies::discover_repository_dependencies(),
        dependencies::update_dependency_verification(),
        workflows::trigger_full_analysis_workflow(),
        workflows::extract_repository_patterns(),
        workflows::get_workflow_metadata(),
    ]);
    // Then nexusd's own skills.
    skills.extend([
        analysis::record_analysis(),
        search::find_similar_patterns(),
        backups::get_backup_status(),
    ]);
    // Then the skills the web frontend calls that the original never had (docs/skills-api.md).
    skills.extend([
        lifecycle::update_pattern(),
        lifecycle::deprecate_pattern(),
        lifecycle::archive_pattern(),
        lifecycle::get_pattern_history(),
        lifecycle::suggest_pattern_from_component(),
        lifecycle::create_pattern_from_component(),
        catalog::list_components(),
        catalog::get_component_dependencies(),
        analytics::get_dashboard_overview(),
        analytics::get_pattern_adoption_trends(),
        analytics::get_pattern_health_summary(),
        analytics::get_repository_activity_summary(),
        analytics::get_component_duplication_stats(),
    ]);
    Registry::new(
        skills,
        &config.api.extra_protected,
        config.api.auth.required,
    )
}

/// All API routes.
pub fn router(state: AppState) -> Router {
    let cors = Arc::new(state.ctx.config.api.cors.clone());
    Router::new()
        .route("/", get(root))
        .route("/health", get(health::health))
        .route("/.well-known/agent.json", get(agent_card))
        .route("/a2a/execute", post(execute))
        .route("/a2a/cancel", post(cancel))
        .route("/a2a/workflow/{id}", get(workflows::status))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn_with_state(cors, cors::layer))
        .with_state(Arc::new(state))
}

async fn not_found() -> SkillError {
    SkillError::NotFound
}

async fn method_not_allowed() -> SkillError {
    SkillError::MethodNotAllowed
}

/// Logs every request: method, path, origin, whether credentials came (never what), status, time.
async fn log_request(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    // What the request logs, this line included, carries its trace (Cloud Run sets the headers).
    let trace = trace_of(request.headers());
    log_request_in_span(request, next)
        .instrument(request_span(trace.as_ref()))
        .await
}

async fn log_request_in_span(request: Request, next: Next) -> Response {
    // Below info (the health line is debug) nothing here is logged: skip gathering it.
    if !tracing::enabled!(tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("")
        .to_string();
    let authorization = request.headers().contains_key(AUTHORIZATION);
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if path == "/health" && status == 200 {
        tracing::debug!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, %origin, authorization, "request");
    }
    response
}

/// The public base URL of this agent.
fn agent_url(state: &AppState) -> &str {
    &state.ctx.config.api.public_url
}

async fn root(State(state): State<Arc<AppState>>) -> Response {
    let url = agent_url(&state);
    json_response(
        StatusCode::OK,
        json!({
            "service": "Pattern Discovery Agent A2A Server",
            "version": API_VERSION,
            "architecture": "modular",
            "agent_card": format!("{url}/.well-known/agent.json"),
            "health": format!("{url}/health"),
            "endpoints": {
                "execute": "/a2a/execute",
                "cancel": "/a2a/cancel",
                "workflow": "/a2a/workflow/{workflow_id}",
                "agent_card": "/.well-known/agent.json",
                "health": "/health",
                "openapi": "/openapi.json",
            },
            "skills_registered": state.skills.len(),
            "skills": state.skills.ids(),
        }),
    )
}

async fn agent_card(State(state): State<Arc<AppState>>) -> Response {
    let protected: Vec<&str> = state
        .skills
        .iter()
        .filter(|s| state.skills.is_protected(s))
        .map(|s| s.id)
        .collect();
    let note = if protected.is_empty() {
        "All skills are public (REQUIRE_AUTH_FOR_WRITE is false).".to_string()
    } else {
        format!(
            "Read skills are public. These skills need 'Authorization: Bearer <token>' (a Google ID token \
             for an allowed service account, or an API token): {}",
            protected.join(", ")
        )
    };
    let external = &state.ctx.config.external;
    let mut skills = state.skills.card_entries();
    search::document_default(&mut skills, state.ctx.search.embedder.as_ref());
    json_response(
        StatusCode::OK,
        json!({
            "name": "pattern_discovery_agent",
            "description": "Automated architectural consistency and pattern discovery across repositories: a \
                            PostgreSQL + pgvector knowledge base of patterns, decisions, components, lessons, \
                            deployments and runtime issues.",
            "version": API_VERSION,
            "url": agent_url(&state),
            "capabilities": {"streaming": false, "multimodal": false, "authentication": "optional"},
            "skills": skills,
            "metadata": {
                "repository": "patelmm79/dev-nexus",
                "documentation": "https://github.com/patelmm79/dev-nexus#readme",
                "authentication_note": note,
                "knowledge_base": state.ctx.config.knowledge_base_repo,
                // A string either way: the web frontend prints each value as text.
                "external_agents": {
                    "dependency_orchestrator": external.orchestrator.as_ref().map_or("not configured", |a| a.url.as_str()),
                    "pattern_miner": external.pattern_miner.as_ref().map_or("not configured", |a| a.url.as_str()),
                },
                "architecture": "modular",
                "skill_count": state.skills.len(),
                "implementation": format!("nexusd {}", env!("CARGO_PKG_VERSION")),
            },
        }),
    )
}

/// Reads a JSON object body of at most [`MAX_BODY_BYTES`], all of it within `deadline`
/// (`NEXUSD_HTTP_BODY_TIMEOUT`): over the limit is a 413, a broken body a 400, a stalled one a 408.
async fn read_object(body: Body, deadline: Duration) -> Result<Map<String, Value>, SkillError> {
    let bytes = read_body(body, MAX_BODY_BYTES, deadline).await?;
    let invalid = |why: String| SkillError::BadRequest(format!("Invalid request body: {why}"));
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(invalid(format!(
            "expected a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(invalid(e.to_string())),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `POST /a2a/execute` with `{"skill_id", "input"}`.
async fn execute(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let body_timeout = state.ctx.config.api.http.body_timeout;
    let (skill_id, input) = match read_request(body, body_timeout).await {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let Some(skill) = state.skills.get(&skill_id) else {
        let error = SkillError::UnknownSkill {
            id: skill_id,
            available: state.skills.ids(),
        };
        let mut body = error.into_body(Map::new());
        stamp(&mut body, started);
        return json_response(StatusCode::OK, body);
    };

    // Credentials before input validation, as the original did. Other skills take them when
    // they come (some answer more to authenticated callers).
    let verified = state.auth.verify(headers.get(AUTHORIZATION)).await;
    if state.skills.is_protected(skill)
        && let Err(failure) = &verified
    {
        tracing::warn!(skill = skill.id, reason = %failure, "authentication failed");
        let error = SkillError::Unauthorized {
            skill: skill.id,
            challenge: failure.challenge(),
        };
        state
            .skill_stats
            .observe(skill.id, error.outcome(), started.elapsed());
        return error.into_response();
    }
    let caller = Caller {
        authenticated: verified.is_ok(),
    };

    let mut input = input;
    skill.apply_aliases(&mut input);
    let ticket = state.ctx.cache.ticket(skill.id, &input);
    if let Some(answer) = ticket.as_ref().and_then(|t| state.ctx.cache.get(t)) {
        return cached_response(&state, skill, &answer, started);
    }
    // Boxed: the future of a skill's run is large, and inline it would make every request's
    // future as large, cached ones too (axum moves that future into a box of its own).
    let (status, body) = Box::pin(run_skill(&state, skill, input, caller, started, ticket)).await;
    json_response(status, body)
}

/// A successful answer from the cache: the stored keys between a fresh `success` and fresh
/// `timestamp` / `execution_time_ms`, exactly as [`run_skill`] lays a response out (and as
/// serde_json writes them), written straight into one buffer.
fn cached_response(state: &AppState, skill: &Skill, answer: &[u8], started: Instant) -> Response {
    // The answer is a JSON object, `{...}`: its inside goes between the fresh keys.
    let inside = answer
        .get(1..answer.len().saturating_sub(1))
        .unwrap_or_default();
    let mut body = Vec::with_capacity(inside.len() + 96);
    body.extend_from_slice(b"{\"success\":true");
    if !inside.is_empty() {
        body.push(b',');
        body.extend_from_slice(inside);
    }
    // RFC 3339 has nothing JSON escapes.
    body.extend_from_slice(b",\"timestamp\":\"");
    body.extend_from_slice(now_rfc3339().as_bytes());
    body.extend_from_slice(b"\",\"execution_time_ms\":");
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, &elapsed_ms(started));
    body.push(b'}');
    let elapsed = started.elapsed();
    state
        .skill_stats
        .observe(skill.id, SkillOutcome::Success, elapsed);
    tracing::info!(
        skill = skill.id,
        outcome = SkillOutcome::Success.as_str(),
        ms = elapsed.as_millis() as u64,
        cached = true,
        "skill"
    );
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The skill id and input of an execute request.
async fn read_request(
    body: Body,
    deadline: Duration,
) -> Result<(String, Map<String, Value>), SkillError> {
    let mut request = read_object(body, deadline).await?;
    let skill_id = match request.remove("skill_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(SkillError::BadRequest(
                "Missing required field: skill_id".into(),
            ));
        }
        Some(other) => {
            return Err(SkillError::BadRequest(format!(
                "Invalid request body: 'skill_id' must be a string, got {}",
                kind(&other)
            )));
        }
    };
    let input = match request.remove("input") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(SkillError::BadRequest(format!(
                "Invalid request body: 'input' must be an object, got {}",
                kind(&other)
            )));
        }
    };
    Ok((skill_id, input))
}

/// Validates and runs one skill; returns the HTTP status and the full response body.
async fn run_skill(
    state: &AppState,
    skill: &Skill,
    input: Map<String, Value>,
    caller: Caller,
    started: Instant,
    ticket: Option<cache::Ticket>,
) -> (StatusCode, Value) {
    let (result, served_by_replica) = call(state, skill, input, caller).await;
    let outcome = match &result {
        Ok(_) => SkillOutcome::Success,
        Err(e) => e.outcome(),
    };
    // Only the primary's answers are cached: a replica's may predate the invalidation that the
    // primary's notification brought.
    if let (Some(ticket), Ok(output), false) = (ticket, &result, served_by_replica) {
        state.ctx.cache.put(ticket, output);
    }
    let (status, mut body) = match result {
        Ok(output) => {
            let mut body = Map::from_iter([("success".to_string(), Value::Bool(true))]);
            body.extend(output);
            (StatusCode::OK, Value::Object(body))
        }
        Err(error) => {
            error.log(skill.id);
            let mut keys =
                Map::from_iter([("skill_id".to_string(), Value::String(skill.id.to_string()))]);
            keys.extend(skill.empty_keys());
            (error.status(), error.into_body(keys))
        }
    };
    stamp(&mut body, started);
    let elapsed = started.elapsed();
    state.skill_stats.observe(skill.id, outcome, elapsed);
    tracing::info!(
        skill = skill.id,
        outcome = outcome.as_str(),
        ms = elapsed.as_millis() as u64,
        "skill"
    );
    (status, body)
}

/// Checks the input against the skill's schema, then runs the skill in its own task, answering
/// within [`SKILL_TIMEOUT`]; the flag says a read replica answered (such answers are not cached).
///
/// The handler never runs inside the request's future: the server drops that future when the
/// client disconnects, and a database future dropped mid-flight can leave a pooled connection
/// inside a transaction nothing rolls back (with sqlx 0.8.6 a dropped `Pool::begin()` does;
/// `db/mod.rs` explains the bug and `db::begin`, which avoids it). A task is not cancelled by the
/// client leaving, so its statements finish or fail as a whole. For the same reason the timeout
/// does not abort the task: the caller is answered, and the task ends on its own (its calls to
/// GitHub, the other agents and the embeddings API have timeouts of their own; a statement ends
/// when PostgreSQL answers or the connection breaks).
async fn call(
    state: &AppState,
    skill: &Skill,
    input: Map<String, Value>,
    caller: Caller,
) -> (Result<SkillOutput, SkillError>, bool) {
    if let Err(problem) = crate::json_schema::validate(&skill.input_schema, &input) {
        return (Err(SkillError::Invalid(problem)), false);
    }
    if let Some(reason) = skill.uses_database.then(|| unready_reason(state)).flatten() {
        return (Err(SkillError::Unavailable(reason)), false);
    }
    let mut ctx = state.ctx.clone();
    ctx.caller = caller;
    // A read-only skill goes to a read replica when one is usable (`db/replicas.rs`); a replica
    // that fails it is skipped and the read is done again on the primary.
    if cache::reads_only(skill.id)
        && let Some(replica) = ctx.db.for_reads()
    {
        let host = replica.host.clone();
        let mut on_replica = ctx.clone();
        on_replica.db = Arc::new(replica);
        match run_handler(skill, on_replica, input.clone()).await {
            Err(SkillError::Unavailable(why)) => {
                tracing::warn!(replica = %host, reason = %why, "a read replica failed a read; reading from the primary");
                if let Some(reads) = state.ctx.db.read_replicas() {
                    reads.skip(&host);
                }
            }
            other => return (other, true),
        }
    }
    (run_handler(skill, ctx, input).await, false)
}

/// Runs the handler in its own task against `ctx`, answering within [`SKILL_TIMEOUT`].
async fn run_handler(
    skill: &Skill,
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let db = ctx.db.clone();
    // Empties the cache when the handler's task ends — after whatever it committed and before
    // its answer leaves, even when the client has gone, the timeout answered it or the handler
    // panicked: a read that follows, through this replica, must not be served an answer from
    // before the write, and the trigger tells no one when no other replica listens (`cache.rs`).
    let written = (cache::class(skill.id, &input) == cache::Class::Write)
        .then(|| cache::EmptiesOnDrop(ctx.cache.clone()));
    let handler = (skill.handler)(ctx, input);
    let task = tokio::spawn(async move {
        let result = handler.await;
        drop(written);
        result
    });
    match tokio::time::timeout(SKILL_TIMEOUT, task).await {
        // The pool only says it timed out; say why the database cannot be reached.
        Ok(Ok(Err(SkillError::Unavailable(_)))) => {
            Err(SkillError::Unavailable(db.unavailable_reason().await))
        }
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(SkillError::Internal {
            message: "the skill failed unexpectedly".to_string(),
            source: Some(Box::new(e)),
        }),
        Err(_) => {
            tracing::warn!(
                skill = skill.id,
                "the skill is still running after the timeout; it goes on in the background"
            );
            Err(SkillError::internal(format!(
                "the skill did not finish within {} s",
                SKILL_TIMEOUT.as_secs()
            )))
        }
    }
}

/// Why database skills cannot run now, if they cannot.
fn unready_reason(state: &AppState) -> Option<String> {
    match &*state.ctx.readiness.borrow() {
        Readiness::Ready(_) => None,
        Readiness::Starting => {
            Some("the database is not ready yet (bootstrap has not finished)".into())
        }
        Readiness::Failed { error, .. } => Some(error.clone()),
    }
}

/// Adds `timestamp` (RFC 3339, UTC) and `execution_time_ms` to a response body.
fn stamp(body: &mut Value, started: Instant) {
    if let Value::Object(map) = body {
        map.insert("timestamp".into(), Value::String(now_rfc3339()));
        map.insert("execution_time_ms".into(), json!(elapsed_ms(started)));
    }
}

/// Milliseconds since `started`, to the microsecond.
fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// `POST /a2a/cancel`: a workflow id (a UUID) cancels that workflow (`workflows/mod.rs`). Skills
/// run within their request (in a task of their own only so a client leaving cannot cut one off),
/// so any other task id has nothing left to cancel; that answer keeps the original's shape.
async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SkillError> {
    let mut request = read_object(body, state.ctx.config.api.http.body_timeout).await?;
    match request.remove("task_id") {
        Some(Value::String(id)) if workflows::is_workflow_id(&id) => {
            if let Some(reason) = unready_reason(&state) {
                return Err(SkillError::Unavailable(reason));
            }
            Ok(workflows::cancel(&state, &headers, &id).await)
        }
        Some(Value::String(id)) if !id.is_empty() => Ok(json_response(
            StatusCode::OK,
            json!({
                "success": true,
                "task_id": id,
                "status": "cancelled",
                "message": "Task cancelled successfully (skills run within their request; nothing was left running)",
            }),
        )),
        _ => Err(SkillError::BadRequest(
            "Missing required field: task_id".into(),
        )),
    }
}

/// The request's trace, from the headers Cloud Run sets.
fn trace_of(headers: &HeaderMap) -> Option<TraceContext> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    TraceContext::from_headers(header("traceparent"), header("x-cloud-trace-context"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;

    /// Every skill, as a server with a GitHub token registers them, with the default settings.
    fn all_skills() -> Registry {
        let lookup = |name: &str| (name == "GITHUB_TOKEN").then(|| "ghp_test".to_string());
        let mut env = Env::new(&lookup);
        let config = SkillsConfig::from_env(&mut env).expect("the default skills configuration");
        registry(&config).expect("the registry")
    }

    /// `--help` and the README say which skills `REQUIRE_AUTH_FOR_WRITE` protects: exactly the
    /// ones the registry declares.
    #[test]
    fn the_help_text_lists_the_protected_skills() {
        let meaning = crate::http::auth::VARIABLES
            .iter()
            .find(|v| v.name == "REQUIRE_AUTH_FOR_WRITE")
            .map(|v| v.meaning)
            .unwrap_or_default();
        let listed: Vec<&str> = meaning
            .split_once("bearer token: ")
            .and_then(|(_, rest)| rest.split_once(';'))
            .map(|(list, _)| list.split(", ").collect())
            .unwrap_or_default();
        let skills = all_skills();
        let declared: Vec<&str> = skills
            .iter()
            .filter(|s| skills.is_protected(s))
            .map(|s| s.id)
            .collect();
        let (mut listed, mut declared) = (listed, declared);
        listed.sort();
        declared.sort();
        assert_eq!(listed, declared, "{meaning}");
        assert!(!declared.contains(&"add_repository"));
    }
}
