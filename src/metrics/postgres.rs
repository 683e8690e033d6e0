//! PostgreSQL metrics under postgres_exporter v0.20's names, labels and types
//! (metrics-reference §1.4, §7), from one dedicated monitoring connection.
//!
//! The connection has `statement_timeout` and `lock_timeout` set (a table locked by a
//! `VACUUM FULL` cannot hold a scrape), is used by one scrape at a time, and is dropped and
//! reopened after a connection error or a scrape that ran out of time. When PostgreSQL cannot be
//! reached the scrape still answers: `pg_up 0` plus the exporter's self metrics. Each collector
//! reports `pg_scrape_collector_{duration_seconds,success}{collector}`. Per-table statistics
//! cover the knowledge-base tables only, so tables users add cannot multiply the series.
//!
//! When the role may (a superuser, or one granted `SET` on the parameter), the session sets
//! `pg_stat_statements.track = none`, so the exporter's own queries never enter
//! pg_stat_statements — they were the top entries of postgres_exporter users (#799).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};

use super::config::{MetricsConfig, STATEMENT_TEXT_LENGTH};
use super::exposition::{Exposition, Kind};
use crate::bootstrap::KNOWLEDGE_BASE_TABLES;
use crate::db::is_connection_error;

/// Per statement; a scrape as a whole is bounded by the caller's budget.
const STATEMENT_TIMEOUT_MS: u64 = 2000;
const LOCK_TIMEOUT_MS: u64 = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The monitoring session and what was learnt when it was opened.
struct Session {
    conn: PgConnection,
    /// `server_version_num`.
    version: i32,
}

pub struct PgCollector {
    statements_limit: u32,
    statements_query_text: bool,
    session: tokio::sync::Mutex<Option<Session>>,
    /// queryid → text cut to 120 characters, for the opt-in `pg_stat_statements_query_id`.
    texts: Mutex<HashMap<i64, String>>,
    scrapes: AtomicU64,
    /// Whether the "own queries are tracked" notice was logged already.
    told_tracked: AtomicBool,
    /// Collectors whose last run failed (their errors are logged when they start failing).
    failing: Mutex<HashMap<&'static str, String>>,
}

/// What a scrape of PostgreSQL left behind, for the self metrics.
struct Outcome {
    up: bool,
    error: bool,
}

impl PgCollector {
    pub fn new(config: &MetricsConfig) -> Self {
        PgCollector {
            statements_limit: config.statements_limit,
            statements_query_text: config.statements_query_text,
            session: tokio::sync::Mutex::new(None),
            texts: Mutex::new(HashMap::new()),
            scrapes: AtomicU64::new(0),
            told_tracked: AtomicBool::new(false),
            failing: Mutex::new(HashMap::new()),
        }
    }

