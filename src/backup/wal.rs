//! Continuous WAL archiving: what `nexusd wal-push %p` (PostgreSQL's `archive_command`) and
//! `nexusd wal-fetch %f %p` (its `restore_command`) do, and the server settings that turn
//! archiving on. Layout and rules are in docs/pitr.md; in short:
//!
//! - every archived file lives under the store's `wal/` (a `wal` subdirectory of the local store,
//!   the `<prefix>wal/` objects of a bucket) as `<name>.gz`, one gzip member of the whole file;
//! - `wal/archive.json` names the cluster (system identifier) the archive belongs to, written
//!   before the first push; a push from another cluster is refused;
//! - an object is only ever created, never overwritten (local: temp file, fsync, link, fsync of
//!   the directory; GCS: `ifGenerationMatch=0`, size and CRC32C of the stored object checked), so
//!   a push that dies leaves nothing `wal-fetch` would return;
//! - a push of a name already archived succeeds when the content is the same, and fails
//!   otherwise, leaving a `<name>.conflict-<sha256 prefix>.json` record the daemon counts;
//! - with `NEXUSD_WAL_MAX_PENDING` set, a segment that cannot be stored while pg_wal is past that
//!   size is dropped (success is reported so PostgreSQL can recycle it and keeps running); the
//!   drop is noted in the data directory (`nexusd_wal_dropped`, the store being unreachable) and
//!   written to the archive as `dropped-<first>-<last>.dropped.json` by the next push that
//!   reaches the store, where the gap check and the status find it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{BackupConfig, BackupDestination};
use super::store::{Store, StoreError};

/// The marker object naming the cluster the archive belongs to.
pub const MARKER: &str = "archive.json";
/// Suffix of the records of conflicting pushes (same name, different content).
pub const CONFLICT_SUFFIX: &str = ".conflict.json";
/// WAL is compressed at gzip's fastest level: the archiver must keep up with the writes (and a
/// shutdown waits for it), and mostly-empty segments compress well at any level.
const WAL_GZIP_LEVEL: u32 = 1;
/// The subdirectory (local) or sub-prefix (GCS) of the store holding the archive.
pub const WAL_DIR: &str = "wal";
/// Suffix of the records of segments dropped at the pg_wal ceiling.
pub const DROPPED_SUFFIX: &str = ".dropped.json";
/// The data directory's note of segments dropped while the store was unreachable, one name a
/// line, until a push reaches the store and records them there.
pub const PENDING_DROPS: &str = "nexusd_wal_dropped";

/// The marker's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// The cluster's system identifier (`pg_controldata`'s "Database system identifier").
    pub system_identifier: String,
    pub created_at: DateTime<Utc>,
    pub nexusd_version: String,
}

/// A record of a conflicting push, written beside the archived file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conflict {
    pub name: String,
    pub archived_sha256: String,
    pub pushed_sha256: String,
    pub at: DateTime<Utc>,
}

/// What a successful push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The same content was archived already.
    AlreadyThere,
    /// Not stored: the store failed while pg_wal was past `NEXUSD_WAL_MAX_PENDING`.
    Dropped,
}

/// A push the archive refuses (another cluster's archive, other content under the name): never
/// dropped at the ceiling, since retrying cannot fix it and dropping would hide it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// Why a fetch failed: the archive does not hold the file (recovery ends there), or it could not
/// be read (recovery must stop, not end early at the wrong point).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not in the archive")]
    Missing(String),
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

/// The backup configuration pointed at the archive's part of the store.
pub fn archive_config(config: &BackupConfig) -> BackupConfig {
    part_config(config, WAL_DIR)
}

/// The backup configuration pointed at a part of the store: the `part` subdirectory of a local
/// store, the `<prefix><part>/` objects of a bucket.
pub fn part_config(config: &BackupConfig, part: &str) -> BackupConfig {
    let destination = match &config.destination {
        BackupDestination::Local { dir } => BackupDestination::Local {
            dir: dir.join(part),
        },
        BackupDestination::Gcs { bucket, prefix } => BackupDestination::Gcs {
            bucket: bucket.clone(),
            prefix: format!("{prefix}{part}/"),
        },
    };
    BackupConfig {
        destination,
        ..config.clone()
    }
}

/// Whether `name` is a file PostgreSQL archives: a segment (24 hex digits), a timeline history
/// (`8 hex.history`), a backup label (`24 hex.8 hex.backup`) or a partial segment (`.partial`).
pub fn is_wal_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(stem) = name.strip_suffix(".partial") {
        return hex(stem, 24);
    }
    if let Some(stem) = name.strip_suffix(".history") {
        return hex(stem, 8);
    }
    if let Some(stem) = name.strip_suffix(".backup") {
        return stem
            .split_once('.')
            .is_some_and(|(seg, offset)| hex(seg, 24) && hex(offset, 8));
    }
    hex(name, 24)
}

