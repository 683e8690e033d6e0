//! The read statements rewritten to do less work (`src/kb/activity.rs`, `patterns.rs`,
//! `repositories.rs`) return exactly the rows the statements they replaced returned, held side by
//! side on a seeded knowledge base over a grid of inputs. The old statements are copied here as
//! they were.

mod support;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgArguments;

const OLD_BY_KEYWORDS: &str =
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
  LIMIT $4";

const OLD_BY_PATTERN_NAMES: &str =
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
  LIMIT $4";

const OLD_SHARED: &str = "SELECT p.name::text AS pattern,
        array_agg(DISTINCT r.name::text ORDER BY r.name::text) AS repositories,
        count(DISTINCT r.id) AS repo_count
   FROM patterns p JOIN repositories r ON r.id = p.repo_id
  WHERE $2::text IS NULL OR p.name ILIKE $2 ESCAPE '\\'
  GROUP BY p.name
 HAVING count(DISTINCT r.id) >= $1
  ORDER BY repo_count DESC, pattern";

/// The same summaries computed per repository (correlated subqueries through the indexes): a
/// second formulation that must give the same rows as the single-pass statement nexusd runs.
const PER_REPOSITORY_SUMMARIES: &str = "
    SELECT r.name::text AS name, r.problem_domain, r.last_analyzed,
           (SELECT count(*) FROM patterns p WHERE p.repo_id = r.id) AS pattern_count,
           ARRAY(SELECT k.keyword::text
                   FROM (SELECT pk.keyword_id, count(*) AS uses
                           FROM patterns p JOIN pattern_keywords pk ON pk.pattern_id = p.id
                          WHERE p.repo_id = r.id
                          GROUP BY pk.keyword_id) u
                   JOIN keywords k ON k.id = u.keyword_id
                  ORDER BY u.uses DESC, k.keyword
                  LIMIT 5) AS keywords
      FROM repositories r
     ORDER BY r.name";

/// A larger, uneven knowledge base on top of the skills' seed: 40 repositories with 0 to 19
/// patterns each, shared pattern names, keywords used unevenly (ties included), activity rows of
/// every kind with equal timestamps (the feed's order among rows equal in all its keys was
/// never defined, so no two rows are).
const MORE: &str = "
INSERT INTO repositories (name, problem_domain)
SELECT 'gen/r' || lpad(n::text, 2, '0'), CASE WHEN n % 3 = 0 THEN NULL ELSE 'domain ' || n % 4 END
  FROM generate_series(1, 40) n;
INSERT INTO patterns (repo_id, name, created_at)
SELECT r.id, 'Shared ' || (m % 7) || CASE WHEN m % 2 = 0 THEN ' Retry' ELSE '' END || ' ' || m,
       '2026-01-01'::timestamptz + (m % 5) * interval '1 day'
  FROM repositories r, generate_series(1, 19) m
 WHERE r.name LIKE 'gen/%' AND m <= (substr(r.name, 6)::int % 20);
INSERT INTO keywords (keyword) SELECT 'kw-' || n FROM generate_series(1, 12) n ON CONFLICT DO NOTHING;
INSERT INTO pattern_keywords (pattern_id, keyword_id)
SELECT p.id, k.id FROM patterns p JOIN keywords k ON k.keyword LIKE 'kw-%'
 WHERE (p.id * 7 + substr(k.keyword, 4)::int * 3) % 5 = 0
ON CONFLICT DO NOTHING;
INSERT INTO lessons_learned (repo_id, title, category, impact, date)
SELECT r.id, 'L' || n || ' ' || r.name, 'cat', 'low', '2026-02-01'::timestamptz + (n % 4) * interval '1 hour'
  FROM repositories r, generate_series(1, 3) n WHERE r.name LIKE 'gen/r0%';
INSERT INTO analysis_history (repo_id, commit_sha, analyzed_at)
SELECT r.id, 'sha' || n || r.id, '2026-02-01'::timestamptz + (n % 4) * interval '1 hour'
  FROM repositories r, generate_series(1, 2) n WHERE r.name LIKE 'gen/r1%';
";

/// Rows of `sql` with `bind` applied, as JSON (one array, in the statement's order).
async fn rows(pool: &PgPool, sql: &str, args: PgArguments) -> Value {
    let wrapped = format!("SELECT coalesce(json_agg(row_to_json(q)), '[]')::text FROM ({sql}) q");
    let text: String = sqlx::query_scalar_with(&wrapped, args)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    serde_json::from_str(&text).unwrap()
}