    /// Collects into `out` within `budget`. Never fails: what could not be read is reported
    /// through `pg_up`, `pg_exporter_last_scrape_error` and the per-collector success gauges.
    pub async fn collect(
        &self,
        options: &PgConnectOptions,
        out: &mut Exposition,
        budget: Duration,
    ) {
        let started = Instant::now();
        let scrapes = self.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slot = self.session.lock().await;
        let result = tokio::time::timeout(budget, self.collect_with(options, &mut slot, out)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) => {
                // The scrape ran out of time mid-query: the connection's state is unknown, so
                // it is closed (dropped) and reopened next time.
                *slot = None;
                tracing::warn!(
                    ?budget,
                    "PostgreSQL metrics scrape ran out of time; partial results served"
                );
                Outcome {
                    up: false,
                    error: true,
                }
            }
        };
        drop(slot);
        write_up(out, outcome.up);
        out.single(
            "pg_exporter_last_scrape_duration_seconds",
            "Duration of the last scrape of metrics from PostgreSQL.",
            Kind::Gauge,
            started.elapsed().as_secs_f64(),
        );
        out.single(
            "pg_exporter_last_scrape_error",
            "Whether the last scrape of metrics from PostgreSQL resulted in an error (1 for error, 0 for success).",
            Kind::Gauge,
            f64::from(u8::from(outcome.error)),
        );
        out.single(
            "pg_exporter_scrapes_total",
            "Total number of times PostgreSQL was scraped for metrics.",
            Kind::Counter,
            scrapes as f64,
        );
    }

    async fn collect_with(
        &self,
        options: &PgConnectOptions,
        slot: &mut Option<Session>,
        out: &mut Exposition,
    ) -> Outcome {
        if slot.is_none() {
            match self.connect(options).await {
                Ok(session) => *slot = Some(session),
                Err(e) => {
                    self.note_failure("connection", &e);
                    return Outcome {
                        up: false,
                        error: true,
                    };
                }
            }
        }
        let Some(session) = slot.as_mut() else {
            return Outcome {
                up: false,
                error: true,
            };
        };
        self.note_success("connection");

        let mut error = false;
        let mut lost = false;
        for (name, optional) in COLLECTORS {
            let started = Instant::now();
            let result = self.run(name, session, out).await;
            let success = match &result {
                Ok(()) => {
                    self.note_success(name);
                    true
                }
                Err(e) => {
                    lost = is_connection_error(e);
                    // An extension that is not installed is a configuration, not an error.
                    if !(optional && is_missing_object(e)) {
                        error = true;
                    }
                    self.note_failure(name, e);
                    false
                }
            };
            out.gauge(
                "pg_scrape_collector_duration_seconds",
                "postgres_exporter: Duration of a collector scrape.",
            )
            .sample(&[("collector", name)], started.elapsed().as_secs_f64());
            out.gauge(
                "pg_scrape_collector_success",
                "postgres_exporter: Whether a collector succeeded.",
            )
            .sample(&[("collector", name)], f64::from(u8::from(success)));
            if lost {
                break;
            }
        }
        if lost {
            *slot = None;
        }
        Outcome { up: !lost, error }
    }

    async fn connect(&self, options: &PgConnectOptions) -> Result<Session, sqlx::Error> {
        let options = options.clone().application_name("nexusd-metrics").options([
            ("statement_timeout", STATEMENT_TIMEOUT_MS),
            ("lock_timeout", LOCK_TIMEOUT_MS),
        ]);
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                ))
            })??;
        let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
            .fetch_one(&mut conn)
            .await?;
        let untracked = sqlx::query("SET pg_stat_statements.track = 'none'")
            .execute(&mut conn)
            .await;
        if let Err(e) = untracked
            && !self.told_tracked.swap(true, Ordering::Relaxed)
        {
            tracing::info!(
                error = %e,
                "the metrics session cannot hide its own queries from pg_stat_statements \
                 (needs a superuser or GRANT SET ON PARAMETER pg_stat_statements.track); \
                 they will appear there"
            );
        }
        Ok(Session { conn, version })
    }

    fn note_failure(&self, collector: &'static str, error: &sqlx::Error) {
        let message = error.to_string();
        let Ok(mut failing) = self.failing.lock() else {
            return;
        };
        if failing.get(collector) != Some(&message) {
            tracing::warn!(collector, error = %message, "PostgreSQL metrics collector failed");
            failing.insert(collector, message);
        }
    }

    fn note_success(&self, collector: &'static str) {
        if let Ok(mut failing) = self.failing.lock()
            && failing.remove(collector).is_some()
        {
            tracing::info!(collector, "PostgreSQL metrics collector works again");
        }
    }

    async fn run(
        &self,
        collector: &str,
        session: &mut Session,
        out: &mut Exposition,
    ) -> Result<(), sqlx::Error> {
        let version = session.version;
        let conn = &mut session.conn;
        match collector {
            "static" => static_info(conn, out).await,
            "settings" => settings(conn, out).await,
            "database" => database(conn, out).await,
            "stat_database" => stat_database(conn, version, out).await,
            "stat_activity" => stat_activity(conn, out).await,
            "locks" => locks(conn, out).await,
            "stat_bgwriter" => stat_bgwriter(conn, version, out).await,
            "stat_archiver" => stat_archiver(conn, out).await,
            "wal" => wal(conn, out).await,
            "replication" => replication(conn, out).await,
            "replication_slot" => replication_slots(conn, out).await,
            "stat_replication" => stat_replication(conn, out).await,
            "stat_user_tables" => stat_user_tables(conn, out).await,
            "statio_user_tables" => statio_user_tables(conn, out).await,
            "vector_index" => vector_indexes(conn, out).await,
            "stat_statements" => self.stat_statements(conn, version, out).await,
            other => {
                tracing::error!(collector = other, "unknown PostgreSQL collector");
                Ok(())
            }
        }
    }

    async fn stat_statements(
        &self,
        conn: &mut PgConnection,
        version: i32,
        out: &mut Exposition,
    ) -> Result<(), sqlx::Error> {
        if self.statements_limit == 0 {
            return Ok(());
        }
        // PG17 renamed the block timings.
        let (read, write) = if version >= 170000 {
            ("shared_blk_read_time", "shared_blk_write_time")
        } else {
            ("blk_read_time", "blk_write_time")
        };
        // Summed over `toplevel` (and only then limited): one row per label set, always. The
        // sums are float8 (sum(bigint) is numeric, several times slower over thousands of
        // entries), and names are looked up for the top rows only.
        let sql = format!(
            "WITH top AS ( \
                SELECT userid, dbid, queryid, sum(calls::float8) AS calls, \
                       sum(total_exec_time) AS exec_ms, sum(rows::float8) AS rows, \
                       sum({read}) AS read_ms, sum({write}) AS write_ms \
                  FROM pg_stat_statements(false) \
                 WHERE queryid IS NOT NULL AND dbid IN (SELECT oid FROM pg_database) \
                 GROUP BY userid, dbid, queryid \
                 ORDER BY exec_ms DESC \
                 LIMIT $1) \
             SELECT pg_get_userbyid(t.userid) AS usename, d.datname::text, t.queryid, t.calls, \
                    t.exec_ms / 1000, t.rows, t.read_ms / 1000, t.write_ms / 1000 \
               FROM top t JOIN pg_database d ON d.oid = t.dbid \
              ORDER BY t.exec_ms DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(self.statements_limit))
            .fetch_all(&mut *conn)
            .await?;
        let columns = [
            ("pg_stat_statements_calls_total", "Number of times executed"),
            (
                "pg_stat_statements_seconds_total",
                "Total time spent in the statement, in seconds",
            ),
            (
                "pg_stat_statements_rows_total",
                "Total number of rows retrieved or affected by the statement",
            ),
            (
                "pg_stat_statements_block_read_seconds_total",
                "Total time the statement spent reading blocks, in seconds",
            ),
            (
                "pg_stat_statements_block_write_seconds_total",
                "Total time the statement spent writing blocks, in seconds",
            ),
        ];
        let mut ids = Vec::with_capacity(rows.len());
        let mut keyed = Vec::with_capacity(rows.len());
        for row in &rows {
            let user: Option<String> = row.try_get(0)?;
            let datname: Option<String> = row.try_get(1)?;
            let queryid: i64 = row.try_get(2)?;
            ids.push(queryid);
            keyed.push((
                user.unwrap_or_else(|| "unknown".into()),
                datname.unwrap_or_else(|| "unknown".into()),
                queryid.to_string(),
            ));
        }
        for (i, (name, help)) in columns.into_iter().enumerate() {
            let family = out.counter(name, help);
            for (row, (user, datname, queryid)) in rows.iter().zip(&keyed) {
                if let Some(value) = row.try_get::<Option<f64>, _>(3 + i)? {
                    family.sample(
                        &[("user", user), ("datname", datname), ("queryid", queryid)],
                        value,
                    );
                }
            }
        }

        // pg_stat_statements_info came with PostgreSQL 14.
        let info: Option<(Option<f64>, Option<f64>)> = if version >= 140000 {
            sqlx::query_as(
                "SELECT dealloc::float8, extract(epoch FROM stats_reset)::float8 FROM pg_stat_statements_info",
            )
            .fetch_optional(&mut *conn)
            .await?
        } else {
            None
        };
        if let Some((dealloc, reset)) = info {
            if let Some(dealloc) = dealloc {
                out.single(
                    "pg_stat_statements_dealloc_total",
                    "nexusd: times pg_stat_statements evicted its least-used entries because pg_stat_statements.max was reached.",
                    Kind::Counter,
                    dealloc,
                );
            }
            if let Some(reset) = reset {
                out.single(
                    "pg_stat_statements_stats_reset_timestamp_seconds",
                    "nexusd: when all pg_stat_statements statistics were last reset (Unix time).",
                    Kind::Gauge,
                    reset,
                );
            }
        }

        if self.statements_query_text {
            self.statement_texts(conn, &ids, out).await?;
        }
        Ok(())
    }

    /// `pg_stat_statements_query_id{queryid,query}`: texts are read (which reads the whole
    /// query-text file) only for queryids not seen before, and forgotten once out of the top N.
    async fn statement_texts(
        &self,
        conn: &mut PgConnection,
        ids: &[i64],
        out: &mut Exposition,
    ) -> Result<(), sqlx::Error> {
        let missing: Vec<i64> = match self.texts.lock() {
            Ok(texts) => ids
                .iter()
                .filter(|id| !texts.contains_key(id))
                .copied()
                .collect(),
            Err(_) => return Ok(()),
        };
        let fetched: Vec<(i64, Option<String>)> = if missing.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT DISTINCT ON (queryid) queryid, left(query, $2) \
                   FROM pg_stat_statements(true) WHERE queryid = ANY($1)",
            )
            .bind(&missing)
            .bind(STATEMENT_TEXT_LENGTH as i32)
            .fetch_all(&mut *conn)
            .await?
        };
        let Ok(mut texts) = self.texts.lock() else {
            return Ok(());
        };
        for (id, text) in fetched {
            texts.insert(id, text.unwrap_or_default());
        }
        texts.retain(|id, _| ids.contains(id));
        let family = out.counter(
            "pg_stat_statements_query_id",
            "SQL Query to queryid mapping",
        );
        for id in ids {
            if let Some(text) = texts.get(id) {
                family.sample(&[("queryid", &id.to_string()), ("query", text)], 1.0);
            }
        }
        Ok(())
    }
}

