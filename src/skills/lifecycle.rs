//! The pattern lifecycle skills the web frontend calls: `update_pattern`, `deprecate_pattern`,
//! `archive_pattern` (protected writes, each one transaction whose history the database writes
//! with it), `get_pattern_history` (that history, as versions), and
//! `suggest_pattern_from_component` / `create_pattern_from_component` (a pattern from a
//! component stored in several repositories). A pattern is named across repositories: a name
//! acts on every repository holding it unless `repository` narrows it (docs/skills-api.md).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::kb::lifecycle::{self, HistoryRow, PatternRef, StatusChange};
use crate::kb::{self, iso_opt};

fn text(description: &str, max: u32) -> Value {
    json!({"type": "string", "description": description, "minLength": 1, "maxLength": max})
}

fn pattern_name_field() -> Value {
    text("The pattern's name, as recorded", 500)
}

/// A skill of this file: protected when it writes.
fn skill(
    id: &'static str,
    name: &'static str,
    description: &'static str,
    writes: bool,
    input_schema: Value,
    examples: Vec<Value>,
    handler: super::registry::Handler,
) -> Skill {
    Skill {
        id,
        name,
        description,
        tags: &["patterns", "lifecycle"],
        requires_authentication: writes,
        input_schema,
        examples,
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler,
    }
}

fn not_found(name: &str, repository: Option<&str>) -> SkillError {
    match repository {
        Some(r) => SkillError::failed(format!("Pattern '{name}' not found in {r}")),
        None => SkillError::failed(format!("Pattern '{name}' not found in the knowledge base")),
    }
}

fn repositories_of(rows: &[PatternRef]) -> Vec<String> {
    let set: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.repository.as_deref())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

pub fn update_pattern() -> Skill {
    skill(
        "update_pattern",
        "Update Pattern",
        "Edit a pattern's description, context or keywords in every repository holding it (or one): \
         a new version in its history, with who changed what and why.",
        true,
        json!({
            "type": "object",
            "properties": {
                "pattern_name": pattern_name_field(),
                "repository": repository_schema("Only this repository's pattern"),
                "description": {"type": "string", "maxLength": 10000},
                "context": {"type": "string", "maxLength": 10000},
                "keywords": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "maxItems": 50},
                "change_summary": {"type": "string", "description": "Why, as the history shows it", "maxLength": 2000},
            },
            "required": ["pattern_name"],
        }),
        vec![example(
            json!({"pattern_name": "Retry with backoff", "description": "Exponential backoff with jitter", "change_summary": "Mention jitter"}),
            "Reword a pattern everywhere it is used",
        )],
        handler(run_update),
    )
}

#[derive(Deserialize)]
struct UpdateInput {
    pattern_name: String,
    repository: Option<String>,
    description: Option<String>,
    context: Option<String>,
    keywords: Option<Vec<String>>,
    change_summary: Option<String>,
}

async fn run_update(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: UpdateInput = parse(input)?;
    if q.description.is_none() && q.context.is_none() && q.keywords.is_none() {
        return Err(SkillError::Invalid(
            "Nothing to update: give description, context or keywords".into(),
        ));
    }
    let keywords: Option<Vec<String>> = q.keywords.as_ref().map(|k| {
        let set: BTreeSet<String> = k.iter().map(|w| w.trim().to_lowercase()).collect();
        set.into_iter().filter(|w| !w.is_empty()).collect()
    });
    let summary = q.change_summary.as_deref().filter(|s| !s.trim().is_empty());
    let mut tx = crate::db::begin(ctx.pool()).await?;
    let rows =
        lifecycle::find_for_update(&mut tx, &q.pattern_name, q.repository.as_deref()).await?;
    if rows.is_empty() {
        return Err(not_found(&q.pattern_name, q.repository.as_deref()));
    }
    for row in &rows {
        let extra = match &keywords {
            Some(new) => {
                let old = lifecycle::keywords(&mut tx, &[row.id]).await?;
                lifecycle::replace_keywords(&mut tx, &[row.id], new).await?;
                Some(json!({"before": {"keywords": old}, "after": {"keywords": new}}))
            }
            None => None,
        };
        lifecycle::describe_change(&mut tx, "update_pattern", summary, extra.as_ref()).await?;
        lifecycle::update_text(
            &mut tx,
            &[row.id],
            q.description.as_deref(),
            q.context.as_deref(),
        )
        .await?;
    }
    let history = lifecycle::history(&mut tx, &q.pattern_name, q.repository.as_deref()).await?;
    tx.commit().await?;
    let repositories = repositories_of(&rows);
    Ok(output(json!({
        "pattern_name": q.pattern_name,
        "new_version": versions(&history).len(),
        "message": format!("Pattern '{}' updated in {} repositor{}", q.pattern_name, repositories.len(),
                           if repositories.len() == 1 { "y" } else { "ies" }),
        "repositories_affected": repositories,
    })))
}

