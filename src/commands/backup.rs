//! The `nexusd backup …` and `nexusd restore` commands: run the jobs once and print what
//! happened. Each exits non-zero (through its error) when the job did not do its work.

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Needs, with_database};
use crate::backup::status::StatusHandle;
use crate::backup::{BackupError, Backups, Entry, Progress};
use crate::cli::BackupAction;
use crate::config::Config;
use crate::db::DatabaseTarget;
use crate::db::cluster::EMBEDDED_DATABASE;
use crate::db::target::state_lock_holder;

pub(super) async fn open(config: &Config, db: &crate::db::Database) -> Result<Backups> {
    let backups = Backups::open(
        &config.backup,
        db.clone(),
        config.database.pg_bindir.clone(),
        config.state_dir.join("spool"),
        StatusHandle::default(),
    )
    .await
    .map_err(|e| {
        anyhow!(
            "opening the backup store {}: {e}",
            config.backup.destination.describe()
        )
    })?;
    Ok(backups.expecting_tables(crate::bootstrap::KNOWLEDGE_BASE_TABLES))
}

pub async fn run(config: &Config, action: BackupAction) -> Result<()> {
    let needs = match action {
        BackupAction::List { .. } | BackupAction::Prune { .. } => Needs::AddressOnly,
        BackupAction::Run { .. } | BackupAction::Verify { .. } => Needs::RunningServer,
    };
    with_database(config, needs, async |db, _| {
        let backups = open(config, db).await?;
        match action {
            BackupAction::Run { physical: false } => take(&backups).await,
            BackupAction::Run { physical: true } => super::pitr::take_base(&backups).await,
            BackupAction::List { json: false } => list(&backups).await,
            BackupAction::List { json: true } => list_json(&backups).await,
            BackupAction::Prune { dry_run } => prune(&backups, dry_run).await,
            BackupAction::Verify {
                physical: true,
                id,
                json,
            } => {
                if id.is_some() {
                    bail!("--physical verifies the newest base backup: give no backup name");
                }
                super::pitr::verify_physical(&backups, &config.state_dir, json).await
            }
            BackupAction::Verify { id, .. } => verify(&backups, id.as_deref()).await,
        }
    })
    .await
}

async fn take(backups: &Backups) -> Result<()> {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    // Ctrl-C or SIGTERM abandons the upload cleanly instead of leaving half an object.
    crate::signals::cancel_on_signals(on_signal)?;
    let manifest = match backups.run(cancel, &Progress::stderr("backup")).await {
        Ok(m) => m,
        Err(BackupError::Busy) => {
            bail!("another backup is running (this or another nexusd holds the backup lock)")
        }
        Err(BackupError::Failed(e)) => {
            return Err(e.context("backup failed; nothing was stored as a backup"));
        }
    };
    println!(
        "backup {}: {} ({} raw) in {:.1} s, {} tables, {} rows -> {}",
        manifest.name,
        megabytes(manifest.compressed_bytes),
        megabytes(manifest.raw_bytes),
        manifest.duration_seconds,
        manifest.tables.len(),
        manifest.tables.values().sum::<i64>(),
        backups.store().describe()
    );
    // The backup is stored whatever retention does next: a failure there is reported, not
    // turned into a failed backup.
    if let Err(e) = prune(backups, false).await {
        tracing::warn!(error = %format!("{e:#}"), "retention after the backup failed");
        eprintln!(
            "nexusd: warning: backup {} is stored, but retention failed: {e:#}",
            manifest.name
        );
    }
    Ok(())
}

pub(super) fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn verified(entry: &Entry) -> String {
    match &entry.verification {
        Some(v) if v.ok => format!("yes ({})", v.verified_at.format("%Y-%m-%d %H:%M")),
        Some(v) => format!("FAILED ({})", v.verified_at.format("%Y-%m-%d %H:%M")),
        None => "no".into(),
    }
}

async fn list(backups: &Backups) -> Result<()> {
    let entries = backups.list().await?;
    let bases = backups.base_backups().await?;
    if entries.is_empty() {
        println!("no backups in {}", backups.store().describe());
        super::pitr::list_bases(&bases);
        super::pitr::list_archive(backups).await;
        return Ok(());
    }
    println!(
        "{:<36} {:<19} {:>11} {:>9} {:>11}  VERIFIED",
        "ID", "TIME (UTC)", "SIZE", "DURATION", "ROWS"
    );
    for e in &entries {
        match &e.manifest {
            Some(m) => println!(
                "{:<36} {:<19} {:>11} {:>8.1}s {:>11}  {}",
                e.name,
                m.finished_at.format("%Y-%m-%d %H:%M:%S"),
                megabytes(e.size),
                m.duration_seconds,
                m.tables.values().sum::<i64>(),
                verified(e)
            ),
            None => println!(
                "{:<36} {:<19} {:>11} {:>9} {:>11}  incomplete (no manifest): not a backup",
                e.name,
                e.created.format("%Y-%m-%d %H:%M:%S"),
                megabytes(e.size),
                "-",
                "-"
            ),
        }
    }
    let complete = entries.iter().filter(|e| e.complete).count();
    println!(
        "{complete} complete backups in {}",
        backups.store().describe()
    );
    super::pitr::list_bases(&bases);
    super::pitr::list_archive(backups).await;
    Ok(())
}

