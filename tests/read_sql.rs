//! The read statements rewritten to do less work (`src/kb/activity.rs`, `patterns.rs`,
//! `repositories.rs`) return exactly the rows the statements they replaced returned, held side by
//! side on a seeded knowledge base over a grid of inputs. The old statements are copied here as
//! they were. The keyword counts `get_repository_list` reads (migration 0009) are held to the
//! links they count, through every kind of write, concurrent ones included.

mod support;

use serde_json::{Value, json};
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

/// `query_known_issues`' two statements before they became one (`nexusd::kb::ISSUES_SQL`).
const OLD_ISSUE_COLUMNS: &str = "r.name::text AS repository, i.issue_id::text AS issue_id, i.detected_at,
    i.issue_type::text AS issue_type, i.severity::text AS severity, i.service_type::text AS service_type,
    i.log_snippet, i.root_cause, i.suggested_fix, i.pattern_reference::text AS pattern_reference,
    i.github_issue_url::text AS github_issue_url, i.status::text AS status, i.metrics, i.resolution_time";
const OLD_ISSUE_FILTER: &str = "($1::text IS NULL OR i.issue_type = $1)
    AND ($2::text IS NULL OR i.pattern_reference = $2)
    AND ($3::text IS NULL OR i.service_type = $3)
    AND ($4::text IS NULL OR i.severity = $4)
    AND ($5::text IS NULL OR i.status = $5)";

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
INSERT INTO runtime_issues (repo_id, issue_id, detected_at, issue_type, severity, service_type,
                            pattern_reference, status, log_snippet)
SELECT r.id, 'gen-issue-' || r.id || '-' || n, '2026-03-01'::timestamptz + (n % 3) * interval '1 hour',
       (ARRAY['timeout', 'error', 'latency'])[n % 3 + 1], (ARRAY['low', 'high', 'critical'])[(n + r.id) % 3 + 1],
       'api', CASE WHEN n % 2 = 0 THEN 'Shared ' || n % 4 END, CASE WHEN n % 4 = 0 THEN 'resolved' ELSE 'open' END,
       'log ' || n
  FROM repositories r, generate_series(1, 4) n WHERE r.name LIKE 'gen/r2%';
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
    seeded_in(&support::shared_db().await).await
}

