//! Leader election among nexusd replicas sharing one database, for the singleton jobs
//! (scheduled backups, retention, verification, base backups, the embedding backfill).
//!
//! The leader is the replica holding the session advisory lock [`LEADER_LOCK`] on a dedicated
//! connection that never comes from the pool — through a transaction-pooling PgBouncer a session
//! lock would be held by whichever server connection ran the statement, so the connection goes
//! to `NEXUSD_DIRECT_DATABASE_URL` when set. PostgreSQL releases the lock the moment that
//! session ends (the process killed, the connection cut, `pg_terminate_backend`), so there is no
//! lease to expire and no clock to trust; the replica notices within [`PING`] and cancels the
//! running job at once. Why a lock and not a lease row is in `docs/scaling.md`.
//!
//! Fencing: a job started under a [`Lease`] calls [`Lease::confirm`] right before it commits
//! its result (a backup's manifest). That asks the server, over another connection, whether the
//! lock session of this term — its backend pid and start time, which no later session can share
//! — still holds the lock. A leader that lost the lock, even one that has not noticed yet,
//! gets `false`.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The advisory lock whose holder leads (`pg_locks`: classid = high 32 bits, objid = low 32
/// bits, objsubid = 1 for a bigint key). Advisory locks are per database, so replicas of
/// different knowledge bases on one server elect apart.
pub const LEADER_LOCK: i64 = 0x6e65_7875_7364_0010;
/// How often a replica that does not lead tries the lock, and how often the leader checks that
/// its lock session is still alive.
const PING: Duration = Duration::from_secs(1);
/// How long a replica that lost leadership waits before competing again, so the others (which
/// poll every [`PING`]) take over rather than the one whose connection just failed.
const STAND_DOWN: Duration = Duration::from_secs(3);
/// Bound on connecting and on each statement of the lock session.
const STATEMENT_LIMIT: Duration = Duration::from_secs(5);
/// `application_name` of the lock session, followed by the replica's name, so `status` and
/// `pg_stat_activity` show which replica leads.
pub const SESSION_NAME: &str = "nexusd-leader";

/// One term of leadership: the lock session that holds it and the token cancelled when it ends.
#[derive(Clone, Debug)]
pub struct Term {
    pub since: DateTime<Utc>,
    /// The lock session's backend, which together with its start time names it uniquely.
    pub backend_pid: i32,
    backend_start: DateTime<Utc>,
    ended: CancellationToken,
}

/// What this replica knows about the election, for `/health`, `status` and `/metrics`.
#[derive(Clone, Debug, Serialize)]
pub struct LeaderStatus {
    /// `false` when nexusd runs no election (one-off commands).
    pub elected: bool,
    pub leader: bool,
    /// This replica's name (host and pid), as the lock session shows it.
    pub replica: String,
    pub since: Option<DateTime<Utc>>,
}

/// This replica's view of the election; cheap to clone.
#[derive(Clone, Debug)]
pub struct Leader {
    state: watch::Receiver<Option<Term>>,
    elected: bool,
    replica: String,
}

/// Leadership held for one job; [`Lease::confirm`] before committing its result.
#[derive(Clone, Debug)]
pub struct Lease {
    term: Term,
}

impl Leader {
    /// No election (one-off commands, tests): never leads.
    pub fn none() -> Leader {
        let (_tx, state) = watch::channel(None);
        Leader {
            state,
            elected: false,
            replica: replica_name(),
        }
    }

    /// Starts competing for leadership over a dedicated connection made with `options`, until
    /// `shutdown` (the lock is then released at once, so another replica takes over without
    /// waiting for this process to exit).
    /// The first attempt waits for `ready` (the database bootstrapped): before that the
    /// database may not exist yet, and PostgreSQL would log each attempt as a FATAL error.
    pub fn start(
        options: PgConnectOptions,
        ready: impl Future<Output = ()> + Send + 'static,
        shutdown: CancellationToken,
    ) -> (Leader, JoinHandle<()>) {
        let replica = replica_name();
        let (tx, state) = watch::channel(None);
        let name = format!("{SESSION_NAME} {replica}");
        let options = options.application_name(&name);
        let task = tokio::spawn(async move {
            tokio::select! {
                () = ready => campaign(options, tx, shutdown).await,
                () = shutdown.cancelled() => {}
            }
        });
        let leader = Leader {
            state,
            elected: true,
            replica,
        };
        (leader, task)
    }

    pub fn is_leader(&self) -> bool {
        self.state
            .borrow()
            .as_ref()
            .is_some_and(|t| !t.ended.is_cancelled())
    }

    /// The current term as a lease for one job, or `None` when this replica does not lead.
    pub fn lease(&self) -> Option<Lease> {
        let term = self.state.borrow().clone()?;
        (!term.ended.is_cancelled()).then_some(Lease { term })
    }