/// Every collector in scrape order, and whether it depends on an extension that may be missing.
const COLLECTORS: [(&str, bool); 16] = [
    ("static", false),
    ("settings", false),
    ("database", false),
    ("stat_database", false),
    ("stat_activity", false),
    ("locks", false),
    ("stat_bgwriter", false),
    ("stat_archiver", false),
    ("wal", false),
    ("replication", false),
    ("replication_slot", false),
    ("stat_replication", false),
    ("stat_user_tables", false),
    ("statio_user_tables", false),
    ("vector_index", false),
    ("stat_statements", true),
];

/// pg_stat_statements not installed (42P01/42883) or not preloaded (55000).
fn is_missing_object(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("42P01" | "42883" | "55000")))
}

/// A metric computed from one value column of a query.
struct Column {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn col(name: &'static str, kind: Kind, help: &'static str) -> Column {
    Column { name, kind, help }
}

/// Writes `rows` whose first `labels.len()` columns are the label values (text) and the rest
/// the values of `columns` (float8; NULL leaves the sample out).
/// `pg_up`: whether PostgreSQL answered the last scrape.
pub fn write_up(out: &mut Exposition, up: bool) {
    out.single(
        "pg_up",
        "Whether the last scrape of metrics from PostgreSQL was able to connect to the server (1 for yes, 0 for no).",
        Kind::Gauge,
        f64::from(u8::from(up)),
    );
}

fn emit(
    out: &mut Exposition,
    prefix: &str,
    labels: &[&str],
    columns: &[Column],
    rows: &[PgRow],
) -> Result<(), sqlx::Error> {
    let mut values: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    for row in rows {
        let mut v = Vec::with_capacity(labels.len());
        for i in 0..labels.len() {
            let value: Option<String> = row.try_get(i)?;
            v.push(value.unwrap_or_default());
        }
        values.push(v);
    }
    // Each row's label pairs, built once for all its columns.
    let pairs: Vec<Vec<(&str, &str)>> = values
        .iter()
        .map(|v| {
            labels
                .iter()
                .copied()
                .zip(v.iter().map(String::as_str))
                .collect()
        })
        .collect();
    for (c, column) in columns.iter().enumerate() {
        let family = out.family(
            &format!("{prefix}_{}", column.name),
            column.help,
            column.kind,
        );
        for (row, pairs) in rows.iter().zip(&pairs) {
            let Some(value) = row.try_get::<Option<f64>, _>(labels.len() + c)? else {
                continue;
            };
            family.sample(pairs, value);
        }
    }
    Ok(())
}

async fn static_info(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let (version, short, started): (String, String, Option<f64>) = sqlx::query_as(
        "SELECT version(), current_setting('server_version'), \
                extract(epoch FROM pg_postmaster_start_time())::float8",
    )
    .fetch_one(&mut *conn)
    .await?;
    out.untyped("pg_static", "Version string as reported by postgres")
        .sample(
            &[
                ("short_version", &short_version(&short)),
                ("version", &version),
            ],
            1.0,
        );
    if let Some(started) = started {
        out.single(
            "pg_postmaster_start_time_seconds",
            "Time at which postmaster started",
            Kind::Gauge,
            started,
        );
    }
    Ok(())
}

/// `15.20 (Debian 15.20-1.pgdg120+1)` → `15.20.0`, as postgres_exporter's semver parse gives.
fn short_version(server_version: &str) -> String {
    let numeric: String = server_version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts: Vec<&str> = numeric.split('.').filter(|p| !p.is_empty()).collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    parts[..3].join(".")
}

async fn settings(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT name, setting, COALESCE(unit, ''), short_desc, vartype FROM pg_settings \
          WHERE vartype IN ('bool', 'integer', 'real') AND name != 'sync_commit_cancel_wait'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (name, setting, unit, description, vartype) in rows {
        let Some((value, suffix)) = normalise_setting(&setting, &unit, &vartype) else {
            continue;
        };
        // A GUC's dot (pg_stat_statements.max) becomes `_` in Exposition::family.
        let name = format!("pg_settings_{name}{suffix}");
        let help = match suffix {
            "_seconds" => format!("Server Parameter: {description} [Units converted to seconds.]"),
            "_bytes" => format!("Server Parameter: {description} [Units converted to bytes.]"),
            _ => format!("Server Parameter: {description}"),
        };
        out.gauge(&name, &help).sample(&[], value);
    }
    Ok(())
}

/// postgres_exporter's unit rules: times to seconds, sizes to bytes, -1 left as it is, booleans
/// 1/0. Returns the value and the name suffix, or `None` for values it would not export.
fn normalise_setting(setting: &str, unit: &str, vartype: &str) -> Option<(f64, &'static str)> {
    if vartype == "bool" {
        return match setting {
            "on" => Some((1.0, "")),
            "off" => Some((0.0, "")),
            _ => None,
        };
    }
    let value: f64 = setting.parse().ok()?;
    let suffix = match unit {
        "" => return Some((value, "")),
        "ms" | "s" | "min" | "h" | "d" => "_seconds",
        "B" | "kB" | "MB" | "GB" | "TB" | "1kB" | "2kB" | "4kB" | "8kB" | "16kB" | "32kB"
        | "64kB" | "16MB" | "32MB" | "64MB" => "_bytes",
        _ => return None,
    };
    if value == -1.0 {
        return Some((value, suffix));
    }
    let factor = match unit {
        "ms" => 0.001,
        "s" | "B" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "kB" | "1kB" => 1024.0,
        "2kB" => 2048.0,
        "4kB" => 4096.0,
        "8kB" => 8192.0,
        "16kB" => 16384.0,
        "32kB" => 32768.0,
        "64kB" => 65536.0,
        "MB" => 1048576.0,
        "16MB" => 16.0 * 1048576.0,
        "32MB" => 32.0 * 1048576.0,
        "64MB" => 64.0 * 1048576.0,
        "GB" => 1073741824.0,
        "TB" => 1099511627776.0,
        _ => return None,
    };
    Some((value * factor, suffix))
}

async fn database(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT datname::text, datconnlimit::float8, \
                CASE WHEN has_database_privilege(oid, 'CONNECT') \
                     THEN pg_database_size(oid)::float8 END \
           FROM pg_database",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_database",
        &["datname"],
        &[
            col(
                "connection_limit",
                Kind::Gauge,
                "Connection limit set for the database",
            ),
            col("size_bytes", Kind::Gauge, "Disk space used by the database"),
        ],
        &rows,
    )
}

