//! The backup jobs inside `nexusd serve`, on tokio-cron-scheduler (UTC, seconds first): the
//! nightly backup, followed by pruning only when it succeeded, the weekly verification and the
//! weekly base backup. A failing job is logged and counted; the scheduler keeps going. With
//! several replicas on one database every replica ticks, and only the leader (`db/leader.rs`)
//! runs the job: losing leadership cancels it, and its manifest is written only while the lease
//! still holds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use super::status::BackupStatus;
use super::{Backups, Progress};
use crate::db::leader::{Leader, Lease};

/// The running scheduler and the token that aborts a backup in flight.
pub struct Schedule {
    scheduler: JobScheduler,
    abort: CancellationToken,
}

/// Starts the configured jobs; `None` when every schedule is off.
pub async fn start(backups: Arc<Backups>, leader: Leader) -> Result<Option<Schedule>> {
    let config = backups.config().clone();
    if config.schedule.is_none()
        && config.verify_schedule.is_none()
        && config.base_schedule.is_none()
    {
        tracing::info!("scheduled backups are off (NEXUSD_BACKUP_SCHEDULE=off)");
        return Ok(None);
    }
    let scheduler = JobScheduler::new()
        .await
        .context("starting the backup scheduler")?;
    let abort = CancellationToken::new();

    if let Some(cron) = &config.schedule {
        let tick = Tick {
            variable: "NEXUSD_BACKUP_SCHEDULE",
            what: "backup",
            next: Some(|s, next| s.next_backup_at = next),
        };
        let next = add_job(&scheduler, &backups, &abort, &leader, cron, tick, backup).await?;
        tracing::info!(schedule = %cron, next = ?next, store = %backups.store().describe(), "nightly backups scheduled (UTC)");
    }
    if let Some(cron) = &config.verify_schedule {
        let tick = Tick {
            variable: "NEXUSD_BACKUP_VERIFY_SCHEDULE",
            what: "verification",
            next: Some(|s, next| s.next_verify_at = next),
        };
        add_job(&scheduler, &backups, &abort, &leader, cron, tick, verify).await?;
    }
    if let Some(cron) = &config.base_schedule {
        let tick = Tick {
            variable: "NEXUSD_BASEBACKUP_SCHEDULE",
            what: "base backup",
            next: None,
        };
        add_job(&scheduler, &backups, &abort, &leader, cron, tick, base).await?;
        tracing::info!(schedule = %cron, "weekly base backups scheduled (UTC)");
    }
    scheduler
        .start()
        .await
        .context("starting the backup scheduler")?;
    Ok(Some(Schedule { scheduler, abort }))
}

/// Writes a job's next tick into the status.
type KeepNext = fn(&mut BackupStatus, Option<DateTime<Utc>>);

/// What a scheduled job is called, and where the status keeps its next tick (if it does).
struct Tick {
    /// The variable that set its schedule, named in the error when the schedule is refused.
    variable: &'static str,
    what: &'static str,
    next: Option<KeepNext>,
}

/// Adds one job: every replica ticks, only the leader runs `run`, given that tick's lease and the
/// shutdown's abort token (work run under `lease.guard(&abort)` stops on either). Returns its
/// first tick.
async fn add_job<F, Fut>(
    scheduler: &JobScheduler,
    backups: &Arc<Backups>,
    abort: &CancellationToken,
    leader: &Leader,
    cron: &str,
    tick: Tick,
    run: F,
) -> Result<Option<DateTime<Utc>>>
where
    F: Fn(Arc<Backups>, Lease, CancellationToken) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let b = backups.clone();
    let token = abort.clone();
    let leader = leader.clone();
    let Tick {
        variable,
        what,
        next,
    } = tick;
    let job = Job::new_async(cron, move |id, mut scheduler| {
        let b = b.clone();
        let token = token.clone();
        let lease = lead(&leader, what);
        Box::pin(async move {
            if let Some(lease) = lease {
                run(b.clone(), lease, token).await;
            }
            if let Some(next) = next
                && let Ok(at) = scheduler.next_tick_for_job(id).await
            {
                b.status().update(|s| next(s, at));
            }
        })
    })
    .with_context(|| format!("{variable} {cron:?}"))?;
    let id = scheduler
        .add(job)
        .await
        .with_context(|| format!("scheduling the {what}"))?;
    let first = scheduler.clone().next_tick_for_job(id).await.ok().flatten();
    if let Some(next) = next {
        backups.status().update(|s| next(s, first));
    }
    Ok(first)
}

/// The nightly logical backup, then pruning when it succeeded.
async fn backup(b: Arc<Backups>, lease: Lease, abort: CancellationToken) {
    let cancel = lease.guard(&abort);
    let result = b.run_fenced(cancel, &Progress::off(), Some(&lease)).await;
    // Never prune after a failed backup (the old ones may be all there is), nor once leadership
    // is gone (the new leader prunes after its own).
    if result.is_ok()
        && !lease.ended()
        && let Err(e) = b.prune(false).await
    {
        tracing::error!(error = %format!("{e:#}"), "pruning after the backup failed");
    }
}

/// The weekly verification: the logical part, then the physical one while the server archives
/// WAL. The physical part is a singleton job too: one scratch recovery per tick.
async fn verify(b: Arc<Backups>, _lease: Lease, _abort: CancellationToken) {
    if let Err(e) = b.verify(None, &Progress::off()).await {
        tracing::error!(error = %format!("{e:#}"), "the scheduled backup verification could not run");
    }
    b.verify_physical_if_archiving().await;
}

/// The weekly physical base backup (src/backup/base.rs); it fails, logged, while archiving is
/// off. Its outcome is logged by run_physical.
async fn base(b: Arc<Backups>, lease: Lease, abort: CancellationToken) {
    let _ = b.run_physical(lease.guard(&abort), &Progress::off()).await;
}

/// This tick's lease when this replica leads (a process running no election, such as a test
/// building `Backups` by hand, never does: `serve` always runs one).
fn lead(leader: &Leader, job: &str) -> Option<Lease> {
    let lease = leader.lease();
    if lease.is_none() {
        tracing::debug!(
            job,
            "another replica leads: this one skips the scheduled job"
        );
    }
    lease
}

impl Schedule {
    /// Stops scheduling; a backup in flight gets `drain` to finish, then is aborted (its upload
    /// abandoned, pg_dump killed) and given a moment to clean up.
    pub async fn stop(mut self, backups: &Backups, drain: Duration) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::warn!(error = %e, "stopping the backup scheduler");
        }
        if !backups.wait_idle(drain).await {
            tracing::warn!("aborting the backup in flight at shutdown");
            self.abort.cancel();
            if !backups.wait_idle(Duration::from_secs(1)).await {
                tracing::error!("the aborted backup did not stop in time");
            }
        }
    }
}

impl Backups {
    /// The weekly verification's physical part, when the server archives WAL (its outcome is
    /// logged and kept in the status by verify_physical).
    async fn verify_physical_if_archiving(&self) {
        if self.server_archiving().await.archiving != Some(true) {
            return;
        }
        // The spool lives in the state directory, beside the embedded cluster's data.
        let Some(state_dir) = self.spool_dir.parent().map(std::path::Path::to_path_buf) else {
            return;
        };
        if let Err(e) = self.verify_physical(&state_dir, &Progress::off()).await {
            tracing::error!(error = %format!("{e:#}"), "the scheduled physical verification could not run");
        }
    }

    /// Waits (at most `limit`) until no backup or verification runs; whether it got there.
    async fn wait_idle(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.running.lock())
            .await
            .is_ok()
    }
}
