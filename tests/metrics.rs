//! `/metrics` against a real database and this host: the output passes `promtool check metrics`
//! (only the naming lints postgres_exporter and node_exporter themselves trigger), carries every
//! name the dashboards (1860, 9628) and the upstream alerting mixins use, counters move with
//! work, pg_stat_statements is limited to the top N and summed over `toplevel`, nexusd's own
//! queries stay out of it, a stopped database gives `pg_up 0` with a 200, concurrent scrapes
//! share one collection, and a real Prometheus server scrapes nexusd with `up == 1`.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Executor;
use support::prometheus::Prometheus;
use support::scrape::{Scrape, promtool_problems};
use support::{Nexusd, TestCluster, http, shared_db, temp_root};

async fn scrape(nexusd: &Nexusd) -> Scrape {
    let response = http()
        .get(format!("{}/metrics", nexusd.metrics))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200, "{}", nexusd.log_text());
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(response.text().await.expect("a text body"))
}

/// Scrapes until `check` holds (the output is cached for a second), failing after 15 s.
async fn scrape_until(nexusd: &Nexusd, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = scrape(nexusd).await;
        if check(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not seen within 15 s\n{}\n--- log ---\n{}",
                s.text,
                nexusd.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every series appears once and every `# TYPE` has samples.
fn assert_well_formed(s: &Scrape) {
    let mut seen = HashSet::new();
    for line in s.text.lines().filter(|l| !l.starts_with('#')) {
        let series = line
            .rsplit_once(' ')
            .map(|(series, _)| series)
            .unwrap_or(line);
        assert!(seen.insert(series), "duplicate series {series}");
    }
    let names = s.names();
    for line in s.text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split(' ').skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        let present = if kind == "histogram" {
            names.contains(format!("{name}_count").as_str())
        } else {
            names.contains(name)
        };
        assert!(present, "empty family {name}");
    }
}

/// Names queried by dashboards 1860 (Quick/Basic rows and variables) and 9628, the node and
/// postgres mixins' alerts, and nexusd's own alert policies (terraform/monitoring.tf).
const REQUIRED: &[&str] = &[
    // node_exporter
    "node_uname_info",
    "node_os_info",
    "node_boot_time_seconds",
    "node_time_seconds",
    "node_cpu_seconds_total",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_memory_MemTotal_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_Cached_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_SReclaimable_bytes",
    "node_memory_Shmem_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_files",
    "node_filesystem_files_free",
    "node_filesystem_readonly",
    "node_filesystem_device_error",
    "node_disk_reads_completed_total",
    "node_disk_writes_completed_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_io_time_seconds_total",
    "node_disk_io_time_weighted_seconds_total",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_network_transmit_packets_total",
    "node_network_receive_errs_total",
    "node_network_transmit_errs_total",
    "node_network_receive_drop_total",
    "node_network_transmit_drop_total",
    "node_network_up",
    "node_context_switches_total",
    "node_forks_total",
    "node_intr_total",
    "node_procs_running",
    "node_procs_blocked",
    "node_vmstat_pgmajfault",
    "node_vmstat_pgfault",
    "node_filefd_allocated",
    "node_filefd_maximum",
    // postgres_exporter
    "pg_up",
    "pg_static",
    "pg_postmaster_start_time_seconds",
    "pg_exporter_last_scrape_duration_seconds",
    "pg_exporter_last_scrape_error",
    "pg_exporter_scrapes_total",
    "pg_scrape_collector_duration_seconds",
    "pg_scrape_collector_success",
    "pg_database_size_bytes",
    "pg_stat_database_numbackends",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_blks_read",
    "pg_stat_database_blks_hit",
    "pg_stat_database_tup_returned",
    "pg_stat_database_tup_fetched",
    "pg_stat_database_tup_inserted",
    "pg_stat_database_tup_updated",
    "pg_stat_database_tup_deleted",
    "pg_stat_database_conflicts",
    "pg_stat_database_temp_bytes",
    "pg_stat_database_deadlocks",
    "pg_stat_activity_count",
    "pg_stat_activity_max_tx_duration",
    "pg_locks_count",
    "pg_settings_max_connections",
    "pg_settings_superuser_reserved_connections",
    "pg_settings_shared_buffers_bytes",
    "pg_settings_effective_cache_size_bytes",
    "pg_settings_maintenance_work_mem_bytes",
    "pg_settings_work_mem_bytes",
    "pg_settings_max_wal_size_bytes",
    "pg_settings_random_page_cost",
    "pg_settings_seq_page_cost",
    "pg_settings_max_worker_processes",
    "pg_settings_max_parallel_workers",
    "pg_settings_max_locks_per_transaction",
    "pg_settings_autovacuum_vacuum_scale_factor",
    "pg_settings_autovacuum_vacuum_threshold",
    "pg_stat_bgwriter_checkpoints_timed_total",
    "pg_stat_bgwriter_buffers_alloc_total",
    "pg_stat_archiver_archived_count",
    "pg_wal_segments",
    "pg_wal_size_bytes",
    "pg_replication_lag_seconds",
    "pg_replication_is_replica",
    "pg_stat_user_tables_n_live_tup",
    "pg_stat_user_tables_n_dead_tup",
    "pg_stat_user_tables_last_autovacuum",
    "pg_stat_user_tables_table_size_bytes",
    "pg_statio_user_tables_heap_blocks_hit",
    "pg_stat_statements_calls_total",
    "pg_stat_statements_seconds_total",
    "pg_stat_statements_rows_total",
    "pg_stat_statements_block_read_seconds_total",
    "pg_stat_statements_block_write_seconds_total",
    // process and nexusd
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "nexusd_build_info",
    "nexusd_skill_requests_total",
    "nexusd_skill_request_duration_seconds_bucket",
    "nexusd_db_pool_connections",
    "nexusd_backup_last_success_timestamp_seconds",
    "nexusd_backup_failures_total",
    "nexusd_pg_vector_index_size_bytes",
];

#[tokio::test]
async fn scrape_passes_promtool_and_carries_every_dashboard_name() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    nexusd.ok("get_repository_list", json!({})).await;
    let s = scrape_until(&nexusd, "pg_up 1 with pg_stat_statements", |s| {
        s.value("pg_up", &[]) == Some(1.0) && !s.all("pg_stat_statements_calls_total").is_empty()
    })
    .await;

    let problems = promtool_problems(&s.text);
    assert!(problems.is_empty(), "promtool: {problems:#?}");
    assert_well_formed(&s);
    let names = s.names();
    let missing: Vec<&&str> = REQUIRED.iter().filter(|n| !names.contains(**n)).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    if std::path::Path::new("/proc/pressure/cpu").exists() {
        assert!(names.contains("node_pressure_cpu_waiting_seconds_total"));
        assert!(names.contains("node_pressure_io_stalled_seconds_total"));
    }

    // Values a user would check against the machine and the database.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        s.value("node_memory_MemTotal_bytes", &[]),
        Some(kb * 1024.0)
    );
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    assert_eq!(s.all("node_cpu_seconds_total").len(), cpus * 8);
    for sample in s.all("pg_stat_activity_count") {
        assert!(sample.labels.contains_key("datname") && sample.labels.contains_key("state"));
    }
    assert_eq!(
        s.all("pg_locks_count")
            .iter()
            .filter(|x| x.labels["datname"] == db.name)
            .count(),
        9,
        "one series per lock mode"
    );
    assert_eq!(s.value("pg_exporter_last_scrape_error", &[]), Some(0.0));
    assert!(
        s.value("pg_database_size_bytes", &[("datname", &db.name)])
            .unwrap()
            > 1e6
    );
    assert!(s.value("pg_settings_shared_buffers_bytes", &[]).unwrap() >= 8.0 * 1024.0 * 1024.0);
    let hnsw = s.value(
        "nexusd_pg_vector_index_size_bytes",
        &[
            ("datname", &db.name),
            ("indexname", "idx_patterns_embedding_hnsw"),
        ],
    );
    assert!(hnsw.is_some_and(|b| b > 0.0), "HNSW index size");
    let version = s.all("nexusd_build_info")[0].labels["version"].clone();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let lines: Vec<&str> = s
        .text
        .lines()
        .filter(|l| l.starts_with("pg_static"))
        .collect();
    assert!(lines[0].contains("short_version=\"15."), "{lines:?}");
}

