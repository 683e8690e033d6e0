//! `repositories` and what describes one repository: its deployment row, lessons, components,
//! dependencies, test frameworks, security patterns, keywords and analysis history. Reads take
//! a list of repository ids so a skill answering for ten repositories still runs a fixed number
//! of queries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::iso_opt;

/// One line of `get_repository_list`.
#[derive(Debug, sqlx::FromRow)]
pub struct RepositorySummary {
    pub name: String,
    pub problem_domain: Option<String>,
    pub last_analyzed: Option<DateTime<Utc>>,
    pub pattern_count: i64,
    /// The five most used keywords of the repository's patterns.
    pub keywords: Vec<String>,
}

/// Every repository with its pattern count and five most used keywords, by name, in one pass
/// over the knowledge base: patterns counted per repository, (repository, keyword) uses ranked,
/// five kept. Measured against a per-repository formulation (correlated subqueries through the
/// indexes) with pgbench on 100 repositories × 20 patterns: 1.27× its rate — get_repository_list
/// returns every repository, so nothing is saved by looking at each one separately
/// (docs/read-path.md). `tests/read_sql.rs` holds the two formulations to the same rows.
pub const SUMMARIES_SQL: &str = "WITH counts AS (SELECT repo_id, count(*) AS n FROM patterns GROUP BY repo_id),
      usage AS (SELECT p.repo_id, pk.keyword_id, count(*) AS uses
                  FROM patterns p JOIN pattern_keywords pk ON pk.pattern_id = p.id
                 GROUP BY p.repo_id, pk.keyword_id),
      ranked AS (SELECT u.repo_id, k.keyword,
                        row_number() OVER (PARTITION BY u.repo_id ORDER BY u.uses DESC, k.keyword) AS rank
                   FROM usage u JOIN keywords k ON k.id = u.keyword_id)
 SELECT r.name::text AS name, r.problem_domain, r.last_analyzed, coalesce(c.n, 0) AS pattern_count,
        coalesce(array_agg(k.keyword::text ORDER BY k.rank) FILTER (WHERE k.rank IS NOT NULL), '{}') AS keywords
   FROM repositories r
   LEFT JOIN counts c ON c.repo_id = r.id
   LEFT JOIN ranked k ON k.repo_id = r.id AND k.rank <= 5
  GROUP BY r.id, c.n
  ORDER BY r.name";

/// Every repository with its pattern count and top keywords, by name (one statement).
pub async fn summaries(conn: &mut PgConnection) -> Result<Vec<RepositorySummary>, sqlx::Error> {
    sqlx::query_as(SUMMARIES_SQL).fetch_all(conn).await
}

/// Inserts a repository; `None` when the name is taken.
pub async fn add(
    conn: &mut PgConnection,
    name: &str,
    problem_domain: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO repositories (name, problem_domain) VALUES ($1, $2)
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(problem_domain)
    .fetch_optional(conn)
    .await
}

#[derive(Debug, sqlx::FromRow)]
pub struct RepositoryRow {
    pub id: i32,
    pub name: String,
    pub problem_domain: Option<String>,
    pub last_analyzed: Option<DateTime<Utc>>,
    pub last_commit_sha: Option<String>,
}

