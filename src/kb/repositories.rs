//! `repositories` and what describes one repository: its deployment row, lessons, components,
//! dependencies, test frameworks, security patterns, keywords and analysis history. Reads take
//! a list of repository ids so a skill answering for ten repositories still runs a fixed number
//! of queries; `get_deployment_info`'s, for one repository by name, is one statement
//! (`DEPLOYMENT_INFO_SQL`).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use sqlx::PgConnection;
use sqlx::types::Json;

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

/// Every repository with its pattern count and five most used keywords, by name, in one
/// statement: patterns counted per repository; keyword uses summed from the ledger the database
/// keeps (`super::keyword_uses`: a few hundred rows, not every pattern–keyword link; a sum of
/// zero is a keyword no longer used), ranked, five kept (docs/read-path.md). `tests/read_sql.rs`
/// holds it to a per-repository formulation over the links themselves.
pub const SUMMARIES_SQL: &str = "WITH counts AS (SELECT repo_id, count(*) AS n FROM patterns GROUP BY repo_id),
      usage AS (SELECT repo_id, keyword_id, sum(uses) AS uses FROM repository_keyword_uses
                 GROUP BY repo_id, keyword_id HAVING sum(uses) > 0),
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
        by_repo.entry(repo_id).or_default().push(lesson_json((
            date,
            category,
            title,
            description,
            impact,
            recorded_by,
            files,
            tags,
        )));
    }
    Ok(by_repo)
}

/// A `lessons_learned` row: date, category, title, description, impact, recorded_by,
/// related_files, tags. `T` and `J` are the timestamp and jsonb as they arrive
/// (`DEPLOYMENT_INFO_SQL` sends them inside JSON).
type LessonRow<T = Option<DateTime<Utc>>, J = Option<Value>> = (
    T,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    J,
    J,
);

fn lesson_json(row: LessonRow) -> Value {
    let (date, category, title, description, impact, recorded_by, files, tags) = row;
    json!({
        "timestamp": iso_opt(date),
        "category": category,
        "lesson": title,
        "context": description,
        "severity": impact,
        "recorded_by": recorded_by,
        "related_files": files.unwrap_or_else(|| json!([])),
        "tags": tags.unwrap_or_else(|| json!([])),
    })
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
        by_repo.entry(repo_id).or_default().push(component_json((
            name,
            purpose,
            location,
            language,
            api,
            component_type,
            keywords,
        )));
    }
    Ok(by_repo)
}

/// A `reusable_components` row: name, purpose, location, language, api_signature,
/// component_type, keywords (`J`: the jsonb as it arrives).
type ComponentRow<J = Option<Value>> = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    J,
);

