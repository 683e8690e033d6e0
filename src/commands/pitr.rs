//! The physical side of `nexusd backup …` and `nexusd restore`: `backup run --physical`, the
//! base backups in `backup list`, and `restore --target-time`/`--target-lsn` (the embedded
//! cluster restored in place; for a server of one's own, the exact steps printed).

use std::path::Path;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::backup::{megabytes, open};
use super::{Needs, with_database};
use crate::backup::base::{BaseEntry, BaseManifest};
use crate::backup::pitr::RecoveryTarget;
use crate::backup::pitr_verify::PhysicalVerification;
use crate::backup::{BackupError, Backups, Progress};
use crate::config::Config;
use crate::db::DatabaseTarget;
use crate::db::cluster::{ClusterSpec, StateLock};
use crate::db::target::state_lock_holder;

/// `backup run --physical`.
pub(super) async fn take_base(backups: &Backups) -> Result<()> {
    let cancel = CancellationToken::new();
    crate::signals::cancel_on_signals(cancel.clone())?;
    let m = match backups
        .run_physical(cancel, &Progress::stderr("base backup"))
        .await
    {
        Ok(m) => m,
        Err(BackupError::Busy) => bail!("another backup is running in this nexusd"),
        Err(BackupError::Failed(e)) => {
            return Err(e.context("base backup failed; nothing was stored as a backup"));
        }
    };
    println!(
        "base backup {}: {} ({} raw) in {:.1} s, WAL {} to {} (timeline {}), archived through {} -> {}/base",
        m.name,
        megabytes(m.compressed_bytes),
        megabytes(m.raw_bytes),
        m.duration_seconds,
        m.start_lsn,
        m.stop_lsn,
        m.timeline,
        m.stop_wal_file,
        backups.store().describe().trim_end_matches('/')
    );
    Ok(())
}

/// The base backups' table of `backup list` (nothing when there are none).
pub(super) fn list_bases(bases: &[BaseEntry]) {
    if bases.is_empty() {
        return;
    }
    println!();
    println!(
        "BASE BACKUPS (physical, for restore --target-time)\n{:<36} {:<19} {:>11} {:>12} {:>12} {:>3}",
        "ID", "STOPPED (UTC)", "SIZE", "START LSN", "STOP LSN", "TLI"
    );
    for b in bases {
        match &b.manifest {
            Some(m) => println!(
                "{:<36} {:<19} {:>11} {:>12} {:>12} {:>3}",
                b.name,
                m.finished_at.format("%Y-%m-%d %H:%M:%S"),
                megabytes(b.size),
                m.start_lsn,
                m.stop_lsn,
                m.timeline
            ),
            None => println!(
                "{:<36} {:<19} {:>11}  incomplete (no manifest): not a backup",
                b.name,
                b.created.format("%Y-%m-%d %H:%M:%S"),
                megabytes(b.size)
            ),
        }
    }
}

/// The archive's part of `backup list`: the recoverable window, the newest segment, and a gap
/// as an error line (the listing itself still succeeds).
pub(super) async fn list_archive(backups: &Backups) {
    let report = match backups.archive_report().await {
        Ok(r) if r.continuity.newest_segment.is_some() || !r.bases.is_empty() => r,
        Ok(_) => return,
        Err(e) => {
            println!("\nWAL ARCHIVE: cannot be read: {e:#}");
            return;
        }
    };
    let c = &report.continuity;
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        })
    };
    println!(
        "\nWAL ARCHIVE: newest segment {} (stored {} UTC); recoverable window {} to {} UTC{}",
        c.newest_segment.as_deref().unwrap_or("none"),
        time(c.newest_stored_at),
        time(c.window_start),
        time(c.window_end),
        match (report.conflicts, report.dropped_segments()) {
            (0, 0) => String::new(),
            (c, d) => format!("; {c} conflicting pushes, {d} segments dropped at the ceiling"),
        }
    );
    if let Some(problem) = report.problem() {
        println!("error: {problem}");
    }
}

/// The archive's part of `backup list --json` (`null` when it cannot be read).
pub(super) async fn archive_json(backups: &Backups) -> Value {
    match backups.archive_report().await {
        Ok(r) => json!({
            "newest_segment": r.continuity.newest_segment,
            "newest_stored_at": r.continuity.newest_stored_at,
            "window_start": r.continuity.window_start,
            "window_end": r.continuity.window_end,
            "window_base": r.continuity.window_base,
            "first_missing_segment": r.continuity.first_missing,
            "missing_segments": r.continuity.missing_count,
            "gap": r.problem(),
            "duplicate_conflicts": r.conflicts,
            "dropped_segments": r.dropped_segments(),
        }),
        Err(e) => json!({"error": format!("{e:#}")}),
    }
}

/// `backup verify --physical [--json]`: exits non-zero (through the error) when it failed.
pub(super) async fn verify_physical(backups: &Backups, state_dir: &Path, json: bool) -> Result<()> {
    let v = backups
        .verify_physical(state_dir, &Progress::stderr("verify --physical"))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_verification(&v);
    }
    if !v.ok {
        let first = v.problems.iter().chain(&v.mismatches).next();
        bail!(
            "the physical backup did not verify: {}",
            first.map_or("see above", String::as_str)
        );
    }
    Ok(())
}