pub async fn get(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<RepositoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name::text AS name, problem_domain, last_analyzed, last_commit_sha::text AS last_commit_sha
           FROM repositories WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Lessons in the LessonLearned shape (`lesson` = title, `context` = description, `severity` =
/// impact), newest first.
pub async fn lessons(
    conn: &mut PgConnection,
    repo_ids: &[i32],
) -> Result<HashMap<i32, Vec<Value>>, sqlx::Error> {
    type Row = (
        i32,
        Option<DateTime<Utc>>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Value>,
        Option<Value>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT repo_id, date, category::text, title::text, description, impact::text, recorded_by::text,
                related_files, tags
           FROM lessons_learned WHERE repo_id = ANY($1)
          ORDER BY date DESC NULLS LAST, id DESC",
    )
    .bind(repo_ids)
    .fetch_all(conn)
    .await?;
    let mut by_repo: HashMap<i32, Vec<Value>> = HashMap::new();
    for (repo_id, date, category, title, description, impact, recorded_by, files, tags) in rows {
        by_repo.entry(repo_id).or_default().push(json!({
            "timestamp": iso_opt(date),
            "category": category,
            "lesson": title,
            "context": description,
            "severity": impact,
            "recorded_by": recorded_by,
            "related_files": files.unwrap_or_else(|| json!([])),
            "tags": tags.unwrap_or_else(|| json!([])),
        }));
    }
    Ok(by_repo)
}

/// Components in the ReusableComponent shape (`description` = purpose, `files` = [location],
/// `api_contract` = api_signature, `tags` = keywords).
pub async fn components(
    conn: &mut PgConnection,
    repo_ids: &[i32],
) -> Result<HashMap<i32, Vec<Value>>, sqlx::Error> {
    type Row = (
        i32,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Value>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT repo_id, name::text, purpose, location, language::text, api_signature, component_type::text, keywords
           FROM reusable_components WHERE repo_id = ANY($1)
          ORDER BY name, id",
    )
    .bind(repo_ids)
    .fetch_all(conn)
    .await?;
    let mut by_repo: HashMap<i32, Vec<Value>> = HashMap::new();
    for (repo_id, name, purpose, location, language, api, component_type, keywords) in rows {
        let files: Vec<String> = location.into_iter().filter(|l| !l.is_empty()).collect();
        by_repo.entry(repo_id).or_default().push(json!({
            "name": name,
            "description": purpose.unwrap_or_default(),
            "files": files,
            "language": language.unwrap_or_else(|| "unknown".into()),
            "api_contract": api,
            "usage_example": null,
            "tags": keywords.unwrap_or_else(|| json!([])),
            "component_type": component_type,
        }));
    }
    Ok(by_repo)
}

/// The newest deployment row of each repository.
#[derive(Debug, sqlx::FromRow)]
struct DeploymentRow {
    repo_id: i32,
    name: String,
    description: Option<String>,
    commands: Option<Value>,
    deployment_frequency: Option<String>,
    last_deployed: Option<DateTime<Utc>>,
}

/// The DeploymentInfo object for each repository id (empty shape when nothing is recorded).
pub async fn deployment_infos(
    conn: &mut PgConnection,
    repo_ids: &[i32],
) -> Result<HashMap<i32, Value>, sqlx::Error> {
    let rows: Vec<DeploymentRow> = sqlx::query_as(
        "SELECT DISTINCT ON (repo_id) repo_id, name::text AS name, description, commands,
                deployment_frequency::text AS deployment_frequency, last_deployed
           FROM deployment_scripts WHERE repo_id = ANY($1)
          ORDER BY repo_id, updated_at DESC NULLS LAST, id DESC",
    )
    .bind(repo_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: HashMap<i32, DeploymentRow> = rows.into_iter().map(|r| (r.repo_id, r)).collect();
    let mut lessons = lessons(&mut *conn, repo_ids).await?;
    let mut components = components(&mut *conn, repo_ids).await?;
    Ok(repo_ids
        .iter()
        .map(|id| {
            let row = rows.remove(id);
            let info = deployment_json(
                row.as_ref(),
                lessons.remove(id).unwrap_or_default(),
                components.remove(id).unwrap_or_default(),
            );
            (*id, info)
        })
        .collect())
}

fn deployment_json(
    row: Option<&DeploymentRow>,
    lessons: Vec<Value>,
    components: Vec<Value>,
) -> Value {
    let infrastructure = row
        .and_then(|r| r.description.as_deref())
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let scripts = row
        .and_then(|r| r.commands.clone())
        .filter(Value::is_array)
        .map(with_script_defaults)
        .unwrap_or_else(|| json!([]));
    // add_deployment_info names the row after the platform, or "deployment" when none was given.
    let platform = row.map(|r| r.name.as_str()).filter(|n| *n != "deployment");
    json!({
        "scripts": scripts,
        "lessons_learned": lessons,
        "reusable_components": components,
        "ci_cd_platform": platform,
        "infrastructure": infrastructure,
        "deployment_frequency": row.and_then(|r| r.deployment_frequency.clone()),
        "last_deployed": row.and_then(|r| iso_opt(r.last_deployed)),
    })
}

/// Every script object gets `commands` (a list, `[]` when none was recorded) and
/// `environment_variables` (an object, `{}`): the web frontend's type declares both and its copy
/// button reads `commands`.
fn with_script_defaults(scripts: Value) -> Value {
    match scripts {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|mut script| {
                    if let Value::Object(m) = &mut script {
                        if !m.get("commands").is_some_and(Value::is_array) {
                            m.insert("commands".into(), json!([]));
                        }
                        if !m.get("environment_variables").is_some_and(Value::is_object) {
                            m.insert("environment_variables".into(), json!({}));
                        }
                    }
                    script
                })
                .collect(),
        ),
        other => other,
    }
}

/// DependencyInfo: consumers and derivatives as objects naming the repository, externals as
/// names.
pub async fn dependencies(conn: &mut PgConnection, repo_id: i32) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT dependency_name::text, dependency_version::text, dependency_type::text
           FROM dependencies WHERE repo_id = $1 ORDER BY id",
    )
    .bind(repo_id)
    .fetch_all(conn)
    .await?;
    let (mut consumers, mut derivatives, mut external) = (Vec::new(), Vec::new(), Vec::new());
    for (name, version, kind) in rows {
        match kind.as_deref() {
            Some(k @ ("consumer" | "derivative")) => {
                let entry = json!({
                    "repository": name,
                    "target_repo": name,
                    "relationship_type": k,
                    "dependency_version": version,
                });
                if k == "consumer" {
                    consumers.push(entry);
                } else {
                    derivatives.push(entry);
                }
            }
            _ => external.push(Value::String(name)),
        }
    }
    Ok(json!({
        "consumers": consumers,
        "derivatives": derivatives,
        "external_dependencies": external,
        "dependency_update_strategy": null,
    }))
}

