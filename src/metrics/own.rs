//! nexusd's own metrics: build info, `process_*` (the names dashboard 9628 plots for its
//! exporter), skill requests by skill and outcome with duration histograms, the connection pool,
//! and the backups.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use super::exposition::{Exposition, Kind};
use crate::backup::status::{BackupStatus, PitrStatus};
use crate::db::PoolStats;

/// Upper bounds of the skill duration histogram, in seconds (skills time out at 120 s).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

/// How a skill call ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkillOutcome {
    /// `success: true`.
    Success,
    /// The skill answered `success: false` (bad input, nothing found, an upstream error).
    Failure,
    /// 503: the database was unreachable or not ready.
    Unavailable,
    /// 401: a protected skill called without valid credentials.
    Unauthorized,
}

impl SkillOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SkillOutcome::Success => "success",
            SkillOutcome::Failure => "failure",
            SkillOutcome::Unavailable => "unavailable",
            SkillOutcome::Unauthorized => "unauthorized",
        }
    }
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Counts and durations of skill calls. Only registered skill ids are ever recorded, so the
/// label set is bounded by the registry.
#[derive(Default)]
pub struct SkillStats {
    by_skill: Mutex<BTreeMap<(&'static str, SkillOutcome), Histogram>>,
    /// The read skills' response cache (`skills/cache.rs` keeps these).
    pub cache: std::sync::Arc<CacheStats>,
    /// The workflow queue (`skills/workflows/worker.rs` keeps these).
    pub workflows: std::sync::Arc<WorkflowStats>,
}

/// The workflow queue as this replica's workers last saw it, and the jobs they ended.
#[derive(Default)]
pub struct WorkflowStats {
    queued: AtomicU64,
    running: AtomicU64,
    /// Jobs ended by this replica's workers, by kind and status (both from fixed lists).
    ended: Mutex<BTreeMap<(String, String), u64>>,
}

impl WorkflowStats {
    /// Jobs waiting and running in the shared queue (all replicas).
    pub fn set_depth(&self, queued: i64, running: i64) {
        self.queued
            .store(u64::try_from(queued).unwrap_or(0), Ordering::Relaxed);
        self.running
            .store(u64::try_from(running).unwrap_or(0), Ordering::Relaxed);
    }

    /// A job this replica ended with `status`.
    pub fn finished(&self, kind: &str, status: &str) {
        if let Ok(mut map) = self.ended.lock() {
            *map.entry((kind.to_string(), status.to_string()))
                .or_default() += 1;
        }
    }

    fn write(&self, out: &mut Exposition) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.single(
            "nexusd_workflow_jobs_queued",
            "Workflow jobs waiting in the shared queue, as this replica's workers last saw it.",
            Kind::Gauge,
            load(&self.queued),
        );
        out.single(
            "nexusd_workflow_jobs_running",
            "Workflow jobs running on any replica, as this replica's workers last saw it.",
            Kind::Gauge,
            load(&self.running),
        );
        let ended: Vec<((String, String), u64)> = match self.ended.lock() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => return,
        };
        for ((kind, status), count) in &ended {
            out.counter(
                "nexusd_workflow_jobs_total",
                "Workflow jobs this replica's workers ended, by kind and status.",
            )
            .sample(&[("kind", kind), ("status", status)], *count as f64);
        }
    }
}

/// What the read skills' response cache did, and what it holds.
#[derive(Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    /// Cacheable calls answered by their handler (not stored, stale, or read through while the
    /// cache cannot hear of changes).
    pub misses: AtomicU64,
    /// Entries dropped to stay within the byte budget (not those dropped by a change).
    pub evictions: AtomicU64,
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
}

