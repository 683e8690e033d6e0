//! `nexusd backup verify --physical` (and the weekly verification when archiving is on): proves
//! that the physical side restores. The archive is checked for gaps first
//! (src/backup/wal_gaps.rs); then the newest base backup is fetched and recovered with the
//! restore machinery of src/backup/pitr.rs — into a scratch data directory beside the embedded
//! cluster's (`<state>/pg.verify-…`) on a private socket (`<state>/run.verify-<pid>`), replaying
//! every archived WAL file — and its row counts are compared. The scratch directories are removed
//! whatever happens; the scratch cluster never archives (its promotion would add a timeline to
//! the archive).
//!
//! Row counts are compared with a **live count** when the database answers: the counts are taken
//! in one snapshot, then the WAL file holding that moment is archived, so every row counted is in
//! the archive the recovery replays. A table written to while the verification ran (its live
//! count changed by the end) cannot be compared exactly and is reported as a note. Without the
//! database, the newest dump's manifest is the reference; rows written since that dump make
//! differences expected, so they are notes, not failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::base::{parse_lsn, wal_file};
use super::pitr::{Recovery, RecoveryTarget};
use super::status::VerifyRecord;
use super::{Backups, Progress, count_tables};
use crate::db::cluster::{ClusterSpec, quote_ident};

/// What a physical verification found.
#[derive(Debug, Clone, Serialize)]
pub struct PhysicalVerification {
    pub ok: bool,
    pub base_backup: Option<String>,
    pub verified_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub newest_segment: Option<String>,
    pub first_missing_segment: Option<String>,
    pub reached_lsn: Option<String>,
    pub last_transaction: Option<DateTime<Utc>>,
    /// `live` or `dump manifest <name>`; `None` when nothing could be compared.
    pub counts_from: Option<String>,
    pub tables: usize,
    pub rows: i64,
    pub mismatches: Vec<String>,
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

/// What the restored counts are compared with.
enum Reference {
    /// Counted in the live database; the connection recounts a table that differs.
    Live(BTreeMap<String, i64>, PgConnection),
    Manifest(String, BTreeMap<String, i64>),
    Nothing,
}

/// Removes the scratch directories when dropped, whatever happened.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for dir in &self.0 {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the scratch directory");
            }
        }
    }
}

impl Backups {
    /// Checks the archive and restores the newest base backup with all WAL into a scratch
    /// directory under `state_dir`. The result says what failed; `Err` only when it could not
    /// run at all (another verification running).
    pub async fn verify_physical(
        &self,
        state_dir: &Path,
        progress: &Progress,
    ) -> Result<PhysicalVerification> {
        let Ok(_running) = self.running.try_lock() else {
            bail!("a backup or verification is already running");
        };
        let clock = Instant::now();
        let mut v = PhysicalVerification {
            ok: false,
            base_backup: None,
            verified_at: Utc::now(),
            duration_seconds: 0.0,
            window_start: None,
            window_end: None,
            newest_segment: None,
            first_missing_segment: None,
            reached_lsn: None,
            last_transaction: None,
            counts_from: None,
            tables: 0,
            rows: 0,
            mismatches: Vec::new(),
            notes: Vec::new(),
            problems: Vec::new(),
        };
        if let Err(e) = self.restore_scratch(state_dir, progress, &mut v).await {
            v.problems.push(format!("{e:#}"));
        }
        // The window and gap as they stand after the archiving the check caused.
        match self.archive_report().await {
            Ok(report) => {
                let c = &report.continuity;
                (v.window_start, v.window_end) = (c.window_start, c.window_end);
                v.newest_segment = c.newest_segment.clone();
                v.first_missing_segment = c.first_missing.clone();
                v.problems.extend(report.problem());
            }
            Err(e) => v.problems.push(format!("checking the WAL archive: {e:#}")),
        }
        v.ok = v.problems.is_empty() && v.mismatches.is_empty();
        v.duration_seconds = clock.elapsed().as_secs_f64();
        self.record_physical(&v);
        Ok(v)
    }

    fn record_physical(&self, v: &PhysicalVerification) {
        let detail = v.problems.iter().chain(&v.mismatches).cloned();
        let detail: Vec<String> = detail.collect();
        let record = VerifyRecord {
            name: v.base_backup.clone().unwrap_or_default(),
            verified_at: v.verified_at,
            ok: v.ok,
            detail: (!detail.is_empty()).then(|| detail.join("; ")),
        };
        self.status.update(|s| {
            let mut p = s.pitr.clone().unwrap_or_default();
            p.last_verify = Some(record);
            s.pitr = Some(p);
        });
        match v.ok {
            true => {
                tracing::info!(base = ?v.base_backup, reached = ?v.reached_lsn, "physical verification passed")
            }
            false => {
                tracing::error!(problems = ?v.problems, mismatches = ?v.mismatches, "physical verification FAILED")
            }
        }
    }

