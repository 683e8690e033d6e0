//! What serve, `backup list`, `backup verify --physical` and `nexusd status` say about the
//! physical side: the archive's continuity and recoverable window (src/backup/wal_gaps.rs), the
//! newest archived segment, conflicts and drops recorded in the archive, the base backups, and
//! the server's own view (`pg_stat_archiver`, the size of pg_wal).
//!
//! Reading it costs one listing of `base/` and one of `wal/`; the small objects behind them
//! (base backup manifests, timeline histories, drop records) are read once per name and kept.
//! serve asks the server every `NEXUSD_BACKUP_STATUS_REFRESH` seconds but lists the archive only
//! every [`LIST_EVERY`]th time (5 minutes by default): a month of WAL is some 43,000 objects, 43
//! listing requests to GCS. In between, the newest archived segment comes from
//! `pg_stat_archiver` when it is newer than the last listing's.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::base::{BaseManifest, base_config, is_base};
use super::manifest::MANIFEST_SUFFIX;
use super::status::PitrStatus;
use super::store::Store;
use super::wal::{self, CONFLICT_SUFFIX, DROPPED_SUFFIX};
use super::wal_gaps::{self, Archive, BaseStart, Continuity, Dropped, Segment};
use super::{BackupDestination, Backups};

/// serve lists the archive on every this many looks (the first one included).
pub const LIST_EVERY: u64 = 10;

/// Objects read once and kept by name.
#[derive(Debug, Default)]
pub struct Cache {
    /// serve's looks so far, and what the last listing found.
    looks: u64,
    last: Option<ArchiveReport>,
    manifests: HashMap<String, Option<BaseManifest>>,
    histories: HashMap<String, Vec<(u32, u64)>>,
    dropped: HashMap<String, Option<Dropped>>,
}

/// The archive as the store holds it.
#[derive(Debug, Clone, Default)]
pub struct ArchiveReport {
    pub continuity: Continuity,
    pub dropped: Vec<Dropped>,
    pub conflicts: u64,
    /// Complete base backups, newest first.
    pub bases: Vec<BaseManifest>,
}

impl ArchiveReport {
    pub fn problem(&self) -> Option<String> {
        self.continuity.problem(&self.dropped)
    }

    pub fn dropped_segments(&self) -> u64 {
        self.dropped.iter().map(|d| d.count).sum()
    }
}

