//! The connection pool and where it points: an external server or the embedded cluster.
//!
//! The pool connects lazily and checks connections that sat idle before handing them out, so
//! nexusd starts with the database down and reconnects by itself when it comes back.
//!
//! Transactions begin through [`begin`], never `Pool::begin()`. sqlx 0.8.6 (and 0.9.0) returns a
//! connection to the pool when a `Pool::begin()` future is dropped while its `BEGIN` is in flight
//! (a known sqlx bug, fixed upstream but in no release yet): the server has opened the
//! transaction, nothing rolls it back, and the next borrower's statements run inside it — a write
//! answered as a success may never be committed (`tests/pool.rs` shows it). [`begin`] runs the
//! `BEGIN` in a task of its own, which nobody can cancel halfway; `clippy.toml` refuses the sqlx
//! methods that can. The skills also run in tasks of their own, so a client leaving never cancels
//! their database work (`skills/mod.rs`).

pub(crate) mod cluster;
mod config;
pub mod leader;
mod programs;
pub mod replicas;
pub(crate) mod target;
pub(crate) mod tools;

pub use cluster::{Cluster, ClusterSpec, Postmaster, small_vm_settings};
pub use config::{Connections, DatabaseConfig, DatabaseTarget, DatabaseUrl, VARIABLES};
pub use tools::ClientTools;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::{ConnectOptions, Executor, Row, Transaction};

/// How long a request waits for a pooled connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the direct connection attempt that explains why the pool cannot connect.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A pooled connection that sat idle longer than this gets [`IDLE_CHECK`] before it is handed out.
/// One used more recently goes straight to its borrower: sqlx pinged it when it came back, and
/// under load a check per borrow was a third of the round trips of a one-statement request
/// (BENCHMARKS.md, "One round trip per request"). The price: a connection the server dropped
/// within that second fails the one request that borrows it (503, like any lost connection),
/// and sqlx's ping on its return closes it.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// Run on a connection idle for [`CHECK_IDLE_AFTER`] before it is handed out, in one round trip
/// like sqlx's own ping: an answer proves the connection alive (the server may have restarted
/// meanwhile), and `true` means a transaction is open.
/// `now()` is when the transaction began and `statement_timestamp()` when this statement did;
/// outside a transaction block they are the same instant, inside one opened by an earlier
/// statement they differ. Sent as a simple query on purpose: with the extended protocol
/// PostgreSQL stamps Bind and Execute separately, and the two could differ without a transaction.
const IDLE_CHECK: &str = "SELECT now() <> statement_timestamp()";

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
    /// This replica's place in the leader election (`leader.rs`); no election unless `serve`
    /// starts one.
    leader: leader::Leader,
    /// `DATABASE_READ_URL`: where read-only skills may go instead (`replicas.rs`).
    reads: Option<std::sync::Arc<replicas::ReadReplicas>>,
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
        let pool = pool(
            options.clone(),
            config.min_connections,
            config.max_connections,
        );
        Database {
            pool,
            options,
            tools,
            host,
            name,
            min_connections: config.min_connections,
            max_connections: config.max_connections,
            leader: leader::Leader::none(),
            reads: None,
        }
    }

    /// The same database with read replicas for the read-only skills (`serve` only).
    pub fn with_read_replicas(mut self, reads: std::sync::Arc<replicas::ReadReplicas>) -> Self {
        self.reads = Some(reads);
        self
    }

    pub fn read_replicas(&self) -> Option<&std::sync::Arc<replicas::ReadReplicas>> {
        self.reads.as_ref()
    }

    /// This database as a read-only skill should use it: a usable replica's pool in place of the
    /// primary's, or `None` when there is none (read from the primary).
    pub fn for_reads(&self) -> Option<Database> {
        let (pool, host) = self.reads.as_ref()?.pick()?;
        let mut db = self.clone();
        db.pool = pool;
        db.host = host;
        db.reads = None;
        Some(db)
    }

    /// The same database, with dedicated connections (snapshots and locks of backups, the
    /// metrics session, LISTEN, pg_dump) made to `direct` (`NEXUSD_DIRECT_DATABASE_URL`)
    /// rather than through the pooler the pool goes through: those need a session of their own.
    pub fn with_direct(mut self, direct: PgConnectOptions, password: Option<&str>) -> Self {
        self.tools = tools::ToolConnection::from_options(&direct, password);
        self.options = session_options(direct);
        self
    }

    /// The same database, its pool's sessions named `application_name` (dedicated connections
    /// keep `nexusd`). `serve` names its skills' pool after the replica (`skills/cache.rs`).
    pub fn with_pool_name(mut self, application_name: &str) -> Self {
        self.pool = pool(
            (*self.pool.connect_options())
                .clone()
                .application_name(application_name),
            self.min_connections,
            self.max_connections,
        );
        self
    }

    /// [`Database::with_direct`] when `NEXUSD_DIRECT_DATABASE_URL` is set; `serve` and the
    /// one-off commands alike, so pg_dump, psql and dedicated sessions never go through a
    /// transaction-pooling PgBouncer.
    pub fn past_the_pooler(self, connections: &Connections) -> Self {
        match &connections.direct {
            Some(url) => self.with_direct(url.options.clone(), url.password()),
            None => self,
        }
    }

    /// The same database, with this replica's leader election attached (`serve` only).
    pub fn with_leader(mut self, leader: leader::Leader) -> Self {
        self.leader = leader;
        self
    }

    pub fn leader(&self) -> &leader::Leader {
        &self.leader
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Options for a dedicated connection to the same database (one that must not come from the
    /// pool, e.g. one holding a snapshot for pg_dump): past the pooler when there is one.
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

/// One dedicated connection (not from a pool), given up after `limit` with a timed-out I/O
/// error, so a server that accepts the socket but never answers does not hang the caller.
pub async fn connect_within(
    options: &PgConnectOptions,
    limit: Duration,
) -> Result<PgConnection, sqlx::Error> {
    use sqlx::Connection;
    tokio::time::timeout(limit, PgConnection::connect_with(options))
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {limit:?}"),
            ))
        })?
}

