//! The dependencies discovered in repositories' manifests (`manifest_dependencies`), the
//! repository-to-repository edges found there or verified by a person (`dependency_edges`), and
//! the per-repository counts `get_workflow_metadata` answers.

use serde_json::Value;
use sqlx::PgConnection;

use crate::rules::manifests::{Edge, Manifest};

/// What [`replace_discovered`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discovered {
    pub dependencies: u64,
    pub edges: u64,
}

/// Replaces a repository's discovered dependencies and its manifest-found edges (edges a person
/// verified are kept as they are).
pub async fn replace_discovered(
    conn: &mut PgConnection,
    repo_id: i32,
    manifests: &[Manifest],
    edges: &[Edge],
) -> Result<Discovered, sqlx::Error> {
    sqlx::query("DELETE FROM manifest_dependencies WHERE repo_id = $1")
        .bind(repo_id)
        .execute(&mut *conn)
        .await?;
    let (mut paths, mut ecosystems, mut names, mut requirements, mut scopes) =
        (vec![], vec![], vec![], vec![], vec![]);
    for m in manifests {
        for d in &m.dependencies {
            paths.push(m.path.as_str());
            ecosystems.push(m.ecosystem);
            names.push(d.name.as_str());
            requirements.push(d.requirement.as_deref());
            scopes.push(d.scope);
        }
    }
    let dependencies = sqlx::query(
        "INSERT INTO manifest_dependencies (repo_id, manifest, ecosystem, name, requirement, scope)
         SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
             AS u(manifest, ecosystem, name, requirement, scope)
         ON CONFLICT (repo_id, manifest, name, scope) DO NOTHING",
    )
    .bind(repo_id)
    .bind(&paths)
    .bind(&ecosystems)
    .bind(&names)
    .bind(&requirements)
    .bind(&scopes)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM dependency_edges WHERE source_repo_id = $1 AND NOT verified")
        .bind(repo_id)
        .execute(&mut *conn)
        .await?;
    let targets: Vec<&str> = edges.iter().map(|e| e.target.as_str()).collect();
    let kinds: Vec<&str> = edges.iter().map(|e| e.scope).collect();
    let confidence: Vec<i32> = edges.iter().map(|e| e.confidence).collect();
    let evidence: Vec<&str> = edges.iter().map(|e| e.evidence.as_str()).collect();
    let edges = sqlx::query(
        "INSERT INTO dependency_edges (source_repo_id, target_repo_id, dependency_type, confidence, evidence)
         SELECT $1, r.id, u.kind, u.confidence, u.evidence
           FROM unnest($2::text[], $3::text[], $4::int[], $5::text[]) AS u(target, kind, confidence, evidence)
           JOIN repositories r ON r.name = u.target
         ON CONFLICT (source_repo_id, target_repo_id, dependency_type) DO NOTHING",
    )
    .bind(repo_id)
    .bind(&targets)
    .bind(&kinds)
    .bind(&confidence)
    .bind(&evidence)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(Discovered {
        dependencies,
        edges,
    })
}

/// One verification: the edge source → target of a type, with a person's confidence.
pub struct Verification<'a> {
    pub source: &'a str,
    pub target: &'a str,
    pub dependency_type: &'a str,
    pub confidence: i32,
}

/// Sets (or adds) a verified edge; `false` when either repository is not in the knowledge base.
pub async fn verify(conn: &mut PgConnection, v: &Verification<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO dependency_edges (source_repo_id, target_repo_id, dependency_type, confidence,
                                       verified, evidence)
         SELECT s.id, t.id, $3, $4, true, 'verified by a person'
           FROM repositories s, repositories t WHERE s.name = $1 AND t.name = $2
         ON CONFLICT (source_repo_id, target_repo_id, dependency_type) DO UPDATE
            SET confidence = EXCLUDED.confidence, verified = true, updated_at = now()",
    )
    .bind(v.source)
    .bind(v.target)
    .bind(v.dependency_type)
    .bind(v.confidence)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The discovered dependencies of a repository and its edges, as stored.
pub async fn of_repository(
    conn: &mut PgConnection,
    repo_id: i32,
) -> Result<(Vec<Value>, Vec<Value>), sqlx::Error> {
    let dependencies: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('name', name, 'requirement', requirement, 'scope', scope,
                                  'ecosystem', ecosystem, 'manifest', manifest)
           FROM manifest_dependencies WHERE repo_id = $1 ORDER BY manifest, name, scope",
    )
    .bind(repo_id)
    .fetch_all(&mut *conn)
    .await?;
    let edges: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('source_repository', s.name, 'target_repository', t.name,
                                  'dependency_type', e.dependency_type, 'confidence', e.confidence,
                                  'verified', e.verified, 'evidence', e.evidence)
           FROM dependency_edges e
           JOIN repositories s ON s.id = e.source_repo_id
           JOIN repositories t ON t.id = e.target_repo_id
          WHERE e.source_repo_id = $1 ORDER BY t.name, e.dependency_type",
    )
    .bind(repo_id)
    .fetch_all(conn)
    .await?;
    Ok((dependencies, edges))
}

/// Per repository: patterns, dependencies (discovered ones, else the recorded ones), components
/// and when anything about it last changed — one statement.
pub const METADATA_SQL: &str = "
SELECT json_build_object(
         'repository', r.name,
         'patterns_count', (SELECT count(*) FROM patterns p WHERE p.repo_id = r.id),
         'dependencies_count', greatest(
             (SELECT count(*) FROM manifest_dependencies m WHERE m.repo_id = r.id),
             (SELECT count(*) FROM dependencies d WHERE d.repo_id = r.id)),
         'components_count', (SELECT count(*) FROM reusable_components c WHERE c.repo_id = r.id),
         'last_updated', to_char(greatest(
             r.updated_at, r.last_analyzed,
             (SELECT max(m.discovered_at) FROM manifest_dependencies m WHERE m.repo_id = r.id),
             (SELECT max(x.analyzed_at) FROM repository_complexity x WHERE x.repo_id = r.id))
             AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))
  FROM repositories r ORDER BY r.name";

pub async fn metadata(conn: &mut PgConnection) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(METADATA_SQL).fetch_all(conn).await
}
