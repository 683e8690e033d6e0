//! The component catalogue skills the web frontend calls: `list_components` (stored components,
//! filtered and paged) and `get_component_dependencies` (the graph of what they import, with
//! its cycles, `rules/component_graph.rs`). Both read only.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::{SkillContext, now_rfc3339};
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse};
use crate::kb::{self, catalog};
use crate::rules::component_graph::{self, Edge, Node};

fn repository_field(description: &str) -> Value {
    json!({"type": "string", "description": description, "minLength": 1, "maxLength": 255})
}

pub fn list_components() -> Skill {
    Skill {
        id: "list_components",
        name: "List Components",
        description: "The reusable components stored in the knowledge base, optionally of one repository \
                      and one type, a page at a time: name, type, repository, language, size, API \
                      signature, keywords, purpose and files.",
        tags: &["components", "catalogue"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_field("Only this repository's components"),
                "component_type": {"type": "string", "description": "Only components of this type (any case)", "minLength": 1, "maxLength": 50},
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                "offset": {"type": "integer", "minimum": 0, "default": 0},
            },
        }),
        examples: vec![
            example(json!({}), "The first 100 components"),
            example(
                json!({"repository": "acme/billing", "component_type": "utility", "limit": 20}),
                "One repository's utilities",
            ),
        ],
        aliases: &[],
        empty: json!({"components": [], "total_components": 0, "filtered_count": 0}),
        uses_database: true,
        handler: handler(run_list),
    }
}

#[derive(Deserialize)]
struct ListInput {
    repository: Option<String>,
    component_type: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn run_list(ctx: SkillContext, input: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let q: ListInput = parse(input)?;
    let limit = q.limit.unwrap_or(100);
    let offset = q.offset.unwrap_or(0);
    let mut conn = ctx.pool().acquire().await?;
    let page = catalog::list(
        &mut conn,
        q.repository.as_deref(),
        q.component_type.as_deref(),
        limit,
        offset,
    )
    .await?;
    let matching = page
        .get("total_components")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let returned = page
        .get("components")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as i64;
    let mut answer = page.as_object().cloned().unwrap_or_default();
    answer.insert(
        "filters".into(),
        json!({"repository": q.repository, "component_type": q.component_type}),
    );
    answer.insert(
        "pagination".into(),
        json!({"limit": limit, "offset": offset, "returned": returned,
               "has_more": offset + returned < matching}),
    );
    Ok(answer)
}

pub fn get_component_dependencies() -> Skill {
    Skill {
        id: "get_component_dependencies",
        name: "Get Component Dependencies",
        description: "Which stored components a repository's components (or one of them) import, followed \
                      up to a depth: direct imports inside the repository, peer imports of components of \
                      other repositories, indirect ones further out, and the import cycles among them.",
        tags: &["components", "dependencies", "graph"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository": repository_field("The repository whose components to start from"),
                "component_name": {"type": "string", "description": "Start from this component only", "minLength": 1, "maxLength": 500},
                "analysis_depth": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
            },
            "required": ["repository"],
        }),
        examples: vec![example(
            json!({"repository": "acme/billing", "analysis_depth": 2}),
            "What billing's components depend on",
        )],
        aliases: &[],
        empty: json!({"dependencies": [], "circular_dependencies": [], "total_dependencies": 0}),
        uses_database: true,
        handler: handler(run_dependencies),
    }
}

#[derive(Deserialize)]
struct DependenciesInput {
    repository: String,
    component_name: Option<String>,
    analysis_depth: Option<usize>,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn run_dependencies(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: DependenciesInput = parse(input)?;
    let depth = q.analysis_depth.unwrap_or(3);
    let rows = {
        let mut tx = kb::snapshot(ctx.pool()).await?;
        if kb::repository_id(&mut tx, &q.repository).await?.is_none() {
            return Err(SkillError::failed(format!(
                "Repository '{}' not found in knowledge base",
                q.repository
            )));
        }
        let rows = catalog::imports(&mut tx).await?;
        tx.commit().await?;
        rows
    };
    let nodes: Vec<Node> = rows
        .into_iter()
        .map(|r| Node {
            imports: strings(&r.imports),
            repository: r.repository,
            name: r.name,
            location: r.location,
        })
        .collect();
    let start: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.repository == q.repository)
        .filter(|(_, n)| q.component_name.as_deref().is_none_or(|c| n.name == c))
        .map(|(i, _)| i)
        .collect();
    if let (Some(name), true) = (&q.component_name, start.is_empty()) {
        return Err(SkillError::failed(format!(
            "Component '{name}' not found in {}",
            q.repository
        )));
    }
    let edges = component_graph::explore(&nodes, &start, depth);
    let cycles = component_graph::cycles(&edges);
    Ok(output(json!({
        "repository": q.repository,
        "component_name": q.component_name,
        "components_analyzed": start.len(),
        "dependencies": edges.iter().map(|e| edge_json(&nodes, e, &edges)).collect::<Vec<_>>(),
        "circular_dependencies": cycles.iter().map(|c| json!({
            "components": c.iter().map(|&i| nodes[i].name.clone()).collect::<Vec<_>>(),
            "cycle_length": c.len(),
            "severity": match c.len() { 2 => "high", 3 => "medium", _ => "low" },
        })).collect::<Vec<_>>(),
        "total_dependencies": edges.len(),
        "analysis_depth": depth,
        "analysis_timestamp": now_rfc3339(),
    })))
}

fn edge_json(nodes: &[Node], e: &Edge, all: &[Edge]) -> Value {
    let (source, target) = (&nodes[e.source], &nodes[e.target]);
    let most = all.iter().map(|x| x.count).max().unwrap_or(1).max(1);
    let kind = if e.level > 1 {
        "indirect"
    } else if source.repository == target.repository {
        "direct"
    } else {
        "peer"
    };
    let files: Vec<String> = [&source.location, &target.location]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    json!({
        "source_component": source.name,
        "source_repository": source.repository,
        "target_component": target.name,
        "target_repository": target.repository,
        "import_type": kind,
        "import_count": e.count,
        "files_involved": files,
        "strength": ((e.count as f64 / most as f64) * 1000.0).round() / 1000.0,
        "depth": e.level,
    })
}
