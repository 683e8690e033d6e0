//! serve's view of its backups follows the store. Backups and verifications also happen outside
//! the daemon — `nexusd backup run` or `backup verify` by hand, another instance — and the status
//! `/health`, `get_backup_status` and the metrics read must show them, or a "no backup for 26 h"
//! alert keeps firing after the operator fixed it. So serve seeds the status from the whole store
//! at start, then looks again every `NEXUSD_BACKUP_STATUS_REFRESH` seconds: one listing, and a
//! manifest or verification is read only when a newer one appeared. A view never goes back: only
//! a backup that finished later, or a verification made later, replaces what the status holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::manifest::{MANIFEST_SUFFIX, Manifest, VERIFY_SUFFIX, Verification, is_dump};
use super::status::{Attempt, BackupStatus, Outcome, Success, VerifyRecord};
use super::{Backups, newest_first};

/// The store objects last read, so an unchanged store costs one listing.
#[derive(Debug, Default)]
pub struct Seen {
    /// The newest complete backup's name.
    backup: Option<String>,
    /// The newest verification object: its name and creation time (a re-verification replaces
    /// the object under the same name).
    verification: Option<(String, DateTime<Utc>)>,
}

/// Seeds the status from the store, then refreshes it every `every`, until the task is aborted.
pub async fn follow(backups: Arc<Backups>, every: Duration) {
    backups.load_status().await;
    backups.refresh_pitr().await;
    loop {
        tokio::time::sleep(every).await;
        backups.refresh_status().await;
        backups.refresh_pitr().await;
    }
}

impl Backups {
    /// Fills the status from every backup in the store (the newest good backup, the newest
    /// verification, the newest successful one), so a restart does not forget them.
    pub async fn load_status(&self) {
        let entries = match self.list().await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), store = %self.store.describe(), "cannot list backups");
                return;
            }
        };
        let newest = entries.iter().find_map(|e| e.manifest.as_ref());
        let verifications: Vec<&Verification> = entries
            .iter()
            .filter_map(|e| e.verification.as_ref())
            .collect();
        let latest = verifications.iter().max_by_key(|v| v.verified_at);
        let latest_ok = verifications
            .iter()
            .filter(|v| v.ok)
            .map(|v| v.verified_at)
            .max();
        self.status.update(|s| {
            if let Some(m) = newest {
                apply_backup(s, m);
            }
            if let Some(v) = latest {
                apply_verification(s, v);
            }
            if let Some(at) = latest_ok {
                s.last_verify_success_at = s.last_verify_success_at.max(Some(at));
            }
        });
    }

    /// Reads what changed in the store since the last look: a newer complete backup, a newer
    /// verification. A store that cannot be listed leaves the status as it is.
    pub async fn refresh_status(&self) {
        let listing = match self.store.list().await {
            Ok(listing) => listing,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the backup store to refresh the status");
                return;
            }
        };
        let names: HashSet<&str> = listing.objects.iter().map(|o| o.name.as_str()).collect();
        let newest = listing
            .objects
            .iter()
            .filter(|o| {
                is_dump(&o.name) && names.contains(format!("{}{MANIFEST_SUFFIX}", o.name).as_str())
            })
            .min_by(|a, b| newest_first((a.created, &a.name), (b.created, &b.name)));
        let verification = listing
            .objects
            .iter()
            .filter(|o| o.name.ends_with(VERIFY_SUFFIX))
            .max_by_key(|o| o.created);
        let (seen_backup, seen_verification) = match self.followed.lock() {
            Ok(seen) => (seen.backup.clone(), seen.verification.clone()),
            Err(_) => return,
        };
        if let Some(o) = newest
            && seen_backup.as_deref() != Some(o.name.as_str())
            && let Some(m) = self
                .read_json::<Manifest>(&format!("{}{MANIFEST_SUFFIX}", o.name))
                .await
        {
            self.status.update(|s| apply_backup(s, &m));
            self.remember(|seen| seen.backup = Some(o.name.clone()));
        }
        if let Some(o) = verification
            && seen_verification.as_ref() != Some(&(o.name.clone(), o.created))
            && let Some(v) = self.read_json::<Verification>(&o.name).await
        {
            self.status.update(|s| apply_verification(s, &v));
            self.remember(|seen| seen.verification = Some((o.name.clone(), o.created)));
        }
    }

    fn remember(&self, f: impl FnOnce(&mut Seen)) {
        if let Ok(mut seen) = self.followed.lock() {
            f(&mut seen);
        }
    }
}