async fn stat_database(
    conn: &mut PgConnection,
    version: i32,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    // active_time came with PostgreSQL 14; before, the family is left out (NULL is skipped).
    let active = if version >= 140000 {
        "(active_time / 1000)::float8"
    } else {
        "NULL::float8"
    };
    let rows = sqlx::query(&format!(
        "SELECT datid::text, datname::text, numbackends::float8, xact_commit::float8, \
                xact_rollback::float8, blks_read::float8, blks_hit::float8, \
                tup_returned::float8, tup_fetched::float8, tup_inserted::float8, \
                tup_updated::float8, tup_deleted::float8, conflicts::float8, \
                temp_files::float8, temp_bytes::float8, deadlocks::float8, \
                blk_read_time::float8, blk_write_time::float8, \
                COALESCE(extract(epoch FROM stats_reset), 0)::float8, {active} \
           FROM pg_stat_database WHERE datname IS NOT NULL"
    ))
    .fetch_all(&mut *conn)
    .await?;
    use Kind::{Counter, Gauge};
    emit(
        out,
        "pg_stat_database",
        &["datid", "datname"],
        &[
            col(
                "numbackends",
                Gauge,
                "Number of backends currently connected to this database. This is the only column in this view that returns a value reflecting current state; all other columns return the accumulated values since the last reset.",
            ),
            col(
                "xact_commit",
                Counter,
                "Number of transactions in this database that have been committed",
            ),
            col(
                "xact_rollback",
                Counter,
                "Number of transactions in this database that have been rolled back",
            ),
            col(
                "blks_read",
                Counter,
                "Number of disk blocks read in this database",
            ),
            col(
                "blks_hit",
                Counter,
                "Number of times disk blocks were found already in the buffer cache, so that a read was not necessary (this only includes hits in the PostgreSQL buffer cache, not the operating system's file system cache)",
            ),
            col(
                "tup_returned",
                Counter,
                "Number of rows returned by queries in this database",
            ),
            col(
                "tup_fetched",
                Counter,
                "Number of rows fetched by queries in this database",
            ),
            col(
                "tup_inserted",
                Counter,
                "Number of rows inserted by queries in this database",
            ),
            col(
                "tup_updated",
                Counter,
                "Number of rows updated by queries in this database",
            ),
            col(
                "tup_deleted",
                Counter,
                "Number of rows deleted by queries in this database",
            ),
            col(
                "conflicts",
                Counter,
                "Number of queries canceled due to conflicts with recovery in this database. (Conflicts occur only on standby servers; see pg_stat_database_conflicts for details.)",
            ),
            col(
                "temp_files",
                Counter,
                "Number of temporary files created by queries in this database. All temporary files are counted, regardless of why the temporary file was created (e.g., sorting or hashing), and regardless of the log_temp_files setting.",
            ),
            col(
                "temp_bytes",
                Counter,
                "Total amount of data written to temporary files by queries in this database. All temporary files are counted, regardless of why the temporary file was created, and regardless of the log_temp_files setting.",
            ),
            col(
                "deadlocks",
                Counter,
                "Number of deadlocks detected in this database",
            ),
            col(
                "blk_read_time",
                Counter,
                "Time spent reading data file blocks by backends in this database, in milliseconds",
            ),
            col(
                "blk_write_time",
                Counter,
                "Time spent writing data file blocks by backends in this database, in milliseconds",
            ),
            col(
                "stats_reset",
                Counter,
                "Time at which these statistics were last reset",
            ),
            col(
                "active_time_seconds_total",
                Counter,
                "Time spent executing SQL statements in this database, in seconds",
            ),
        ],
        &rows,
    )
}