macro_rules! args {
    () => {
        PgArguments::default()
    };
    ($($v:expr),+) => {{
        use sqlx::Arguments;
        let mut a = PgArguments::default();
        $(a.add($v).unwrap();)+
        a
    }};
}

async fn seeded() -> PgPool {
    let db = support::shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    sqlx::raw_sql(include_str!("fixtures/seed.sql"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(MORE).execute(&pool).await.unwrap();
    pool
}

#[tokio::test]
async fn the_leaner_pattern_and_repository_reads_return_the_same_rows() {
    let pool = seeded().await;
    let lists: Vec<Vec<String>> = vec![
        vec![],
        vec!["jwt".into()],
        vec!["retry".into(), "queue".into(), "nope".into()],
        vec!["kw-1".into(), "kw-2".into(), "kw-3".into(), "kw-1".into()],
        vec!["jwt authentication".into(), "retry with backoff".into()],
        vec![
            "shared 1 1".into(),
            "shared 2 retry 2".into(),
            "tool pattern 5".into(),
        ],
    ];
    let excludes = [None, Some("acme/api"), Some("gen/r05")];
    let mut compared = 0;
    for terms in &lists {
        for min in [0i32, 1, 2] {
            for exclude in excludes {
                for (old, new) in [
                    (OLD_BY_KEYWORDS, nexusd::kb::BY_KEYWORDS_SQL),
                    (OLD_BY_PATTERN_NAMES, nexusd::kb::BY_PATTERN_NAMES_SQL),
                ] {
                    let a = rows(&pool, old, args!(terms, min, exclude, 10i64)).await;
                    let b = rows(&pool, new, args!(terms, min, exclude, 10i64)).await;
                    assert_eq!(a, b, "{terms:?} min {min} exclude {exclude:?}\n{new}");
                    compared += a.as_array().unwrap().len();
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} rows compared");

    for min in [1i32, 2, 3, 5] {
        for filter in [None, Some("%retry%"), Some("%SHARED 1%"), Some("%nothing%")] {
            let a = rows(&pool, OLD_SHARED, args!(min, filter)).await;
            let b = rows(&pool, nexusd::kb::SHARED_SQL, args!(min, filter)).await;
            assert_eq!(a, b, "min {min} filter {filter:?}");
        }
    }
    let a = rows(&pool, PER_REPOSITORY_SUMMARIES, args!()).await;
    let b = rows(&pool, nexusd::kb::SUMMARIES_SQL, args!()).await;
    assert_eq!(a, b);
    assert!(a.as_array().unwrap().len() == 44);
}

#[tokio::test]
async fn the_activity_feed_in_one_statement_returns_the_same_page_and_count() {
    let pool = seeded().await;
    let actions = nexusd::kb::ACTIONS_SQL;
    let old_count = format!("SELECT count(*) FROM ({actions}) a");
    let old_page = format!(
        "SELECT * FROM ({actions}) a ORDER BY timestamp DESC NULLS LAST, action_type, reference_id LIMIT $3 OFFSET $4"
    );
    let new = nexusd::kb::RECENT_SQL.replace("ACTIONS", actions);
    let all: Vec<String> = ["analysis", "lesson", "deployment", "runtime_issue"]
        .map(String::from)
        .to_vec();
    let some: Vec<String> = vec!["lesson".into(), "runtime_issue".into()];
    for types in [&all, &some] {
        for repository in [None, Some("acme/api"), Some("gen/r01")] {
            for (limit, offset) in [(20i64, 0i64), (1, 0), (5, 3), (100, 0), (7, 14)] {
                let count: i64 = sqlx::query_scalar(&old_count)
                    .bind(types)
                    .bind(repository)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let page = rows(&pool, &old_page, args!(types, repository, limit, offset)).await;
                let mut got = rows(&pool, &new, args!(types, repository, limit, offset)).await;
                for row in got.as_array_mut().unwrap() {
                    let total = row.as_object_mut().unwrap().remove("total").unwrap();
                    assert_eq!(total, count, "{types:?} {repository:?}");
                }
                assert_eq!(got, page, "{types:?} {repository:?} {limit} {offset}");
            }
        }
    }
}