#[tokio::test]
async fn counters_move_after_work() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    let before = scrape_until(&nexusd, "pg_up 1", |s| s.value("pg_up", &[]) == Some(1.0)).await;
    let datname = [("datname", db.name.as_str())];
    let commits = before
        .value("pg_stat_database_xact_commit", &datname)
        .unwrap();
    let inserted = before
        .value("pg_stat_database_tup_inserted", &datname)
        .unwrap();
    let cpu = before.sum("node_cpu_seconds_total");
    let own_cpu = before.value("process_cpu_seconds_total", &[]).unwrap();
    let skill = [("skill", "add_repository"), ("outcome", "success")];
    let calls = before
        .value("nexusd_skill_requests_total", &skill)
        .unwrap_or(0.0);

    for i in 0..10 {
        nexusd
            .ok(
                "add_repository",
                json!({"repository": format!("acme/metrics-{i}")}),
            )
            .await;
    }
    let (status, _) = nexusd
        .exec("get_deployment_info", json!({"repository": 42}))
        .await;
    assert_eq!(status, 200);

    let after = scrape_until(&nexusd, "counters after 10 writes", |s| {
        s.value("pg_stat_database_tup_inserted", &datname)
            .is_some_and(|v| v >= inserted + 10.0)
    })
    .await;
    assert!(
        after
            .value("pg_stat_database_xact_commit", &datname)
            .unwrap()
            >= commits + 10.0
    );
    assert!(after.sum("node_cpu_seconds_total") > cpu);
    assert!(after.value("process_cpu_seconds_total", &[]).unwrap() > own_cpu);
    assert_eq!(
        after.value("nexusd_skill_requests_total", &skill),
        Some(calls + 10.0)
    );
    assert_eq!(
        after.value("nexusd_skill_request_duration_seconds_count", &skill),
        Some(calls + 10.0)
    );
    assert_eq!(
        after.value(
            "nexusd_skill_requests_total",
            &[("skill", "get_deployment_info"), ("outcome", "failure")]
        ),
        Some(1.0),
        "a rejected input counts as a failure"
    );
    // Cumulative buckets end with +Inf == count.
    let inf = after.value(
        "nexusd_skill_request_duration_seconds_bucket",
        &[
            ("skill", "add_repository"),
            ("outcome", "success"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(inf, Some(calls + 10.0));
}

/// A statement that runs both at top level and nested in a function (so pg_stat_statements
/// holds it twice, `toplevel` true and false), slow enough to be in any top 5.
async fn nested_and_toplevel(pool: &sqlx::PgPool) -> (i64, f64) {
    pool.execute(
        "CREATE FUNCTION nested_sleep() RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.2); END $$",
    )
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET pg_stat_statements.track = 'all'")
        .await
        .unwrap();
    conn.execute("SELECT pg_sleep(0.2)").await.unwrap();
    conn.execute("SELECT nested_sleep()").await.unwrap();
    conn.execute("SELECT pg_sleep(0.2)").await.unwrap();
    let rows: Vec<(i64, bool, i64)> = sqlx::query_as(
        "SELECT queryid, toplevel, calls FROM pg_stat_statements \
          WHERE query = 'SELECT pg_sleep($1)' AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "setup: one queryid at two levels: {rows:?}");
    assert_eq!(rows[0].0, rows[1].0);
    (rows[0].0, rows.iter().map(|r| r.2 as f64).sum())
}

#[tokio::test]
async fn pg_stat_statements_top_n_summed_over_toplevel_without_nexusds_own_queries() {
    // An own cluster: the top N is cluster-wide, other tests' statements would crowd it.
    let cluster = TestCluster::start().await;
    let db = cluster.create_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_METRICS_STATEMENTS_LIMIT", "5"),
            ("NEXUSD_METRICS_STATEMENTS_QUERY_TEXT", "true"),
        ],
    )
    .await;
    let pool = db.pool().await;
    for i in 0..30 {
        pool.execute(format!("SELECT {i} AS distinct_statement_{i}").as_str())
            .await
            .unwrap();
    }
    let (queryid, calls) = nested_and_toplevel(&pool).await;
    let id = queryid.to_string();

    let s = scrape_until(&nexusd, "the nested statement in the top 5", |s| {
        s.value("pg_stat_statements_calls_total", &[("queryid", &id)])
            .is_some()
    })
    .await;
    for family in [
        "pg_stat_statements_calls_total",
        "pg_stat_statements_seconds_total",
        "pg_stat_statements_rows_total",
        "pg_stat_statements_block_read_seconds_total",
        "pg_stat_statements_block_write_seconds_total",
    ] {
        let n = s.all(family).len();
        assert!((1..=5).contains(&n), "{family}: {n} series, limit 5");
    }
    assert_well_formed(&s);
    assert!(promtool_problems(&s.text).is_empty());
    // Summed over toplevel: one series holding both rows' calls.
    let labels = [
        ("queryid", id.as_str()),
        ("datname", db.name.as_str()),
        ("user", "postgres"),
    ];
    assert_eq!(
        s.value("pg_stat_statements_calls_total", &labels),
        Some(calls)
    );
    assert!(
        s.value("pg_stat_statements_seconds_total", &labels)
            .unwrap()
            >= 0.55
    );
    // The opt-in text metric: once per queryid, cut to 120 characters.
    assert_eq!(
        s.all("pg_stat_statements_query_id")
            .iter()
            .find(|x| x.labels["queryid"] == id)
            .map(|x| x.labels["query"].as_str()),
        Some("SELECT pg_sleep($1)")
    );
    for sample in s.all("pg_stat_statements_query_id") {
        assert!(sample.labels["query"].chars().count() <= 120);
    }

    // Many scrapes later, none of the monitoring session's queries is in pg_stat_statements.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        scrape(&nexusd).await;
    }
    let own: Vec<(String,)> = sqlx::query_as(
        "SELECT query FROM pg_stat_statements \
          WHERE query LIKE '%FROM pg_stat_database WHERE datname IS NOT NULL%' \
             OR query LIKE '%pg_stat_statements(false)%' \
             OR query LIKE '%FROM pg_stat_user_tables%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        own.is_empty(),
        "nexusd's monitoring queries were tracked: {own:?}"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_pg_monitor_role_scrapes_everything_like_on_the_vm() {
    // cloud-init's setup: an app role (not a superuser) with pg_monitor and SET on
    // pg_stat_statements.track; extensions created over the bootstrap URL.
    let db = shared_db().await;
    let role = db
        .app_role(
            "GRANT pg_monitor TO {role}; \
             GRANT SET ON PARAMETER pg_stat_statements.track TO {role}",
        )
        .await;
    let admin = db.pool().await;
    let app_url = db.url().replacen("postgres@", &format!("{role}@"), 1);
    let nexusd = Nexusd::ready(&app_url, &[("NEXUSD_BOOTSTRAP_DATABASE_URL", &db.url())]).await;
    let s = scrape_until(&nexusd, "pg_up 1", |s| s.value("pg_up", &[]) == Some(1.0)).await;
    let failed: Vec<_> = s
        .all("pg_scrape_collector_success")
        .into_iter()
        .filter(|x| x.value != 1.0)
        .map(|x| x.labels["collector"].clone())
        .collect();
    assert!(
        failed.is_empty(),
        "collectors failed for a pg_monitor role: {failed:?}\n{}",
        nexusd.log_text()
    );
    assert_eq!(s.value("pg_exporter_last_scrape_error", &[]), Some(0.0));
    assert!(s.value("pg_wal_segments", &[]).unwrap() >= 1.0);
    assert!(!s.all("pg_stat_statements_calls_total").is_empty());

    let tracked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_statements \
          WHERE userid = $1::regrole::oid AND query LIKE '%pg_stat_statements(false)%'",
    )
    .bind(&role)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(tracked, 0, "the role's monitoring queries were tracked");
    drop(nexusd);
    admin.close().await;
}

#[tokio::test]
async fn a_stopped_database_gives_pg_up_0_and_everything_else() {
    let mut cluster = TestCluster::start().await;
    let db = cluster.create_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    scrape_until(&nexusd, "pg_up 1", |s| s.value("pg_up", &[]) == Some(1.0)).await;

    cluster.stop().await;
    let down = scrape_until(&nexusd, "pg_up 0", |s| s.value("pg_up", &[]) == Some(0.0)).await;
    assert_eq!(down.value("pg_exporter_last_scrape_error", &[]), Some(1.0));
    assert!(down.all("pg_stat_database_xact_commit").is_empty());
    assert!(!down.all("node_cpu_seconds_total").is_empty());
    assert!(!down.all("nexusd_build_info").is_empty());
    assert!(!down.all("process_resident_memory_bytes").is_empty());
    assert!(promtool_problems(&down.text).is_empty());
    assert_well_formed(&down);

    cluster.restart().await;
    let up = scrape_until(&nexusd, "pg_up 1 again", |s| {
        s.value("pg_up", &[]) == Some(1.0)
    })
    .await;
    assert!(!up.all("pg_stat_database_xact_commit").is_empty());
}

#[tokio::test]
async fn concurrent_scrapes_share_one_collection() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    scrape_until(&nexusd, "pg_up 1", |s| s.value("pg_up", &[]) == Some(1.0)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let scrapes: Vec<Scrape> =
        futures_util::future::join_all((0..8).map(|_| scrape(&nexusd))).await;
    let collections: HashSet<u64> = scrapes
        .iter()
        .map(|s| s.value("pg_exporter_scrapes_total", &[]).unwrap() as u64)
        .collect();
    assert!(
        collections.len() <= 2,
        "8 concurrent scrapes ran {} collections",
        collections.len()
    );
}

#[tokio::test]
async fn scrapes_are_gzipped_when_asked() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    let response = http()
        .get(format!("{}/metrics", nexusd.metrics))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let body = response.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
        .expect("valid gzip");
    assert!(text.contains("\nnexusd_build_info{"), "{text}");
    let (status, _) = nexusd.get("/metrics").await.unwrap();
    assert_eq!(status, 404, "metrics are not on the API listener");
}