    /// Waits until this replica leads (forever when it runs no election).
    pub async fn wait_lease(&mut self) -> Lease {
        loop {
            if let Some(lease) = self.lease() {
                return lease;
            }
            if self.state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn status(&self) -> LeaderStatus {
        let term = self.lease().map(|l| l.term);
        LeaderStatus {
            elected: self.elected,
            leader: term.is_some(),
            replica: self.replica.clone(),
            since: term.map(|t| t.since),
        }
    }
}

impl Lease {
    /// A token cancelled when `parent` is or when this term ends, for the job's own cancellation.
    pub fn guard(&self, parent: &CancellationToken) -> CancellationToken {
        let token = parent.child_token();
        let (ended, stop) = (self.term.ended.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = ended.cancelled() => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
        token
    }

    pub fn ended(&self) -> bool {
        self.term.ended.is_cancelled()
    }

    /// Whether this term's lock session still holds the lock, asked of the server over `pool`
    /// (fencing: call it right before committing a job's result). Any failure counts as no.
    pub async fn confirm(&self, pool: &PgPool) -> bool {
        if self.ended() {
            return false;
        }
        let held = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid::int8 = $1 AND l.objid::int8 = $2
                AND l.objsubid = 1 AND l.pid = $3 AND a.backend_start = $4)",
        )
        .bind(lock_classid())
        .bind(lock_objid())
        .bind(self.term.backend_pid)
        .bind(self.term.backend_start)
        .fetch_one(pool);
        matches!(
            tokio::time::timeout(STATEMENT_LIMIT, held).await,
            Ok(Ok(true))
        )
    }
}

/// The replica holding the lock, as its lock session names it (`host:pid`), asked over `conn`;
/// `None` when no replica leads.
pub async fn current_holder(conn: &mut PgConnection) -> sqlx::Result<Option<String>> {
    let name: Option<String> = sqlx::query_scalar(
        "SELECT a.application_name::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid::int8 = $1 AND l.objid::int8 = $2
            AND l.objsubid = 1 LIMIT 1",
    )
    .bind(lock_classid())
    .bind(lock_objid())
    .fetch_optional(conn)
    .await?;
    Ok(name.map(|n| {
        n.strip_prefix(SESSION_NAME)
            .map(|r| r.trim().to_string())
            .unwrap_or(n)
    }))
}

fn lock_classid() -> i64 {
    (LEADER_LOCK as u64 >> 32) as i64
}

fn lock_objid() -> i64 {
    (LEADER_LOCK as u64 & 0xffff_ffff) as i64
}

/// `host:pid`, short enough for `application_name` (63 bytes).
fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    let mut name = format!("{host}:{}", std::process::id());
    let room = 63 - SESSION_NAME.len() - 1;
    if name.len() > room {
        name = name.split_off(name.len() - room);
    }
    name
}

/// Connect, wait for the lock, hold it while the session lives; repeat until shutdown.
async fn campaign(
    options: PgConnectOptions,
    state: watch::Sender<Option<Term>>,
    shutdown: CancellationToken,
) {
    let mut reported_failure = false;
    while !shutdown.is_cancelled() {
        let lost = match acquire(&options, &shutdown).await {
            Ok(Some((conn, term))) => {
                reported_failure = false;
                tracing::info!(
                    backend_pid = term.backend_pid,
                    "this replica leads: it runs the scheduled jobs"
                );
                state.send_replace(Some(term.clone()));
                hold(conn, &term, &shutdown).await;
                term.ended.cancel();
                state.send_replace(None);
                !shutdown.is_cancelled()
            }
            Ok(None) => return,
            Err(e) => {
                if !reported_failure {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "leader election cannot reach the database; retrying");
                    reported_failure = true;
                }
                false
            }
        };
        let wait = if lost {
            tracing::warn!("this replica lost leadership: its scheduled jobs were cancelled");
            STAND_DOWN
        } else {
            PING
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Connects and polls the lock until it is granted; `None` at shutdown.
async fn acquire(
    options: &PgConnectOptions,
    shutdown: &CancellationToken,
) -> Result<Option<(PgConnection, Term)>, sqlx::Error> {
    let mut conn = bounded(PgConnection::connect_with(options)).await?;
    let (backend_pid, backend_start): (i32, DateTime<Utc>) = bounded(
        sqlx::query_as(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&mut conn),
    )
    .await?;
    loop {
        let got: bool = bounded(
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut conn),
        )
        .await?;
        if got {
            let term = Term {
                since: Utc::now(),
                backend_pid,
                backend_start,
                ended: CancellationToken::new(),
            };
            return Ok(Some((conn, term)));
        }
        tokio::select! {
            () = tokio::time::sleep(PING) => {}
            () = shutdown.cancelled() => {
                conn.close().await.ok();
                return Ok(None);
            }
        }
    }
}

/// Holds the lock until the session fails or shutdown; at shutdown the lock is released
/// explicitly (closing the connection would too).
async fn hold(mut conn: PgConnection, term: &Term, shutdown: &CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PING) => {}
            () = shutdown.cancelled() => {
                term.ended.cancel();
                let unlock = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LEADER_LOCK);
                let _ = bounded(unlock.execute(&mut conn)).await;
                conn.close().await.ok();
                return;
            }
        }
        // Still alive and still holding: a session that was cut answers with an error, and a
        // lock released by hand shows as missing.
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
              AND pid = pg_backend_pid() AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 1)",
        )
        .bind(lock_classid())
        .bind(lock_objid())
        .fetch_one(&mut conn);
        match bounded(check).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the leader lock is no longer held by this replica's session");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "the leader's database session failed");
                return;
            }
        }
    }
}

async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(STATEMENT_LIMIT, work).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {STATEMENT_LIMIT:?}"),
        ))),
    }
}
