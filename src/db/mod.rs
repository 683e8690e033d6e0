//! The connection pool and where it points: an external server or the embedded cluster.
//!
//! The pool connects lazily and tests connections before handing them out, so nexusd starts
//! with the database down and reconnects by itself when it comes back.

pub mod cluster;
pub mod config;
mod programs;
pub mod target;
pub mod tools;

pub use config::{DatabaseConfig, DatabaseTarget, DatabaseUrl, VARIABLES};

use std::time::Duration;

use serde::Serialize;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// How long a request waits for a pooled connection before the database counts as unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the direct connection attempt that explains why the pool cannot connect.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The knowledge-base database: a pool plus a description for `/health` and logs.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    options: PgConnectOptions,
    /// How pg_dump and psql reach the same database.
    pub tools: tools::ToolConnection,
    /// Host (or socket directory) and port, never credentials.
    pub host: String,
    pub name: String,
    min_connections: u32,
    max_connections: u32,
}

/// Pool figures as `/health` reports them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoolStats {
    pub size: u32,
    pub free: usize,
    pub min: u32,
    pub max: u32,
}

impl Database {
    /// A lazily connecting pool over `options`, sized by the configuration. `password` is the
    /// one inside `options` (sqlx does not expose it), for the client tools.
    pub fn new(options: PgConnectOptions, password: Option<&str>, config: &DatabaseConfig) -> Self {
        let tools = tools::ToolConnection::from_options(&options, password);
        let options = session_options(options);
        let host = match options.get_socket() {
            Some(dir) => dir.display().to_string(),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        let name = options.get_database().unwrap_or_default().to_string();
        let pool = PgPoolOptions::new()
            .min_connections(config.min_connections)
            .max_connections(config.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(300)))
            .max_lifetime(Some(Duration::from_secs(1800)))
            .test_before_acquire(true)
            .connect_lazy_with(options.clone());
        Database {
            pool,
            options,
            tools,
            host,
            name,
            min_connections: config.min_connections,
            max_connections: config.max_connections,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Options for a dedicated connection to the same database (one that must not come from the
    /// pool, e.g. one holding a snapshot for pg_dump).
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            free: self.pool.num_idle(),
            min: self.min_connections,
            max: self.max_connections,
        }
    }

    /// Why the database cannot be reached right now, in the server's or the OS's words
    /// ("connection refused", "password authentication failed", …). The pool only reports that
    /// it timed out, so this makes one direct connection attempt.
    pub async fn unavailable_reason(&self) -> String {
        use sqlx::Connection;
        match tokio::time::timeout(
            DIAGNOSE_TIMEOUT,
            sqlx::PgConnection::connect_with(&self.options),
        )
        .await
        {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                "the pool could not get a connection in time (the server accepts new ones now)"
                    .to_string()
            }
            Err(_) => format!("no answer from {} within {DIAGNOSE_TIMEOUT:?}", self.host),
        }
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Options every nexusd session gets: its name in `pg_stat_activity`, and statements logged at
/// debug level only (sqlx logs each one at info otherwise), slow ones as warnings.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    options
        .application_name("nexusd")
        .log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(2))
}

/// Errors that mean "the database is not there" (or the session is gone) rather than "this
/// query failed": I/O, TLS and protocol failures, the pool giving up or closed, and the
/// server's connection-exception (08), operator-intervention (57P: shutdown, cannot connect
/// now, session terminated) and too-many-connections (53300) codes. The skills answer these
/// with 503; the metrics collector drops its session and reconnects.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}
