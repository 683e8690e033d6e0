//! `get_recent_actions`: the frontend's "Recent Activity" feed.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::kb::activity::{self, ACTION_TYPES};
use crate::kb::iso_opt;

pub fn get_recent_actions() -> Skill {
    Skill {
        id: "get_recent_actions",
        name: "Get Recent Actions",
        description: "The knowledge base's activity feed, newest first: analyses, lessons learned, deployment \
                      records and runtime issues, optionally for one repository, with pagination.",
        tags: &["activity", "timeline", "feed", "history"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                "offset": {"type": "integer", "minimum": 0, "default": 0},
                "action_types": {
                    "type": "array",
                    "description": "Kinds of action to include (all when absent)",
                    "items": {"type": "string", "enum": ACTION_TYPES},
                    "maxItems": 4,
                },
                "repository": repository_schema("Only this repository's actions"),
            },
        }),
        examples: vec![
            example(json!({"limit": 20}), "The 20 latest actions"),
            example(
                json!({"limit": 10, "offset": 10, "action_types": ["lesson", "runtime_issue"], "repository": "acme/payments-api"}),
                "Second page of one repository's lessons and issues",
            ),
        ],
        aliases: &[],
        empty: json!({"count": 0, "returned": 0, "actions": []}),
        uses_database: true,
        handler: handler(run_recent_actions),
    }
}

#[derive(Deserialize)]
struct RecentInput {
    limit: Option<i64>,
    offset: Option<i64>,
    action_types: Option<Vec<String>>,
    repository: Option<String>,
}

async fn run_recent_actions(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: RecentInput = parse(input)?;
    let limit = q.limit.unwrap_or(20);
    let offset = q.offset.unwrap_or(0);
    let types: Vec<String> = q
        .action_types
        .clone()
        .unwrap_or_else(|| ACTION_TYPES.iter().map(|t| t.to_string()).collect());
    let mut conn = ctx.pool().acquire().await?;
    let (total, actions) =
        activity::recent(&mut conn, &types, q.repository.as_deref(), limit, offset).await?;
    let returned = actions.len() as i64;
    let has_more = offset + returned < total;
    let actions: Vec<Value> = actions
        .into_iter()
        .map(|a| {
            json!({
                "action_type": a.action_type,
                "repository": a.repository,
                "timestamp": iso_opt(a.timestamp),
                "reference_id": a.reference_id,
                "metadata": readable(&a.action_type, a.metadata),
            })
        })
        .collect();
    Ok(output(json!({
        "count": total,
        "returned": returned,
        "actions": actions,
        "pagination": {
            "limit": limit,
            "offset": offset,
            "has_more": has_more,
            "next_offset": if has_more { Some(offset + returned) } else { None },
            "total_pages": (total + limit - 1) / limit,
        },
        "filters": {"action_types": q.action_types, "repository": q.repository},
    })))
}

/// A deployment record's description is its infrastructure map stored as JSON text (the
/// original's layout, `kb/knowledge.rs`); the feed shows it as a sentence and gives the map as
/// `infrastructure`, so the frontend's activity list does not print raw JSON.
fn readable(action_type: &str, mut metadata: Value) -> Value {
    if action_type != "deployment" {
        return metadata;
    }
    let platform = metadata["name"]
        .as_str()
        .unwrap_or("deployment")
        .to_string();
    let stored = metadata["description"].as_str().map(str::to_string);
    let Some(Ok(Value::Object(infrastructure))) =
        stored.as_deref().map(serde_json::from_str::<Value>)
    else {
        return metadata;
    };
    let facts: Vec<String> = infrastructure
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect();
    let sentence = if facts.is_empty() {
        format!("Deployment recorded ({platform})")
    } else {
        format!("Deployment via {platform} ({})", facts.join(", "))
    };
    metadata["description"] = Value::String(sentence);
    metadata["infrastructure"] = Value::Object(infrastructure);
    metadata
}
