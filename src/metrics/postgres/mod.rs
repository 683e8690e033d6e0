//! PostgreSQL metrics under postgres_exporter v0.20's names, labels and types (dashboards and
//! alerting rules match on them; `README.md`'s Metrics section lists the families), from one
//! dedicated monitoring connection.
//!
//! The connection has `statement_timeout` and `lock_timeout` set (a table locked by a
//! `VACUUM FULL` cannot hold a scrape), is used by one scrape at a time, and is dropped and
//! reopened after a connection error or a scrape that ran out of time. When PostgreSQL cannot be
//! reached the scrape still answers: `pg_up 0` plus the exporter's self metrics. Each collector
//! reports `pg_scrape_collector_{duration_seconds,success}{collector}` — the built-in ones, each
//! custom query (`query:<prefix>`, [`custom`]) and each other database (`tables:<datname>`,
//! [`databases`]) — so a failed collector says so while `pg_up` stays 1; a collector still
//! running when the budget ends, and those never reached, report 0. Per-table statistics of
//! nexusd's own database cover the knowledge-base tables only, so tables users add cannot
//! multiply the series.
//!
//! When the role may (a superuser, or one granted `SET` on the parameter), the session sets
//! `pg_stat_statements.track = none`, so the exporter's own queries never enter
//! pg_stat_statements — with postgres_exporter, its own queries were often the top entries.
//!
//! This file owns the session, the scrape loop and the list of collectors; the collectors live
//! beside it, grouped by what they read: [`server`] (version, settings), [`database`]
//! (databases, activity, locks), [`wal`] (checkpoints, archiving, WAL, replication), [`tables`]
//! (table statistics and vector indexes), [`statements`] (pg_stat_statements), [`custom`]
//! (`NEXUSD_METRICS_QUERIES`) and [`databases`] (the other databases).

mod custom;
mod database;
mod databases;
mod server;
mod statements;
mod tables;
mod wal;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{PgConnection, Row};

use super::config::{DatabaseSelection, MetricsConfig};
use super::exposition::{Exposition, Kind};
use super::queries::CustomQuery;
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
    /// `current_database()`: the per-database collection leaves it to the session.
    database: String,
}

pub(super) struct PgCollector {
    statements_limit: u32,
    statements_query_text: bool,
    queries: Arc<Vec<CustomQuery>>,
    databases: DatabaseSelection,
    session: tokio::sync::Mutex<Option<Session>>,
    /// queryid → text cut to 120 characters, for the opt-in `pg_stat_statements_query_id`.
    texts: Mutex<HashMap<i64, String>>,
    scrapes: AtomicU64,
    /// Whether the "own queries are tracked" notice was logged already.
    told_tracked: AtomicBool,
    /// Whether the session could set `pg_stat_statements.track = none` (per-database
    /// connections then set it at startup).
    untracked: AtomicBool,
    /// Collectors whose last run failed (their errors are logged when they start failing).
    failing: Mutex<HashMap<String, String>>,
    /// Custom query results kept for their `cache_seconds`.
    cached: Mutex<custom::CustomCache>,
}

/// How one scrape of PostgreSQL is going; read back even when the budget cut it short.
struct Scrape {
    deadline: Instant,
    /// A session was open for this scrape.
    connected: bool,
    /// The server answered a query of this scrape (an error included).
    answered: bool,
    /// The session's connection was lost.
    lost: bool,
    /// A collector failed.
    error: bool,
    /// The collector running, and since when.
    current: Option<(String, Instant)>,
    reported: HashSet<String>,
}

impl Scrape {
    fn begin(&mut self, collector: &str) {
        self.current = Some((collector.to_string(), Instant::now()));
    }
}