/// The status's record of a backup.
pub fn success(m: &Manifest) -> Success {
    Success {
        name: m.name.clone(),
        finished_at: m.finished_at,
        compressed_bytes: m.compressed_bytes,
        duration_seconds: m.duration_seconds,
    }
}

/// A backup found in the store becomes the last success, and the last attempt, when it finished
/// after what the status holds.
fn apply_backup(s: &mut BackupStatus, m: &Manifest) {
    if s.last_success
        .as_ref()
        .is_none_or(|known| m.finished_at > known.finished_at)
    {
        s.last_success = Some(success(m));
    }
    if s.last_attempt
        .as_ref()
        .is_none_or(|known| m.finished_at > known.finished_at)
    {
        s.last_attempt = Some(Attempt {
            started_at: m.started_at,
            finished_at: m.finished_at,
            outcome: Outcome::Success,
            name: Some(m.name.clone()),
            error: None,
        });
    }
}

/// A verification found in the store becomes the last one when it was made after what the
/// status holds.
pub fn apply_verification(s: &mut BackupStatus, v: &Verification) {
    if s.last_verify
        .as_ref()
        .is_none_or(|known| v.verified_at > known.verified_at)
    {
        s.last_verify = Some(VerifyRecord {
            name: v.name.clone(),
            verified_at: v.verified_at,
            ok: v.ok,
            detail: verify_detail(v),
        });
    }
    if v.ok {
        s.last_verify_success_at = s.last_verify_success_at.max(Some(v.verified_at));
    }
}

/// Why a verification failed, in one line (`None` when it passed).
pub fn verify_detail(v: &Verification) -> Option<String> {
    if v.ok {
        None
    } else if !v.sha256_ok || !v.crc32c_ok {
        Some("the object's checksums differ from the manifest".to_string())
    } else if !v.mismatches.is_empty() {
        Some(v.mismatches.join("; "))
    } else {
        Some(v.restore_errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn manifest(name: &str, hour: u32) -> Manifest {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, hour, 0, 0).unwrap();
        Manifest {
            manifest_version: 1,
            name: name.into(),
            format: "plain".into(),
            compression: super::super::Compression {
                codec: "gzip".into(),
                level: 3,
                block_bytes: 1,
            },
            raw_bytes: 1,
            compressed_bytes: 1,
            sha256: String::new(),
            crc32c: 0,
            database: "d".into(),
            server_version: "15".into(),
            pg_dump_version: "15".into(),
            started_at: at,
            finished_at: at,
            duration_seconds: 1.0,
            snapshot: String::new(),
            tables: Default::default(),
            store: "local".into(),
            generation: None,
            nexusd_version: "t".into(),
        }
    }

    #[test]
    fn a_newer_backup_replaces_the_status_and_an_older_one_never_does() {
        let mut s = BackupStatus::default();
        apply_backup(&mut s, &manifest("b", 3));
        assert_eq!(s.last_success.as_ref().unwrap().name, "b");
        assert_eq!(s.last_attempt.as_ref().unwrap().outcome, Outcome::Success);
        apply_backup(&mut s, &manifest("a", 2));
        assert_eq!(s.last_success.as_ref().unwrap().name, "b");
        apply_backup(&mut s, &manifest("c", 4));
        assert_eq!(s.last_success.as_ref().unwrap().name, "c");
        assert_eq!(s.last_attempt.as_ref().unwrap().name.as_deref(), Some("c"));
    }

    #[test]
    fn a_failed_attempt_after_the_newest_backup_stays_the_last_attempt() {
        let mut s = BackupStatus::default();
        let failed_at = Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap();
        s.last_attempt = Some(Attempt {
            started_at: failed_at,
            finished_at: failed_at,
            outcome: Outcome::Failed,
            name: None,
            error: Some("pg_dump failed".into()),
        });
        apply_backup(&mut s, &manifest("c", 4));
        assert_eq!(s.last_attempt.as_ref().unwrap().outcome, Outcome::Failed);
        assert_eq!(s.last_success.as_ref().unwrap().name, "c");
    }
}
