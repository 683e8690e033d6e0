//! Writes of the knowledge-management skills: `lessons_learned`, `dependencies`,
//! `deployment_scripts`. Callers run them inside a transaction with `ensure_repository`; a
//! lesson may also be written alone, by repository name (`Repo::Name`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::Repo;

/// A lesson to record (`title` is the lesson text, cut to the column's 500 characters).
pub struct NewLesson<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub category: &'a str,
    pub impact: &'a str,
    pub recorded_by: Option<&'a str>,
    pub related_files: &'a [String],
    pub tags: &'a [String],
    /// When the lesson was learned (now when not given).
    pub date: Option<DateTime<Utc>>,
}

const LESSON_INSERT: (&str, &str) = super::by_repo!(
    "INSERT INTO lessons_learned
         (repo_id, title, description, category, impact, recorded_by, related_files, tags, date)",
    "$2, $3, $4, $5, $6, $7, $8, coalesce($9, now())",
    "RETURNING id, date"
);

/// Inserts a lesson in one statement; returns its id and date, or `None` when `repo` names a
/// repository that does not exist.
pub async fn insert_lesson(
    conn: &mut PgConnection,
    repo: Repo<'_>,
    lesson: &NewLesson<'_>,
) -> Result<Option<(i32, DateTime<Utc>)>, sqlx::Error> {
    let title: String = lesson.title.chars().take(500).collect();
    repo.bind_first(LESSON_INSERT)
        .bind(title)
        .bind(lesson.description)
        .bind(lesson.category)
        .bind(lesson.impact)
        .bind(lesson.recorded_by)
        .bind(serde_json::json!(lesson.related_files))
        .bind(serde_json::json!(lesson.tags))
        .bind(lesson.date)
        .fetch_optional(conn)
        .await
}

/// Whether the repository already has this lesson (same title and description); imports use it
/// to stay idempotent.
pub async fn lesson_exists(
    conn: &mut PgConnection,
    repo_id: i32,
    title: &str,
    description: &str,
) -> Result<bool, sqlx::Error> {
    let title: String = title.chars().take(500).collect();
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM lessons_learned
                         WHERE repo_id = $1 AND title = $2 AND description IS NOT DISTINCT FROM $3)",
    )
    .bind(repo_id)
    .bind(title)
    .bind(description)
    .fetch_one(conn)
    .await
}

/// A dependency row: name, type (`consumer`, `derivative`, `external`), optional version.
pub struct NewDependency {
    pub name: String,
    pub kind: &'static str,
    pub version: Option<String>,
}

/// Replaces all of a repository's dependencies with `deps`.
pub async fn replace_dependencies(
    conn: &mut PgConnection,
    repo_id: i32,
    deps: &[NewDependency],
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM dependencies WHERE repo_id = $1")
        .bind(repo_id)
        .execute(&mut *conn)
        .await?;
    add_dependencies(conn, repo_id, deps).await
}

/// Adds the dependencies the repository does not have yet (same name and type); returns how
/// many were added.
pub async fn add_dependencies(
    conn: &mut PgConnection,
    repo_id: i32,
    deps: &[NewDependency],
) -> Result<u64, sqlx::Error> {
    let names: Vec<&str> = deps.iter().map(|d| d.name.as_str()).collect();
    let kinds: Vec<&str> = deps.iter().map(|d| d.kind).collect();
    let versions: Vec<Option<&str>> = deps.iter().map(|d| d.version.as_deref()).collect();
    let result = sqlx::query(
        "INSERT INTO dependencies (repo_id, dependency_name, dependency_type, dependency_version)
         SELECT $1, u.name, u.kind, u.version
           FROM (SELECT DISTINCT ON (d.name, d.kind) d.name, d.kind, d.version, d.ord
                   FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS d(name, kind, version, ord)
                  ORDER BY d.name, d.kind, d.ord) u
          WHERE NOT EXISTS (SELECT 1 FROM dependencies x
                             WHERE x.repo_id = $1 AND x.dependency_name = u.name
                               AND x.dependency_type IS NOT DISTINCT FROM u.kind)
          ORDER BY u.ord",
    )
    .bind(repo_id)
    .bind(names)
    .bind(kinds)
    .bind(versions)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// A deployment record, one per repository and platform.
pub struct NewDeployment<'a> {
    /// The CI/CD platform, or "deployment" when none was named.
    pub name: &'a str,
    /// The infrastructure map, stored as JSON text (the original's layout).
    pub infrastructure: &'a Value,
    pub scripts: &'a Value,
    pub frequency: Option<&'a str>,
    pub last_deployed: Option<DateTime<Utc>>,
}

/// Whether the repository's row for that platform already says exactly this.
pub async fn deployment_matches(
    conn: &mut PgConnection,
    repo_id: i32,
    deployment: &NewDeployment<'_>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM deployment_scripts
                         WHERE repo_id = $1 AND name = $2 AND description IS NOT DISTINCT FROM $3
                           AND commands IS NOT DISTINCT FROM $4
                           AND deployment_frequency IS NOT DISTINCT FROM $5
                           AND last_deployed IS NOT DISTINCT FROM $6)",
    )
    .bind(repo_id)
    .bind(deployment.name)
    .bind(deployment.infrastructure.to_string())
    .bind(deployment.scripts)
    .bind(deployment.frequency)
    .bind(deployment.last_deployed)
    .fetch_one(conn)
    .await
}

/// Inserts or updates the repository's row for that platform; returns its id.
pub async fn upsert_deployment(
    conn: &mut PgConnection,
    repo_id: i32,
    deployment: &NewDeployment<'_>,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO deployment_scripts
             (repo_id, name, description, commands, environment_variables, deployment_frequency, last_deployed)
         VALUES ($1, $2, $3, $4, '{}'::jsonb, $5, $6)
         ON CONFLICT (repo_id, name) DO UPDATE
            SET description = EXCLUDED.description,
                commands = EXCLUDED.commands,
                deployment_frequency = EXCLUDED.deployment_frequency,
                last_deployed = EXCLUDED.last_deployed,
                updated_at = now()
         RETURNING id",
    )
    .bind(repo_id)
    .bind(deployment.name)
    .bind(deployment.infrastructure.to_string())
    .bind(deployment.scripts)
    .bind(deployment.frequency)
    .bind(deployment.last_deployed)
    .fetch_one(conn)
    .await
}