pub fn deprecate_pattern() -> Skill {
    skill(
        "deprecate_pattern",
        "Deprecate Pattern",
        "Mark a pattern deprecated, with the reason, its replacement and migration notes, in every \
         repository holding it (or one). Recorded in its history.",
        true,
        json!({
            "type": "object",
            "properties": {
                "pattern_name": pattern_name_field(),
                "repository": repository_schema("Only this repository's pattern"),
                "reason": text("Why it is deprecated", 2000),
                "replacement_pattern": text("The pattern to use instead", 500),
                "migration_notes": {"type": "array", "items": {"type": "string", "maxLength": 2000}, "maxItems": 50},
            },
            "required": ["pattern_name", "reason"],
        }),
        vec![example(
            json!({"pattern_name": "Retry with backoff", "reason": "Use the shared client's retries", "replacement_pattern": "HTTP client wrapper"}),
            "Deprecate a pattern in favour of another",
        )],
        handler(run_deprecate),
    )
}

#[derive(Deserialize)]
struct DeprecateInput {
    pattern_name: String,
    repository: Option<String>,
    reason: String,
    replacement_pattern: Option<String>,
    migration_notes: Option<Vec<String>>,
}

async fn run_deprecate(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: DeprecateInput = parse(input)?;
    let notes = q.migration_notes.as_ref().map(|n| json!(n));
    let change = StatusChange {
        status: "deprecated",
        reason: Some(&q.reason),
        replacement: q.replacement_pattern.as_deref(),
        notes: notes.as_ref(),
    };
    let summary = format!("Deprecated: {}", q.reason);
    change_status(
        &ctx,
        &q.pattern_name,
        q.repository.as_deref(),
        &change,
        &summary,
        |n| {
            format!(
                "Pattern '{}' deprecated in {n} repositor{}",
                q.pattern_name,
                if n == 1 { "y" } else { "ies" }
            )
        },
    )
    .await
}

/// Sets the status of the patterns named `name` in one transaction; archived patterns stay
/// archived (archiving is the end of the lifecycle). Answers with the repositories touched and
/// `message` of their number; a deprecation also names its replacement.
async fn change_status(
    ctx: &SkillContext,
    name: &str,
    repository: Option<&str>,
    change: &StatusChange<'_>,
    summary: &str,
    message: impl FnOnce(usize) -> String,
) -> Result<SkillOutput, SkillError> {
    let mut tx = crate::db::begin(ctx.pool()).await?;
    let rows = lifecycle::find_for_update(&mut tx, name, repository).await?;
    if rows.is_empty() {
        return Err(not_found(name, repository));
    }
    if change.status != "archived" && rows.iter().all(|r| r.status == "archived") {
        return Err(SkillError::failed(format!(
            "Pattern '{name}' is archived; an archived pattern is not deprecated again"
        )));
    }
    let ids: Vec<i32> = rows
        .iter()
        .filter(|r| r.status != "archived")
        .map(|r| r.id)
        .collect();
    let actor = format!("{}_pattern", &change.status[..change.status.len() - 1]);
    lifecycle::describe_change(&mut tx, &actor, Some(summary), None).await?;
    lifecycle::set_status(&mut tx, &ids, change).await?;
    tx.commit().await?;
    let repositories = repositories_of(&rows);
    let mut answer = json!({
        "pattern_name": name,
        "status": change.status,
        "affected_repositories": repositories,
    });
    if change.status == "deprecated" {
        answer["replacement_pattern"] = json!(change.replacement);
    }
    answer["message"] = json!(message(repositories.len()));
    Ok(output(answer))
}

