//! `GET /openapi.json`: an OpenAPI 3.1 description of the endpoints, generated from the
//! registry so every skill's request schema is the one the executor enforces.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::context::API_VERSION;
use super::state::AppState;
use crate::http::json_response;

pub async fn document(State(state): State<Arc<AppState>>) -> Response {
    json_response(StatusCode::OK, build(&state))
}

fn build(state: &AppState) -> Value {
    let (mut schemas, requests) = skill_schemas(state);
    schemas.extend(response_schemas());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "nexusd skills API (Dev-Nexus A2A)",
            "version": API_VERSION,
            "description": "The Dev-Nexus pattern-discovery agent's A2A endpoints, served by nexusd.",
        },
        "servers": [{"url": state.ctx.config.api.public_url}],
        "paths": paths(requests),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "A Google ID token (audience NEXUSD_AUTH_AUDIENCE, an allowed service account) or one of NEXUSD_API_TOKENS"}},
            "schemas": schemas,
        },
    })
}

/// One request schema per skill (`execute_<id>`, with the input schema the executor enforces),
/// and the references to them that `/a2a/execute` accepts.
fn skill_schemas(state: &AppState) -> (Map<String, Value>, Vec<Value>) {
    let mut schemas = Map::new();
    let mut requests = Vec::new();
    for skill in state.skills.iter() {
        let name = format!("execute_{}", skill.id);
        let protected = state.skills.is_protected(skill);
        schemas.insert(
            name.clone(),
            json!({
                "title": skill.name,
                "description": format!(
                    "{}{}",
                    skill.description,
                    if protected { " Requires a bearer token." } else { "" }
                ),
                "type": "object",
                "properties": {
                    "skill_id": {"const": skill.id},
                    "input": skill.input_schema,
                },
                "required": ["skill_id"],
            }),
        );
        requests.push(json!({"$ref": format!("#/components/schemas/{name}")}));
    }
    (schemas, requests)
}

/// `SkillResponse` and `Error`.
fn response_schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    schemas.insert(
        "SkillResponse".into(),
        json!({
            "type": "object",
            "description": "A skill's result: its own keys plus these three. Skill-level failures are HTTP 200 \
                            with success false and an error message.",
            "properties": {
                "success": {"type": "boolean"},
                "error": {"type": "string"},
                "timestamp": {"type": "string", "format": "date-time"},
                "execution_time_ms": {"type": "number"},
            },
            "required": ["success", "timestamp", "execution_time_ms"],
            "additionalProperties": true,
        }),
    );
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {"success": {"type": "boolean"}, "error": {"type": "string"}, "detail": {"type": "string"}},
            "additionalProperties": true,
        }),
    );
    schemas
}

/// The endpoints; `requests` are the request bodies `/a2a/execute` accepts.
fn paths(requests: Vec<Value>) -> Value {
    let json_of = |schema: &str| json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
    let any_json = json!({"application/json": {"schema": {"type": "object"}}});
    json!({
        "/": {"get": {"summary": "Service information and links", "operationId": "root",
            "responses": {"200": {"description": "Service information", "content": any_json}}}},
        "/health": {"get": {"summary": "Health of the service and its database", "operationId": "health",
            "responses": {
                "200": {"description": "Healthy: the database answered and the schema is current", "content": any_json},
                "503": {"description": "Unhealthy: the database is unreachable or not bootstrapped", "content": any_json},
            }}},
        "/.well-known/agent.json": {"get": {"summary": "A2A agent card listing every skill and its input schema",
            "operationId": "agentCard", "responses": {"200": {"description": "The agent card", "content": any_json}}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI 3.1 document", "content": any_json}}}},
        "/a2a/execute": {"post": {
            "summary": "Run one skill",
            "operationId": "execute",
            "security": [{}, {"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": requests}}}},
            "responses": {
                "200": {"description": "The skill's result (check success), or an unknown skill", "content": json_of("SkillResponse")},
                "400": {"description": "The body is not a JSON object, or skill_id/input is missing or malformed", "content": json_of("Error")},
                "401": {"description": "The skill needs credentials and none valid were given", "content": json_of("Error")},
                "413": {"description": "The body is larger than 1 MiB", "content": json_of("Error")},
                "503": {"description": "The database is unavailable", "content": json_of("Error")},
            },
        }},
        "/a2a/workflow/{id}": {"get": {
            "summary": "A workflow's status, progress and result (docs/workflows.md)",
            "operationId": "workflowStatus",
            "security": [{}, {"bearer": []}],
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "responses": {
                "200": {"description": "The workflow", "content": any_json},
                "400": {"description": "The id is not a UUID", "content": json_of("Error")},
                "401": {"description": "Workflows need credentials and none valid were given", "content": json_of("Error")},
                "404": {"description": "No such workflow", "content": json_of("Error")},
                "503": {"description": "The database is unavailable", "content": json_of("Error")},
            },
        }},
        "/a2a/cancel": {"post": {
            "summary": "Cancel a workflow (a workflow id), or a task (skills run within their request, so nothing else is ever left running)",
            "operationId": "cancel",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"task_id": {"type": "string"}}, "required": ["task_id"]}}}},
            "responses": {
                "200": {"description": "Cancelled, or (a running workflow) cancelling", "content": any_json},
                "400": {"description": "task_id missing or body malformed", "content": json_of("Error")},
                "404": {"description": "No workflow has this id", "content": json_of("Error")},
                "409": {"description": "The workflow has already ended", "content": json_of("Error")},
            },
        }},
    })
}