/// `backup list --json`: one object, `{"store", "backups": [...]}`, newest first. The shape is
/// documented in `backup list --help` and the README; keep it stable.
async fn list_json(backups: &Backups) -> Result<()> {
    let entries = backups.list().await?;
    let listed: Vec<Value> = entries.iter().map(entry_json).collect();
    let bases: Vec<Value> = backups
        .base_backups()
        .await?
        .iter()
        .map(super::pitr::base_json)
        .collect();
    let out = json!({
        "store": backups.store().describe(),
        "backups": listed,
        "base_backups": bases,
        "wal": super::pitr::archive_json(backups).await,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// One backup of `backup list --json` (also the newest backup of `status --json`).
pub(super) fn entry_json(e: &Entry) -> Value {
    let verification = e.verification.as_ref().map(|v| {
        let mut problems = v.mismatches.clone();
        if !v.sha256_ok {
            problems.push("the object's SHA-256 differs from the manifest's".into());
        }
        if !v.crc32c_ok {
            problems.push("the object's CRC32C or size differs from the manifest's".into());
        }
        if !v.ok {
            problems.extend(v.restore_errors.iter().cloned());
        }
        json!({"ok": v.ok, "verified_at": v.verified_at, "problems": problems})
    });
    json!({
        "name": e.name,
        "time": e.manifest.as_ref().map_or(e.created, |m| m.finished_at),
        "size_bytes": e.size,
        "duration_seconds": e.manifest.as_ref().map(|m| m.duration_seconds),
        "rows": e.manifest.as_ref().map(|m| m.tables.values().sum::<i64>()),
        "complete": e.complete,
        "verification": verification,
    })
}

async fn prune(backups: &Backups, dry_run: bool) -> Result<()> {
    let plan = backups.prune(dry_run).await?;
    if let Some(why) = plan.refused {
        bail!("pruning refused: {why}");
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for d in &plan.delete {
        println!("{verb} {} ({})", d.name, d.reason);
    }
    let kept = plan.keep.len();
    println!(
        "retention: {} objects {verb}, {kept} backups kept{}",
        plan.delete.len(),
        if plan.deferred.is_empty() {
            String::new()
        } else {
            format!(
                ", {} more due but over NEXUSD_BACKUP_MAX_DELETIONS",
                plan.deferred.len()
            )
        }
    );
    Ok(())
}

async fn verify(backups: &Backups, id: Option<&str>) -> Result<()> {
    let v = backups.verify(id, &Progress::stderr("verify")).await?;
    if v.ok {
        println!(
            "verified {}: SHA-256 and CRC32C match the manifest, every table's row count matches ({:.1} s)",
            v.name, v.duration_seconds
        );
        for e in &v.restore_errors {
            println!("  note: the restore reported: {e}");
        }
        Ok(())
    } else {
        println!("{} FAILED verification:", v.name);
        if !v.sha256_ok {
            println!("  the object's SHA-256 differs from the manifest's");
        }
        if !v.crc32c_ok {
            println!("  the object's CRC32C or size differs from the manifest's");
        }
        for m in &v.mismatches {
            println!("  {m}");
        }
        for e in &v.restore_errors {
            println!("  restore error: {e}");
        }
        bail!("backup {} did not verify", v.name)
    }
}

pub async fn restore(
    config: &Config,
    id: &str,
    into: Option<&str>,
    force: bool,
    ignore_sessions: bool,
) -> Result<()> {
    refuse_under_serve(config, into)?;
    with_database(config, Needs::RunningServer, async |db, _| {
        let backups = open(config, db).await?;
        let r = backups
            .restore(
                id,
                into,
                force,
                ignore_sessions,
                &Progress::stderr("restore"),
            )
            .await?;
        for e in &r.errors {
            println!("  note: the restore reported: {e}");
        }
        if !r.mismatches.is_empty() {
            for m in &r.mismatches {
                println!("  {m}");
            }
            bail!(
                "{} was restored into {}, but row counts differ from the manifest",
                r.name,
                r.database
            );
        }
        println!(
            "restored {} into {}: checksums and every table's row count match the manifest",
            r.name, r.database
        );
        Ok(())
    })
    .await
}

/// Restoring the embedded cluster's database while a `nexusd serve` holds the state directory
/// would load it under the daemon (and `--force` drop its tables): refused, naming the daemon's
/// PID. Another database of the cluster (`--into`) is fine.
fn refuse_under_serve(config: &Config, into: Option<&str>) -> Result<()> {
    if !matches!(config.database.target, DatabaseTarget::Embedded)
        || into.is_some_and(|db| db != EMBEDDED_DATABASE)
    {
        return Ok(());
    }
    match state_lock_holder(&config.state_dir) {
        Some(holder) => bail!(
            "{holder} holds {} and serves the database {EMBEDDED_DATABASE} restore would replace: \
             stop it first (systemctl stop nexusd, or end that process), or restore into another \
             database with --into NAME",
            config.state_dir.display()
        ),
        None => Ok(()),
    }
}