async fn stat_activity(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    // Every database × state, zero when empty; the monitoring session itself left out.
    let rows = sqlx::query(
        "SELECT d.datname::text, s.state, COALESCE(a.count, 0)::float8, \
                COALESCE(a.max_tx_duration, 0)::float8 \
           FROM (VALUES ('active'), ('idle'), ('idle in transaction'), \
                        ('idle in transaction (aborted)'), ('fastpath function call'), \
                        ('disabled')) AS s(state) \
          CROSS JOIN pg_database d \
           LEFT JOIN (SELECT datname, state, count(*) AS count, \
                             max(extract(epoch FROM now() - xact_start)) AS max_tx_duration \
                        FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                       GROUP BY datname, state) a \
             ON a.state = s.state AND a.datname = d.datname",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_activity",
        &["datname", "state"],
        &[
            col("count", Kind::Gauge, "number of connections in this state"),
            col(
                "max_tx_duration",
                Kind::Gauge,
                "max duration in seconds any active transaction has been running",
            ),
        ],
        &rows,
    )
}

async fn locks(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.datname::text, m.mode, COALESCE(l.count, 0)::float8 \
           FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), \
                        ('shareupdateexclusivelock'), ('sharelock'), \
                        ('sharerowexclusivelock'), ('exclusivelock'), \
                        ('accessexclusivelock'), ('sireadlock')) AS m(mode) \
          CROSS JOIN pg_database d \
           LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count FROM pg_locks \
                       WHERE database IS NOT NULL GROUP BY database, lower(mode)) l \
             ON l.mode = m.mode AND l.database = d.oid",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_locks",
        &["datname", "mode"],
        &[col("count", Kind::Gauge, "Number of locks")],
        &rows,
    )
}