fn component_json(row: ComponentRow) -> Value {
    let (name, purpose, location, language, api, component_type, keywords) = row;
    let files: Vec<String> = location.into_iter().filter(|l| !l.is_empty()).collect();
    json!({
        "name": name,
        "description": purpose.unwrap_or_default(),
        "files": files,
        "language": language.unwrap_or_else(|| "unknown".into()),
        "api_contract": api,
        "usage_example": null,
        "tags": keywords.unwrap_or_else(|| json!([])),
        "component_type": component_type,
    })
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

/// A `dependencies` row: name, version, type.
type DependencyRow = (String, Option<String>, Option<String>);

/// DependencyInfo from `dependencies` rows in id order: consumers and derivatives as objects
/// naming the repository, externals as names.
fn dependencies_json(rows: Vec<DependencyRow>) -> Value {
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
    json!({
        "consumers": consumers,
        "derivatives": derivatives,
        "external_dependencies": external,
        "dependency_update_strategy": null,
    })
}

/// A `test_frameworks` row: name, coverage (`F`: as it arrives).
type TestingRow<F = Option<f64>> = (String, F);

/// TestingInfo from `test_frameworks` rows by name.
fn testing_json(rows: Vec<TestingRow>) -> Value {
    let coverage = rows
        .iter()
        .filter_map(|r| r.1)
        .fold(None, |acc: Option<f64>, c| {
            Some(acc.map_or(c, |a| a.max(c)))
        });
    json!({
        "test_frameworks": rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        "coverage_percentage": coverage,
        "test_patterns": [],
        "ci_status": null,
        "test_count": null,
        "last_test_run": null,
    })
}

/// A `security_patterns` row: pattern, authentication method, compliance standard.
type SecurityRow = (String, Option<String>, Option<String>);

/// SecurityInfo from `security_patterns` rows by pattern name.
fn security_json(rows: Vec<SecurityRow>) -> Value {
    let distinct = |values: Vec<String>| {
        let mut v = values;
        v.sort();
        v.dedup();
        v
    };
    json!({
        "vulnerability_scan_date": null,
        "security_patterns": rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        "authentication_methods": distinct(rows.iter().filter_map(|r| r.1.clone()).collect()),
        "compliance_standards": distinct(rows.iter().filter_map(|r| r.2.clone()).collect()),
        "known_vulnerabilities": [],
        "security_score": null,
    })
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

/// An `analysis_history` row: commit_sha, analyzed_at, the three counts (`T`: the timestamp
/// as it arrives).
type HistoryRow<T = Option<DateTime<Utc>>> =
    (Option<String>, T, Option<i32>, Option<i32>, Option<i32>);

fn history_json((sha, at, p, d, c): HistoryRow) -> Value {
    json!({
        "commit_sha": sha,
        "analyzed_at": iso_opt(at),
        "patterns_count": p.unwrap_or(0),
        "decisions_count": d.unwrap_or(0),
        "components_count": c.unwrap_or(0),
    })
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

/// `get_deployment_info`'s read: the repository named `$1` and every part of it, history only
/// when `$2`, in one statement — one round trip and one snapshot, where reading the parts one by
/// one took eleven statements in a REPEATABLE READ transaction (issue 18). Each part is a
/// correlated subquery over its `repo_id` index that aggregates the rows, in the order the
/// per-part queries returned them (ties broken by id as they were), into a JSON array of arrays;
/// Rust decodes them into the same row tuples and shapes them with the same functions as the
/// per-part reads (`deployment_json`, `lesson_json`, …), so the answer cannot drift. What JSON
/// would render differently from the binary protocol is sent in a form that cannot:
/// - timestamps `AT TIME ZONE 'UTC'` (no offset, whatever the session's time zone; microseconds
///   kept), taken back as UTC;
/// - `numeric` coverage as its decimal text, parsed in Rust as the `float8` cast rounds it (a
///   JSON number could be parsed one ulp off, and NaN is not a JSON number);
/// - nullable jsonb wrapped in a one-element array, so that SQL NULL (`null`) and a stored JSON
///   `null` (`[null]`) stay apart — the shapes tell them apart (`[]` against `null`).
///
/// Names and keywords are plain `text[]` columns.
pub const DEPLOYMENT_INFO_SQL: &str = "SELECT r.id, r.name::text AS name, r.problem_domain, r.last_analyzed,
        r.last_commit_sha::text AS last_commit_sha,
        (SELECT json_build_array(d.name::text, d.description,
                                 CASE WHEN d.commands IS NOT NULL THEN json_build_array(d.commands) END,
                                 d.deployment_frequency::text, d.last_deployed AT TIME ZONE 'UTC')
           FROM deployment_scripts d WHERE d.repo_id = r.id
          ORDER BY d.updated_at DESC NULLS LAST, d.id DESC LIMIT 1) AS deployment,
        (SELECT coalesce(json_agg(json_build_array(
                    l.date AT TIME ZONE 'UTC', l.category::text, l.title::text, l.description,
                    l.impact::text, l.recorded_by::text,
                    CASE WHEN l.related_files IS NOT NULL THEN json_build_array(l.related_files) END,
                    CASE WHEN l.tags IS NOT NULL THEN json_build_array(l.tags) END)
                  ORDER BY l.date DESC NULLS LAST, l.id DESC), '[]')
           FROM lessons_learned l WHERE l.repo_id = r.id) AS lessons,
        (SELECT coalesce(json_agg(json_build_array(
                    c.name::text, c.purpose, c.location, c.language::text, c.api_signature,
                    c.component_type::text,
                    CASE WHEN c.keywords IS NOT NULL THEN json_build_array(c.keywords) END)
                  ORDER BY c.name::text, c.id), '[]')
           FROM reusable_components c WHERE c.repo_id = r.id) AS components,
        (SELECT coalesce(json_agg(json_build_array(
                    x.dependency_name::text, x.dependency_version::text, x.dependency_type::text)
                  ORDER BY x.id), '[]')
           FROM dependencies x WHERE x.repo_id = r.id) AS dependencies,
        (SELECT coalesce(json_agg(json_build_array(t.framework_name::text, t.coverage_percentage::text)
                  ORDER BY t.framework_name::text), '[]')
           FROM test_frameworks t WHERE t.repo_id = r.id) AS testing,
        (SELECT coalesce(json_agg(json_build_array(
                    s.pattern_name::text, s.authentication_method::text, s.compliance_standard::text)
                  ORDER BY s.pattern_name::text), '[]')
           FROM security_patterns s WHERE s.repo_id = r.id) AS security,
        array(SELECT p.name::text FROM patterns p WHERE p.repo_id = r.id
               ORDER BY p.created_at DESC, p.id DESC) AS patterns,
        array(SELECT DISTINCT k.keyword::text
                FROM patterns p JOIN pattern_keywords pk ON pk.pattern_id = p.id
                JOIN keywords k ON k.id = pk.keyword_id
               WHERE p.repo_id = r.id ORDER BY 1) AS keywords,
        (SELECT coalesce(json_agg(json_build_array(
                    h.commit_sha::text, h.analyzed_at AT TIME ZONE 'UTC', h.patterns_count,
                    h.decisions_count, h.components_count)
                  ORDER BY h.analyzed_at DESC NULLS LAST, h.id DESC), '[]')
           FROM analysis_history h WHERE $2 AND h.repo_id = r.id) AS history
   FROM repositories r WHERE r.name = $1";

/// A `deployment_scripts` row as `DEPLOYMENT_INFO_SQL` sends it: name, description, commands,
/// deployment_frequency, last_deployed.
type DeploymentPart = (String, Option<String>, PgJsonb, Option<String>, PgTime);

/// `DEPLOYMENT_INFO_SQL`'s row: the repository's own columns, then each part.
#[derive(sqlx::FromRow)]
struct DeploymentInfoRow {
    #[sqlx(flatten)]
    repo: RepositoryRow,
    deployment: Option<Json<DeploymentPart>>,
    lessons: Json<Vec<LessonRow<PgTime, PgJsonb>>>,
    components: Json<Vec<ComponentRow<PgJsonb>>>,
    dependencies: Json<Vec<DependencyRow>>,
    testing: Json<Vec<TestingRow<PgFloat>>>,
    security: Json<Vec<SecurityRow>>,
    patterns: Vec<String>,
    keywords: Vec<String>,
    history: Json<Vec<HistoryRow<PgTime>>>,
}

/// The repository named `name` and everything `get_deployment_info` says about it (the history
/// only `with_history`), in one statement (`DEPLOYMENT_INFO_SQL`); `None` when there is no such
/// repository.
pub async fn deployment_info(
    conn: &mut PgConnection,
    name: &str,
    with_history: bool,
) -> Result<Option<(RepositoryRow, RepositoryDetails)>, sqlx::Error> {
    let row: Option<DeploymentInfoRow> = sqlx::query_as(DEPLOYMENT_INFO_SQL)
        .bind(name)
        .bind(with_history)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let deployment =
        row.deployment.map(
            |Json((name, description, commands, frequency, last))| DeploymentRow {
                repo_id: row.repo.id,
                name,
                description,
                commands: commands.0,
                deployment_frequency: frequency,
                last_deployed: last.0,
            },
        );
    let lessons: Vec<Value> = (row.lessons.0.into_iter())
        .map(
            |(date, category, title, description, impact, by, files, tags)| {
                lesson_json((
                    date.0,
                    category,
                    title,
                    description,
                    impact,
                    by,
                    files.0,
                    tags.0,
                ))
            },
        )
        .collect();
    let components = (row.components.0.into_iter())
        .map(|(name, purpose, location, language, api, kind, keywords)| {
            component_json((name, purpose, location, language, api, kind, keywords.0))
        })
        .collect();
    let details = RepositoryDetails {
        deployment: deployment_json(deployment.as_ref(), lessons.clone(), components),
        dependencies: dependencies_json(row.dependencies.0),
        testing: testing_json(row.testing.0.into_iter().map(|(n, c)| (n, c.0)).collect()),
        security: security_json(row.security.0),
        patterns: row.patterns,
        keywords: row.keywords,
        lessons,
        history: (row.history.0.into_iter())
            .map(|(sha, at, p, d, c)| history_json((sha, at.0, p, d, c)))
            .collect(),
    };
    Ok(Some((row.repo, details)))
}

/// A timestamp sent `AT TIME ZONE 'UTC'`: JSON's ISO 8601 without an offset, microseconds
/// included when not zero.
struct PgTime(Option<DateTime<Utc>>);

impl<'de> Deserialize<'de> for PgTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(PgTime(None));
        };
        NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|t| PgTime(Some(t.and_utc())))
            .map_err(|e| D::Error::custom(format!("timestamp {text:?}: {e}")))
    }
}