    /// Takes the reference counts, recovers the newest base backup into scratch directories
    /// (removed on return) and compares.
    async fn restore_scratch(
        &self,
        state_dir: &Path,
        progress: &Progress,
        v: &mut PhysicalVerification,
    ) -> Result<()> {
        let base = self.base_for(&RecoveryTarget::Latest).await?;
        v.base_backup = Some(base.name.clone());
        let progress = progress.relabel(format!("verify --physical {}", base.name));
        let reference = self.reference_counts().await;
        let spool = self.fetch_base(&base, &progress).await?;
        let stamp = format!(
            "{}-{}",
            Utc::now().format("%Y%m%d_%H%M%S"),
            std::process::id()
        );
        let spec = ClusterSpec {
            data_dir: state_dir.join(format!("pg.verify-{stamp}")),
            socket_dir: state_dir.join(format!("run.verify-{}", std::process::id())),
            ..ClusterSpec::embedded(state_dir)
        };
        let _scratch = Scratch(vec![spec.data_dir.clone(), spec.socket_dir.clone()]);
        let how = Recovery {
            archive: false,
            count_in: Some(&self.db.name),
        };
        let reached = self
            .recover(
                &spool,
                &base,
                spec,
                (&RecoveryTarget::Latest, how),
                state_dir,
                &progress,
            )
            .await
            .context("recovering the newest base backup with every archived WAL file")?;
        v.reached_lsn = Some(reached.lsn.clone());
        v.last_transaction = reached.last_transaction;
        let counts = reached.counts.unwrap_or_default();
        v.tables = counts.len();
        v.rows = counts.values().sum();
        compare(reference, &counts, v).await;
        Ok(())
    }

    /// The live counts (with the WAL holding them archived), else the newest dump's manifest.
    async fn reference_counts(&self) -> Reference {
        match self.live_counts().await {
            Ok((counts, conn)) => return Reference::Live(counts, conn),
            Err(e) => {
                tracing::info!(error = %format!("{e:#}"), "no live count: comparing with the newest dump")
            }
        }
        let newest = match self.list().await {
            Ok(entries) => entries.into_iter().find_map(|e| e.manifest),
            Err(_) => None,
        };
        match newest {
            Some(m) => Reference::Manifest(m.name, m.tables),
            None => Reference::Nothing,
        }
    }

    /// Counts every table in one snapshot, then waits until the WAL file holding that moment
    /// is archived, so every counted row is in the archive.
    async fn live_counts(&self) -> Result<(BTreeMap<String, i64>, PgConnection)> {
        let connect = PgConnection::connect_with(self.db.connect_options());
        let mut conn = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .map_err(|_| anyhow!("the database did not answer within 10 s"))??;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut conn)
            .await?;
        let counts = count_tables(&mut conn).await?;
        sqlx::query("COMMIT").execute(&mut conn).await?;
        let (current, lsn, segment_bytes): (String, String, i64) = sqlx::query_as(
            "SELECT pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()::text,
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
        )
        .fetch_one(&mut conn)
        .await?;
        let timeline = u32::from_str_radix(current.get(..8).unwrap_or("1"), 16).unwrap_or(1);
        let lsn = parse_lsn(&lsn).ok_or_else(|| anyhow!("unreadable WAL position {lsn}"))?;
        let file = wal_file(timeline, lsn.saturating_sub(1), segment_bytes as u64);
        self.wait_archived(&mut conn, &file).await?;
        Ok((counts, conn))
    }
}

/// Compares the recovered counts with the reference, filling `v`.
async fn compare(
    reference: Reference,
    counts: &BTreeMap<String, i64>,
    v: &mut PhysicalVerification,
) {
    match reference {
        Reference::Live(expected, mut conn) => {
            v.counts_from = Some("live".into());
            for (table, want) in &expected {
                let got = counts.get(table).copied();
                if got == Some(*want) {
                    continue;
                }
                let now = recount(&mut conn, table).await;
                match (got, now) {
                    (_, Some(now)) if now != *want => v.notes.push(format!(
                        "{table} was written to during the verification ({want} rows, now {now}): \
                         not compared"
                    )),
                    (None, _) => v.mismatches.push(format!(
                        "{table} ({want} rows live) is missing from the recovered cluster"
                    )),
                    (Some(got), _) => v
                        .mismatches
                        .push(format!("{table}: {got} rows recovered, {want} live")),
                }
            }
            conn.close().await.ok();
        }
        Reference::Manifest(name, expected) => {
            v.counts_from = Some(format!("dump manifest {name}"));
            for (table, want) in &expected {
                match counts.get(table) {
                    Some(got) if got == want => {}
                    got => v.notes.push(format!(
                        "{table}: {} recovered, {want} in the dump {name} (rows written since \
                         that dump make a difference expected)",
                        got.map_or("missing".to_string(), |g| format!("{g} rows"))
                    )),
                }
            }
        }
        Reference::Nothing => v
            .notes
            .push("no live database and no dump manifest: row counts not compared".into()),
    }
}

async fn recount(conn: &mut PgConnection, table: &str) -> Option<i64> {
    let (schema, name) = table.split_once('.')?;
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.{}",
        quote_ident(schema),
        quote_ident(name)
    ))
    .fetch_one(conn)
    .await
    .ok()
}
