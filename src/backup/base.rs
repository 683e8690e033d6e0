//! Physical base backups (`nexusd backup run --physical`, `NEXUSD_BASEBACKUP_SCHEDULE`): the
//! data directory as one tar from `pg_basebackup -D - -Ft -X none`, streamed through the dump
//! pipeline (parallel gzip, checksums, finalised only when complete) into the store's `base/`
//! part as `base-YYYYmmdd_HHMMSS.tar.gz`, then a manifest beside it. No WAL is in the tar: the
//! archive (`wal/`, src/backup/wal.rs) holds it, so the manifest is written — and the backup
//! counts — only once the WAL file holding its stop point is in the archive. With the WAL
//! archived since, it restores to any moment after its stop time (src/backup/pitr.rs).

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use super::config::{BackupConfig, BackupDestination};
use super::manifest::{self, MANIFEST_SUFFIX};
use super::retention::{Plan, Policy};
use super::store::{Listing, Store, StoreError};
use super::{BackupError, Backups, Progress, pipeline, wal, wal_retention};
use crate::db::tools::ClientTools;

/// The store's part holding base backups.
pub const BASE_DIR: &str = "base";
const NAME_PREFIX: &str = "base-";
const EXTENSION: &str = ".tar.gz";

/// What makes a base backup count, written beside it last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseManifest {
    pub manifest_version: u32,
    /// `base`.
    pub kind: String,
    pub name: String,
    /// The cluster's system identifier (`pg_control_system()`); the archive's marker names it.
    pub system_identifier: String,
    pub timeline: u32,
    /// Where replay starts (the backup's checkpoint redo point) and the point it must reach to be
    /// consistent, as PostgreSQL writes LSNs (`0/2000028`).
    pub start_lsn: String,
    pub stop_lsn: String,
    /// The WAL files holding those points: the first one a restore needs, the one that must be
    /// archived for the backup to count.
    pub start_wal_file: String,
    pub stop_wal_file: String,
    pub wal_segment_bytes: u64,
    pub started_at: DateTime<Utc>,
    /// Taken after pg_basebackup ended, so no later than the true stop: a restore to a time at or
    /// after it is always past the consistent point.
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Bytes of the tar, and of the stored object (gzip members).
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: String,
    pub crc32c: u32,
    pub compression: manifest::Compression,
    pub server_version: String,
    pub pg_basebackup_version: String,
    pub store: String,
    pub generation: Option<i64>,
    pub nexusd_version: String,
}

/// A base backup as `backup list` shows it.
#[derive(Debug, Clone)]
pub struct BaseEntry {
    pub name: String,
    pub created: DateTime<Utc>,
    pub size: u64,
    pub manifest: Option<BaseManifest>,
}

/// The configuration pointed at the store's `base/` part.
pub fn base_config(config: &BackupConfig) -> BackupConfig {
    wal::part_config(config, BASE_DIR)
}

pub fn is_base(name: &str) -> bool {
    name.starts_with(NAME_PREFIX) && name.ends_with(EXTENSION)
}

/// `0/2000028` → the 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u32::MAX as u64 && low <= u32::MAX as u64).then_some((high << 32) | low)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The name of the WAL file of timeline `tli` holding byte `lsn` (PostgreSQL's XLogFileName).
pub fn wal_file(tli: u32, lsn: u64, segment_bytes: u64) -> String {
    let segno = lsn / segment_bytes.max(1);
    let per_id = 0x1_0000_0000 / segment_bytes.max(1);
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// The start point, its timeline and the end point pg_basebackup `-v` reports on stderr.
fn reported_points(stderr: &str) -> (Option<u64>, Option<u32>, Option<u64>) {
    let mut points = (None, None, None);
    for line in stderr.lines() {
        if let Some(rest) = line.split("write-ahead log start point: ").nth(1) {
            let mut words = rest.split_whitespace();
            points.0 = words.next().and_then(parse_lsn);
            points.1 = words.nth(2).and_then(|t| t.parse().ok());
        }
        if let Some(rest) = line.split("write-ahead log end point: ").nth(1) {
            points.2 = rest.split_whitespace().next().and_then(parse_lsn);
        }
    }
    points
}

/// START WAL LOCATION, START TIMELINE and STOP WAL LOCATION of a backup history file, when its
/// LABEL is `label`.
fn history_file_points(text: &str, label: &str) -> Option<(u64, u32, u64)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    if field("LABEL:")? != label {
        return None;
    }
    let lsn = |key: &str| field(key)?.split_whitespace().next().and_then(parse_lsn);
    let timeline = field("START TIMELINE:")?.parse().ok()?;
    Some((
        lsn("START WAL LOCATION:")?,
        timeline,
        lsn("STOP WAL LOCATION:")?,
    ))
}