impl PgCollector {
    pub(super) fn new(config: &MetricsConfig) -> Self {
        PgCollector {
            statements_limit: config.statements_limit,
            statements_query_text: config.statements_query_text,
            queries: config.queries.clone(),
            databases: config.databases.clone(),
            session: tokio::sync::Mutex::new(None),
            texts: Mutex::new(HashMap::new()),
            scrapes: AtomicU64::new(0),
            told_tracked: AtomicBool::new(false),
            untracked: AtomicBool::new(false),
            failing: Mutex::new(HashMap::new()),
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// Collects into `out` within `budget`. Never fails: what could not be read is reported
    /// through `pg_up`, `pg_exporter_last_scrape_error` and the per-collector success gauges.
    pub(super) async fn collect(
        &self,
        options: &PgConnectOptions,
        out: &mut Exposition,
        budget: Duration,
    ) {
        let started = Instant::now();
        let scrapes = self.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut scrape = Scrape {
            deadline: started + budget,
            connected: false,
            answered: false,
            lost: false,
            error: false,
            current: None,
            reported: HashSet::new(),
        };
        let mut slot = self.session.lock().await;
        let work = self.collect_with(options, &mut slot, out, &mut scrape);
        if tokio::time::timeout(budget, work).await.is_err() {
            // The scrape ran out of time mid-query: the connection's state is unknown, so
            // it is closed (dropped) and reopened next time.
            *slot = None;
            tracing::warn!(
                ?budget,
                collector = scrape.current.as_ref().map(|(name, _)| name.as_str()),
                "PostgreSQL metrics scrape ran out of time; partial results served"
            );
            self.report_unfinished(out, &mut scrape);
        }
        drop(slot);
        // Up: the server answered in this scrape and the session was not lost.
        write_up(out, scrape.connected && scrape.answered && !scrape.lost);
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
            f64::from(u8::from(scrape.error)),
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
        scrape: &mut Scrape,
    ) {
        if slot.is_none() {
            match self.connect(options).await {
                Ok(session) => *slot = Some(session),
                Err(e) => {
                    self.note_failure("connection", &e.to_string());
                    scrape.error = true;
                    return;
                }
            }
            scrape.answered = true;
        }
        let Some(session) = slot.as_mut() else {
            scrape.error = true;
            return;
        };
        scrape.connected = true;
        self.note_success("connection");

        for collector in Collector::ALL {
            let name = collector.name();
            scrape.begin(name);
            let started = Instant::now();
            let result = self.run(collector, session, out).await;
            // An extension that is not installed is a configuration, not an error.
            let result = match result {
                Err(e) if collector.optional() && is_missing_object(&e) => {
                    self.note_failure(name, &e.to_string());
                    self.write_collector(out, scrape, name, started, false);
                    scrape.answered = true;
                    continue;
                }
                other => other,
            };
            self.report_sql(out, scrape, name, started, result);
            if scrape.lost {
                break;
            }
        }
        for query in self.queries.iter() {
            if scrape.lost {
                break;
            }
            let name = query.collector();
            scrape.begin(&name);
            let started = Instant::now();
            let deadline = scrape.deadline;
            let result = self
                .custom_query(query, &mut session.conn, out, deadline)
                .await;
            self.report_sql(out, scrape, &name, started, result);
        }
        if !scrape.lost {
            self.other_databases(session, options, out, scrape).await;
        }
        if scrape.lost {
            *slot = None;
        }
    }

    /// Reports a collector that ran on the session: a lost connection ends the scrape.
    fn report_sql(
        &self,
        out: &mut Exposition,
        scrape: &mut Scrape,
        name: &str,
        started: Instant,
        result: Result<(), sqlx::Error>,
    ) {
        let lost = result.as_ref().is_err_and(is_connection_error);
        let result = result.map_err(|e| match e {
            // A custom query's own failure (custom.rs): its message alone.
            sqlx::Error::Decode(inner) => inner.to_string(),
            e => e.to_string(),
        });
        self.report(out, scrape, name, started, result, lost);
    }

    /// Writes a collector's `pg_scrape_collector_*` samples and records its outcome.
    fn report(
        &self,
        out: &mut Exposition,
        scrape: &mut Scrape,
        name: &str,
        started: Instant,
        result: Result<(), String>,
        lost: bool,
    ) {
        match &result {
            Ok(()) => self.note_success(name),
            Err(e) => {
                self.note_failure(name, e);
                scrape.error = true;
            }
        }
        scrape.lost |= lost;
        scrape.answered |= !lost;
        self.write_collector(out, scrape, name, started, result.is_ok());
    }

    fn write_collector(
        &self,
        out: &mut Exposition,
        scrape: &mut Scrape,
        name: &str,
        started: Instant,
        success: bool,
    ) {
        scrape.current = None;
        scrape.reported.insert(name.to_string());
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
    }

    /// After the budget ran out: the collector in flight and those never reached report 0.
    fn report_unfinished(&self, out: &mut Exposition, scrape: &mut Scrape) {
        scrape.error = true;
        if !scrape.connected {
            return;
        }
        let now = Instant::now();
        let mut names: Vec<(String, Instant)> = scrape.current.take().into_iter().collect();
        let rest = Collector::ALL
            .iter()
            .map(|c| c.name().to_string())
            .chain(self.queries.iter().map(|q| q.collector()));
        names.extend(rest.map(|name| (name, now)));
        for (name, started) in names {
            if !scrape.reported.contains(&name) {
                self.note_failure(&name, "the scrape's budget ran out");
                self.write_collector(out, scrape, &name, started, false);
            }
        }
    }

    async fn connect(&self, options: &PgConnectOptions) -> Result<Session, sqlx::Error> {
        let options = options.clone().application_name("nexusd-metrics").options([
            ("statement_timeout", STATEMENT_TIMEOUT_MS),
            ("lock_timeout", LOCK_TIMEOUT_MS),
        ]);
        let mut conn = crate::db::connect_within(&options, CONNECT_TIMEOUT).await?;
        let (version, database): (i32, String) = sqlx::query_as(
            "SELECT current_setting('server_version_num')::int, current_database()::text",
        )
        .fetch_one(&mut conn)
        .await?;
        let untracked = sqlx::query("SET pg_stat_statements.track = 'none'")
            .execute(&mut conn)
            .await;
        self.untracked.store(untracked.is_ok(), Ordering::Relaxed);
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
        Ok(Session {
            conn,
            version,
            database,
        })
    }

    fn note_failure(&self, collector: &str, message: &str) {
        let Ok(mut failing) = self.failing.lock() else {
            return;
        };
        if failing.get(collector).map(String::as_str) != Some(message) {
            tracing::warn!(collector, error = %message, "PostgreSQL metrics collector failed");
            failing.insert(collector.to_string(), message.to_string());
        }
    }

    fn note_success(&self, collector: &str) {
        if let Ok(mut failing) = self.failing.lock()
            && failing.remove(collector).is_some()
        {
            tracing::info!(collector, "PostgreSQL metrics collector works again");
        }
    }

    /// Runs one collector on the session.
    async fn run(
        &self,
        collector: Collector,
        session: &mut Session,
        out: &mut Exposition,
    ) -> Result<(), sqlx::Error> {
        let version = session.version;
        let conn = &mut session.conn;
        match collector {
            Collector::Static => server::static_info(conn, out).await,
            Collector::Settings => server::settings(conn, out).await,
            Collector::Database => database::database(conn, out).await,
            Collector::StatDatabase => database::stat_database(conn, version, out).await,
            Collector::StatActivity => database::stat_activity(conn, out).await,
            Collector::Locks => database::locks(conn, out).await,
            Collector::StatBgwriter => wal::stat_bgwriter(conn, version, out).await,
            Collector::StatArchiver => wal::stat_archiver(conn, out).await,
            Collector::Wal => wal::wal(conn, out).await,
            Collector::Replication => wal::replication(conn, out).await,
            Collector::ReplicationSlot => wal::replication_slots(conn, out).await,
            Collector::StatReplication => wal::stat_replication(conn, out).await,
            Collector::StatUserTables => {
                tables::stat_user_tables(conn, tables::Tables::KnowledgeBase, out).await
            }
            Collector::StatioUserTables => {
                tables::statio_user_tables(conn, tables::Tables::KnowledgeBase, out).await
            }
            Collector::VectorIndex => tables::vector_indexes(conn, out).await,
            Collector::StatStatements => self.stat_statements(conn, version, out).await,
        }
    }
}

/// The collectors. Each is named in `pg_scrape_collector_*{collector}` as postgres_exporter
/// names it ([`Collector::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collector {
    Static,
    Settings,
    Database,
    StatDatabase,
    StatActivity,
    Locks,
    StatBgwriter,
    StatArchiver,
    Wal,
    Replication,
    ReplicationSlot,
    StatReplication,
    StatUserTables,
    StatioUserTables,
    VectorIndex,
    StatStatements,
}

impl Collector {
    /// Every collector in scrape order.
    const ALL: [Collector; 16] = [
        Collector::Static,
        Collector::Settings,
        Collector::Database,
        Collector::StatDatabase,
        Collector::StatActivity,
        Collector::Locks,
        Collector::StatBgwriter,
        Collector::StatArchiver,
        Collector::Wal,
        Collector::Replication,
        Collector::ReplicationSlot,
        Collector::StatReplication,
        Collector::StatUserTables,
        Collector::StatioUserTables,
        Collector::VectorIndex,
        Collector::StatStatements,
    ];