async fn stat_bgwriter(
    conn: &mut PgConnection,
    version: i32,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    // PG17 moved the checkpoint columns to pg_stat_checkpointer.
    let sql = if version >= 170000 {
        "SELECT c.num_timed::float8, c.num_requested::float8, c.write_time::float8, \
                c.sync_time::float8, c.buffers_written::float8, b.buffers_clean::float8, \
                b.maxwritten_clean::float8, NULL::float8, NULL::float8, \
                b.buffers_alloc::float8, extract(epoch FROM b.stats_reset)::float8 \
           FROM pg_stat_bgwriter b, pg_stat_checkpointer c"
    } else {
        "SELECT checkpoints_timed::float8, checkpoints_req::float8, \
                checkpoint_write_time::float8, checkpoint_sync_time::float8, \
                buffers_checkpoint::float8, buffers_clean::float8, maxwritten_clean::float8, \
                buffers_backend::float8, buffers_backend_fsync::float8, buffers_alloc::float8, \
                extract(epoch FROM stats_reset)::float8 \
           FROM pg_stat_bgwriter"
    };
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
    use Kind::Counter;
    emit(
        out,
        "pg_stat_bgwriter",
        &[],
        &[
            col(
                "checkpoints_timed_total",
                Counter,
                "Number of scheduled checkpoints that have been performed",
            ),
            col(
                "checkpoints_req_total",
                Counter,
                "Number of requested checkpoints that have been performed",
            ),
            col(
                "checkpoint_write_time_total",
                Counter,
                "Total amount of time that has been spent in the portion of checkpoint processing where files are written to disk, in milliseconds",
            ),
            col(
                "checkpoint_sync_time_total",
                Counter,
                "Total amount of time that has been spent in the portion of checkpoint processing where files are synchronized to disk, in milliseconds",
            ),
            col(
                "buffers_checkpoint_total",
                Counter,
                "Number of buffers written during checkpoints",
            ),
            col(
                "buffers_clean_total",
                Counter,
                "Number of buffers written by the background writer",
            ),
            col(
                "maxwritten_clean_total",
                Counter,
                "Number of times the background writer stopped a cleaning scan because it had written too many buffers",
            ),
            col(
                "buffers_backend_total",
                Counter,
                "Number of buffers written directly by a backend",
            ),
            col(
                "buffers_backend_fsync_total",
                Counter,
                "Number of times a backend had to execute its own fsync call (normally the background writer handles those even when the backend does its own write)",
            ),
            col(
                "buffers_alloc_total",
                Counter,
                "Number of buffers allocated",
            ),
            col(
                "stats_reset_total",
                Counter,
                "Time at which these statistics were last reset",
            ),
        ],
        &rows,
    )
}

async fn stat_archiver(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT archived_count::float8, failed_count::float8, \
                COALESCE(extract(epoch FROM now() - last_archived_time), 'NaN')::float8 \
           FROM pg_stat_archiver",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_archiver",
        &[],
        &[
            col(
                "archived_count",
                Kind::Counter,
                "Number of WAL files that have been successfully archived",
            ),
            col(
                "failed_count",
                Kind::Counter,
                "Number of failed attempts for archiving WAL files",
            ),
            col(
                "last_archive_age",
                Kind::Gauge,
                "Time in seconds since last WAL segment was successfully archived (NaN when none was)",
            ),
        ],
        &rows,
    )
}

async fn wal(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT count(*)::float8, COALESCE(sum(size), 0)::float8 FROM pg_ls_waldir() \
          WHERE name ~ '^[0-9A-F]{24}$'",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_wal",
        &[],
        &[
            col("segments", Kind::Gauge, "Number of WAL segments"),
            col("size_bytes", Kind::Gauge, "Total size of WAL segments"),
        ],
        &rows,
    )
}

