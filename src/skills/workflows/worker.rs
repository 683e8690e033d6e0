//! The workers that drain the workflow queue (`kb/jobs.rs`): `NEXUSD_WORKFLOW_CONCURRENCY` of
//! them per replica, each on a session of its own, made directly to PostgreSQL (past a pooler,
//! like the leader's lock session). A worker claims a job on that session (its
//! backend pid is the job's `worker_pid`), renews the lease every [`HEARTBEAT`] through it and
//! learns there whether the job's cancellation was asked; a job whose worker died is claimed
//! again once its session is gone or its lease has run out. On shutdown a running job is put back
//! in the queue for the next worker (`docs/workflows.md`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgConnection;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::context::SkillContext;
use super::run::{Outcome, run_job};
use crate::bootstrap::Readiness;
use crate::kb::jobs::{self, Claimed};
use crate::metrics::WorkflowStats;

/// How long a claimed job stays its worker's without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a worker renews its lease and checks for a cancellation.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often an idle worker looks for a job (new jobs of this replica wake it at once).
const POLL: Duration = Duration::from_secs(2);

/// `application_name` of a worker's session, for people reading `pg_stat_activity`.
const SESSION_NAME: &str = "nexusd-workflow";
/// Bound on opening a worker's session (a pooled connection had the pool's acquire timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The session a worker holds a job on, shared by its heartbeat and its progress writes.
pub type Session = Arc<Mutex<PgConnection>>;

/// The running workers of this replica.
pub struct Workers {
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl Workers {
    /// Stops the workers; a running job goes back to the queue. Waits at most `limit`.
    pub async fn stop(mut self, limit: Duration) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("workflow workers did not stop in time");
            self.tasks.abort_all();
        }
    }
}

/// Starts `count` workers (none when 0).
pub fn spawn(
    ctx: SkillContext,
    wake: Arc<Notify>,
    stats: Arc<WorkflowStats>,
    count: usize,
) -> Workers {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    // The worker's name says where it runs, for people reading workflow_jobs.worker.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "nexusd".into());
    for slot in 0..count {
        let name = format!("{host}/{}/{slot}", std::process::id());
        let worker = Worker {
            ctx: ctx.clone(),
            wake: wake.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            name,
        };
        tasks.spawn(worker.run());
    }
    Workers { tasks, stop }
}

struct Worker {
    ctx: SkillContext,
    wake: Arc<Notify>,
    stats: Arc<WorkflowStats>,
    stop: CancellationToken,
    name: String,
}

impl Worker {
    async fn run(self) {
        while !self.stop.is_cancelled() {
            // Polled rather than awaited: the readiness sender may be gone once bootstrap ended.
            if !matches!(&*self.ctx.readiness.borrow(), Readiness::Ready(_)) {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
            match self.session().await {
                Ok(session) => self.drain(session).await,
                Err(e) => {
                    tracing::warn!(worker = %self.name, error = %e, "workflow worker cannot connect");
                    self.pause(POLL * 2).await;
                }
            }
        }
    }

    /// A connection of its own, made past the pooler (`NEXUSD_DIRECT_DATABASE_URL`): the job's
    /// owner is this session's backend pid, and through a transaction-pooling PgBouncer a pooled
    /// connection's pid is a server connection other clients share — it would outlive this
    /// worker and keep its job from being claimed again.
    async fn session(&self) -> Result<Session, sqlx::Error> {
        let options = self
            .ctx
            .db
            .connect_options()
            .clone()
            .application_name(SESSION_NAME);
        let conn = crate::db::connect_within(&options, CONNECT_TIMEOUT).await?;
        Ok(Arc::new(Mutex::new(conn)))
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    /// Claims and runs jobs on `session` until it fails or the worker stops.
    async fn drain(&self, session: Session) {
        while !self.stop.is_cancelled() {
            let claimed = {
                let mut conn = session.lock().await;
                if let Ok((queued, running)) = jobs::depth_on(&mut conn).await {
                    self.stats.set_depth(queued, running);
                }
                jobs::claim(&mut conn, &self.name, LEASE.as_secs_f64()).await
            };
            match claimed {
                Ok(Some(job)) => self.run_one(&session, job).await,
                Ok(None) => self.pause(POLL).await,
                Err(e) => {
                    tracing::warn!(worker = %self.name, error = %e, "workflow queue unreachable");
                    self.pause(POLL).await;
                    return;
                }
            }
        }
    }

    async fn run_one(&self, session: &Session, job: Claimed) {
        tracing::info!(worker = %self.name, job = %job.id, kind = %job.kind, attempt = job.attempt, "workflow started");
        let cancel = CancellationToken::new();
        let lost = CancellationToken::new();
        let beat = tokio::spawn(heartbeat(
            session.clone(),
            job.clone(),
            cancel.clone(),
            lost.clone(),
        ));
        // Shutdown and a lost lease stop the work as a cancellation does; what the job ends as
        // is decided below.
        let stop_work = CancellationToken::new();
        let relay = {
            let (stop_work, cancel, lost, stop) = (
                stop_work.clone(),
                cancel.clone(),
                lost.clone(),
                self.stop.clone(),
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = lost.cancelled() => {}
                    _ = stop.cancelled() => {}
                }
                stop_work.cancel();
            })
        };
        let started = Instant::now();
        let outcome = run_job(&self.ctx, session, &job, &stop_work).await;
        beat.abort();
        relay.abort();
        // A job whose work ran to its end ends with its own status, whatever fired after.
        let status = if lost.is_cancelled() {
            "lost"
        } else if !outcome.interrupted {
            outcome.status
        } else if cancel.is_cancelled() {
            "cancelled"
        } else {
            "released"
        };
        let written = self.end(session, &job, status, &outcome).await;
        tracing::info!(worker = %self.name, job = %job.id, status, written, ms = started.elapsed().as_millis() as u64, "workflow ended");
        if written && status != "released" {
            self.stats.finished(&job.kind, status);
        }
    }

    /// Writes the job's end; false when it was not this worker's any more.
    async fn end(&self, session: &Session, job: &Claimed, status: &str, outcome: &Outcome) -> bool {
        let mut conn = session.lock().await;
        let written = match status {
            "lost" => return false,
            "released" => jobs::release(&mut conn, &job.id, job.attempt).await,
            _ => {
                let results = Value::Array(outcome.results.clone());
                let error = match status {
                    "cancelled" => Some("cancelled by request (/a2a/cancel)".to_string()),
                    _ => outcome.error.clone(),
                };
                jobs::finish(
                    &mut conn,
                    &job.id,
                    job.attempt,
                    status,
                    &results,
                    error.as_deref(),
                )
                .await
            }
        };
        written.unwrap_or_else(|e| {
            tracing::warn!(job = %job.id, error = %e, "could not record the workflow's end");
            false
        })
    }
}

/// Renews the job's lease every [`HEARTBEAT`]; fires `cancel` when its cancellation is asked and
/// `lost` when the job is no longer this worker's (claimed again, or no heartbeat got through
/// for a whole lease).
async fn heartbeat(
    session: Session,
    job: Claimed,
    cancel: CancellationToken,
    lost: CancellationToken,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let beat = {
            let mut conn = session.lock().await;
            jobs::heartbeat(&mut conn, &job.id, job.attempt, LEASE.as_secs_f64()).await
        };
        match beat {
            Ok(Some(asked)) => {
                last_ok = Instant::now();
                if asked {
                    cancel.cancel();
                }
            }
            Ok(None) => {
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "workflow heartbeat failed");
                if last_ok.elapsed() >= LEASE {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