/// `archive_mode` and `pg_stat_archiver`'s failed_count, last_failed_wal, last_failed_time,
/// last_archived_wal, last_archived_time.
type ArchiverRow = (
    String,
    i64,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// The server's side of archiving.
#[derive(Debug, Clone, Default)]
pub struct ServerArchiving {
    pub archiving: Option<bool>,
    pub failed_count: Option<i64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub last_archived_wal: Option<String>,
    pub last_archived_at: Option<DateTime<Utc>>,
    pub pending_files: Option<i64>,
    pub pg_wal_bytes: Option<u64>,
    /// Segments dropped at the ceiling and not yet recorded in the archive (the data
    /// directory's note, src/backup/wal.rs): names, oldest first.
    pub unrecorded_drops: Vec<String>,
}

fn gunzip_text(bytes: &[u8]) -> Option<String> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

impl Backups {
    /// Whether the store holds an archive part at all (a local store's `wal` directory exists; a
    /// bucket always may).
    fn has_wal_part(&self) -> bool {
        match &wal::archive_config(&self.config).destination {
            BackupDestination::Local { dir } => dir.is_dir(),
            BackupDestination::Gcs { .. } => true,
        }
    }

    /// Reads the archive's state: one listing of `base/` and of `wal/`, small objects once.
    pub async fn archive_report(&self) -> Result<ArchiveReport> {
        let mut cache = self.physical.lock().await;
        let bases = self.complete_bases(&mut cache).await?;
        let mut report = ArchiveReport {
            bases,
            ..Default::default()
        };
        if !self.has_wal_part() {
            return Ok(report);
        }
        let archive = Store::open(&wal::archive_config(&self.config))
            .await
            .map_err(|e| anyhow!("opening the WAL archive: {e}"))?;
        let listing = archive
            .list()
            .await
            .map_err(|e| anyhow!("listing the WAL archive: {e}"))?;
        let segment_bytes = report
            .bases
            .first()
            .map_or(wal_gaps::DEFAULT_SEGMENT_BYTES, |b| b.wal_segment_bytes);
        let mut view = Archive {
            segment_bytes,
            bases: report
                .bases
                .iter()
                .map(|b| BaseStart {
                    name: b.name.clone(),
                    start_wal_file: b.start_wal_file.clone(),
                    finished_at: b.finished_at,
                })
                .collect(),
            ..Default::default()
        };
        for o in &listing.objects {
            let name = o.name.strip_suffix(".gz").unwrap_or(&o.name);
            if let Some((timeline, number)) = wal_gaps::parse_segment(name, segment_bytes) {
                view.segments.push(Segment {
                    timeline,
                    number,
                    stored_at: o.created,
                });
            } else if let Some(tli) = name.strip_suffix(".history") {
                let Ok(tli) = u32::from_str_radix(tli, 16) else {
                    continue;
                };
                if !cache.histories.contains_key(&o.name) {
                    let text = match archive.read_all(&o.name).await {
                        Ok(bytes) => gunzip_text(&bytes).unwrap_or_default(),
                        Err(e) => return Err(anyhow!("reading {}: {e}", o.name)),
                    };
                    cache
                        .histories
                        .insert(o.name.clone(), wal_gaps::parse_history(&text));
                }
                view.histories.insert(tli, cache.histories[&o.name].clone());
            } else if o.name.ends_with(CONFLICT_SUFFIX) {
                report.conflicts += 1;
            } else if o.name.ends_with(DROPPED_SUFFIX) {
                if !cache.dropped.contains_key(&o.name) {
                    let record = archive.read_json::<Dropped>(&o.name).await;
                    cache.dropped.insert(o.name.clone(), record);
                }
                report.dropped.extend(cache.dropped[&o.name].clone());
            }
        }
        report.continuity = wal_gaps::check(&view);
        Ok(report)
    }

    /// The complete base backups, newest first (manifests read once per name).
    async fn complete_bases(&self, cache: &mut Cache) -> Result<Vec<BaseManifest>> {
        if !self.has_base_part() {
            return Ok(Vec::new());
        }
        let store = Store::open(&base_config(&self.config))
            .await
            .map_err(|e| anyhow!("opening the base backups: {e}"))?;
        let listing = store
            .list()
            .await
            .map_err(|e| anyhow!("listing the base backups: {e}"))?;
        let mut bases = Vec::new();
        for o in listing.objects.iter().filter(|o| is_base(&o.name)) {
            let manifest_name = format!("{}{MANIFEST_SUFFIX}", o.name);
            if !listing.objects.iter().any(|m| m.name == manifest_name) {
                continue;
            }
            if !matches!(cache.manifests.get(&manifest_name), Some(Some(_))) {
                let manifest = store.read_json::<BaseManifest>(&manifest_name).await;
                cache.manifests.insert(manifest_name.clone(), manifest);
            }
            bases.extend(cache.manifests[&manifest_name].clone());
        }
        bases.sort_by(|a, b| (b.finished_at, &b.name).cmp(&(a.finished_at, &a.name)));
        Ok(bases)
    }

    /// The server's view: `archive_mode`, `pg_stat_archiver`'s failures, the files waiting in
    /// pg_wal and its size. Each part is `None` when it cannot be read (no server, a role
    /// without `pg_monitor`).
    pub async fn server_archiving(&self) -> ServerArchiving {
        let connect = PgConnection::connect_with(self.db.connect_options());
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(5), connect).await else {
            return ServerArchiving::default();
        };
        let mut out = ServerArchiving::default();
        let stats: Result<ArchiverRow, _> = sqlx::query_as(
            "SELECT current_setting('archive_mode'), failed_count, last_failed_wal, \
                    last_failed_time, last_archived_wal, last_archived_time FROM pg_stat_archiver",
        )
        .fetch_one(&mut conn)
        .await;
        if let Ok((mode, failed, wal, at, archived, archived_at)) = stats {
            out.archiving = Some(mode != "off");
            out.failed_count = Some(failed);
            out.last_failed_wal = wal;
            out.last_failed_at = at;
            out.last_archived_wal = archived.filter(|n| wal_gaps::parse_segment(n, 1).is_some());
            out.last_archived_at = archived_at;
        }
        out.pg_wal_bytes = sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()",
        )
        .fetch_one(&mut conn)
        .await
        .ok()
        .map(|b| b.max(0) as u64);
        out.pending_files = sqlx::query_scalar(
            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
        )
        .fetch_one(&mut conn)
        .await
        .ok();
        // Needs superuser or pg_read_server_files; without, drops show once recorded.
        let note: Option<Option<String>> =
            sqlx::query_scalar("SELECT pg_read_file($1, 0, 1048576, true)")
                .bind(wal::PENDING_DROPS)
                .fetch_one(&mut conn)
                .await
                .ok();
        let mut drops: Vec<String> = note
            .flatten()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        drops.sort();
        drops.dedup();
        out.unrecorded_drops = drops;
        conn.close().await.ok();
        out
    }

    /// Refreshes the status's physical part (serve, every NEXUSD_BACKUP_STATUS_REFRESH
    /// seconds). An archive that cannot be read keeps what was known, with the reason.
    pub async fn refresh_pitr(&self) {
        let server = self.server_archiving().await;
        let due = {
            let mut cache = self.physical.lock().await;
            cache.looks += 1;
            (cache.looks - 1) % LIST_EVERY == 0
        };
        let listed = match due {
            true => Some(self.archive_report().await),
            false => None,
        };
        let report = {
            let mut cache = self.physical.lock().await;
            if let Some(Ok(report)) = &listed {
                cache.last = Some(report.clone());
            }
            cache.last.clone()
        };
        let now = Utc::now();
        self.status.update(|s| {
            let mut p = s.pitr.clone().unwrap_or_default();
            match listed {
                Some(Ok(_)) => p.error = None,
                Some(Err(e)) => p.error = Some(format!("{e:#}")),
                None => {}
            }
            if let Some(report) = &report {
                apply_report(&mut p, report, now);
            }
            apply_server(&mut p, &server, report.as_ref(), now);
            p.checked_at = Some(now);
            s.pitr = Some(p);
        });
    }
}

