//! `/metrics` collectors beyond the built-in ones, against a real cluster and the real binary:
//! custom queries (`NEXUSD_METRICS_QUERIES`, postgres_exporter's queries.yaml) — exported under
//! their names and types, a broken, slow or writing query failing only its own collector while
//! `pg_up` stays 1, a bad file stopping nexusd with the query named — and the table statistics
//! of every other database (`NEXUSD_METRICS_DATABASES`) with a `datname` label, a database that
//! cannot be reached failing only its own collector.

mod support;

use std::time::{Duration, Instant};

use sqlx::Executor;
use support::scrape::{Scrape, fetch, promtool_problems};
use support::{Nexusd, TestDb, nexusd_command, shared_db, temp_root};

const QUERIES: &str = r#"
# postgres_exporter's format: prefix, query, metrics with usage, cache_seconds, master.
nexusd_test_kinds:
  query: |
    SELECT kind, count(*)::int8 AS total, avg(weight)::numeric AS weight,
           NULL::float8 AS missing, 'x' AS note, 7 AS extra
      FROM kinds GROUP BY kind
  master: true
  cache_seconds: 30
  metrics:
    - kind:
        usage: "LABEL"
        description: "The kind"
    - total:
        usage: "COUNTER"
        description: "Rows of this kind"
    - weight:
        usage: "GAUGE"
        description: "Average weight of this kind"
    - missing:
        usage: "GAUGE"
        description: "Always NULL"
    - note:
        usage: "DISCARD"
        description: "Not exported"
nexusd_test_broken:
  query: "SELECT no_such_column AS value FROM pg_class"
  metrics:
    - value:
        usage: "GAUGE"
        description: "Never there"
nexusd_test_writes:
  query: "WITH gone AS (DELETE FROM kinds RETURNING 1) SELECT count(*) AS value FROM gone"
  metrics:
    - value:
        usage: "GAUGE"
        description: "A read-only transaction refuses this"
nexusd_test_slow:
  query: "SELECT 1 AS value FROM pg_sleep(30)"
  metrics:
    - value:
        usage: "GAUGE"
        description: "Cut by the statement timeout"
"#;