    /// The `collector` label value.
    fn name(self) -> &'static str {
        match self {
            Collector::Static => "static",
            Collector::Settings => "settings",
            Collector::Database => "database",
            Collector::StatDatabase => "stat_database",
            Collector::StatActivity => "stat_activity",
            Collector::Locks => "locks",
            Collector::StatBgwriter => "stat_bgwriter",
            Collector::StatArchiver => "stat_archiver",
            Collector::Wal => "wal",
            Collector::Replication => "replication",
            Collector::ReplicationSlot => "replication_slot",
            Collector::StatReplication => "stat_replication",
            Collector::StatUserTables => "stat_user_tables",
            Collector::StatioUserTables => "statio_user_tables",
            Collector::VectorIndex => "vector_index",
            Collector::StatStatements => "stat_statements",
        }
    }

    /// Whether it depends on an extension that may be missing.
    fn optional(self) -> bool {
        matches!(self, Collector::StatStatements)
    }
}

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

/// `pg_up`: whether PostgreSQL answered the last scrape.
pub(super) fn write_up(out: &mut Exposition, up: bool) {
    out.single(
        "pg_up",
        "Whether the last scrape of metrics from PostgreSQL was able to connect to the server (1 for yes, 0 for no).",
        Kind::Gauge,
        f64::from(u8::from(up)),
    );
}

/// Writes `rows` whose first `labels.len()` columns are the label values (text) and the rest
/// the values of `columns` (float8; NULL leaves the sample out).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectors_keep_their_names_and_order() {
        let names: Vec<&str> = Collector::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "static",
                "settings",
                "database",
                "stat_database",
                "stat_activity",
                "locks",
                "stat_bgwriter",
                "stat_archiver",
                "wal",
                "replication",
                "replication_slot",
                "stat_replication",
                "stat_user_tables",
                "statio_user_tables",
                "vector_index",
                "stat_statements",
            ]
        );
        let optional: Vec<&str> = Collector::ALL
            .iter()
            .filter(|c| c.optional())
            .map(|c| c.name())
            .collect();
        assert_eq!(optional, ["stat_statements"]);
    }
}