async fn replication(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 \
                     WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                     ELSE GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) \
                END::float8, \
                CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END::float8, \
                GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))::float8",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_replication",
        &[],
        &[
            col(
                "lag_seconds",
                Kind::Gauge,
                "Replication lag behind master in seconds",
            ),
            col(
                "is_replica",
                Kind::Gauge,
                "Indicates if the server is a replica",
            ),
            col(
                "last_replay_seconds",
                Kind::Gauge,
                "Age of last replay in seconds",
            ),
        ],
        &rows,
    )
}

async fn replication_slots(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT slot_name::text, slot_type, \
                ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                       ELSE pg_current_wal_lsn() END) - '0/0')::float8, \
                (confirmed_flush_lsn - '0/0')::float8, \
                active::int::float8, safe_wal_size::float8 \
           FROM pg_replication_slots",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_replication_slots",
        &["slot_name", "slot_type"],
        &[
            col("slot_current_wal_lsn", Kind::Gauge, "current wal lsn value"),
            col(
                "slot_confirmed_flush_lsn",
                Kind::Gauge,
                "last lsn confirmed flushed to the replication slot",
            ),
            col(
                "slot_is_active",
                Kind::Gauge,
                "whether the replication slot is active or not",
            ),
            col(
                "safe_wal_size_bytes",
                Kind::Gauge,
                "number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost",
            ),
        ],
        &rows,
    )
}

async fn stat_replication(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.pid::text, r.application_name, COALESCE(host(r.client_addr), ''), \
                COALESCE(r.state, ''), COALESCE(s.slot_name::text, ''), \
                (pg_current_wal_lsn() - '0/0')::float8, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::float8 \
           FROM pg_stat_replication r \
           LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid \
          WHERE NOT pg_is_in_recovery()",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_replication",
        &[
            "pid",
            "application_name",
            "client_addr",
            "state",
            "slot_name",
        ],
        &[
            col(
                "pg_current_wal_lsn_bytes",
                Kind::Gauge,
                "WAL position in bytes",
            ),
            col(
                "pg_wal_lsn_diff",
                Kind::Gauge,
                "Lag in bytes between master and slave",
            ),
        ],
        &rows,
    )
}

async fn stat_user_tables(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT current_database()::text, schemaname::text, relname::text, \
                seq_scan::float8, seq_tup_read::float8, COALESCE(idx_scan, 0)::float8, \
                COALESCE(idx_tup_fetch, 0)::float8, n_tup_ins::float8, n_tup_upd::float8, \
                n_tup_del::float8, n_tup_hot_upd::float8, n_live_tup::float8, \
                n_dead_tup::float8, n_mod_since_analyze::float8, \
                COALESCE(extract(epoch FROM last_vacuum), 0)::float8, \
                COALESCE(extract(epoch FROM last_autovacuum), 0)::float8, \
                COALESCE(extract(epoch FROM last_analyze), 0)::float8, \
                COALESCE(extract(epoch FROM last_autoanalyze), 0)::float8, \
                vacuum_count::float8, autovacuum_count::float8, analyze_count::float8, \
                autoanalyze_count::float8, pg_indexes_size(relid)::float8, \
                pg_table_size(relid)::float8 \
           FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = ANY($1)",
    )
    .bind(KNOWLEDGE_BASE_TABLES)
    .fetch_all(&mut *conn)
    .await?;
    use Kind::{Counter, Gauge};
    emit(
        out,
        "pg_stat_user_tables",
        &["datname", "schemaname", "relname"],
        &[
            col(
                "seq_scan",
                Counter,
                "Number of sequential scans initiated on this table",
            ),
            col(
                "seq_tup_read",
                Counter,
                "Number of live rows fetched by sequential scans",
            ),
            col(
                "idx_scan",
                Counter,
                "Number of index scans initiated on this table",
            ),
            col(
                "idx_tup_fetch",
                Counter,
                "Number of live rows fetched by index scans",
            ),
            col("n_tup_ins", Counter, "Number of rows inserted"),
            col("n_tup_upd", Counter, "Number of rows updated"),
            col("n_tup_del", Counter, "Number of rows deleted"),
            col(
                "n_tup_hot_upd",
                Counter,
                "Number of rows HOT updated (i.e., with no separate index update required)",
            ),
            col("n_live_tup", Gauge, "Estimated number of live rows"),
            col("n_dead_tup", Gauge, "Estimated number of dead rows"),
            col(
                "n_mod_since_analyze",
                Gauge,
                "Estimated number of rows changed since last analyze",
            ),
            col(
                "last_vacuum",
                Gauge,
                "Last time at which this table was manually vacuumed (not counting VACUUM FULL)",
            ),
            col(
                "last_autovacuum",
                Gauge,
                "Last time at which this table was vacuumed by the autovacuum daemon",
            ),
            col(
                "last_analyze",
                Gauge,
                "Last time at which this table was manually analyzed",
            ),
            col(
                "last_autoanalyze",
                Gauge,
                "Last time at which this table was analyzed by the autovacuum daemon",
            ),
            col(
                "vacuum_count",
                Counter,
                "Number of times this table has been manually vacuumed (not counting VACUUM FULL)",
            ),
            col(
                "autovacuum_count",
                Counter,
                "Number of times this table has been vacuumed by the autovacuum daemon",
            ),
            col(
                "analyze_count",
                Counter,
                "Number of times this table has been manually analyzed",
            ),
            col(
                "autoanalyze_count",
                Counter,
                "Number of times this table has been analyzed by the autovacuum daemon",
            ),
            col(
                "index_size_bytes",
                Gauge,
                "Total disk space used by indexes on this table, in bytes",
            ),
            col(
                "table_size_bytes",
                Gauge,
                "Total disk space used by this table, in bytes",
            ),
        ],
        &rows,
    )
}