/// The system identifier in `data_dir/global/pg_control`: its first field, a native-endian
/// 64-bit integer.
pub fn system_identifier(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join("global").join("pg_control");
    let mut first = [0u8; 8];
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut first))
        .with_context(|| format!("reading the system identifier from {}", path.display()))?;
    Ok(u64::from_ne_bytes(first))
}

/// The data directory of a file PostgreSQL hands to `archive_command`: the working directory
/// (PostgreSQL runs the command there), else two levels above `pg_wal/<file>`.
fn data_dir_of(file: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    if cwd.join("global/pg_control").is_file() {
        return Ok(cwd);
    }
    let absolute = cwd.join(file);
    absolute
        .parent()
        .and_then(Path::parent)
        .filter(|d| d.join("global/pg_control").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "cannot find the data directory of {} (run wal-push from PostgreSQL's \
                 archive_command, which runs in the data directory)",
                file.display()
            )
        })
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn gzip(bytes: &[u8], level: u32) -> Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::new(level));
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .context("decompressing")?;
    Ok(out)
}

/// Archives `file` (the `%p` of `archive_command`) within `deadline`.
pub async fn push(config: &BackupConfig, file: &Path, deadline: Duration) -> Result<Pushed> {
    match tokio::time::timeout(deadline, push_now(config, file)).await {
        Ok(result) => result,
        Err(_) => bail!(
            "archiving {} did not finish within {} s (NEXUSD_WAL_PUSH_TIMEOUT); PostgreSQL will \
             retry it",
            file.display(),
            deadline.as_secs()
        ),
    }
}

async fn push_now(config: &BackupConfig, file: &Path) -> Result<Pushed> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_wal_name(n))
        .ok_or_else(|| anyhow!("{} is not a file PostgreSQL archives", file.display()))?
        .to_string();
    let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let system = system_identifier(&data_dir_of(file)?)?;
    let store = Store::open(&archive_config(config))
        .await
        .map_err(|e| anyhow!("opening the archive: {e}"))?;
    check_marker(&store, system).await?;
    record_drops(&store, &data_dir_of(file)?).await?;
    let compressed = gzip(&content, WAL_GZIP_LEVEL)?;
    let object = format!("{name}.gz");
    let stored = store
        .put(&object, Bytes::from(compressed.clone()), "application/gzip")
        .await;
    match stored {
        Ok(info) => {
            let crc = crc32c::crc32c(&compressed);
            if info.size != compressed.len() as u64 || info.crc32c.is_some_and(|c| c != crc) {
                bail!(
                    "the store holds {object} with {} bytes (CRC32C {:?}) but {} bytes (CRC32C \
                     {crc:08x}) were sent",
                    info.size,
                    info.crc32c,
                    compressed.len()
                );
            }
            Ok(Pushed::Stored)
        }
        Err(StoreError::AlreadyExists(_)) => compare(&store, &name, &content).await,
        Err(e) => Err(anyhow!("storing {object} in {}: {e}", store.describe())),
    }
}

/// `name` is archived already: fine when it holds `content`, a counted conflict otherwise.
async fn compare(store: &Store, name: &str, content: &[u8]) -> Result<Pushed> {
    let archived = store
        .read_all(&format!("{name}.gz"))
        .await
        .map_err(|e| anyhow!("reading the archived {name} to compare: {e}"))?;
    let archived = gunzip(&archived).with_context(|| format!("the archived {name}"))?;
    if archived == content {
        tracing::info!(name, "already archived with the same content");
        return Ok(Pushed::AlreadyThere);
    }
    let conflict = Conflict {
        name: name.to_string(),
        archived_sha256: sha256_hex(&archived),
        pushed_sha256: sha256_hex(content),
        at: Utc::now(),
    };
    let record = format!(
        "{name}.conflict-{}{CONFLICT_SUFFIX}",
        &conflict.pushed_sha256[..16]
    );
    match store.put_json(&record, &conflict).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => tracing::warn!(error = %e, "cannot record the conflict"),
    }
    tracing::error!(
        name,
        archived_sha256 = %conflict.archived_sha256,
        pushed_sha256 = %conflict.pushed_sha256,
        "WAL conflict: the archive holds another file of this name"
    );
    refuse(format!(
        "{name} is archived already with other content (archived SHA-256 {}, this one {}): two \
         clusters write to one archive, or the archive was restored over; give this cluster its \
         own NEXUSD_BACKUP_BUCKET prefix (or NEXUSD_BACKUP_DIR)",
        conflict.archived_sha256, conflict.pushed_sha256
    ))
}

