//! `patterns`, `keywords`, `pattern_keywords`: keyword and pattern-name matching across
//! repositories, and patterns shared by several repositories.

use sqlx::PgConnection;

use super::like_escape;

/// How many repositories a keyword or pattern search returns at most (the original's cap).
const MAX_MATCHES: i64 = 10;

/// The repositories holding the most of the search terms ($1) among their pattern keywords, at
/// least $2, not $3, at most $4. Only the repositories returned get their keywords aggregated
/// (`all_items`); the others are only counted, from the keywords that match.
pub const BY_KEYWORDS_SQL: &str = "
    WITH terms AS (SELECT DISTINCT lower(t) AS term FROM unnest($1::text[]) AS t),
         hits AS (
             SELECT p.repo_id, array_agg(DISTINCT t.term ORDER BY t.term) AS matched
               FROM terms t
               JOIN keywords k ON lower(k.keyword::text) = t.term
               JOIN pattern_keywords pk ON pk.keyword_id = k.id
               JOIN patterns p ON p.id = pk.pattern_id
              GROUP BY p.repo_id),
         top AS (
             SELECT r.id AS repo_id, r.name::text AS repository, r.problem_domain,
                    coalesce(h.matched, '{}') AS matched
               FROM repositories r LEFT JOIN hits h ON h.repo_id = r.id
              WHERE ($3::text IS NULL OR r.name <> $3) AND cardinality(coalesce(h.matched, '{}')) >= $2
              ORDER BY cardinality(coalesce(h.matched, '{}')) DESC, repository
              LIMIT $4)
    SELECT top.*,
           ARRAY(SELECT DISTINCT lower(k.keyword::text)
                   FROM patterns p
                   JOIN pattern_keywords pk ON pk.pattern_id = p.id
                   JOIN keywords k ON k.id = pk.keyword_id
                  WHERE p.repo_id = top.repo_id ORDER BY 1) AS all_items
      FROM top
     ORDER BY cardinality(matched) DESC, repository";

/// As [`BY_KEYWORDS_SQL`], matching pattern names; `all_items` are the returned repositories'
/// pattern names as written, newest first.
pub const BY_PATTERN_NAMES_SQL: &str = "
    WITH terms AS (SELECT DISTINCT lower(t) AS term FROM unnest($1::text[]) AS t),
         hits AS (
             SELECT p.repo_id, array_agg(DISTINCT t.term ORDER BY t.term) AS matched
               FROM terms t JOIN patterns p ON lower(p.name::text) = t.term
              GROUP BY p.repo_id),
         top AS (
             SELECT r.id AS repo_id, r.name::text AS repository, r.problem_domain,
                    coalesce(h.matched, '{}') AS matched
               FROM repositories r LEFT JOIN hits h ON h.repo_id = r.id
              WHERE ($3::text IS NULL OR r.name <> $3) AND cardinality(coalesce(h.matched, '{}')) >= $2
              ORDER BY cardinality(coalesce(h.matched, '{}')) DESC, repository
              LIMIT $4)
    SELECT top.*,
           ARRAY(SELECT p.name::text FROM patterns p WHERE p.repo_id = top.repo_id
                  ORDER BY p.created_at DESC, p.id DESC) AS all_items
      FROM top
     ORDER BY cardinality(matched) DESC, repository";

/// Pattern names in at least $1 repositories, optionally only those like $2. The names are
/// counted first (a pattern name is unique per repository, so rows are repositories); only the
/// names kept get their repositories listed, through the index on the name.
pub const SHARED_SQL: &str = "
    WITH shared AS (
        SELECT name, count(*) AS repo_count
          FROM patterns
         WHERE repo_id IS NOT NULL AND ($2::text IS NULL OR name ILIKE $2 ESCAPE '\\')
         GROUP BY name
        HAVING count(*) >= $1)
    SELECT s.name::text AS pattern,
           ARRAY(SELECT r.name::text FROM patterns p JOIN repositories r ON r.id = p.repo_id
                  WHERE p.name = s.name ORDER BY r.name::text) AS repositories,
           s.repo_count
      FROM shared s
     ORDER BY repo_count DESC, pattern";

/// A repository that matched search terms.
#[derive(Debug, sqlx::FromRow)]
pub struct TermMatch {
    pub repo_id: i32,
    pub repository: String,
    pub problem_domain: Option<String>,
    /// The search terms found (lower-case, sorted).
    pub matched: Vec<String>,
    /// Everything the repository has: lower-case keywords, or pattern names as written.
    pub all_items: Vec<String>,
}

/// Repositories whose pattern keywords contain at least `min_matches` of `terms` (compared
/// case-insensitively), most matches first, then by name; at most [`MAX_MATCHES`].
pub async fn by_keywords(
    conn: &mut PgConnection,
    terms: &[String],
    min_matches: i32,
    exclude: Option<&str>,
) -> Result<Vec<TermMatch>, sqlx::Error> {
    sqlx::query_as(BY_KEYWORDS_SQL)
        .bind(terms)
        .bind(min_matches)
        .bind(exclude)
        .bind(MAX_MATCHES)
        .fetch_all(conn)
        .await
}

/// Repositories having at least `min_matches` patterns whose names equal one of `names`
/// (case-insensitively); `all` holds the repository's pattern names as written, newest first.
pub async fn by_pattern_names(
    conn: &mut PgConnection,
    names: &[String],
    min_matches: i32,
    exclude: Option<&str>,
) -> Result<Vec<TermMatch>, sqlx::Error> {
    sqlx::query_as(BY_PATTERN_NAMES_SQL)
        .bind(names)
        .bind(min_matches)
        .bind(exclude)
        .bind(MAX_MATCHES)
        .fetch_all(conn)
        .await
}

/// A pattern name used by several repositories.
#[derive(Debug, sqlx::FromRow)]
pub struct SharedPattern {
    pub pattern: String,
    pub repositories: Vec<String>,
    pub repo_count: i64,
}

/// Pattern names found in at least `min_repos` repositories, optionally only those containing
/// `name_filter` (case-insensitive); most widespread first.
pub async fn shared(
    conn: &mut PgConnection,
    min_repos: i32,
    name_filter: Option<&str>,
) -> Result<Vec<SharedPattern>, sqlx::Error> {
    let filter = name_filter.map(|f| format!("%{}%", like_escape(f)));
    sqlx::query_as(SHARED_SQL)
        .bind(min_repos)
        .bind(filter)
        .fetch_all(conn)
        .await
}
