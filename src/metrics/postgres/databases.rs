//! Per-database collection (`NEXUSD_METRICS_DATABASES`): the table statistics and index sizes
//! of `tables.rs` for every other database — each one `auto` finds (it allows connections, is
//! not a template, and the role may connect) or each one listed — through one short-lived
//! connection at a time, closed right after, so a scrape never holds more than two sessions.
//! Each database is its own collector, `tables:<datname>`: one that cannot be reached says so
//! there (and in `pg_exporter_last_scrape_error`) while the others and `pg_up` are unaffected.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::tables::{self, Tables};
use super::{CONNECT_TIMEOUT, LOCK_TIMEOUT_MS, PgCollector, STATEMENT_TIMEOUT_MS, Scrape, Session};
use crate::metrics::config::DatabaseSelection;
use crate::metrics::exposition::Exposition;

/// Less than this left in the budget: a database is reported failed without being tried.
const MIN_LEFT: Duration = Duration::from_millis(50);

impl PgCollector {
    /// Collects the other databases in turn (after nexusd's own, which the session covers).
    pub(super) async fn other_databases(
        &self,
        session: &mut Session,
        options: &PgConnectOptions,
        out: &mut Exposition,
        scrape: &mut Scrape,
    ) {
        let names = match &self.databases {
            DatabaseSelection::None => return,
            DatabaseSelection::List(list) => list.clone(),
            DatabaseSelection::Auto => {
                let started = Instant::now();
                scrape.begin("databases");
                let listed = list_databases(&mut session.conn).await;
                let result = listed.as_ref().map(|_| ()).map_err(|e| e.to_string());
                let lost = listed.as_ref().is_err_and(crate::db::is_connection_error);
                self.report(out, scrape, "databases", started, result, lost);
                match listed {
                    Ok(names) => names,
                    Err(_) => return,
                }
            }
        };
        for name in names {
            if name == session.database {
                continue;
            }
            let collector = format!("tables:{name}");
            scrape.begin(&collector);
            let started = Instant::now();
            let left = scrape.deadline.saturating_duration_since(started);
            let result = if left < MIN_LEFT {
                Err("no time left in the scrape's budget".to_string())
            } else {
                match tokio::time::timeout(left, self.one_database(options, &name, left, out)).await
                {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within the scrape's budget ({left:?})")),
                }
            };
            self.report(out, scrape, &collector, started, result, false);
        }
    }

    /// One database: connect, read its tables, close.
    async fn one_database(
        &self,
        options: &PgConnectOptions,
        database: &str,
        left: Duration,
        out: &mut Exposition,
    ) -> Result<(), sqlx::Error> {
        let timeout_ms = (left.as_millis() as u64).clamp(1, STATEMENT_TIMEOUT_MS);
        let mut startup = vec![
            ("statement_timeout", timeout_ms.to_string()),
            ("lock_timeout", LOCK_TIMEOUT_MS.to_string()),
        ];
        // Only when the monitoring session could: the server refuses a startup option the
        // role may not set, and the connection with it.
        if self.untracked.load(std::sync::atomic::Ordering::Relaxed) {
            startup.push(("pg_stat_statements.track", "none".to_string()));
        }
        let options = options
            .clone()
            .database(database)
            .application_name("nexusd-metrics")
            .options(startup);
        let connect = tokio::time::timeout(
            left.min(CONNECT_TIMEOUT),
            PgConnection::connect_with(&options),
        );
        let mut conn = connect.await.map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection to {database} within {CONNECT_TIMEOUT:?}"),
            ))
        })??;
        let result = read_tables(&mut conn, out).await;
        let _ = conn.close().await;
        result
    }
}

/// Every database that allows connections, is not a template and the role may connect to.
async fn list_databases(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_database \
          WHERE datallowconn AND NOT datistemplate \
            AND has_database_privilege(oid, 'CONNECT') ORDER BY datname",
    )
    .fetch_all(conn)
    .await
}

async fn read_tables(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    tables::stat_user_tables(conn, Tables::All, out).await?;
    tables::statio_user_tables(conn, Tables::All, out).await?;
    tables::vector_indexes(conn, out).await
}
