//! What nexusd knows about its backups at runtime — last attempt, last success, failures, last
//! verification, next scheduled runs — shared by the scheduler, `/health`, the
//! `get_backup_status` skill and the metrics. Seeded from the store at start, so a restart does
//! not forget the last good backup.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed,
    /// Another instance held the backup lock.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub name: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Success {
    pub name: String,
    pub finished_at: DateTime<Utc>,
    pub compressed_bytes: u64,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyRecord {
    pub name: String,
    pub verified_at: DateTime<Utc>,
    pub ok: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupStatus {
    /// Where backups go.
    pub store: String,
    pub running: bool,
    pub last_attempt: Option<Attempt>,
    pub last_success: Option<Success>,
    /// Failed backups since nexusd started.
    pub failures_total: u64,
    pub last_verify: Option<VerifyRecord>,
    pub last_verify_success_at: Option<DateTime<Utc>>,
    pub next_backup_at: Option<DateTime<Utc>>,
    pub next_verify_at: Option<DateTime<Utc>>,
    /// Why backups cannot run at all (e.g. the store could not be opened).
    pub unavailable: Option<String>,
    /// Why the last retention run failed or was refused; the backups themselves are unaffected.
    pub retention_error: Option<String>,
    /// The physical side (WAL archive, base backups); `None` until serve first looked.
    pub pitr: Option<PitrStatus>,
}

/// The point-in-time side, refreshed by serve from the store and the server
/// (src/backup/pitr_status.rs) every `NEXUSD_BACKUP_STATUS_REFRESH` seconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PitrStatus {
    /// The server's `archive_mode` is not `off` (`None`: the server could not be asked).
    pub archiving: Option<bool>,
    /// The recoverable window: a restore reaches any second between these.
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub window_seconds: Option<f64>,
    /// The base backup the window starts from.
    pub window_base: Option<String>,
    /// The newest archived segment and when it was stored.
    pub last_archived_segment: Option<String>,
    pub last_archived_at: Option<DateTime<Utc>>,
    pub last_archived_age_seconds: Option<f64>,
    /// A gap in the archive (or a missing timeline history), in one line naming what is missing.
    pub gap: Option<String>,
    pub first_missing_segment: Option<String>,
    /// Segments wal-push dropped at the pg_wal ceiling (NEXUSD_WAL_MAX_PENDING), as recorded.
    pub dropped_segments: u64,
    /// Pushes refused because the archive held other content under the name.
    pub duplicate_conflicts: u64,
    /// `pg_stat_archiver`: failed attempts since the statistics were reset, and the last one.
    pub archive_failures: Option<i64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// WAL files waiting in pg_wal to be archived (`.ready`), and pg_wal's size.
    pub pending_files: Option<i64>,
    pub pg_wal_bytes: Option<u64>,
    pub base_backups: usize,
    pub last_base_backup: Option<String>,
    pub last_base_backup_at: Option<DateTime<Utc>>,
    /// The last `backup verify --physical` this process ran.
    pub last_verify: Option<VerifyRecord>,
    /// Why the archive could not be read at the last look (the rest is then as before).
    pub error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}

/// The shared, cheaply cloned handle.
#[derive(Clone, Default)]
pub struct StatusHandle(Arc<Mutex<BackupStatus>>);

impl StatusHandle {
    pub fn snapshot(&self) -> BackupStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn update(&self, f: impl FnOnce(&mut BackupStatus)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }
}