fn refuse<T>(message: String) -> Result<T> {
    Err(Refused(message).into())
}

/// Writes the marker before the first push, and refuses an archive of another cluster.
async fn check_marker(store: &Store, system: u64) -> Result<()> {
    let mine = system.to_string();
    for _ in 0..2 {
        match store.read_all(MARKER).await {
            Ok(bytes) => {
                let marker: Marker = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{MARKER} in {} is unreadable", store.describe()))?;
                if marker.system_identifier != mine {
                    return refuse(format!(
                        "the WAL archive {} belongs to another cluster (system identifier {}, \
                         this one is {mine}): refusing to mix them; give this cluster its own \
                         NEXUSD_BACKUP_BUCKET prefix (or NEXUSD_BACKUP_DIR)",
                        store.describe(),
                        marker.system_identifier
                    ));
                }
                return Ok(());
            }
            Err(StoreError::NotFound(_)) => {
                let marker = Marker {
                    system_identifier: mine.clone(),
                    created_at: Utc::now(),
                    nexusd_version: env!("CARGO_PKG_VERSION").into(),
                };
                match store.put_json(MARKER, &marker).await {
                    Ok(_) => return Ok(()),
                    // Another push wrote it meanwhile: read it again.
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => bail!("writing {MARKER} in {}: {e}", store.describe()),
                }
            }
            Err(e) => bail!("reading {MARKER} in {}: {e}", store.describe()),
        }
    }
    bail!("{MARKER} in {} cannot be read", store.describe())
}

/// Archives `file` like [`push`]; when that fails for want of the store (not a refusal) while
/// pg_wal holds more than `ceiling` bytes, drops the segment instead: it is noted in the data
/// directory and reported as [`Pushed::Dropped`], so PostgreSQL recycles it. Timeline history
/// files are never dropped (a restore needs them to follow a timeline).
pub async fn push_or_drop(
    config: &BackupConfig,
    file: &Path,
    deadline: Duration,
) -> Result<Pushed> {
    let failed = match push(config, file, deadline).await {
        Ok(pushed) => return Ok(pushed),
        Err(e) => e,
    };
    let Some(ceiling) = config.wal_max_pending else {
        return Err(failed);
    };
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if failed.downcast_ref::<Refused>().is_some() || name.ends_with(".history") {
        return Err(failed);
    }
    let data_dir = data_dir_of(file)?;
    let pending = directory_bytes(&data_dir.join("pg_wal"));
    if pending <= ceiling {
        return Err(failed);
    }
    let note = data_dir.join(PENDING_DROPS);
    let line = format!("{name} {pending} {ceiling}\n");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&note)
        .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_all()))
        .with_context(|| format!("noting the dropped {name} in {}", note.display()))?;
    tracing::error!(
        file = name,
        pg_wal_bytes = pending,
        ceiling_bytes = ceiling,
        error = %format!("{failed:#}"),
        "WAL DROPPED: the store cannot be reached and pg_wal is past NEXUSD_WAL_MAX_PENDING; \
         the archive has a gap from here until the next base backup"
    );
    Ok(Pushed::Dropped)
}

/// Bytes of the regular files directly in `dir`.
fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Writes the data directory's note of dropped segments into the archive as one record, then
/// removes the note.
async fn record_drops(store: &Store, data_dir: &Path) -> Result<()> {
    let note = data_dir.join(PENDING_DROPS);
    let text = match std::fs::read_to_string(&note) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("reading {}: {e}", note.display()),
    };
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names.sort_unstable();
    names.dedup();
    let last_line = text.lines().last().unwrap_or("");
    let figure = |i: usize| {
        last_line
            .split_whitespace()
            .nth(i)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    if let (Some(first), Some(last)) = (names.first(), names.last()) {
        let record = super::wal_gaps::Dropped {
            first: first.to_string(),
            last: last.to_string(),
            count: names.len() as u64,
            recorded_at: Utc::now(),
            pg_wal_bytes: figure(1),
            ceiling_bytes: figure(2),
        };
        let object = format!("dropped-{first}-{last}{DROPPED_SUFFIX}");
        match store.put_json(&object, &record).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => bail!("recording the dropped WAL in {}: {e}", store.describe()),
        }
        tracing::warn!(
            first,
            last,
            count = names.len(),
            "recorded WAL dropped at the pg_wal ceiling"
        );
    }
    std::fs::remove_file(&note).with_context(|| format!("removing {}", note.display()))?;
    Ok(())
}

