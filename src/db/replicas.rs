//! Read replicas (`DATABASE_READ_URL`): a pool per replica, a checker that asks each replica
//! every second whether it answers and how far its replay lags, and the choice of a replica for
//! a read-only skill. A replica that does not answer or lags more than `NEXUSD_READ_MAX_LAG` is
//! skipped, and reads go to the primary; it is used again once it answers in time.
//!
//! Lag is measured on the replica as PostgreSQL's monitoring guides do: 0 when everything
//! received has been replayed (an idle primary sends nothing, so the last replayed transaction's
//! age says nothing then), otherwise the age of the last replayed transaction.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::config::DatabaseUrl;

/// How often each replica is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A replica answering slower than this counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a read waits for a replica's connection before it counts as unavailable (and the
/// read is retried on the primary).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

const LAG: &str = "SELECT pg_is_in_recovery(),
    CASE WHEN NOT pg_is_in_recovery() THEN 0
         WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
         ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
    END::float8";

/// What the checker last saw of one replica, for `/metrics` and `/health`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaState {
    /// `host:port`, never credentials.
    pub host: String,
    /// Answering and within the lag limit: reads go there.
    pub usable: bool,
    pub lag_seconds: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug)]
struct Replica {
    pool: PgPool,
    state: Mutex<ReplicaState>,
}

/// The configured read replicas; cheap to share.
#[derive(Debug)]
pub struct ReadReplicas {
    replicas: Vec<Replica>,
    max_lag: Duration,
    next: AtomicUsize,
}

impl ReadReplicas {
    /// Lazy pools over `urls` (`max_connections` each); nothing is usable until the first check.
    pub fn new(urls: &[DatabaseUrl], max_lag: Duration, max_connections: u32) -> Arc<Self> {
        let replicas = urls
            .iter()
            .map(|url| {
                let options = super::session_options(url.options.clone());
                let host = format!("{}:{}", options.get_host(), options.get_port());
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .idle_timeout(Some(Duration::from_secs(300)))
                    .connect_lazy_with(options);
                Replica {
                    pool,
                    state: Mutex::new(ReplicaState {
                        host,
                        usable: false,
                        lag_seconds: None,
                        error: Some("not checked yet".into()),
                    }),
                }
            })
            .collect();
        Arc::new(ReadReplicas {
            replicas,
            max_lag,
            next: AtomicUsize::new(0),
        })
    }

    /// Checks every replica each second until the process ends.
    pub fn spawn_checker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                for replica in &me.replicas {
                    me.check(replica).await;
                }
                tokio::time::sleep(CHECK_EVERY).await;
            }
        })
    }

    async fn check(&self, replica: &Replica) {
        let answer = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query_as::<_, (bool, f64)>(LAG).fetch_one(&replica.pool),
        )
        .await;
        let (usable, lag, error) = match answer {
            Ok(Ok((_, lag))) if lag <= self.max_lag.as_secs_f64() => (true, Some(lag), None),
            Ok(Ok((_, lag))) => (
                false,
                Some(lag),
                Some(format!(
                    "lags {lag:.1} s, more than NEXUSD_READ_MAX_LAG ({} s)",
                    self.max_lag.as_secs()
                )),
            ),
            Ok(Err(e)) => (false, None, Some(crate::telemetry::error_chain(&e))),
            Err(_) => (
                false,
                None,
                Some(format!("no answer within {CHECK_TIMEOUT:?}")),
            ),
        };
        let Ok(mut state) = replica.state.lock() else {
            return;
        };
        if state.usable != usable {
            match &error {
                None => tracing::info!(replica = %state.host, "read replica in use"),
                Some(why) => {
                    tracing::warn!(replica = %state.host, reason = %why, "read replica skipped: reads go to the primary")
                }
            }
        }
        *state = ReplicaState {
            host: state.host.clone(),
            usable,
            lag_seconds: lag,
            error,
        };
    }

    /// A usable replica's pool and host, in turn; `None`: read from the primary.
    pub fn pick(&self) -> Option<(PgPool, String)> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| {
            let replica = &self.replicas[(start + i) % n];
            let state = replica.state.lock().ok()?;
            state
                .usable
                .then(|| (replica.pool.clone(), state.host.clone()))
        })
    }

    /// Marks the replica behind `host` unusable until its next good check (a read failed there).
    pub fn skip(&self, host: &str) {
        for replica in &self.replicas {
            if let Ok(mut state) = replica.state.lock()
                && state.host == host
            {
                state.usable = false;
            }
        }
    }

    pub fn states(&self) -> Vec<ReplicaState> {
        self.replicas
            .iter()
            .filter_map(|r| r.state.lock().ok().map(|s| s.clone()))
            .collect()
    }
}