/// TestingInfo from `test_frameworks`.
pub async fn testing(conn: &mut PgConnection, repo_id: i32) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, Option<f64>)> = sqlx::query_as(
        "SELECT framework_name::text, coverage_percentage::float8 FROM test_frameworks
          WHERE repo_id = $1 ORDER BY framework_name",
    )
    .bind(repo_id)
    .fetch_all(conn)
    .await?;
    let coverage = rows
        .iter()
        .filter_map(|r| r.1)
        .fold(None, |acc: Option<f64>, c| {
            Some(acc.map_or(c, |a| a.max(c)))
        });
    Ok(json!({
        "test_frameworks": rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        "coverage_percentage": coverage,
        "test_patterns": [],
        "ci_status": null,
        "test_count": null,
        "last_test_run": null,
    }))
}

/// SecurityInfo from `security_patterns`.
pub async fn security(conn: &mut PgConnection, repo_id: i32) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT pattern_name::text, authentication_method::text, compliance_standard::text
           FROM security_patterns WHERE repo_id = $1 ORDER BY pattern_name",
    )
    .bind(repo_id)
    .fetch_all(conn)
    .await?;
    let distinct = |values: Vec<String>| {
        let mut v = values;
        v.sort();
        v.dedup();
        v
    };
    Ok(json!({
        "vulnerability_scan_date": null,
        "security_patterns": rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        "authentication_methods": distinct(rows.iter().filter_map(|r| r.1.clone()).collect()),
        "compliance_standards": distinct(rows.iter().filter_map(|r| r.2.clone()).collect()),
        "known_vulnerabilities": [],
        "security_score": null,
    }))
}

/// Pattern names per repository, newest first.
pub async fn pattern_names(
    conn: &mut PgConnection,
    repo_ids: &[i32],
) -> Result<HashMap<i32, Vec<String>>, sqlx::Error> {
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT repo_id, name::text FROM patterns WHERE repo_id = ANY($1) ORDER BY created_at DESC, id DESC",
    )
    .bind(repo_ids)
    .fetch_all(conn)
    .await?;
    let mut by_repo: HashMap<i32, Vec<String>> = HashMap::new();
    for (repo_id, name) in rows {
        by_repo.entry(repo_id).or_default().push(name);
    }
    Ok(by_repo)
}

/// Distinct keywords of a repository's patterns, alphabetically.
pub async fn keywords(conn: &mut PgConnection, repo_id: i32) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT k.keyword::text
           FROM patterns p JOIN pattern_keywords pk ON pk.pattern_id = p.id JOIN keywords k ON k.id = pk.keyword_id
          WHERE p.repo_id = $1 ORDER BY 1",
    )
    .bind(repo_id)
    .fetch_all(conn)
    .await
}

/// `analysis_history` rows, newest first.
pub async fn history(conn: &mut PgConnection, repo_id: i32) -> Result<Vec<Value>, sqlx::Error> {
    type Row = (
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i32>,
        Option<i32>,
        Option<i32>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT commit_sha::text, analyzed_at, patterns_count, decisions_count, components_count
           FROM analysis_history WHERE repo_id = $1 ORDER BY analyzed_at DESC NULLS LAST, id DESC",
    )
    .bind(repo_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sha, at, p, d, c)| {
            json!({
                "commit_sha": sha,
                "analyzed_at": iso_opt(at),
                "patterns_count": p.unwrap_or(0),
                "decisions_count": d.unwrap_or(0),
                "components_count": c.unwrap_or(0),
            })
        })
        .collect())
}

/// Everything `get_deployment_info` returns besides the repository's own row.
pub struct RepositoryDetails {
    pub deployment: Value,
    pub dependencies: Value,
    pub testing: Value,
    pub security: Value,
    pub patterns: Vec<String>,
    pub keywords: Vec<String>,
    pub lessons: Vec<Value>,
    pub history: Vec<Value>,
}

pub async fn details(
    conn: &mut PgConnection,
    repo_id: i32,
    with_history: bool,
) -> Result<RepositoryDetails, sqlx::Error> {
    let ids = [repo_id];
    let deployment = deployment_infos(&mut *conn, &ids)
        .await?
        .remove(&repo_id)
        .unwrap_or(Value::Null);
    let lessons = deployment
        .get("lessons_learned")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(RepositoryDetails {
        dependencies: dependencies(&mut *conn, repo_id).await?,
        testing: testing(&mut *conn, repo_id).await?,
        security: security(&mut *conn, repo_id).await?,
        patterns: pattern_names(&mut *conn, &ids)
            .await?
            .remove(&repo_id)
            .unwrap_or_default(),
        keywords: keywords(&mut *conn, repo_id).await?,
        history: if with_history {
            history(&mut *conn, repo_id).await?
        } else {
            Vec::new()
        },
        lessons,
        deployment,
    })
}