async fn seeded_in(db: &support::TestDb) -> PgPool {
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

/// (repository, keyword) pairs whose ledger sum (`repository_keyword_uses`, migration 0009)
/// differs from the links themselves, described; empty when the ledger is exact.
async fn ledger_errors(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "WITH ledger AS (SELECT repo_id, keyword_id, sum(uses) AS n FROM repository_keyword_uses
                          GROUP BY 1, 2 HAVING sum(uses) <> 0),
              links AS (SELECT p.repo_id, pk.keyword_id, count(*) AS n
                          FROM patterns p JOIN pattern_keywords pk ON pk.pattern_id = p.id
                         WHERE p.repo_id IS NOT NULL GROUP BY 1, 2)
         SELECT format('repo %s keyword %s: ledger %s, links %s', repo_id, keyword_id,
                       coalesce(l.n, 0), coalesce(k.n, 0))
           FROM ledger l FULL JOIN links k USING (repo_id, keyword_id)
          WHERE l.n IS DISTINCT FROM k.n",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The ledger is exact and `get_repository_list`'s statement gives what the links give.
async fn assert_counts_exact(pool: &PgPool, after: &str) {
    let errors = ledger_errors(pool).await;
    assert!(errors.is_empty(), "after {after}: {errors:#?}");
    let want = rows(pool, PER_REPOSITORY_SUMMARIES, args!()).await;
    let got = rows(pool, nexusd::kb::SUMMARIES_SQL, args!()).await;
    assert_eq!(got, want, "after {after}");
}

#[tokio::test]
async fn every_kind_of_write_keeps_the_keyword_counts_exact() {
    let pool = seeded().await;
    assert_counts_exact(&pool, "the seed").await;
    // As an operator would type them in psql: each one its own transaction.
    let writes = [
        "INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p.id, k.id FROM patterns p, keywords k
          WHERE p.name LIKE 'Shared 3%' AND k.keyword IN ('kw-1', 'kw-2', 'jwt')
         ON CONFLICT DO NOTHING",
        "DELETE FROM pattern_keywords pk USING keywords k
          WHERE k.id = pk.keyword_id AND k.keyword = 'kw-2' AND pk.pattern_id % 3 = 0",
        "UPDATE pattern_keywords pk SET keyword_id = (SELECT id FROM keywords WHERE keyword = 'kw-12')
          WHERE pk.keyword_id = (SELECT id FROM keywords WHERE keyword = 'kw-11')
            AND NOT EXISTS (SELECT 1 FROM pattern_keywords o
                             WHERE o.pattern_id = pk.pattern_id
                               AND o.keyword_id = (SELECT id FROM keywords WHERE keyword = 'kw-12'))",
        "INSERT INTO repositories (name) VALUES ('gen/moved');
         UPDATE patterns SET repo_id = (SELECT id FROM repositories WHERE name = 'gen/moved')
          WHERE repo_id = (SELECT id FROM repositories WHERE name = 'gen/r18') AND name LIKE 'Shared 1%'",
        "UPDATE patterns SET repo_id = NULL WHERE name LIKE 'Shared 4%'",
        "INSERT INTO repositories (name) VALUES ('gen/adopted');
         UPDATE patterns SET repo_id = (SELECT id FROM repositories WHERE name = 'gen/adopted')
          WHERE id IN (SELECT DISTINCT ON (name) id FROM patterns WHERE repo_id IS NULL ORDER BY name, id)",
        "UPDATE patterns SET description = 'touched, not moved' WHERE name LIKE 'Shared 5%'",
        "DELETE FROM patterns WHERE name LIKE 'Shared 6%'",
        "DELETE FROM repositories WHERE name = 'gen/r17'",
        "DELETE FROM keywords WHERE keyword = 'kw-3'",
        "BEGIN; DELETE FROM pattern_keywords; INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p.id, k.id FROM patterns p, keywords k WHERE k.keyword = 'kw-9'; ROLLBACK",
        "BEGIN; DELETE FROM pattern_keywords WHERE pattern_id % 2 = 0;
         INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p.id, k.id FROM patterns p, keywords k WHERE p.id % 4 = 0 AND k.keyword = 'kw-9'; COMMIT",
        "TRUNCATE pattern_keywords",
        "INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p.id, k.id FROM patterns p JOIN keywords k ON (p.id + k.id) % 4 = 0",
        "TRUNCATE repositories CASCADE",
    ];
    for (i, sql) in writes.iter().enumerate() {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        assert_counts_exact(&pool, sql).await;
        if i % 3 == 1 {
            let (gone, _) = nexusd::kb::keyword_uses::fold(&pool).await.unwrap();
            assert!(gone > 0, "nothing to fold after {sql}");
            assert_counts_exact(&pool, &format!("folding after {sql}")).await;
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM repository_keyword_uses WHERE NOT compacted",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(left, 0, "rows left unfolded after {sql}");
        }
    }
    let rows_left: i64 = sqlx::query_scalar("SELECT count(*) FROM repository_keyword_uses")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows_left, 0, "the ledger outlived every repository");
}