/// Fetches `name` (the `%f` of `restore_command`) into `target` (`%p`), written to a temporary
/// file and renamed, so PostgreSQL never reads half a file.
pub async fn fetch(
    config: &BackupConfig,
    name: &str,
    target: &Path,
    deadline: Duration,
) -> Result<(), FetchError> {
    let work = async {
        if !is_wal_name(name) {
            return Err(FetchError::Missing(name.to_string()));
        }
        let store = Store::open(&archive_config(config))
            .await
            .map_err(|e| anyhow!("opening the archive: {e}"))?;
        let bytes = match store.read_all(&format!("{name}.gz")).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound(_)) => return Err(FetchError::Missing(name.to_string())),
            Err(e) => {
                return Err(anyhow!("reading {name}.gz from {}: {e}", store.describe()).into());
            }
        };
        let content = gunzip(&bytes).with_context(|| format!("the archived {name}"))?;
        let temporary = target.with_extension("nexusd-fetch");
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&content)?;
            file.sync_all()?;
            std::fs::rename(&temporary, target)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(anyhow!("writing {}: {e}", target.display()).into());
        }
        Ok(())
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(anyhow!(
            "fetching {name} did not finish within {} s (NEXUSD_WAL_PUSH_TIMEOUT)",
            deadline.as_secs()
        )
        .into()),
    }
}

/// The conflicts recorded in the archive (a listing of `wal/`).
pub async fn conflicts(config: &BackupConfig) -> Result<usize> {
    let store = Store::open(&archive_config(config))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let listing = store.list().await.map_err(|e| anyhow!("{e}"))?;
    Ok(listing
        .objects
        .iter()
        .filter(|o| o.name.ends_with(CONFLICT_SUFFIX))
        .count())
}

/// The server settings that archive every WAL file through `nexusd wal-push`: `exe` is nexusd's
/// own path, `state_dir` the state directory (passed explicitly: the archiver runs as the
/// cluster's user, whose default state directory differs). The environment file is not read
/// again (`--env-file /dev/null`): the server inherits nexusd's environment, which holds it.
pub fn archive_settings(exe: &Path, state_dir: &Path) -> Vec<(String, String)> {
    let command = format!(
        "NEXUSD_STATE_DIR={} {} --env-file /dev/null wal-push %p",
        shell_quote(&state_dir.display().to_string()),
        shell_quote(&exe.display().to_string())
    );
    vec![
        ("wal_level".into(), "replica".into()),
        ("archive_mode".into(), "on".into()),
        ("archive_timeout".into(), "60s".into()),
        ("archive_command".into(), command),
    ]
}

/// What the embedded cluster needs to archive: the settings, and the local archive directory
/// its user must write (none for a bucket); nothing when nexusd's own path is unknown.
pub fn embedded_archiving(
    config: &BackupConfig,
    state_dir: &Path,
) -> (Vec<(String, String)>, Vec<PathBuf>) {
    let settings = match std::env::current_exe() {
        Ok(exe) => archive_settings(&exe, state_dir),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find nexusd's own path: WAL archiving stays off");
            return (Vec::new(), Vec::new());
        }
    };
    let dirs = match &config.destination {
        BackupDestination::Local { dir } => vec![dir.join(WAL_DIR)],
        BackupDestination::Gcs { .. } => Vec::new(),
    };
    (settings, dirs)
}

/// [`embedded_archiving`] when backups are on (`NEXUSD_BACKUPS`), nothing when they are off:
/// no WAL would be kept, and `serve` and the one-off commands start the cluster alike.
pub fn embedded_archiving_if_on(
    config: &crate::config::Config,
) -> (Vec<(String, String)>, Vec<PathBuf>) {
    if config.capabilities.backups.on {
        embedded_archiving(&config.backup, &config.state_dir)
    } else {
        (Vec::new(), Vec::new())
    }
}

/// The `restore_command` of a recovery through nexusd.
pub fn restore_command(exe: &Path, state_dir: &Path) -> String {
    format!(
        "NEXUSD_STATE_DIR={} {} --env-file /dev/null wal-fetch %f %p",
        shell_quote(&state_dir.display().to_string()),
        shell_quote(&exe.display().to_string())
    )
}

/// `text` as one word for `sh`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_postgresql_archives_is_accepted() {
        for name in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(is_wal_name(name), "{name}");
        }
        for name in [
            "archive.json",
            "../x",
            "00000001",
            "000000010000000000000001.gz",
        ] {
            assert!(!is_wal_name(name), "{name}");
        }
    }

    #[test]
    fn commands_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
