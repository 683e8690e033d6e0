//! `patterns`, `keywords`, `pattern_keywords`: keyword and pattern-name matching across
//! repositories, and patterns shared by several repositories.

use sqlx::PgConnection;

use super::like_escape;

/// How many repositories a keyword or pattern search returns at most (the original's cap).
const MAX_MATCHES: i64 = 10;

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
    sqlx::query_as(
        "WITH terms AS (SELECT DISTINCT lower(t) AS term FROM unnest($1::text[]) AS t),
              repo_keywords AS (
                  SELECT p.repo_id, array_agg(DISTINCT lower(k.keyword::text)) AS keywords
                    FROM patterns p
                    JOIN pattern_keywords pk ON pk.pattern_id = p.id
                    JOIN keywords k ON k.id = pk.keyword_id
                   GROUP BY p.repo_id)
         SELECT * FROM (
             SELECT r.id AS repo_id, r.name::text AS repository, r.problem_domain,
                    ARRAY(SELECT term FROM terms WHERE term = ANY(rk.keywords) ORDER BY term) AS matched,
                    ARRAY(SELECT unnest(rk.keywords) ORDER BY 1) AS all_items
               FROM repositories r LEFT JOIN repo_keywords rk ON rk.repo_id = r.id
              WHERE $3::text IS NULL OR r.name <> $3) m
          WHERE cardinality(matched) >= $2
          ORDER BY cardinality(matched) DESC, repository
          LIMIT $4",
    )
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
    sqlx::query_as(
        "WITH terms AS (SELECT DISTINCT lower(t) AS term FROM unnest($1::text[]) AS t),
              repo_patterns AS (
                  SELECT repo_id,
                         array_agg(name::text ORDER BY created_at DESC, id DESC) AS names,
                         array_agg(lower(name::text)) AS lower_names
                    FROM patterns GROUP BY repo_id)
         SELECT * FROM (
             SELECT r.id AS repo_id, r.name::text AS repository, r.problem_domain,
                    ARRAY(SELECT term FROM terms WHERE term = ANY(rp.lower_names) ORDER BY term) AS matched,
                    coalesce(rp.names, '{}') AS all_items
               FROM repositories r LEFT JOIN repo_patterns rp ON rp.repo_id = r.id
              WHERE $3::text IS NULL OR r.name <> $3) m
          WHERE cardinality(matched) >= $2
          ORDER BY cardinality(matched) DESC, repository
          LIMIT $4",
    )
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
    sqlx::query_as(
        "SELECT p.name::text AS pattern,
                array_agg(DISTINCT r.name::text ORDER BY r.name::text) AS repositories,
                count(DISTINCT r.id) AS repo_count
           FROM patterns p JOIN repositories r ON r.id = p.repo_id
          WHERE $2::text IS NULL OR p.name ILIKE $2 ESCAPE '\\'
          GROUP BY p.name
         HAVING count(DISTINCT r.id) >= $1
          ORDER BY repo_count DESC, pattern",
    )
    .bind(min_repos)
    .bind(filter)
    .fetch_all(conn)
    .await
}