/// Keyword edits of different patterns of the same repositories, in crossed orders, beside moves,
/// deletions and re-creations of patterns, bare link edits, rolled-back edits and two folds
/// running all the time. Each writer locks its pattern first, as nexusd's writers do, so the
/// tables themselves give no deadlock: none may come from the counts (counters updated in place
/// would deadlock here), and the counts stay exact.
#[tokio::test]
async fn concurrent_keyword_edits_and_folds_neither_deadlock_nor_drift() {
    let db = support::shared_db().await;
    db.bootstrap().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(db.options())
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO repositories (name) SELECT 'cc/r' || n FROM generate_series(1, 3) n;
         INSERT INTO patterns (repo_id, name)
         SELECT r.id, 'cc/p' || r.id || '-' || m FROM repositories r, generate_series(1, 8) m;
         INSERT INTO keywords (keyword) SELECT 'ck-' || n FROM generate_series(1, 6) n;
         INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p.id, k.id FROM patterns p, keywords k WHERE (p.id + k.id) % 2 = 0;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (names, keywords, repos): (Vec<String>, Vec<i32>, Vec<i32>) = sqlx::query_as(
        "SELECT (SELECT array_agg(name::text ORDER BY id) FROM patterns),
                (SELECT array_agg(id ORDER BY id) FROM keywords),
                (SELECT array_agg(id ORDER BY id) FROM repositories)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut folds = Vec::new();
    for _ in 0..2 {
        let (pool, stop) = (pool.clone(), stop.clone());
        folds.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                nexusd::kb::keyword_uses::fold(&pool).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut writers = Vec::new();
    for w in 0..5u64 {
        let (pool, names, keywords, repos) =
            (pool.clone(), names.clone(), keywords.clone(), repos.clone());
        writers.push(tokio::spawn(async move {
            // xorshift: a different, repeatable sequence per writer.
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
            let mut next = move |n: usize| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % n as u64) as usize
            };
            let mut refused = 0;
            for _ in 0..120 {
                let name = &names[next(names.len())];
                let (a, b) = (keywords[next(keywords.len())], keywords[next(keywords.len())]);
                let op = next(7);
                let mut tx = nexusd::db::begin(&pool).await?;
                let pattern: Option<(i32, Option<i32>)> = if op <= 4 {
                    sqlx::query_as("SELECT id, repo_id FROM patterns WHERE name = $1 FOR UPDATE")
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?
                } else {
                    None
                };
                let id = pattern.map(|(id, _)| id);
                match op {
                    0 | 1 => {
                        sqlx::query("DELETE FROM pattern_keywords WHERE pattern_id = $1 AND keyword_id = $2")
                            .bind(id).bind(a).execute(&mut *tx).await?;
                        sqlx::query("INSERT INTO pattern_keywords (pattern_id, keyword_id) SELECT $1, $2 WHERE $1 IS NOT NULL ON CONFLICT DO NOTHING")
                            .bind(id).bind(b).execute(&mut *tx).await?;
                    }
                    2 => {
                        sqlx::query("UPDATE patterns SET repo_id = $2 WHERE id = $1")
                            .bind(id).bind(repos[next(repos.len())]).execute(&mut *tx).await?;
                    }
                    3 => {
                        sqlx::query("DELETE FROM pattern_keywords WHERE pattern_id = $1")
                            .bind(id).execute(&mut *tx).await?;
                        sqlx::query("INSERT INTO pattern_keywords (pattern_id, keyword_id) SELECT $1, k FROM unnest($2::int[]) k WHERE $1 IS NOT NULL ON CONFLICT DO NOTHING")
                            .bind(id).bind(vec![b, a]).execute(&mut *tx).await?;
                        if next(2) == 0 {
                            tx.rollback().await?;
                            continue;
                        }
                    }
                    4 => {
                        if let Some((id, repo)) = pattern {
                            sqlx::query("DELETE FROM patterns WHERE id = $1").bind(id).execute(&mut *tx).await?;
                            let new: i32 = sqlx::query_scalar("INSERT INTO patterns (repo_id, name) VALUES ($1, $2) RETURNING id")
                                .bind(repo).bind(name).fetch_one(&mut *tx).await?;
                            sqlx::query("INSERT INTO pattern_keywords (pattern_id, keyword_id) VALUES ($1, $2)")
                                .bind(new).bind(a).execute(&mut *tx).await?;
                        }
                    }
                    // Bare link edits, as typed in psql: no lock on the pattern first.
                    5 => {
                        sqlx::query("DELETE FROM pattern_keywords WHERE keyword_id = $2 AND pattern_id IN (SELECT id FROM patterns WHERE name = $1)")
                            .bind(name).bind(a).execute(&mut *tx).await?;
                    }
                    _ => {
                        // The pattern may be re-created meanwhile: a link to the deleted one is
                        // refused by its foreign key, and nothing is counted.
                        let linked = sqlx::query("INSERT INTO pattern_keywords (pattern_id, keyword_id) SELECT id, $2 FROM patterns WHERE name = $1 ON CONFLICT DO NOTHING")
                            .bind(name).bind(b).execute(&mut *tx).await;
                        if let Err(sqlx::Error::Database(e)) = &linked
                            && e.code().as_deref() == Some("23503")
                        {
                            refused += 1;
                            continue;
                        }
                        linked?;
                    }
                }
                tx.commit().await?;
            }
            Ok::<u32, sqlx::Error>(refused)
        }));
    }
    for (w, writer) in writers.into_iter().enumerate() {
        if let Err(e) = writer.await.unwrap() {
            panic!("writer {w} failed (a deadlock is 40P01): {e}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for fold in folds {
        assert!(fold.await.unwrap() > 0, "a fold never ran");
    }
    let errors = ledger_errors(&pool).await;
    assert!(errors.is_empty(), "{errors:#?}");
    nexusd::kb::keyword_uses::fold(&pool).await.unwrap();
    let errors = ledger_errors(&pool).await;
    assert!(errors.is_empty(), "after the last fold: {errors:#?}");
}

/// Migration 0009 counts the links already there when it is applied to a knowledge base that
/// predates it (an upgrade).
#[tokio::test]
async fn the_migration_counts_the_links_already_there() {
    let db = support::shared_db().await;
    let pool = seeded_in(&db).await;
    // Back to the schema before migration 0009, the data kept.
    sqlx::raw_sql(
        "DROP FUNCTION nexusd_keyword_uses() CASCADE;
         DROP FUNCTION nexusd_pattern_keywords_repo() CASCADE;
         DROP FUNCTION nexusd_pattern_moved() CASCADE;
         DROP TABLE repository_keyword_uses;
         ALTER TABLE pattern_keywords DROP COLUMN repo_id;
         DELETE FROM _sqlx_migrations WHERE version = 9;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let report = db.bootstrap().await;
    assert!(report.migration_version >= 9);
    assert_counts_exact(&pool, "the migration").await;
    let keyworded: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT repo_id) FROM repository_keyword_uses WHERE compacted",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(keyworded > 20, "only {keyworded} repositories counted");
}

/// `nexusd serve` folds what a write by hand added to the ledger.
#[tokio::test]
async fn serve_folds_the_ledger() {
    let db = support::shared_db().await;
    let pool = seeded_in(&db).await;
    let nexusd = support::Nexusd::ready(&db.url(), &[]).await;
    sqlx::raw_sql(
        "DELETE FROM pattern_keywords WHERE pattern_id % 2 = 0;
         INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p.id, k.id FROM patterns p, keywords k WHERE k.keyword = 'kw-7' ON CONFLICT DO NOTHING",
    )
    .execute(&pool)
    .await
    .unwrap();
    let unfolded = "SELECT count(*) FROM repository_keyword_uses WHERE NOT compacted";
    let before: i64 = sqlx::query_scalar(unfolded).fetch_one(&pool).await.unwrap();
    assert!(before > 0);
    let deadline = std::time::Instant::now() + nexusd::kb::keyword_uses::FOLD_INTERVAL * 3;
    loop {
        let left: i64 = sqlx::query_scalar(unfolded).fetch_one(&pool).await.unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} of {before} ledger rows still unfolded\n{}",
            nexusd.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_counts_exact(&pool, "serve's fold").await;
}

#[tokio::test]
async fn known_issues_in_one_statement_return_the_same_page_count_and_repositories() {
    let pool = seeded().await;
    let old_page = format!(
        "SELECT {OLD_ISSUE_COLUMNS} FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id
          WHERE {OLD_ISSUE_FILTER} ORDER BY i.detected_at DESC, i.id DESC LIMIT $6"
    );
    let old_overall = format!(
        "SELECT count(*) AS total, coalesce(array_agg(DISTINCT r.name::text ORDER BY r.name::text), '{{}}') AS repositories
           FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id WHERE {OLD_ISSUE_FILTER}"
    );
    type Filter = [Option<&'static str>; 5];
    let filters: [Filter; 7] = [
        [None; 5],
        [Some("timeout"), None, None, None, None],
        [None, Some("Shared 2"), None, None, None],
        [Some("error"), None, Some("api"), Some("high"), Some("open")],
        [None, None, None, Some("critical"), None],
        [None, None, None, None, Some("resolved")],
        [Some("nothing"), None, None, None, None],
    ];
    let mut matched = 0;
    for [t, p, s, v, st] in filters {
        for limit in [1i64, 3, 10, 100] {
            let want_page = rows(&pool, &old_page, args!(t, p, s, v, st, limit)).await;
            let want_overall = rows(&pool, &old_overall, args!(t, p, s, v, st)).await;
            let mut got = rows(&pool, &nexusd::kb::ISSUES_SQL, args!(t, p, s, v, st, limit)).await;
            let page = got.as_array_mut().unwrap();
            let overall = match page.first() {
                Some(row) => json!([{"total": row["total"], "repositories": row["repositories"]}]),
                None => json!([{"total": 0, "repositories": []}]),
            };
            for row in page.iter_mut() {
                let row = row.as_object_mut().unwrap();
                for extra in ["total", "repositories", "id"] {
                    row.remove(extra);
                }
            }
            assert_eq!(got, want_page, "{:?} limit {limit}", [t, p, s, v, st]);
            assert_eq!(
                overall,
                want_overall,
                "{:?} limit {limit}",
                [t, p, s, v, st]
            );
            matched += want_overall[0]["total"].as_i64().unwrap();
        }
    }
    assert!(matched > 100, "only {matched} issues matched");
}