#[tokio::test]
async fn backup_metrics_follow_the_scheduler() {
    let db = shared_db().await;
    let store = temp_root("nexusd-metrics-backups-");
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_BACKUP_DIR", store.to_str().unwrap()),
            ("NEXUSD_BACKUP_SCHEDULE", "*/2 * * * * *"),
        ],
    )
    .await;
    let s = scrape_until(&nexusd, "a scheduled backup", |s| {
        s.value("nexusd_backup_last_success_timestamp_seconds", &[])
            .is_some_and(|t| t > 0.0)
    })
    .await;
    let now = chrono::Utc::now().timestamp() as f64;
    let last = s
        .value("nexusd_backup_last_success_timestamp_seconds", &[])
        .unwrap();
    assert!((now - last).abs() < 120.0, "last success {last}, now {now}");
    assert!(s.value("nexusd_backup_last_size_bytes", &[]).unwrap() > 0.0);
    assert!(s.value("nexusd_backup_last_duration_seconds", &[]).unwrap() > 0.0);
    assert_eq!(s.value("nexusd_backup_failures_total", &[]), Some(0.0));
    assert_eq!(s.value("nexusd_backup_available", &[]), Some(1.0));
    assert!(
        s.value("nexusd_backup_next_run_timestamp_seconds", &[])
            .unwrap()
            >= now - 2.0
    );
}

/// The first value of an instant query, when there is one.
async fn prometheus_query(prometheus: &Prometheus, query: &str) -> Option<f64> {
    let series = prometheus.query(query).await.ok()?;
    series.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_nexusd() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    let target = nexusd.metrics.trim_start_matches("http://");
    let prometheus = Prometheus::start(&[("nexusd", target)]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (None, None, None);
    while Instant::now() < deadline {
        last = (
            prometheus_query(&prometheus, "up{job=\"nexusd\"}").await,
            prometheus_query(&prometheus, "pg_up{job=\"nexusd\"}").await,
            prometheus_query(&prometheus, "count(node_cpu_seconds_total{job=\"nexusd\"})").await,
        );
        if last.0 == Some(1.0) && last.1 == Some(1.0) && last.2.is_some_and(|n| n > 0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "Prometheus did not record up == 1 and pg_up == 1 for nexusd: {last:?}\n--- prometheus log ---\n{}",
        prometheus.log_text()
    );
}