pub fn archive_pattern() -> Skill {
    skill(
        "archive_pattern",
        "Archive Pattern",
        "Archive a pattern (usually after deprecating it) in every repository holding it (or one); it \
         stays in the knowledge base with its history. Recorded in its history.",
        true,
        json!({
            "type": "object",
            "properties": {
                "pattern_name": pattern_name_field(),
                "repository": repository_schema("Only this repository's pattern"),
                "reason": text("Why it is archived", 2000),
            },
            "required": ["pattern_name"],
        }),
        vec![example(
            json!({"pattern_name": "Retry with backoff"}),
            "Archive a deprecated pattern",
        )],
        handler(run_archive),
    )
}

#[derive(Deserialize)]
struct ArchiveInput {
    pattern_name: String,
    repository: Option<String>,
    reason: Option<String>,
}

async fn run_archive(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: ArchiveInput = parse(input)?;
    let change = StatusChange {
        status: "archived",
        reason: None,
        replacement: None,
        notes: None,
    };
    let summary = match &q.reason {
        Some(reason) => format!("Archived: {reason}"),
        None => "Archived".to_string(),
    };
    change_status(
        &ctx,
        &q.pattern_name,
        q.repository.as_deref(),
        &change,
        &summary,
        |_| format!("Pattern '{}' archived", q.pattern_name),
    )
    .await
}

pub fn get_pattern_history() -> Skill {
    skill(
        "get_pattern_history",
        "Get Pattern History",
        "Every version of a pattern, oldest first, as the database recorded it when each change was \
         made: who, when, why, and each field's old and new value. One version per change, however \
         many repositories it touched.",
        false,
        json!({
            "type": "object",
            "properties": {
                "pattern_name": pattern_name_field(),
                "repository": repository_schema("Only this repository's pattern"),
            },
            "required": ["pattern_name"],
        }),
        vec![example(
            json!({"pattern_name": "Retry with backoff"}),
            "A pattern's versions",
        )],
        handler(run_history),
    )
}

#[derive(Deserialize)]
struct HistoryInput {
    pattern_name: String,
    repository: Option<String>,
}

async fn run_history(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: HistoryInput = parse(input)?;
    let mut conn = ctx.pool().acquire().await?;
    let rows = lifecycle::history(&mut conn, &q.pattern_name, q.repository.as_deref()).await?;
    if rows.is_empty() {
        return Err(not_found(&q.pattern_name, q.repository.as_deref()));
    }
    let versions = versions(&rows);
    let current = versions
        .last()
        .and_then(|v| v["status"].as_str())
        .unwrap_or("active")
        .to_string();
    Ok(output(json!({
        "pattern_name": q.pattern_name,
        "current_status": current,
        "total_versions": versions.len(),
        "versions": versions,
    })))
}

/// The fields a version compares, in the order its changes list them.
const FIELDS: [&str; 9] = [
    "repository",
    "name",
    "description",
    "context",
    "keywords",
    "status",
    "deprecation_reason",
    "replacement_pattern",
    "migration_notes",
];

fn as_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// History rows as versions: the rows of one transaction are one version.
fn versions(rows: &[HistoryRow]) -> Vec<Value> {
    let mut groups: Vec<Vec<&HistoryRow>> = Vec::new();
    for row in rows {
        match groups.last_mut() {
            Some(group) if group[0].txid == row.txid => group.push(row),
            _ => groups.push(vec![row]),
        }
    }
    groups
        .iter()
        .enumerate()
        .map(|(i, group)| version(i + 1, group))
        .collect()
}