/// Scrapes until `check` holds (results are cached for a second), failing after 30 s.
async fn scrape_until(nexusd: &Nexusd, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = fetch(&nexusd.metrics, None).await;
        if check(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not seen within 30 s\n{}\n--- log ---\n{}",
                s.text,
                nexusd.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A second database with one user table (`widgets`, primary key) holding 5 rows.
async fn other_database() -> TestDb {
    let other = shared_db().await;
    let pool = other.pool().await;
    pool.execute(
        "CREATE TABLE widgets (id int PRIMARY KEY, name text); \
         INSERT INTO widgets SELECT g, 'w' || g FROM generate_series(1, 5) g",
    )
    .await
    .unwrap();
    pool.close().await;
    other
}

#[tokio::test]
async fn custom_queries_export_and_fail_alone_while_pg_up_stays_1() {
    let db = shared_db().await;
    let pool = db.pool().await;
    pool.execute(
        "CREATE TABLE kinds (kind text, weight float8); \
         INSERT INTO kinds VALUES ('a', 1), ('a', 2), ('b', 5)",
    )
    .await
    .unwrap();
    let dir = temp_root("nexusd-queries-");
    let file = dir.join("queries.yaml");
    std::fs::write(&file, QUERIES).unwrap();
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_METRICS_QUERIES", file.to_str().unwrap()),
            ("NEXUSD_METRICS_DATABASES", "none"),
        ],
    )
    .await;

    let s = scrape_until(&nexusd, "the custom queries' collectors", |s| {
        s.collector("query:nexusd_test_kinds").is_some()
    })
    .await;
    assert_eq!(s.value("pg_up", &[]), Some(1.0), "{}", s.text);
    assert_eq!(s.collector("query:nexusd_test_kinds"), Some(1.0));
    assert_eq!(s.collector("query:nexusd_test_broken"), Some(0.0));
    assert_eq!(s.collector("query:nexusd_test_writes"), Some(0.0));
    assert_eq!(s.collector("query:nexusd_test_slow"), Some(0.0));
    assert_eq!(s.collector("stat_database"), Some(1.0));
    assert_eq!(s.value("pg_exporter_last_scrape_error", &[]), Some(1.0));
    assert!(!s.all("pg_stat_database_xact_commit").is_empty());

    // <prefix>_<column>, labelled with the LABEL columns, under the file's types.
    let a = [("kind", "a")];
    assert_eq!(s.value("nexusd_test_kinds_total", &a), Some(2.0));
    assert_eq!(s.value("nexusd_test_kinds_weight", &a), Some(1.5));
    assert_eq!(
        s.value("nexusd_test_kinds_weight", &[("kind", "b")]),
        Some(5.0)
    );
    assert!(s.value("nexusd_test_kinds_missing", &a).unwrap().is_nan());
    assert_eq!(
        s.value("nexusd_test_kinds_extra", &a),
        Some(7.0),
        "unlisted: untyped"
    );
    assert!(s.all("nexusd_test_kinds_note").is_empty(), "DISCARD");
    assert!(s.text.contains("# TYPE nexusd_test_kinds_total counter\n"));
    assert!(s.text.contains("# TYPE nexusd_test_kinds_weight gauge\n"));
    assert!(
        s.text
            .contains("# HELP nexusd_test_kinds_weight Average weight of this kind\n")
    );
    assert!(s.text.contains("# TYPE nexusd_test_kinds_extra untyped\n"));
    assert!(s.all("nexusd_test_broken_value").is_empty());
    let problems = promtool_problems(&s.text);
    assert!(problems.is_empty(), "promtool: {problems:#?}");

    // The slow query was cut by its statement timeout (2 s), within the scrape's budget.
    let slow = s
        .value(
            "pg_scrape_collector_duration_seconds",
            &[("collector", "query:nexusd_test_slow")],
        )
        .unwrap();
    assert!(slow < 5.0, "the pg_sleep(30) query ran {slow} s");
    // The writing query ran read-only: nothing was deleted.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kinds")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);
    // cache_seconds: a new row does not show until the cached result is 30 s old.
    pool.execute("INSERT INTO kinds VALUES ('a', 3)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = fetch(&nexusd.metrics, None).await;
    assert_eq!(again.value("nexusd_test_kinds_total", &a), Some(2.0));
    let log = nexusd.log_text();
    assert!(log.contains("query:nexusd_test_broken"), "{log}");
    pool.close().await;
}

#[tokio::test]
async fn a_slow_query_is_bounded_by_the_scrapers_budget() {
    let db = shared_db().await;
    let dir = temp_root("nexusd-queries-");
    let file = dir.join("queries.yaml");
    std::fs::write(
        &file,
        "nexusd_test_slow:\n  query: SELECT 1 AS value FROM pg_sleep(30)\n  metrics:\n    - value: {usage: GAUGE}\n\
         nexusd_test_after:\n  query: SELECT 2 AS value\n  metrics:\n    - value: {usage: GAUGE}\n",
    )
    .unwrap();
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_METRICS_QUERIES", file.to_str().unwrap()),
            ("NEXUSD_METRICS_DATABASES", "none"),
        ],
    )
    .await;
    // A scraper that waits 1.5 s: PostgreSQL gets 1 s, the slow query what is left of it.
    let started = Instant::now();
    let s = fetch(&nexusd.metrics, Some("1.5")).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the scrape took {took:?}");
    assert_eq!(
        s.collector("query:nexusd_test_slow"),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(s.value("pg_up", &[]), Some(1.0), "{}", s.text);
    assert_eq!(s.collector("stat_database"), Some(1.0));
    assert!(!s.all("pg_stat_database_xact_commit").is_empty());
    // The query after it still ran (or, with no time left, says it did not).
    assert!(
        s.collector("query:nexusd_test_after").is_some(),
        "{}",
        s.text
    );
    assert!(promtool_problems(&s.text).is_empty());
}

