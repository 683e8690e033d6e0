//! Reads and writes of `reusable_components` for the component skills: the knowledge the
//! placement scores need (components, repositories with their pattern keywords, dependency
//! rows and relationships), and the replacement of one repository's components by a scan —
//! upsert what was found, then delete what was not, in the caller's transaction.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::rules::component_scan::Extracted;
use crate::rules::component_scoring::{
    Component, DependencyRow, Knowledge, RelationshipRow, Repository, resolve_edges,
};

#[derive(sqlx::FromRow)]
struct ComponentRow {
    component_id: Option<String>,
    repository: String,
    name: String,
    location: Option<String>,
    component_type: Option<String>,
    api_signature: Option<String>,
    keywords: Option<Value>,
    public_methods: Option<Value>,
    lines_of_code: Option<i32>,
    cyclomatic_complexity: Option<f64>,
    first_seen: Option<NaiveDateTime>,
    sync_status: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RepositoryRow {
    name: String,
    problem_domain: Option<String>,
    last_analyzed: Option<DateTime<Utc>>,
    keywords: Vec<String>,
}

/// Strings of a JSON array (other values ignored).
fn strings(value: Option<Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Everything the placement scores read, from one snapshot.
pub async fn knowledge(conn: &mut PgConnection) -> Result<Knowledge, sqlx::Error> {
    let repositories: Vec<RepositoryRow> = sqlx::query_as(
        "SELECT r.name::text AS name, r.problem_domain, r.last_analyzed,
                coalesce(array_agg(DISTINCT k.keyword::text) FILTER (WHERE k.keyword IS NOT NULL), '{}') AS keywords
           FROM repositories r
           LEFT JOIN patterns p ON p.repo_id = r.id
           LEFT JOIN pattern_keywords pk ON pk.pattern_id = p.id
           LEFT JOIN keywords k ON k.id = pk.keyword_id
          GROUP BY r.id
          ORDER BY r.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let components: Vec<ComponentRow> = sqlx::query_as(
        "SELECT c.component_id, r.name::text AS repository, c.name::text AS name, c.location,
                c.component_type::text AS component_type, c.api_signature, c.keywords, c.public_methods,
                c.lines_of_code, c.cyclomatic_complexity, c.first_seen, c.sync_status::text AS sync_status
           FROM reusable_components c
           JOIN repositories r ON r.id = c.repo_id
          ORDER BY r.name, c.name, c.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let dependencies: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT r.name::text, d.dependency_name::text, d.dependency_type::text
           FROM dependencies d JOIN repositories r ON r.id = d.repo_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let relationships: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT s.name::text, t.name::text, rr.relationship_type::text
           FROM repository_relationships rr
           JOIN repositories s ON s.id = rr.source_repo_id
           JOIN repositories t ON t.id = rr.target_repo_id",
    )
    .fetch_all(&mut *conn)
    .await?;

    let names: Vec<String> = repositories.iter().map(|r| r.name.clone()).collect();
    let dependencies: Vec<DependencyRow> = dependencies
        .into_iter()
        .map(|(repository, name, kind)| DependencyRow {
            repository,
            name,
            kind,
        })
        .collect();
    let relationships: Vec<RelationshipRow> = relationships
        .into_iter()
        .map(|(source, target, kind)| RelationshipRow {
            source,
            target,
            kind,
        })
        .collect();
    Ok(Knowledge {
        edges: resolve_edges(&names, &dependencies, &relationships),
        repositories: repositories
            .into_iter()
            .map(|r| Repository {
                name: r.name,
                problem_domain: r.problem_domain,
                last_analyzed: r.last_analyzed,
                pattern_keywords: r.keywords,
            })
            .collect(),
        components: components
            .into_iter()
            .map(|c| Component {
                id: c
                    .component_id
                    .unwrap_or_else(|| super::analysis::component_id(&c.repository, &c.name)),
                repository: c.repository,
                name: c.name,
                component_type: c.component_type.unwrap_or_else(|| "unknown".into()),
                location: c.location,
                keywords: strings(c.keywords),
                lines_of_code: i64::from(c.lines_of_code.unwrap_or(0)),
                cyclomatic_complexity: c.cyclomatic_complexity,
                first_seen: c.first_seen,
                sync_status: c.sync_status.unwrap_or_else(|| "unknown".into()),
                api_signature: c.api_signature,
                public_methods: strings(c.public_methods),
            })
            .collect(),
    })
}

/// What replacing a repository's components did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub removed: u64,
}

/// `replace_for_repository` in its own transaction, for the repository named; `None` when it is
/// not in the knowledge base.
pub async fn replace_named(
    pool: &sqlx::PgPool,
    repository: &str,
    found: &[Extracted],
) -> Result<Option<Replaced>, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(repo_id) = super::repository_id(&mut tx, repository).await? else {
        return Ok(None);
    };
    let replaced = replace_for_repository(&mut tx, repo_id, repository, found).await?;
    tx.commit().await?;
    Ok(Some(replaced))
}

/// Makes `found` the repository's components: each is upserted by its id
/// (`owner/repo:name`), then the repository's rows that were not found are deleted — in that
/// order, so rows are only removed once their replacements are written. Run it in a
/// transaction. An empty `found` changes nothing (a scan that finds nothing is no reason to
/// forget what is recorded).
pub async fn replace_for_repository(
    conn: &mut PgConnection,
    repo_id: i32,
    repository: &str,
    found: &[Extracted],
) -> Result<Replaced, sqlx::Error> {
    let mut report = Replaced::default();
    if found.is_empty() {
        return Ok(report);
    }
    let mut ids = Vec::with_capacity(found.len());
    for c in found {
        let id = super::analysis::component_id(repository, &c.name);
        let row: Option<(bool,)> = sqlx::query_as(
            "INSERT INTO reusable_components
                 (repo_id, component_id, name, purpose, location, component_type, language, api_signature,
                  imports, keywords, lines_of_code, cyclomatic_complexity, public_methods)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (component_id) DO UPDATE
                SET repo_id = EXCLUDED.repo_id,
                    name = EXCLUDED.name,
                    purpose = coalesce(EXCLUDED.purpose, reusable_components.purpose),
                    location = EXCLUDED.location,
                    component_type = EXCLUDED.component_type,
                    language = EXCLUDED.language,
                    api_signature = EXCLUDED.api_signature,
                    imports = EXCLUDED.imports,
                    keywords = EXCLUDED.keywords,
                    lines_of_code = EXCLUDED.lines_of_code,
                    cyclomatic_complexity = EXCLUDED.cyclomatic_complexity,
                    public_methods = EXCLUDED.public_methods
              WHERE (reusable_components.repo_id, reusable_components.name, reusable_components.purpose,
                     reusable_components.location, reusable_components.component_type,
                     reusable_components.language, reusable_components.api_signature,
                     reusable_components.imports, reusable_components.keywords,
                     reusable_components.lines_of_code, reusable_components.cyclomatic_complexity,
                     reusable_components.public_methods)
                    IS DISTINCT FROM
                    (EXCLUDED.repo_id, EXCLUDED.name, coalesce(EXCLUDED.purpose, reusable_components.purpose),
                     EXCLUDED.location, EXCLUDED.component_type, EXCLUDED.language, EXCLUDED.api_signature,
                     EXCLUDED.imports, EXCLUDED.keywords, EXCLUDED.lines_of_code,
                     EXCLUDED.cyclomatic_complexity, EXCLUDED.public_methods)
             RETURNING (xmax = 0)",
        )
        .bind(repo_id)
        .bind(&id)
        .bind(&c.name)
        .bind(c.purpose.as_deref())
        .bind(&c.location)
        .bind(c.component_type)
        .bind(c.language)
        .bind(c.api_signature.as_deref())
        .bind(Value::from(c.imports.clone()))
        .bind(Value::from(c.keywords.clone()))
        .bind(c.lines_of_code)
        .bind(c.cyclomatic_complexity)
        .bind(Value::from(c.public_methods.clone()))
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some((true,)) => report.inserted += 1,
            Some((false,)) => report.updated += 1,
            None => report.unchanged += 1,
        }
        ids.push(id);
    }
    report.removed = sqlx::query(
        "DELETE FROM reusable_components
          WHERE repo_id = $1 AND (component_id IS NULL OR NOT (component_id = ANY($2)))",
    )
    .bind(repo_id)
    .bind(&ids)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(report)
}