fn version(number: usize, group: &[&HistoryRow]) -> Value {
    let first = group[0];
    let state = first.after.as_ref().or(first.before.as_ref());
    let field = |name: &str| {
        state
            .and_then(|s| s.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let changes: Vec<Value> = FIELDS
        .iter()
        .filter_map(|f| {
            let old = first.before.as_ref().and_then(|b| b.get(*f));
            let new = first.after.as_ref().and_then(|a| a.get(*f));
            (old != new && !(old.is_none() && new.is_some_and(Value::is_null)))
                .then(|| json!({"field": f, "old_value": as_text(old), "new_value": as_text(new)}))
        })
        .collect();
    let repositories: BTreeSet<&str> = group
        .iter()
        .filter_map(|r| r.repository.as_deref())
        .collect();
    let summary = first
        .change_summary
        .clone()
        .unwrap_or_else(|| match first.operation.as_str() {
            "created" => "Created".to_string(),
            "deleted" => "Deleted".to_string(),
            other => format!("{}{}", other[..1].to_uppercase(), &other[1..]),
        });
    let status = match first.operation.as_str() {
        "deleted" => "archived".to_string(),
        _ => as_text(Some(&field("status"))),
    };
    json!({
        "version_number": number,
        "pattern_name": as_text(Some(&field("name"))),
        "description": as_text(Some(&field("description"))),
        "status": if status.is_empty() { "active".to_string() } else { status },
        "operation": first.operation,
        "created_at": iso_opt(Some(first.changed_at)),
        "created_by": first.changed_by,
        "change_summary": summary,
        "changes": changes,
        "repositories": repositories,
    })
}

pub fn suggest_pattern_from_component() -> Skill {
    skill(
        "suggest_pattern_from_component",
        "Suggest Pattern From Component",
        "Whether a component stored in several repositories is worth a cross-repository pattern: a \
         suggested name and description, a worthiness score (0-10) from how many repositories hold \
         it, how similar the copies are and their size, and the effort. Writes nothing.",
        false,
        json!({
            "type": "object",
            "properties": {
                "component_name": text("The component's name", 500),
                "repository": text("A repository holding it", 255),
                "duplication_count": {"type": "integer", "minimum": 0, "maximum": 10000},
                "component_type": {"type": "string", "maxLength": 100},
                "similarity_score": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["component_name", "repository"],
        }),
        vec![example(
            json!({"component_name": "retry-policy", "repository": "acme/billing", "similarity_score": 0.9}),
            "Is the retry policy worth a pattern?",
        )],
        handler(run_suggest),
    )
}

#[derive(Deserialize)]
struct SuggestInput {
    component_name: String,
    repository: String,
    component_type: Option<String>,
    similarity_score: Option<f64>,
}

/// `retry-policy` → `Retry Policy`.
fn title(name: &str) -> String {
    name.split(['-', '_', ' ', '.'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run_suggest(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: SuggestInput = parse(input)?;
    let mut conn = ctx.pool().acquire().await?;
    let copies = lifecycle::component_copies(&mut conn, &q.component_name).await?;
    let mut repositories: BTreeSet<String> = copies.iter().map(|c| c.repository.clone()).collect();
    repositories.insert(q.repository.clone());
    let copies_count = repositories.len();
    let similarity = q.similarity_score.unwrap_or(1.0);
    let lines: i64 = copies
        .iter()
        .map(|c| i64::from(c.lines_of_code.unwrap_or(0)))
        .sum();
    let average = if copies.is_empty() {
        0
    } else {
        lines / copies.len() as i64
    };
    // docs/skills-api.md: 5 for the repositories beyond the first (up to 4 more), 3 for the
    // similarity of the copies, 2 for their average size (up to 500 lines).
    let spread = (copies_count.saturating_sub(1)).min(4) as f64 / 4.0;
    let size = (average.min(500) as f64) / 500.0;
    let worthiness = ((5.0 * spread + 3.0 * similarity + 2.0 * size) * 10.0).round() / 10.0;
    let effort = match lines {
        l if l < 200 => "low",
        l if l < 1000 => "medium",
        _ => "high",
    };
    let kind = q
        .component_type
        .clone()
        .or_else(|| copies.iter().find_map(|c| c.component_type.clone()))
        .unwrap_or_else(|| "component".into());
    let purpose = copies.iter().find_map(|c| c.purpose.clone());
    let name = title(&q.component_name);
    let places: Vec<String> = copies
        .iter()
        .map(|c| {
            format!(
                "{} ({})",
                c.repository,
                c.location.as_deref().unwrap_or("location unknown")
            )
        })
        .collect();
    Ok(output(json!({
        "pattern_name": name,
        "description": match &purpose {
            Some(p) => format!("{p} — the shared {kind} '{}' as one pattern", q.component_name),
            None => format!("The shared {kind} '{}' as one pattern", q.component_name),
        },
        "worthiness_score": worthiness,
        "rationale": format!(
            "'{}' is stored in {copies_count} repositor{} ({} lines in all, copies {:.0}% similar)",
            q.component_name, if copies_count == 1 { "y" } else { "ies" }, lines, similarity * 100.0),
        "affected_repositories": repositories,
        "estimated_effort": effort,
        "benefits": [
            format!("One documented way to build a {kind} instead of {copies_count}"),
            "Fixes made once reach every repository".to_string(),
        ],
        "implementation_notes": if places.is_empty() {
            vec![format!("No stored copy of '{}' yet: scan the repositories first", q.component_name)]
        } else {
            places.iter().map(|p| format!("Copy in {p}")).collect()
        },
        "copies_found": copies.len(),
    })))
}

pub fn create_pattern_from_component() -> Skill {
    skill(
        "create_pattern_from_component",
        "Create Pattern From Component",
        "Record a cross-repository pattern for a component: the pattern is added to the given \
         repository and to every repository holding a copy of the component, in one transaction \
         (repositories that already have a pattern of that name keep theirs).",
        true,
        json!({
            "type": "object",
            "properties": {
                "component_name": text("The component's name", 500),
                "repository": repository_schema("A repository holding it (must be in the knowledge base)"),
                "pattern_name": text("The new pattern's name", 500),
                "pattern_description": {"type": "string", "maxLength": 10000},
                "duplication_count": {"type": "integer", "minimum": 0, "maximum": 10000},
                "component_type": {"type": "string", "maxLength": 100},
            },
            "required": ["component_name", "repository", "pattern_name"],
        }),
        vec![example(
            json!({"component_name": "retry-policy", "repository": "acme/billing", "pattern_name": "Retry Policy",
                   "pattern_description": "Retries with exponential backoff"}),
            "Turn a duplicated component into a pattern",
        )],
        handler(run_create),
    )
}

#[derive(Deserialize)]
struct CreateInput {
    component_name: String,
    repository: String,
    pattern_name: String,
    pattern_description: Option<String>,
    component_type: Option<String>,
}

async fn run_create(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: CreateInput = parse(input)?;
    let mut tx = crate::db::begin(ctx.pool()).await?;
    if kb::repository_id(&mut tx, &q.repository).await?.is_none() {
        return Err(SkillError::failed(format!(
            "Repository '{}' not found in knowledge base",
            q.repository
        )));
    }
    let copies = lifecycle::component_copies(&mut tx, &q.component_name).await?;
    let mut repositories: BTreeSet<String> = copies.iter().map(|c| c.repository.clone()).collect();
    repositories.insert(q.repository.clone());
    let kind = q.component_type.as_deref().unwrap_or("component");
    let context = format!(
        "From the {kind} '{}' found in {}",
        q.component_name,
        repositories.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let description = q.pattern_description.clone().unwrap_or_default();
    let summary = format!("Created from component '{}'", q.component_name);
    lifecycle::describe_change(
        &mut tx,
        "create_pattern_from_component",
        Some(&summary),
        None,
    )
    .await?;
    let mut created = Vec::new();
    for repository in &repositories {
        let repo_id = kb::ensure_repository(&mut tx, repository).await?;
        if lifecycle::insert_pattern(&mut tx, repo_id, &q.pattern_name, &description, &context)
            .await?
        {
            created.push(repository.clone());
        }
    }
    tx.commit().await?;
    Ok(output(json!({
        "pattern_name": q.pattern_name,
        "message": format!("Pattern '{}' recorded in {} repositor{}", q.pattern_name, created.len(),
                           if created.len() == 1 { "y" } else { "ies" }),
        "repositories_affected": repositories,
        "created_in": created,
    })))
}