fn print_verification(v: &PhysicalVerification) {
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
    };
    let verdict = if v.ok {
        "verified"
    } else {
        "FAILED verification:"
    };
    println!(
        "{verdict} base backup {} with every archived WAL file up to {}: replayed to LSN {}{}, {} tables, {} rows ({:.1} s)",
        v.base_backup.as_deref().unwrap_or("-"),
        v.newest_segment.as_deref().unwrap_or("-"),
        v.reached_lsn.as_deref().unwrap_or("-"),
        v.last_transaction
            .map(|t| format!(
                " (last transaction {})",
                t.format("%Y-%m-%d %H:%M:%S%.3f UTC")
            ))
            .unwrap_or_default(),
        v.tables,
        v.rows,
        v.duration_seconds
    );
    println!(
        "recoverable window: {} to {}",
        time(v.window_start),
        time(v.window_end)
    );
    match &v.counts_from {
        Some(from) if v.mismatches.is_empty() => println!("row counts match ({from})"),
        Some(from) => println!("row counts compared with: {from}"),
        None => {}
    }
    for m in &v.mismatches {
        println!("  mismatch: {m}");
    }
    for p in &v.problems {
        println!("  error: {p}");
    }
    for n in &v.notes {
        println!("  note: {n}");
    }
}

/// One base backup of `backup list --json`.
pub(super) fn base_json(b: &BaseEntry) -> Value {
    let m = b.manifest.as_ref();
    json!({
        "name": b.name,
        "time": m.map_or(b.created, |m| m.finished_at),
        "size_bytes": b.size,
        "complete": m.is_some(),
        "start_lsn": m.map(|m| m.start_lsn.clone()),
        "stop_lsn": m.map(|m| m.stop_lsn.clone()),
        "timeline": m.map(|m| m.timeline),
        "duration_seconds": m.map(|m| m.duration_seconds),
    })
}

/// `restore --target-time`/`--target-lsn`.
pub(super) async fn restore(config: &Config, time: Option<&str>, lsn: Option<&str>) -> Result<()> {
    let target = RecoveryTarget::parse(time, lsn)?;
    let embedded = matches!(config.database.target, DatabaseTarget::Embedded);
    if embedded && let Some(holder) = state_lock_holder(&config.state_dir) {
        bail!(
            "{holder} holds {} and runs the cluster a point-in-time restore would replace: stop \
             it first (systemctl stop nexusd, or end that process)",
            config.state_dir.display()
        );
    }
    // Held until the restore is done: neither serve nor another command starts the cluster.
    let _lock = match embedded {
        true => match StateLock::try_acquire(&config.state_dir)? {
            Some(lock) => Some(lock),
            None => bail!("another nexusd holds {}", config.state_dir.display()),
        },
        false => None,
    };
    let live = ClusterSpec::embedded(&config.state_dir).data_dir;
    if embedded && let Ok(pid) = std::fs::read_to_string(live.join("postmaster.pid")) {
        let pid: i32 = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        if pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
            bail!(
                "a PostgreSQL (pid {pid}) runs on {}: stop it before restoring",
                live.display()
            );
        }
    }
    with_database(config, Needs::AddressOnly, async |db, _| {
        let backups = open(config, db).await?;
        if !embedded {
            let base = backups.base_for(&target).await?;
            print_steps(&backups, &base, &target);
            return Ok(());
        }
        let progress = Progress::stderr("restore");
        let r = backups
            .restore_to(&target, &config.state_dir, &progress)
            .await?;
        println!(
            "restored the embedded cluster to {}: base backup {} (stopped at LSN {}), WAL replayed to LSN {}{}, now on timeline {}",
            target.describe(),
            r.base.name,
            r.base.stop_lsn,
            r.reached_lsn,
            r.last_transaction
                .map(|t| format!(" (last transaction {})", t.format("%Y-%m-%d %H:%M:%S%.3f UTC")))
                .unwrap_or_default(),
            r.timeline
        );
        println!("the data directory is {}", r.data_dir.display());
        if let Some(kept) = &r.kept {
            println!(
                "the data directory as it was before is kept as {}: remove it once the restore is checked",
                kept.display()
            );
        }
        Ok(())
    })
    .await
}

/// The steps for a server nexusd does not run.
fn print_steps(backups: &Backups, base: &BaseManifest, target: &RecoveryTarget) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "nexusd".into());
    let targets: String = target
        .settings()
        .iter()
        .map(|(k, v)| format!("     {k} = '{v}'\n"))
        .collect();
    println!(
        "DATABASE_URL names a server nexusd does not run: restore it by hand to {} (docs/pitr.md):\n\
         1. stop the server and move its data directory aside; create it again, empty, owned by \
         its user, mode 0700\n\
         2. fetch the base backup {} ({}/base/{}; SHA-256 {}) and unpack it there: \
         tar -xzf {} -C <data dir>\n\
         3. create <data dir>/recovery.signal and add to the server's configuration:\n     \
         restore_command = '{exe} --env-file /etc/nexusd/wal.env wal-fetch %f %p'\n{targets}\
         4. start the server; when SELECT pg_is_in_recovery() says false, check the data and \
         remove the restore_command and recovery_target_* lines",
        target.describe(),
        base.name,
        backups.store().describe().trim_end_matches('/'),
        base.name,
        base.sha256,
        base.name,
    );
}