impl CacheStats {
    fn write(&self, out: &mut Exposition) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let counters = [
            (
                "nexusd_skill_cache_hits_total",
                "Read skill calls answered from the response cache.",
                &self.hits,
            ),
            (
                "nexusd_skill_cache_misses_total",
                "Cacheable read skill calls that ran their handler.",
                &self.misses,
            ),
            (
                "nexusd_skill_cache_evictions_total",
                "Response cache entries dropped to stay within NEXUSD_SKILL_CACHE_BYTES.",
                &self.evictions,
            ),
        ];
        for (name, help, value) in counters {
            out.single(name, help, Kind::Counter, load(value));
        }
        out.single(
            "nexusd_skill_cache_bytes",
            "Bytes the response cache holds (keys, answers and bookkeeping).",
            Kind::Gauge,
            load(&self.bytes),
        );
        out.single(
            "nexusd_skill_cache_entries",
            "Answers the response cache holds.",
            Kind::Gauge,
            load(&self.entries),
        );
    }
}

impl SkillStats {
    pub fn observe(&self, skill: &'static str, outcome: SkillOutcome, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Ok(mut map) = self.by_skill.lock() {
            let h = map.entry((skill, outcome)).or_default();
            for (count, bound) in h.buckets.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    pub(super) fn write(&self, out: &mut Exposition) {
        self.cache.write(out);
        self.workflows.write(out);
        let snapshot: Vec<_> = match self.by_skill.lock() {
            Ok(map) => map.iter().map(|(k, v)| (*k, v.clone())).collect(),
            Err(_) => return,
        };
        for ((skill, outcome), h) in &snapshot {
            out.counter(
                "nexusd_skill_requests_total",
                "Skill calls through /a2a/execute, by skill and outcome.",
            )
            .sample(
                &[("skill", skill), ("outcome", outcome.as_str())],
                h.count as f64,
            );
        }
        for ((skill, outcome), h) in &snapshot {
            let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(h.buckets).collect();
            out.family(
                "nexusd_skill_request_duration_seconds",
                "Time from receiving a skill call to having its response, by skill and outcome.",
                Kind::Histogram,
            )
            .histogram(
                &[("skill", skill), ("outcome", outcome.as_str())],
                &buckets,
                h.sum,
                h.count,
            );
        }
    }
}

pub(super) fn build_info(out: &mut Exposition) {
    out.gauge(
        "nexusd_build_info",
        "nexusd's version and the compiler that built it; the value is always 1.",
    )
    .sample(
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("rustc_version", env!("NEXUSD_RUSTC_VERSION")),
        ],
        1.0,
    );
}

/// `process_*` for nexusd itself, as client libraries name them.
pub(super) fn process(out: &mut Exposition) -> Result<()> {
    let me = procfs::process::Process::myself().context("reading /proc/self")?;
    let stat = me.stat().context("reading /proc/self/stat")?;
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size() as f64;
    let boot = procfs::boot_time_secs().context("reading the boot time")? as f64;
    out.single(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        Kind::Counter,
        (stat.utime + stat.stime) as f64 / ticks,
    );
    out.single(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        Kind::Gauge,
        stat.rss as f64 * page,
    );
    out.single(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        Kind::Gauge,
        stat.vsize as f64,
    );
    out.single(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        Kind::Gauge,
        boot + stat.starttime as f64 / ticks,
    );
    out.single(
        "process_threads",
        "Number of OS threads in the process.",
        Kind::Gauge,
        stat.num_threads as f64,
    );
    if let Ok(fds) = me.fd_count() {
        out.single(
            "process_open_fds",
            "Number of open file descriptors.",
            Kind::Gauge,
            fds as f64,
        );
    }
    if let Ok(limits) = me.limits() {
        use procfs::process::LimitValue;
        let value = |v: LimitValue| match v {
            LimitValue::Value(v) => v as f64,
            LimitValue::Unlimited => f64::INFINITY,
        };
        out.single(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            Kind::Gauge,
            value(limits.max_open_files.soft_limit),
        );
        out.single(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            Kind::Gauge,
            value(limits.max_address_space.soft_limit),
        );
    }
    Ok(())
}

pub(super) fn pool(out: &mut Exposition, stats: PoolStats) {
    let idle = stats.free as f64;
    let in_use = f64::from(stats.size) - idle;
    let family = out.gauge(
        "nexusd_db_pool_connections",
        "Connections of the skills API's pool to PostgreSQL, by state.",
    );
    family.sample(&[("state", "idle")], idle);
    family.sample(&[("state", "in_use")], in_use.max(0.0));
    out.single(
        "nexusd_db_pool_max_connections",
        "The most connections the pool opens (POSTGRES_MAX_CONNECTIONS).",
        Kind::Gauge,
        f64::from(stats.max),
    );
}