/// A nullable jsonb sent as `[value]`, or `null` for SQL NULL.
struct PgJsonb(Option<Value>);

impl<'de> Deserialize<'de> for PgJsonb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PgJsonb(Option::<(Value,)>::deserialize(d)?.map(|(v,)| v)))
    }
}

/// A `numeric` sent as its decimal text ("NaN" included), as the `float8` cast reads it: Rust's
/// parser rounds correctly, as PostgreSQL's does.
struct PgFloat(Option<f64>);

impl<'de> Deserialize<'de> for PgFloat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(PgFloat(None));
        };
        text.parse()
            .map(|f| PgFloat(Some(f)))
            .map_err(|e| D::Error::custom(format!("number {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_come_back_as_the_binary_protocol_gave_them() {
        let t: Vec<PgTime> = serde_json::from_str(
            r#"["2026-11-12T09:59:59.000001", "2026-11-01T00:00:00", "1999-12-31T23:59:59.999999", null]"#,
        )
        .unwrap();
        let shown: Vec<_> = t.into_iter().map(|t| iso_opt(t.0)).collect();
        assert_eq!(
            shown,
            [
                Some("2026-11-12T09:59:59.000001+00:00".to_string()),
                Some("2026-11-01T00:00:00.000000+00:00".to_string()),
                Some("1999-12-31T23:59:59.999999+00:00".to_string()),
                None
            ]
        );
        assert!(serde_json::from_str::<PgTime>(r#""infinity""#).is_err());
    }

    #[test]
    fn sql_null_and_json_null_stay_apart() {
        let j: Vec<PgJsonb> = serde_json::from_str(r#"[null, [null], [[1, {"a": []}]]]"#).unwrap();
        let j: Vec<_> = j.into_iter().map(|j| j.0).collect();
        assert_eq!(j, [None, Some(Value::Null), Some(json!([1, {"a": []}]))]);
    }

    #[test]
    fn numeric_text_reads_as_the_float8_cast() {
        let f: Vec<PgFloat> = serde_json::from_str(r#"["33.33", "0.10", null, "NaN"]"#).unwrap();
        assert_eq!(f[0].0, Some(33.33));
        assert_eq!(f[1].0, Some(0.1));
        assert_eq!(f[2].0, None);
        assert!(f[3].0.is_some_and(f64::is_nan));
        assert!(serde_json::from_str::<PgFloat>("33.33").is_err());
    }
}
