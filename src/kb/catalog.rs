//! The component catalogue the web frontend lists: stored `reusable_components` filtered and
//! paged in one statement, and each component's imports for the dependency graph.

use serde_json::Value;
use sqlx::PgConnection;

/// One page of components of repository `$1` (any when NULL) and type `$2` (any when NULL,
/// compared case-insensitively), `$3` from `$4`: `total_components` is the number matching (the
/// web frontend shows it as a repository's component count), `filtered_count` the number on this
/// page, `stored_components` the number stored.
pub const LIST_SQL: &str = "
    WITH f AS (
        SELECT c.*, r.name::text AS repository
          FROM reusable_components c JOIN repositories r ON r.id = c.repo_id
         WHERE ($1::text IS NULL OR r.name = $1)
           AND ($2::text IS NULL OR lower(c.component_type) = lower($2)))
    SELECT jsonb_build_object(
        'total_components', (SELECT count(*) FROM f),
        'filtered_count', (SELECT count(*) FROM (SELECT 1 FROM f ORDER BY repository, name, id LIMIT $3 OFFSET $4) n),
        'stored_components', (SELECT count(*) FROM reusable_components),
        'components', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'component_id', coalesce(p.component_id, p.repository || ':' || p.name),
                'name', p.name,
                'type', coalesce(p.component_type, 'unknown'),
                'component_type', coalesce(p.component_type, 'unknown'),
                'repository', p.repository,
                'language', coalesce(p.language, 'unknown'),
                'loc', coalesce(p.lines_of_code, 0),
                'lines_of_code', coalesce(p.lines_of_code, 0),
                'api_signature', p.api_signature,
                'keywords', coalesce(p.keywords, '[]'::jsonb),
                'description', coalesce(p.purpose, ''),
                'purpose', p.purpose,
                'files', CASE WHEN p.location IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(p.location) END,
                'location', p.location,
                'public_methods', coalesce(p.public_methods, '[]'::jsonb),
                'cyclomatic_complexity', p.cyclomatic_complexity,
                'sync_status', coalesce(p.sync_status, 'unknown'),
                'first_seen', p.first_seen)
              ORDER BY p.repository, p.name, p.id)
            FROM (SELECT * FROM f ORDER BY repository, name, id LIMIT $3 OFFSET $4) p), '[]'::jsonb))";

pub async fn list(
    conn: &mut PgConnection,
    repository: Option<&str>,
    component_type: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(LIST_SQL)
        .bind(repository)
        .bind(component_type)
        .bind(limit)
        .bind(offset)
        .fetch_one(conn)
        .await
}

/// A stored component with what it imports.
#[derive(Debug, sqlx::FromRow)]
pub struct Imports {
    pub repository: String,
    pub name: String,
    pub location: Option<String>,
    pub imports: Value,
}

/// Every stored component with its imports (the graph may cross repositories).
pub async fn imports(conn: &mut PgConnection) -> Result<Vec<Imports>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.name::text AS repository, c.name::text AS name, c.location,
                coalesce(c.imports, '[]'::jsonb) AS imports
           FROM reusable_components c JOIN repositories r ON r.id = c.repo_id
          ORDER BY r.name, c.name, c.id",
    )
    .fetch_all(conn)
    .await
}