#[tokio::test]
async fn every_database_s_tables_come_with_a_datname_label() {
    let db = shared_db().await;
    let other = other_database().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    let labels = [("datname", other.name.as_str()), ("relname", "widgets")];
    let s = scrape_until(&nexusd, "the other database's table", |s| {
        s.value("pg_stat_user_tables_n_tup_ins", &labels)
            .is_some_and(|n| n >= 5.0)
    })
    .await;
    let collector = format!("tables:{}", other.name);
    assert_eq!(s.collector(&collector), Some(1.0));
    assert_eq!(s.value("pg_up", &[]), Some(1.0));
    assert!(
        s.value("pg_stat_user_tables_index_size_bytes", &labels)
            .unwrap()
            > 0.0
    );
    assert!(
        s.value("pg_statio_user_tables_heap_blocks_hit", &labels)
            .is_some()
    );
    assert_eq!(
        s.value(
            "pg_stat_user_tables_n_tup_ins",
            &[("datname", db.name.as_str()), ("relname", "widgets")]
        ),
        None
    );
    // nexusd's own database still gives its knowledge-base tables, from its own session.
    assert!(
        !s.all("pg_stat_user_tables_n_live_tup")
            .iter()
            .filter(|x| x.labels["datname"] == db.name)
            .collect::<Vec<_>>()
            .is_empty()
    );
    assert!(promtool_problems(&s.text).is_empty());
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_fails_only_its_collector() {
    let db = shared_db().await;
    let other = other_database().await;
    let list = format!("{},nexusd_no_such_database", other.name);
    let nexusd = Nexusd::ready(&db.url(), &[("NEXUSD_METRICS_DATABASES", &list)]).await;
    let labels = [("datname", other.name.as_str()), ("relname", "widgets")];
    let s = scrape_until(&nexusd, "the listed database's table", |s| {
        s.value("pg_stat_user_tables_seq_scan", &labels).is_some()
    })
    .await;
    assert_eq!(s.collector("tables:nexusd_no_such_database"), Some(0.0));
    assert_eq!(s.collector(&format!("tables:{}", other.name)), Some(1.0));
    assert_eq!(s.value("pg_up", &[]), Some(1.0));
    assert_eq!(s.value("pg_exporter_last_scrape_error", &[]), Some(1.0));
    // Only the listed databases: `postgres` is not among them.
    assert!(
        s.all("pg_stat_user_tables_seq_scan")
            .iter()
            .all(|x| x.labels["datname"] != "postgres")
    );
    assert!(promtool_problems(&s.text).is_empty());
}

/// Runs `nexusd serve` with `vars` until it exits (at most 30 s); returns code and stderr.
fn serve_until_exit(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = temp_root("nexusd-refuses-");
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut child = nexusd_command(&["serve"], vars)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "nexusd kept running with {vars:?}\n{}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    (status.code(), text)
}

#[tokio::test]
async fn an_invalid_queries_file_stops_nexusd_naming_the_query() {
    let db = shared_db().await;
    let dir = temp_root("nexusd-queries-");
    let file = dir.join("queries.yaml");
    std::fs::write(
        &file,
        "pg_fine:\n  query: SELECT 1 AS value\n  metrics:\n    - value: {usage: GAUGE}\n\
         pg_mapped:\n  query: SELECT 'on' AS state\n  metrics:\n    - state:\n        usage: MAPPEDMETRIC\n        description: a mapping\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let base = [
        ("DATABASE_URL", db.url()),
        ("NEXUSD_API_ADDR", "127.0.0.1:0".to_string()),
        ("NEXUSD_METRICS_ADDR", "127.0.0.1:0".to_string()),
    ];
    let mut vars: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.push(("NEXUSD_METRICS_QUERIES", path));
    let (code, stderr) = serve_until_exit(&vars);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("NEXUSD_METRICS_QUERIES"), "{stderr}");
    assert!(stderr.contains(path), "{stderr}");
    assert!(stderr.contains("query \"pg_mapped\""), "{stderr}");
    assert!(stderr.contains("MAPPEDMETRIC is not supported"), "{stderr}");

    // A file that is not there is refused too.
    let missing = dir.join("missing.yaml");
    vars.pop();
    vars.push(("NEXUSD_METRICS_QUERIES", missing.to_str().unwrap()));
    let (code, stderr) = serve_until_exit(&vars);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}