/// A lazily connecting pool over `options` whose idle connections are checked before use
/// ([`usable`]).
fn pool(options: PgConnectOptions, min_connections: u32, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .min_connections(min_connections)
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Some(Duration::from_secs(300)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            if meta.idle_for < CHECK_IDLE_AFTER {
                Box::pin(std::future::ready(Ok(true)))
            } else {
                usable(conn)
            }
        })
        .connect_lazy_with(options)
}

type Check<'c> = Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + 'c>>;

/// Whether a pooled connection that sat idle may be handed out ([`IDLE_CHECK`]). `false` makes
/// the pool close it — the server then rolls a stale transaction back — and use another.
fn usable(conn: &mut PgConnection) -> Check<'_> {
    Box::pin(async move {
        // A plain `&str` has no arguments, so sqlx sends it as a simple query.
        let answer = conn
            .fetch_one(IDLE_CHECK)
            .await
            .and_then(|row| row.try_get::<bool, _>(0));
        match answer {
            Ok(false) => return Ok(true),
            Ok(true) => tracing::warn!(
                "a pooled connection was left inside a transaction; closing it (the transaction rolls back)"
            ),
            Err(e) => tracing::warn!(
                error = %crate::telemetry::error_chain(&e),
                "a pooled connection failed its check; closing it"
            ),
        }
        Ok(false)
    })
}

/// Starts a transaction on a connection from `pool`, in a task of its own so that dropping the
/// returned future (a timeout, a shutdown, a caller that gave up) cannot leave it half-begun:
/// sqlx's `Pool::begin()` cut off while its `BEGIN` is in flight hands the connection back with
/// the transaction open (see the module's documentation). Run to the end, a transaction nobody
/// takes is dropped, which rolls it back before its connection returns to the pool.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)] // the one place it runs, where nothing can cancel it
    let task = tokio::spawn(async move { pool.begin().await });
    task.await.map_err(|e| {
        sqlx::Error::Io(std::io::Error::other(format!(
            "the task beginning a transaction ended: {e}"
        )))
    })?
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
