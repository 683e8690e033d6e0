//! The pattern lifecycle: a pattern's status (active / deprecated / archived), its edits and its
//! history. The history itself is written by the database (`migrations/0005_pattern_lifecycle.sql`)
//! in the transaction of every change to `patterns`; this module tells it who changes what and
//! why, and reads it back.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// One pattern row a lifecycle skill acts on.
#[derive(Debug, sqlx::FromRow)]
pub struct PatternRef {
    pub id: i32,
    pub repository: Option<String>,
    pub status: String,
}

/// Says, for the rest of the transaction, who makes the next pattern changes, why, and extra
/// before/after fields the history should carry (`{"before": {…}, "after": {…}}`).
pub async fn describe_change(
    conn: &mut PgConnection,
    actor: &str,
    summary: Option<&str>,
    extra: Option<&Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('nexusd.actor', $1, true),
                set_config('nexusd.change_summary', coalesce($2, ''), true),
                set_config('nexusd.change_extra', coalesce($3, ''), true)",
    )
    .bind(actor)
    .bind(summary)
    .bind(extra.map(Value::to_string))
    .execute(conn)
    .await?;
    Ok(())
}

/// The patterns named `name` (in every repository, or only in `repository`), locked for the
/// change that follows.
pub async fn find_for_update(
    conn: &mut PgConnection,
    name: &str,
    repository: Option<&str>,
) -> Result<Vec<PatternRef>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, r.name::text AS repository, p.status::text AS status
           FROM patterns p LEFT JOIN repositories r ON r.id = p.repo_id
          WHERE p.name = $1 AND ($2::text IS NULL OR r.name = $2)
          ORDER BY r.name, p.id
            FOR UPDATE OF p",
    )
    .bind(name)
    .bind(repository)
    .fetch_all(conn)
    .await
}

/// The keywords of the given patterns (their union, sorted).
pub async fn keywords(conn: &mut PgConnection, ids: &[i32]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT k.keyword::text FROM pattern_keywords pk JOIN keywords k ON k.id = pk.keyword_id
          WHERE pk.pattern_id = ANY($1) ORDER BY 1",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Makes `keywords` the keywords of each of the given patterns.
pub async fn replace_keywords(
    conn: &mut PgConnection,
    ids: &[i32],
    keywords: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM pattern_keywords WHERE pattern_id = ANY($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO keywords (keyword) SELECT DISTINCT unnest($1::text[]) ON CONFLICT (keyword) DO NOTHING",
    )
    .bind(keywords)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p, k.id FROM unnest($1::int[]) AS p CROSS JOIN keywords k WHERE k.keyword = ANY($2)
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(keywords)
    .execute(conn)
    .await?;
    Ok(())
}

/// New text for the given patterns (`None` keeps a field); `updated_at` is bumped even when the
/// text is the same, so a change of keywords alone is recorded too.
pub async fn update_text(
    conn: &mut PgConnection,
    ids: &[i32],
    description: Option<&str>,
    context: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE patterns SET description = coalesce($2, description), context = coalesce($3, context),
                updated_at = now()
          WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(description)
    .bind(context)
    .execute(conn)
    .await?;
    Ok(())
}

/// A status change and the deprecation facts that go with it.
pub struct StatusChange<'a> {
    pub status: &'a str,
    pub reason: Option<&'a str>,
    pub replacement: Option<&'a str>,
    pub notes: Option<&'a Value>,
}

pub async fn set_status(
    conn: &mut PgConnection,
    ids: &[i32],
    change: &StatusChange<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE patterns
            SET status = $2,
                deprecation_reason = coalesce($3, deprecation_reason),
                replacement_pattern = coalesce($4, replacement_pattern),
                migration_notes = coalesce($5, migration_notes),
                updated_at = now()
          WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(change.status)
    .bind(change.reason)
    .bind(change.replacement)
    .bind(change.notes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a pattern unless the repository already has one of that name; whether it did.
pub async fn insert_pattern(
    conn: &mut PgConnection,
    repo_id: i32,
    name: &str,
    description: &str,
    context: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO patterns (repo_id, name, description, context) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, name) DO NOTHING",
    )
    .bind(repo_id)
    .bind(name)
    .bind(description)
    .bind(context)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

/// One history row.
#[derive(Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub txid: i64,
    pub repository: Option<String>,
    pub operation: String,
    pub changed_by: String,
    pub change_summary: Option<String>,
    pub changed_at: DateTime<Utc>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The history of the patterns named `name` (optionally in one repository), oldest first.
pub async fn history(
    conn: &mut PgConnection,
    name: &str,
    repository: Option<&str>,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT txid, repository::text AS repository, operation::text AS operation, changed_by,
                change_summary, changed_at, before, after
           FROM pattern_history
          WHERE (pattern_name = $1 OR before ->> 'name' = $1 OR after ->> 'name' = $1)
            AND ($2::text IS NULL OR repository = $2)
          ORDER BY id",
    )
    .bind(name)
    .bind(repository)
    .fetch_all(conn)
    .await
}

/// A stored copy of a component, matched by its name written any way (case, `-`, `_`, spaces).
#[derive(Debug, sqlx::FromRow)]
pub struct ComponentCopy {
    pub repository: String,
    pub component_type: Option<String>,
    pub purpose: Option<String>,
    pub location: Option<String>,
    pub lines_of_code: Option<i32>,
}

pub async fn component_copies(
    conn: &mut PgConnection,
    component_name: &str,
) -> Result<Vec<ComponentCopy>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.name::text AS repository, c.component_type::text AS component_type,
                c.purpose, c.location, c.lines_of_code
           FROM reusable_components c JOIN repositories r ON r.id = c.repo_id
          WHERE regexp_replace(lower(c.name), '[-_ .]', '', 'g') = regexp_replace(lower($1), '[-_ .]', '', 'g')
          ORDER BY r.name, c.id",
    )
    .bind(component_name)
    .fetch_all(conn)
    .await
}