/// The server's part of the status, over the last listing's `report`.
fn apply_server(
    p: &mut PitrStatus,
    server: &ServerArchiving,
    report: Option<&ArchiveReport>,
    now: DateTime<Utc>,
) {
    // The server's newest archived segment, when newer than the last listing's (and not one it
    // was told was archived while segments were being dropped).
    if let (Some(wal), Some(at)) = (&server.last_archived_wal, server.last_archived_at)
        && p.last_archived_at.is_none_or(|known| at > known)
        && server.unrecorded_drops.is_empty()
    {
        p.last_archived_segment = Some(wal.clone());
        p.last_archived_at = Some(at);
    }
    p.last_archived_age_seconds = p
        .last_archived_at
        .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0));
    p.archiving = server.archiving.or(p.archiving);
    p.archive_failures = server.failed_count;
    p.last_failed_wal = server.last_failed_wal.clone();
    p.last_failed_at = server.last_failed_at;
    p.pending_files = server.pending_files;
    p.pg_wal_bytes = server.pg_wal_bytes;
    let recorded = report.map_or(0, ArchiveReport::dropped_segments);
    p.dropped_segments = recorded + server.unrecorded_drops.len() as u64;
    if let Some(first) = server.unrecorded_drops.first() {
        let also = report.and_then(ArchiveReport::problem);
        p.first_missing_segment = report
            .and_then(|r| r.continuity.first_missing.clone())
            .or_else(|| Some(first.clone()));
        p.gap = Some(format!(
            "{} WAL segments from {first} were DROPPED at the pg_wal ceiling \
             (NEXUSD_WAL_MAX_PENDING): the store cannot be reached; no restore can cross them — \
             once the store is back, take a base backup (`nexusd backup run --physical`){}",
            server.unrecorded_drops.len(),
            also.map(|g| format!("; also: {g}")).unwrap_or_default()
        ));
    }
}

/// The archive's part of the status.
pub fn apply_report(p: &mut PitrStatus, report: &ArchiveReport, now: DateTime<Utc>) {
    let c = &report.continuity;
    p.window_start = c.window_start;
    p.window_end = c.window_end;
    p.window_seconds = c.window_seconds();
    p.window_base = c.window_base.clone();
    p.last_archived_segment = c.newest_segment.clone();
    p.last_archived_at = c.newest_stored_at;
    p.last_archived_age_seconds = c
        .newest_stored_at
        .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0));
    p.gap = report.problem();
    p.first_missing_segment = c.first_missing.clone();
    p.dropped_segments = report.dropped_segments();
    p.duplicate_conflicts = report.conflicts;
    p.base_backups = report.bases.len();
    p.last_base_backup = report.bases.first().map(|b| b.name.clone());
    p.last_base_backup_at = report.bases.first().map(|b| b.finished_at);
}
