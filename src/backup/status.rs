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

#[derive(Debug, Clone, Serialize)]
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
