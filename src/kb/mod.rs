//! The knowledge-base store: every SQL statement the skills run, grouped by the tables it owns.
//! Handlers never write SQL; they call these functions inside a transaction (writes) or a
//! read-only snapshot (multi-query reads). All values are bound parameters.

pub(crate) mod activity;
pub(crate) mod analysis;
pub(crate) mod analytics;
pub(crate) mod catalog;
pub(crate) mod complexity;
pub(crate) mod components;
pub(crate) mod jobs;
pub mod keyword_uses;
pub(crate) mod knowledge;
pub(crate) mod lifecycle;
pub(crate) mod manifests;
pub(crate) mod patterns;
pub(crate) mod repositories;
pub(crate) mod runtime;
pub(crate) mod search;

pub use search::{NEAREST_SQL, set_search_width};
// The read statements, public so that `tests/read_sql.rs` holds them against the ones they
// replaced.
pub use activity::{ACTIONS_SQL, RECENT_SQL};
pub use patterns::{BY_KEYWORDS_SQL, BY_PATTERN_NAMES_SQL, SHARED_SQL};
pub use repositories::SUMMARIES_SQL;
pub use runtime::SEARCH_SQL as ISSUES_SQL;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Starts a read-only REPEATABLE READ transaction: several queries, one consistent snapshot.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The repository a write belongs to: its id (already ensured), or its name — then the write is
/// one statement that finds the id itself, and writes nothing when the repository does not exist
/// yet (the caller creates it and writes again by id).
#[derive(Clone, Copy)]
pub enum Repo<'a> {
    Id(i32),
    Name(&'a str),
}

/// The two forms of an `INSERT … SELECT r.id, … FROM repositories r` statement: by id, by name.
/// Both are static strings, so sqlx prepares each once per connection.
macro_rules! by_repo {
    ($insert:literal, $values:literal, $returning:literal) => {
        (
            concat!(
                $insert,
                " SELECT r.id, ",
                $values,
                " FROM repositories r WHERE r.id = $1 ",
                $returning
            ),
            concat!(
                $insert,
                " SELECT r.id, ",
                $values,
                " FROM repositories r WHERE r.name = $1 ",
                $returning
            ),
        )
    };
}
pub(crate) use by_repo;

impl<'q> Repo<'q> {
    /// Picks the statement for this kind of reference and binds the reference as `$1`.
    fn bind_first<O>(
        self,
        (by_id, by_name): (&'static str, &'static str),
    ) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        match self {
            Repo::Id(id) => sqlx::query_as(by_id).bind(id),
            Repo::Name(name) => sqlx::query_as(by_name).bind(name),
        }
    }
}

/// The repository's id, creating it (with a NULL problem domain) when it does not exist yet.
/// Safe under concurrency: the insert waits for a concurrent one and then does nothing, and
/// the following statement sees the committed row.
pub async fn ensure_repository(conn: &mut PgConnection, name: &str) -> Result<i32, sqlx::Error> {
    sqlx::query("INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
}

pub async fn repository_id(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

pub async fn repository_names(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name::text FROM repositories ORDER BY name")
        .fetch_all(conn)
        .await
}

/// A `timestamptz` as the original rendered it: ISO 8601 with `+00:00`.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

pub fn iso_opt(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(iso)
}

/// A `timestamp` (no zone) as ISO 8601 without an offset.
pub fn iso_naive(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// ISO 8601 with or without an offset (naive times are taken as UTC), or a bare date.
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                .ok()
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

/// Escapes `%`, `_` and `\` for a LIKE pattern.
pub fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_render_like_the_original() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 20, 26, 38).unwrap();
        assert_eq!(iso(t), "2026-11-23T20:26:38.000000+00:00");
        assert_eq!(iso_naive(t.naive_utc()), "2026-11-23T20:26:38.000000");
    }

    #[test]
    fn datetimes_with_or_without_offset() {
        assert!(parse_datetime("2026-11-20T10:00:00Z").is_some());
        assert!(parse_datetime("2026-11-20T10:00:00.123+02:00").is_some());
        assert!(parse_datetime("2026-11-20T10:00:00").is_some());
        assert!(parse_datetime("2026-11-20 10:00:00.5").is_some());
        assert_eq!(
            parse_datetime("2026-11-20").map(iso).as_deref(),
            Some("2026-11-20T00:00:00.000000+00:00")
        );
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