/// `nexusd_leader`: 1 on the replica that runs the singleton jobs (`db/leader.rs`).
pub(super) fn leader(out: &mut Exposition, leading: bool) {
    out.single(
        "nexusd_leader",
        "1 when this replica leads (runs the scheduled backups, retention, verification and the embedding backfill), 0 otherwise.",
        Kind::Gauge,
        if leading { 1.0 } else { 0.0 },
    );
}

/// The read replicas (`DATABASE_READ_URL`): whether reads go there, and their replay lag.
pub(super) fn read_replicas(out: &mut Exposition, states: &[crate::db::replicas::ReplicaState]) {
    if states.is_empty() {
        return;
    }
    let family = out.gauge(
        "nexusd_read_replica_usable",
        "1 when read-only skills go to this read replica, 0 when it is skipped (down, or lagging more than NEXUSD_READ_MAX_LAG).",
    );
    for s in states {
        family.sample(&[("replica", &s.host)], if s.usable { 1.0 } else { 0.0 });
    }
    let family = out.gauge(
        "nexusd_read_replica_lag_seconds",
        "Replay lag of the read replica as it last reported it (0 when it has replayed all it received).",
    );
    for s in states {
        if let Some(lag) = s.lag_seconds {
            family.sample(&[("replica", &s.host)], lag);
        }
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

pub(super) fn backups(out: &mut Exposition, status: &BackupStatus) {
    out.single(
        "nexusd_backup_available",
        "1 when backups can run (the store opened and the schedule is set), 0 otherwise.",
        Kind::Gauge,
        f64::from(u8::from(status.unavailable.is_none())),
    );
    out.single(
        "nexusd_backup_running",
        "1 while a backup is being taken.",
        Kind::Gauge,
        f64::from(u8::from(status.running)),
    );
    // 0 when no good backup is known, so "time() - this > N" alerts fire on a fresh VM too.
    out.single(
        "nexusd_backup_last_success_timestamp_seconds",
        "When the newest good backup finished (Unix time; 0 when there is none).",
        Kind::Gauge,
        status
            .last_success
            .as_ref()
            .map_or(0.0, |s| timestamp(s.finished_at)),
    );
    if let Some(s) = &status.last_success {
        out.single(
            "nexusd_backup_last_duration_seconds",
            "How long the newest good backup took.",
            Kind::Gauge,
            s.duration_seconds,
        );
        out.single(
            "nexusd_backup_last_size_bytes",
            "Compressed size of the newest good backup.",
            Kind::Gauge,
            s.compressed_bytes as f64,
        );
    }
    out.single(
        "nexusd_backup_failures_total",
        "Backups that failed since nexusd started.",
        Kind::Counter,
        status.failures_total as f64,
    );
    if let Some(a) = &status.last_attempt {
        out.single(
            "nexusd_backup_last_attempt_timestamp_seconds",
            "When the last backup attempt finished (Unix time).",
            Kind::Gauge,
            timestamp(a.finished_at),
        );
    }
    out.single(
        "nexusd_backup_last_verify_success_timestamp_seconds",
        "When a backup was last restored and verified successfully (Unix time; 0 when never).",
        Kind::Gauge,
        status.last_verify_success_at.map_or(0.0, timestamp),
    );
    if let Some(v) = &status.last_verify {
        out.single(
            "nexusd_backup_last_verify_ok",
            "1 when the last verification of a backup passed, 0 when it failed.",
            Kind::Gauge,
            f64::from(u8::from(v.ok)),
        );
    }
    if let Some(next) = status.next_backup_at {
        out.single(
            "nexusd_backup_next_run_timestamp_seconds",
            "When the next scheduled backup starts (Unix time).",
            Kind::Gauge,
            timestamp(next),
        );
    }
    if let Some(p) = &status.pitr {
        pitr(out, p);
    }
}

/// The point-in-time side (docs/pitr.md), once serve has looked at the archive and the server.
fn pitr(out: &mut Exposition, p: &PitrStatus) {
    if let Some(on) = p.archiving {
        out.single(
            "nexusd_wal_archiving_enabled",
            "1 when the server archives WAL (archive_mode is not off), 0 otherwise.",
            Kind::Gauge,
            f64::from(u8::from(on)),
        );
    }
    // 0 when nothing is archived yet, so "time() - this > N" alerts fire on a fresh archive too.
    out.single(
        "nexusd_wal_last_archived_timestamp_seconds",
        "When the newest archived WAL segment was stored (Unix time; 0 when there is none).",
        Kind::Gauge,
        p.last_archived_at.map_or(0.0, timestamp),
    );
    if let Some(failed) = p.archive_failures {
        out.single(
            "nexusd_wal_archive_failures_total",
            "Failed archive_command runs (pg_stat_archiver.failed_count, since its last reset).",
            Kind::Counter,
            failed as f64,
        );
    }
    let counts = [
        (
            "nexusd_wal_duplicate_conflicts",
            "Pushes refused because the archive held other content under the name (conflict records in the archive).",
            p.duplicate_conflicts,
        ),
        (
            "nexusd_wal_dropped_segments",
            "WAL segments dropped at the pg_wal ceiling (NEXUSD_WAL_MAX_PENDING) while the store was unreachable, as recorded in the archive.",
            p.dropped_segments,
        ),
        (
            "nexusd_wal_archive_gap",
            "1 when the archive has a gap (a missing segment or timeline history) since the oldest base backup, 0 otherwise.",
            u64::from(p.gap.is_some()),
        ),
    ];
    for (name, help, value) in counts {
        out.single(name, help, Kind::Gauge, value as f64);
    }
    out.single(
        "nexusd_pitr_window_seconds",
        "Length of the recoverable window: from the oldest base backup with unbroken WAL to the newest archived segment (0 when there is none).",
        Kind::Gauge,
        p.window_seconds.unwrap_or(0.0),
    );
    out.single(
        "nexusd_basebackup_last_success_timestamp_seconds",
        "When the newest complete base backup finished (Unix time; 0 when there is none).",
        Kind::Gauge,
        p.last_base_backup_at.map_or(0.0, timestamp),
    );
    if let Some(bytes) = p.pg_wal_bytes {
        out.single(
            "nexusd_pg_wal_bytes",
            "Size of the server's pg_wal directory (grows while WAL cannot be archived).",
            Kind::Gauge,
            bytes as f64,
        );
    }
    if let Some(pending) = p.pending_files {
        out.single(
            "nexusd_wal_archive_pending_files",
            "WAL files in pg_wal waiting to be archived (.ready).",
            Kind::Gauge,
            pending as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_histograms_are_cumulative() {
        let stats = SkillStats::default();
        stats.observe(
            "query_patterns",
            SkillOutcome::Success,
            Duration::from_millis(3),
        );
        stats.observe(
            "query_patterns",
            SkillOutcome::Success,
            Duration::from_millis(40),
        );
        stats.observe(
            "query_patterns",
            SkillOutcome::Failure,
            Duration::from_secs(200),
        );
        let mut out = Exposition::new();
        stats.write(&mut out);
        let text = out.render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        let ok = "nexusd_skill_request_duration_seconds_bucket{skill=\"query_patterns\",outcome=\"success\"";
        assert_eq!(line(&format!("{ok},le=\"0.0025\"}}")), "0");
        assert_eq!(line(&format!("{ok},le=\"0.005\"}}")), "1");
        assert_eq!(line(&format!("{ok},le=\"0.05\"}}")), "2");
        assert_eq!(line(&format!("{ok},le=\"+Inf\"}}")), "2");
        let failed = "nexusd_skill_request_duration_seconds_bucket{skill=\"query_patterns\",outcome=\"failure\"";
        assert_eq!(line(&format!("{failed},le=\"120\"}}")), "0");
        assert_eq!(line(&format!("{failed},le=\"+Inf\"}}")), "1");
        assert_eq!(
            line("nexusd_skill_requests_total{skill=\"query_patterns\",outcome=\"success\"}"),
            "2"
        );
    }
}