async fn statio_user_tables(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT current_database()::text, schemaname::text, relname::text, \
                COALESCE(heap_blks_read, 0)::float8, COALESCE(heap_blks_hit, 0)::float8, \
                COALESCE(idx_blks_read, 0)::float8, COALESCE(idx_blks_hit, 0)::float8, \
                COALESCE(toast_blks_read, 0)::float8, COALESCE(toast_blks_hit, 0)::float8, \
                COALESCE(tidx_blks_read, 0)::float8, COALESCE(tidx_blks_hit, 0)::float8 \
           FROM pg_statio_user_tables WHERE schemaname = 'public' AND relname = ANY($1)",
    )
    .bind(KNOWLEDGE_BASE_TABLES)
    .fetch_all(&mut *conn)
    .await?;
    use Kind::Counter;
    emit(
        out,
        "pg_statio_user_tables",
        &["datname", "schemaname", "relname"],
        &[
            col(
                "heap_blocks_read",
                Counter,
                "Number of disk blocks read from this table",
            ),
            col(
                "heap_blocks_hit",
                Counter,
                "Number of buffer hits in this table",
            ),
            col(
                "idx_blocks_read",
                Counter,
                "Number of disk blocks read from all indexes on this table",
            ),
            col(
                "idx_blocks_hit",
                Counter,
                "Number of buffer hits in all indexes on this table",
            ),
            col(
                "toast_blocks_read",
                Counter,
                "Number of disk blocks read from this table's TOAST table (if any)",
            ),
            col(
                "toast_blocks_hit",
                Counter,
                "Number of buffer hits in this table's TOAST table (if any)",
            ),
            col(
                "tidx_blocks_read",
                Counter,
                "Number of disk blocks read from this table's TOAST table indexes (if any)",
            ),
            col(
                "tidx_blocks_hit",
                Counter,
                "Number of buffer hits in this table's TOAST table indexes (if any)",
            ),
        ],
        &rows,
    )
}

/// nexusd's own: the size of each vector index (HNSW, IVFFlat) of the knowledge base, which is
/// what grows with embeddings and must fit in a 1 GB machine's cache.
async fn vector_indexes(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT current_database()::text, n.nspname::text, t.relname::text, i.relname::text, \
                am.amname::text, pg_relation_size(i.oid)::float8 \
           FROM pg_index x \
           JOIN pg_class i ON i.oid = x.indexrelid \
           JOIN pg_class t ON t.oid = x.indrelid \
           JOIN pg_namespace n ON n.oid = i.relnamespace \
           JOIN pg_am am ON am.oid = i.relam \
          WHERE am.amname IN ('hnsw', 'ivfflat')",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "nexusd_pg_vector_index",
        &["datname", "schemaname", "relname", "indexname", "method"],
        &[col(
            "size_bytes",
            Kind::Gauge,
            "Disk space used by a pgvector index (HNSW or IVFFlat), in bytes.",
        )],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_postgres_exporter_units() {
        assert_eq!(normalise_setting("on", "", "bool"), Some((1.0, "")));
        assert_eq!(normalise_setting("off", "", "bool"), Some((0.0, "")));
        assert_eq!(normalise_setting("100", "", "integer"), Some((100.0, "")));
        assert_eq!(
            normalise_setting("16384", "8kB", "integer"),
            Some((134217728.0, "_bytes"))
        );
        assert_eq!(
            normalise_setting("4096", "kB", "integer"),
            Some((4194304.0, "_bytes"))
        );
        assert_eq!(
            normalise_setting("1024", "MB", "integer"),
            Some((1073741824.0, "_bytes"))
        );
        assert_eq!(
            normalise_setting("200", "ms", "integer"),
            Some((0.2, "_seconds"))
        );
        assert_eq!(
            normalise_setting("1", "min", "integer"),
            Some((60.0, "_seconds"))
        );
        assert_eq!(
            normalise_setting("-1", "ms", "integer"),
            Some((-1.0, "_seconds"))
        );
        assert_eq!(normalise_setting("0.2", "", "real"), Some((0.2, "")));
        assert_eq!(normalise_setting("5", "furlongs", "integer"), None);
        assert_eq!(normalise_setting("x", "", "integer"), None);
    }

    #[test]
    fn short_version_is_semver() {
        assert_eq!(short_version("15.20 (Debian 15.20-1.pgdg120+1)"), "15.20.0");
        assert_eq!(short_version("16.4"), "16.4.0");
        assert_eq!(short_version("17beta1"), "17.0.0");
    }
}