/// What the server says before the backup.
struct Before {
    system_identifier: String,
    server_version: String,
    major: u32,
    segment_bytes: u64,
    timeline: u32,
    lsn: u64,
}

async fn before(conn: &mut PgConnection) -> Result<Before> {
    let (archive_mode, system_identifier, server_version, version_num, segment_bytes): (
        String,
        String,
        String,
        i32,
        i64,
    ) = sqlx::query_as(
        "SELECT current_setting('archive_mode'), (SELECT system_identifier::text FROM pg_control_system()),
                current_setting('server_version'), current_setting('server_version_num')::int,
                (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
    )
    .fetch_one(&mut *conn)
    .await
    .context("reading the server's settings")?;
    if archive_mode == "off" {
        bail!(
            "WAL archiving is off on this server (archive_mode = off): a base backup without the \
             WAL archived after it cannot be restored; turn archiving on first (docs/pitr.md, \
             `nexusd check` prints the settings)"
        );
    }
    let (timeline, lsn): (i32, String) = sqlx::query_as(
        "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), pg_current_wal_lsn()::text",
    )
    .fetch_one(&mut *conn)
    .await
    .context("reading the WAL position")?;
    Ok(Before {
        system_identifier,
        server_version,
        major: (version_num / 10_000) as u32,
        segment_bytes: segment_bytes as u64,
        timeline: timeline as u32,
        lsn: parse_lsn(&lsn).ok_or_else(|| anyhow!("unreadable WAL position {lsn}"))?,
    })
}

/// Where a base backup's WAL starts and stops.
struct Points {
    start: u64,
    timeline: u32,
    stop: u64,
    stop_wal_file: String,
}

impl Backups {
    /// Takes one physical base backup now (`backup run --physical`, the weekly job).
    pub async fn run_physical(
        &self,
        cancel: CancellationToken,
        progress: &Progress,
    ) -> Result<BaseManifest, BackupError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(BackupError::Busy);
        };
        let stop = cancel.child_token();
        let deadline = {
            let stop = stop.clone();
            let limit = self.config.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                stop.cancel();
            })
        };
        let result = Box::pin(self.take_base(stop, progress)).await;
        deadline.abort();
        match &result {
            Ok(m) => {
                tracing::info!(name = %m.name, bytes = m.compressed_bytes, stop_lsn = %m.stop_lsn, "base backup complete")
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "base backup failed; nothing was stored as a backup")
            }
        }
        result.map_err(BackupError::Failed)
    }

    async fn take_base(
        &self,
        cancel: CancellationToken,
        progress: &Progress,
    ) -> Result<BaseManifest> {
        let started = Utc::now();
        let clock = Instant::now();
        let mut conn = PgConnection::connect_with(self.db.connect_options())
            .await
            .context("connecting to PostgreSQL for the base backup")?;
        let server = before(&mut conn).await?;
        let tools = ClientTools::locate(self.pg_bindir.as_deref(), server.major)?;
        if !tools.program("pg_basebackup").is_file() {
            bail!(
                "no pg_basebackup beside pg_dump in {}: install the PostgreSQL client programs",
                tools.bindir.display()
            );
        }
        let store = Store::open(&base_config(&self.config))
            .await
            .map_err(|e| anyhow!("opening {}: {e}", BASE_DIR))?;
        let name = free_name(&store, started).await;
        let stage = progress
            .relabel(format!("base backup {name}"))
            .estimated_stage("pg_basebackup", None);
        let spec = pipeline::DumpSpec {
            tools: tools.clone(),
            connection: self.db.tools.clone(),
            source: pipeline::Source::BaseBackup {
                label: format!("nexusd {name}"),
            },
            level: self.config.gzip_level,
            workers: pipeline::default_workers(),
            dumped: stage.counter(),
        };
        let dumped = pipeline::dump(&store, &name, spec, cancel)
            .await
            .with_context(|| format!("pg_basebackup into {}", store.describe()))?;
        stage.finish();
        let finished = Utc::now();
        let points = self
            .archived_points(&mut conn, &server, &name, &dumped.stderr, progress)
            .await?;
        conn.close().await.ok();
        let manifest = BaseManifest {
            manifest_version: 1,
            kind: "base".into(),
            name: name.clone(),
            system_identifier: server.system_identifier,
            timeline: points.timeline,
            start_lsn: format_lsn(points.start),
            stop_lsn: format_lsn(points.stop),
            start_wal_file: wal_file(points.timeline, points.start, server.segment_bytes),
            stop_wal_file: points.stop_wal_file,
            wal_segment_bytes: server.segment_bytes,
            started_at: started,
            finished_at: finished,
            duration_seconds: clock.elapsed().as_secs_f64(),
            raw_bytes: dumped.raw_bytes,
            compressed_bytes: dumped.compressed_bytes,
            sha256: dumped.sha256,
            crc32c: dumped.crc32c,
            compression: manifest::Compression {
                codec: "gzip".into(),
                level: self.config.gzip_level,
                block_bytes: pipeline::BLOCK_BYTES as u64,
            },
            server_version: server.server_version,
            pg_basebackup_version: tools.version.replace("pg_dump", "pg_basebackup"),
            store: store.kind().into(),
            generation: dumped.object.generation,
            nexusd_version: env!("CARGO_PKG_VERSION").into(),
        };
        store
            .put_json(&format!("{name}{MANIFEST_SUFFIX}"), &manifest)
            .await
            .map_err(|e| anyhow!("writing the manifest of {name}: {e}"))?;
        Ok(manifest)
    }

    /// The backup's start and stop points, once the WAL file holding the stop point is archived.
    async fn archived_points(
        &self,
        conn: &mut PgConnection,
        server: &Before,
        name: &str,
        stderr: &str,
        progress: &Progress,
    ) -> Result<Points> {
        let (mut start, mut tli, mut stop) = reported_points(stderr);
        // pg_basebackup writing the tar to stdout does not report them: the backup history file
        // the server archived (`<segment>.<offset>.backup`, its LABEL ours) has them exactly.
        if start.is_none() || stop.is_none() {
            let label = format!("nexusd {name}");
            if let Some(points) = self.history_points(server, &label).await {
                (start, tli, stop) = (Some(points.0), Some(points.1), Some(points.2));
            }
        }
        // Without either: the position before (no later than the start) and after (no earlier
        // than the stop) — a restore then needs a little more WAL, never less.
        let start = start.unwrap_or(server.lsn);
        let timeline = tli.unwrap_or(server.timeline);
        let stop = match stop {
            Some(stop) => stop,
            None => {
                let now: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
                    .fetch_one(&mut *conn)
                    .await?;
                parse_lsn(&now).ok_or_else(|| anyhow!("unreadable WAL position {now}"))?
            }
        };
        // The WAL file holding the last byte before the stop point must be archived.
        let stop_wal_file = wal_file(timeline, stop.saturating_sub(1), server.segment_bytes);
        let waiting = progress.stage("WAL archived", None);
        self.wait_archived(conn, &stop_wal_file).await?;
        waiting.finish();
        Ok(Points {
            start,
            timeline,
            stop,
            stop_wal_file,
        })
    }

    /// Start LSN, timeline and stop LSN from the archived backup history file labelled `label`
    /// (one of those at or after the WAL position before the backup).
    async fn history_points(&self, server: &Before, label: &str) -> Option<(u64, u32, u64)> {
        let archive = Store::open(&wal::archive_config(&self.config)).await.ok()?;
        let listing = archive.list().await.ok()?;
        let from = wal_file(server.timeline, server.lsn, server.segment_bytes);
        for object in listing
            .objects
            .iter()
            .filter(|o| o.name.ends_with(".backup.gz") && o.name.get(8..24) >= from.get(8..24))
        {
            let Ok(bytes) = archive.read_all(&object.name).await else {
                continue;
            };
            let mut text = String::new();
            if flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .is_err()
            {
                continue;
            }
            if let Some(points) = history_file_points(&text, label) {
                return Some(points);
            }
        }
        None
    }

    /// Waits until the archive holds `file`, switching to a new WAL file once so the current one
    /// is archived; fails after twice NEXUSD_WAL_PUSH_TIMEOUT.
    pub(super) async fn wait_archived(&self, conn: &mut PgConnection, file: &str) -> Result<()> {
        let archive = Store::open(&wal::archive_config(&self.config))
            .await
            .map_err(|e| anyhow!("opening the WAL archive: {e}"))?;
        let limit = self.config.wal_push_timeout * 2;
        let deadline = Instant::now() + limit;
        let mut switched = false;
        loop {
            match archive.read(&format!("{file}.gz")).await {
                Ok(_) => return Ok(()),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!(error = %e, "cannot look for the archived WAL yet"),
            }
            if !switched {
                sqlx::query("SELECT pg_switch_wal()")
                    .execute(&mut *conn)
                    .await
                    .context("switching to a new WAL file")?;
                switched = true;
            }
            if Instant::now() > deadline {
                bail!(
                    "the WAL file {file} holding the base backup's stop point was not archived \
                     within {} s: the backup does not count (check archiving: SELECT * FROM \
                     pg_stat_archiver)",
                    limit.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every base backup in the store's `base/` part, newest first, with its manifest.
    pub async fn base_backups(&self) -> Result<Vec<BaseEntry>> {
        if !self.has_base_part() {
            return Ok(Vec::new());
        }
        let store = Store::open(&base_config(&self.config))
            .await
            .map_err(|e| anyhow!("opening {}: {e}", BASE_DIR))?;
        base_entries(&store).await
    }
}

impl Backups {
    /// Whether the store may hold base backups: a local store's `base` directory exists (it is
    /// not created by merely looking), a bucket always may.
    pub(super) fn has_base_part(&self) -> bool {
        match &base_config(&self.config).destination {
            BackupDestination::Local { dir } => dir.is_dir(),
            BackupDestination::Gcs { .. } => true,
        }
    }

    /// Applies the physical side's retention (src/backup/wal_retention.rs) after the dumps',
    /// adding what it deletes (or would) to `plan`.
    pub(super) async fn prune_physical(
        &self,
        now: DateTime<Utc>,
        policy: &Policy,
        dry_run: bool,
        plan: &mut Plan,
    ) -> Result<()> {
        if !self.has_base_part() {
            return Ok(());
        }
        let open = |config: BackupConfig| async move {
            Store::open(&config).await.map_err(|e| anyhow!("{e}"))
        };
        let base = open(base_config(&self.config)).await?;
        let wal = open(wal::archive_config(&self.config)).await?;
        let base_listing = base.list().await.map_err(|e| anyhow!("{e}"))?;
        let entries = entries_in(&base, &base_listing).await;
        let wal_listing = wal.list().await.map_err(|e| anyhow!("{e}"))?;
        let bases: Vec<wal_retention::Base> = entries
            .iter()
            .filter_map(|e| {
                let object = base_listing.objects.iter().find(|o| o.name == e.name)?;
                let manifest_name = format!("{}{MANIFEST_SUFFIX}", e.name);
                Some(wal_retention::Base {
                    object,
                    manifest: base_listing
                        .objects
                        .iter()
                        .find(|o| o.name == manifest_name),
                    start_wal_file: e.manifest.as_ref().map(|m| m.start_wal_file.as_str()),
                })
            })
            .collect();
        let physical = wal_retention::plan(&bases, &wal_listing.objects, now, policy);
        if let Some(why) = physical.refused {
            bail!("pruning base backups and WAL refused: {why}");
        }
        if !dry_run {
            for d in &physical.delete {
                let (store, name) = match d.name.strip_prefix("wal/") {
                    Some(name) => (&wal, name),
                    None => (&base, d.name.trim_start_matches("base/")),
                };
                match store.delete(name, d.generation).await {
                    Ok(()) | Err(StoreError::NotFound(_)) => {
                        tracing::info!(name = %d.name, reason = %d.reason, "pruned");
                    }
                    Err(e) => bail!("deleting {}: {e}", d.name),
                }
            }
        }
        plan.delete.extend(physical.delete);
        plan.keep.extend(physical.keep);
        plan.deferred.extend(physical.deferred);
        Ok(())
    }
}

/// The base backups `store` (the `base/` part) holds, newest first.
pub async fn base_entries(store: &Store) -> Result<Vec<BaseEntry>> {
    let listing = store.list().await.map_err(|e| anyhow!("{e}"))?;
    Ok(entries_in(store, &listing).await)
}

/// The base backups of `listing` (of `store`), with their manifests, newest first.
async fn entries_in(store: &Store, listing: &Listing) -> Vec<BaseEntry> {
    let mut entries = Vec::new();
    for object in listing.objects.iter().filter(|o| is_base(&o.name)) {
        let manifest_name = format!("{}{MANIFEST_SUFFIX}", object.name);
        let manifest = if listing.objects.iter().any(|o| o.name == manifest_name) {
            store.read_json(&manifest_name).await
        } else {
            None
        };
        entries.push(BaseEntry {
            name: object.name.clone(),
            created: object.created,
            size: object.size,
            manifest,
        });
    }
    entries.sort_by(|a, b| super::newest_first((a.created, &a.name), (b.created, &b.name)));
    entries
}

/// `base-YYYYmmdd_HHMMSS.tar.gz`, with `-2`, `-3`, … when the store holds that name.
async fn free_name(store: &Store, at: DateTime<Utc>) -> String {
    let taken: Vec<String> = store
        .list()
        .await
        .map(|l| {
            l.objects
                .into_iter()
                .chain(l.partials)
                .map(|o| o.name)
                .collect()
        })
        .unwrap_or_default();
    let stem = format!("{NAME_PREFIX}{}", at.format("%Y%m%d_%H%M%S"));
    let used = |n: &str| taken.iter().any(|t| t.starts_with(n));
    let plain = format!("{stem}{EXTENSION}");
    if !used(&plain) {
        return plain;
    }
    (2u32..)
        .map(|n| format!("{stem}-{n}{EXTENSION}"))
        .find(|n| !used(n))
        .unwrap_or(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_wal_file_names_follow_postgresql() {
        assert_eq!(parse_lsn("0/2000028"), Some(0x0200_0028));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(format_lsn(0x1_0200_0028), "1/2000028");
        let seg = 16 << 20;
        assert_eq!(wal_file(1, 0x0200_0028, seg), "000000010000000000000002");
        assert_eq!(wal_file(2, 0x1_0300_0000, seg), "000000020000000100000003");
    }

    #[test]
    fn the_backup_history_file_gives_the_exact_points() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
            STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n\
            CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
            START TIME: 2026-12-03 10:02:53 UTC\nLABEL: nexusd base-1.tar.gz\n\
            START TIMELINE: 1\nSTOP TIME: 2026-12-03 10:02:54 UTC\nSTOP TIMELINE: 1\n";
        assert_eq!(
            history_file_points(text, "nexusd base-1.tar.gz"),
            Some((0x0200_0028, 1, 0x0200_0100))
        );
        assert_eq!(history_file_points(text, "nexusd base-2.tar.gz"), None);
    }

    #[test]
    fn pg_basebackups_report_is_read() {
        let stderr = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
             pg_basebackup: checkpoint completed\n\
             pg_basebackup: write-ahead log start point: 0/5000028 on timeline 1\n\
             pg_basebackup: write-ahead log end point: 0/5000100\n\
             pg_basebackup: base backup completed\n";
        assert_eq!(
            reported_points(stderr),
            (Some(0x0500_0028), Some(1), Some(0x0500_0100))
        );
    }
}
