//! Restore to a point in time (`nexusd restore --target-time …`, `--target-lsn …`,
//! `--target-time latest`): the newest base backup that stopped before the target is fetched and
//! checked against its manifest, unpacked into a new data directory beside the embedded
//! cluster's (`<state>/pg.restore-<stamp>`), and started on a private socket with
//! `recovery.signal`, `restore_command = nexusd wal-fetch %f %p` and the target, promoting there.
//! Once PostgreSQL has left recovery and the point it reached is checked, it is stopped and the
//! directories are swapped: the old one stays as `<state>/pg.before-restore-<stamp>`. Any
//! failure before the swap leaves the live data directory untouched.
//!
//! The restored cluster archives into the same archive as before (its `archive_command` is the
//! embedded cluster's): after promotion it writes a new timeline, whose `.history` file and
//! segments have names the old timeline never used, and a later restore needs that history file
//! to follow the timeline (as pgBackRest and WAL-G do).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, NaiveDateTime, Utc};
use flate2::read::MultiGzDecoder;
use sqlx::{Connection, PgConnection};

use super::base::{BaseManifest, base_config, format_lsn, parse_lsn, wal_file};
use super::progress::Stage;
use super::restore::{self, Expected};
use super::store::Store;
use super::{Backups, Progress, wal};
use crate::db::cluster::{Cluster, ClusterSpec, Postmaster};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    Time(DateTime<Utc>),
    Lsn(u64),
    /// Everything archived.
    Latest,
}

impl RecoveryTarget {
    /// `--target-time` (a time with its zone, or `latest`) or `--target-lsn`.
    pub fn parse(time: Option<&str>, lsn: Option<&str>) -> Result<Self> {
        match (time, lsn) {
            (Some(_), Some(_)) => bail!("give --target-time or --target-lsn, not both"),
            (Some(t), None) if t.trim().eq_ignore_ascii_case("latest") => {
                Ok(RecoveryTarget::Latest)
            }
            (Some(t), None) => parse_time(t).map(RecoveryTarget::Time).ok_or_else(|| {
                anyhow!(
                    "--target-time {t:?} is not a time: expected e.g. '2026-12-03 14:05:00+00' \
                     (RFC 3339 works too; without a zone it is UTC), or latest"
                )
            }),
            (None, Some(l)) => parse_lsn(l).map(RecoveryTarget::Lsn).ok_or_else(|| {
                anyhow!("--target-lsn {l:?} is not a WAL position: expected e.g. 0/3000028")
            }),
            (None, None) => bail!("give --target-time or --target-lsn"),
        }
    }

    /// The recovery settings for this target.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut settings = match self {
            RecoveryTarget::Time(t) => vec![(
                "recovery_target_time".to_string(),
                t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
            )],
            RecoveryTarget::Lsn(l) => vec![("recovery_target_lsn".to_string(), format_lsn(*l))],
            RecoveryTarget::Latest => Vec::new(),
        };
        settings.push(("recovery_target_timeline".into(), "latest".into()));
        settings.push(("recovery_target_action".into(), "promote".into()));
        settings
    }

    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time(t) => t.format("%Y-%m-%d %H:%M:%S%.f UTC").to_string(),
            RecoveryTarget::Lsn(l) => format!("LSN {}", format_lsn(*l)),
            RecoveryTarget::Latest => "the latest archived WAL".into(),
        }
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let utc = text.strip_suffix(" UTC").unwrap_or(text);
    NaiveDateTime::parse_from_str(utc, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// The newest complete base backup that can reach `target`: stopped at or before it.
pub fn choose(manifests: &[BaseManifest], target: &RecoveryTarget) -> Result<BaseManifest> {
    let fits = |m: &&BaseManifest| match target {
        RecoveryTarget::Time(t) => m.finished_at <= *t,
        RecoveryTarget::Lsn(l) => parse_lsn(&m.stop_lsn).is_some_and(|s| s <= *l),
        RecoveryTarget::Latest => true,
    };
    if manifests.is_empty() {
        bail!(
            "there is no complete base backup in the store: take one with `nexusd backup run \
             --physical` (serve takes one weekly, NEXUSD_BASEBACKUP_SCHEDULE)"
        );
    }
    manifests
        .iter()
        .filter(fits)
        .max_by_key(|m| (m.finished_at, m.name.clone()))
        .cloned()
        .ok_or_else(|| {
            let oldest = manifests.iter().min_by_key(|m| m.finished_at);
            anyhow!(
                "no base backup finished before {}: the oldest, {}, finished at {} (LSN {}); \
                 the recoverable window starts there",
                target.describe(),
                oldest.map_or("-", |m| m.name.as_str()),
                oldest.map_or_else(String::new, |m| m.finished_at.to_rfc3339()),
                oldest.map_or("-", |m| m.stop_lsn.as_str()),
            )
        })
}

/// What a point-in-time restore did.
#[derive(Debug, Clone)]
pub struct PitrRestored {
    pub base: BaseManifest,
    pub data_dir: PathBuf,
    /// The data directory as it was before, kept aside.
    pub kept: Option<PathBuf>,
    pub reached_lsn: String,
    pub last_transaction: Option<DateTime<Utc>>,
    pub timeline: i32,
}

/// Where recovery ended.
pub(super) struct Reached {
    pub lsn: String,
    pub last_transaction: Option<DateTime<Utc>>,
    pub timeline: i32,
    /// Row counts of every table in the database asked for (see [`Recovery::count_in`]).
    pub counts: Option<BTreeMap<String, i64>>,
}

/// How a recovery runs besides its target.
pub(super) struct Recovery<'a> {
    /// Archive from the recovered cluster into the store (a restore that is kept); a scratch
    /// recovery (`backup verify --physical`) must not: its promotion would add a timeline to the
    /// archive that a later `restore --target-time latest` would follow.
    pub archive: bool,
    /// Count the rows of every table of this database before stopping.
    pub count_in: Option<&'a str>,
}

impl Backups {
    /// The base backup a restore to `target` starts from.
    pub async fn base_for(&self, target: &RecoveryTarget) -> Result<BaseManifest> {
        let manifests: Vec<BaseManifest> = self
            .base_backups()
            .await?
            .into_iter()
            .filter_map(|e| e.manifest)
            .collect();
        choose(&manifests, target)
    }

    /// Restores the embedded cluster under `state_dir` to `target` (the caller holds the state
    /// directory's lock, so neither serve nor another command runs it).
    pub async fn restore_to(
        &self,
        target: &RecoveryTarget,
        state_dir: &Path,
        progress: &Progress,
    ) -> Result<PitrRestored> {
        let base = self.base_for(target).await?;
        let progress = progress.relabel(format!("restore {}", base.name));
        let spool = self.fetch_base(&base, &progress).await?;
        let stamp = Utc::now().format("%Y%m%d_%H%M%S").to_string();
        let new_dir = state_dir.join(format!("pg.restore-{stamp}"));
        let spec = ClusterSpec {
            data_dir: new_dir.clone(),
            socket_dir: state_dir.join("run.restore"),
            ..ClusterSpec::embedded(state_dir)
        };
        let how = Recovery {
            archive: true,
            count_in: None,
        };
        let recovered = self
            .recover(
                &spool,
                &base,
                spec.clone(),
                (target, how),
                state_dir,
                &progress,
            )
            .await;
        let _ = std::fs::remove_dir_all(&spec.socket_dir);
        let reached = match recovered {
            Ok(reached) => reached,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&new_dir);
                return Err(e.context("nothing was restored; the data directory is untouched"));
            }
        };
        let swapping = progress.stage("swap", None);
        swapping.phase(format!(
            "{} becomes the data directory; the old one is kept aside",
            new_dir.display()
        ));
        let (data_dir, kept) = swap(state_dir, &new_dir, &stamp)?;
        swapping.finish();
        Ok(PitrRestored {
            base,
            data_dir,
            kept,
            reached_lsn: reached.lsn,
            last_transaction: reached.last_transaction,
            timeline: reached.timeline,
        })
    }

    /// Downloads `base` into the spool and checks it against its manifest.
    pub(super) async fn fetch_base(
        &self,
        base: &BaseManifest,
        progress: &Progress,
    ) -> Result<restore::Spool> {
        let chosen = progress.stage("base backup", None);
        chosen.phase(format!(
            "{} (stopped at LSN {}, {})",
            base.name,
            base.stop_lsn,
            base.finished_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        chosen.finish();
        let store = Store::open(&base_config(&self.config))
            .await
            .map_err(|e| anyhow!("opening the base backups: {e}"))?;
        let expected = Expected {
            name: &base.name,
            compressed_bytes: base.compressed_bytes,
            sha256: &base.sha256,
            crc32c: base.crc32c,
        };
        let spool = restore::spool(&store, expected, &self.spool_dir, progress).await?;
        if !spool.intact() {
            bail!(
                "{} differs from its manifest (SHA-256, CRC32C or size): nothing was restored",
                base.name
            );
        }
        Ok(spool)
    }

    /// Unpacks the base backup into the new data directory and runs recovery there to `target`.
    pub(super) async fn recover(
        &self,
        spool: &restore::Spool,
        base: &BaseManifest,
        spec: ClusterSpec,
        (target, how): (&RecoveryTarget, Recovery<'_>),
        state_dir: &Path,
        progress: &Progress,
    ) -> Result<Reached> {
        let shell = Cluster::new(spec.clone(), self.pg_bindir.as_deref())?;
        shell.prepare_data_dir()?;
        let stage = progress.stage("unpack", Some(base.raw_bytes));
        unpack(spool.path(), &spec.data_dir, shell.owner_ids(), &stage).await?;
        stage.finish();
        let signal = spec.data_dir.join("recovery.signal");
        std::fs::write(&signal, b"").with_context(|| format!("writing {}", signal.display()))?;
        if let Some((uid, gid)) = shell.owner_ids() {
            std::os::unix::fs::chown(&signal, Some(uid), Some(gid))?;
        }
        let exe = std::env::current_exe().context("finding nexusd's own path")?;
        // The archive directory's access is set up either way: wal-fetch reads it as the
        // cluster's user.
        let (mut settings, dirs) = wal::embedded_archiving(&self.config, state_dir);
        if !how.archive {
            settings = vec![("archive_mode".into(), "off".into())];
        }
        settings.push((
            "restore_command".into(),
            wal::restore_command(&exe, state_dir),
        ));
        settings.extend(target.settings());
        let cluster = Cluster::new(spec, self.pg_bindir.as_deref())?.with_settings(settings, dirs);
        let stage = progress.stage("recovery", None);
        stage.phase(format!(
            "replaying the archived WAL to {}",
            target.describe()
        ));
        let mut postmaster = cluster
            .start()
            .await
            .context("starting the restored cluster")?;
        let checked = async {
            let mut conn = wait_promoted(&cluster, &mut postmaster, self.config.timeout).await?;
            let reached = self.check_reached(&mut conn, target).await;
            conn.close().await.ok();
            let mut reached = reached?;
            if let Some(database) = how.count_in {
                let mut conn = PgConnection::connect_with(&cluster.connect_options(database))
                    .await
                    .with_context(|| {
                        format!("connecting to {database} in the recovered cluster")
                    })?;
                let counted = super::count_tables(&mut conn).await;
                conn.close().await.ok();
                reached.counts = Some(counted.context("counting rows in the recovered cluster")?);
            }
            Ok(reached)
        }
        .await;
        postmaster.stop(Duration::from_secs(60)).await?;
        stage.finish();
        checked
    }

    /// Where recovery ended, checked against the target: never past a time target, and for
    /// `latest` in the newest WAL file the archive holds on the timeline it replayed.
    async fn check_reached(
        &self,
        conn: &mut PgConnection,
        target: &RecoveryTarget,
    ) -> Result<Reached> {
        let (last, lsn): (Option<DateTime<Utc>>, String) = sqlx::query_as(
            "SELECT pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text",
        )
        .fetch_one(&mut *conn)
        .await?;
        // The promotion's checkpoint names the timeline replayed and the new one.
        sqlx::query("CHECKPOINT").execute(&mut *conn).await?;
        let (timeline, replayed_tli, segment_bytes): (i32, i32, i64) = sqlx::query_as(
            "SELECT timeline_id, prev_timeline_id,
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
               FROM pg_control_checkpoint()",
        )
        .fetch_one(&mut *conn)
        .await?;
        match target {
            RecoveryTarget::Time(t) if last.is_some_and(|l| l > *t) => bail!(
                "recovery replayed a transaction of {} after the target {}",
                last.map(|l| l.to_rfc3339()).unwrap_or_default(),
                target.describe()
            ),
            RecoveryTarget::Latest => {
                let replayed = parse_lsn(&lsn).ok_or_else(|| anyhow!("unreadable LSN {lsn}"))?;
                let at = wal_file(
                    replayed_tli as u32,
                    replayed.saturating_sub(1),
                    segment_bytes as u64,
                );
                let newest = self.newest_archived(replayed_tli as u32).await?;
                if newest.as_deref().is_some_and(|n| n > at.as_str()) {
                    bail!(
                        "recovery ended in {at}, but the archive holds WAL up to {}: not \
                         everything archived was replayed",
                        newest.unwrap_or_default()
                    );
                }
            }
            _ => {}
        }
        Ok(Reached {
            lsn,
            last_transaction: last,
            timeline,
            counts: None,
        })
    }

    /// The newest WAL segment of timeline `tli` in the archive.
    async fn newest_archived(&self, tli: u32) -> Result<Option<String>> {
        let archive = Store::open(&wal::archive_config(&self.config))
            .await
            .map_err(|e| anyhow!("opening the WAL archive: {e}"))?;
        let listing = archive.list().await.map_err(|e| anyhow!("{e}"))?;
        let prefix = format!("{tli:08X}");
        Ok(listing
            .objects
            .iter()
            .filter_map(|o| o.name.strip_suffix(".gz"))
            .filter(|n| n.len() == 24 && n.starts_with(&prefix) && wal::is_wal_name(n))
            .max()
            .map(str::to_string))
    }
}

/// Waits until the restored server has left recovery; fails when it exits (a target it cannot
/// reach, a WAL file it cannot fetch) or after `limit`.
async fn wait_promoted(
    cluster: &Cluster,
    postmaster: &mut Postmaster,
    limit: Duration,
) -> Result<PgConnection> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(why) = postmaster.exited() {
            bail!("the restored PostgreSQL stopped during recovery ({why})");
        }
        if let Ok(mut conn) = PgConnection::connect_with(&cluster.connect_options("postgres")).await
        {
            let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await?;
            if !recovering {
                return Ok(conn);
            }
            conn.close().await.ok();
        }
        if Instant::now() > deadline {
            bail!(
                "recovery did not finish within {} s (NEXUSD_BACKUP_TIMEOUT)",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Decompresses the spooled tar into `dir` with `tar`, run as the server's user so every file
/// is its own.
async fn unpack(spool: &Path, dir: &Path, owner: Option<(u32, u32)>, stage: &Stage) -> Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let counter = stage.counter();
    let (spool, dir) = (spool.to_path_buf(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut cmd = Command::new("tar");
        cmd.args(["-x", "-f", "-", "-C"])
            .arg(&dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().context("starting tar")?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("tar has no stdin"))?;
        let file =
            std::fs::File::open(&spool).with_context(|| format!("opening {}", spool.display()))?;
        let mut decoder = MultiGzDecoder::new(std::io::BufReader::new(file));
        let mut buf = vec![0u8; 1 << 20];
        let copied = (|| -> Result<()> {
            loop {
                let n = decoder
                    .read(&mut buf)
                    .context("decompressing the base backup")?;
                if n == 0 {
                    return Ok(());
                }
                std::io::Write::write_all(&mut stdin, &buf[..n]).context("writing to tar")?;
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        })();
        drop(stdin);
        let out = child.wait_with_output().context("waiting for tar")?;
        copied?;
        if !out.status.success() {
            bail!(
                "tar failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    })
    .await
    .map_err(|e| anyhow!("the unpack thread failed: {e}"))??;
    Ok(())
}

/// Puts the recovered directory in place of `<state>/pg`, keeping the old one aside.
fn swap(state_dir: &Path, recovered: &Path, stamp: &str) -> Result<(PathBuf, Option<PathBuf>)> {
    let live = ClusterSpec::embedded(state_dir).data_dir;
    let aside = state_dir.join(format!("pg.before-restore-{stamp}"));
    let kept = if live.exists() {
        std::fs::rename(&live, &aside)
            .with_context(|| format!("moving {} aside", live.display()))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(recovered, &live) {
        if let Some(aside) = &kept {
            let _ = std::fs::rename(aside, &live);
        }
        bail!(
            "putting {} in place of {}: {e} (the old data directory is back)",
            recovered.display(),
            live.display()
        );
    }
    Ok((live, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn targets_are_read_as_postgresql_writes_them() {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 14, 5, 0).unwrap();
        for text in [
            "2026-12-03 14:05:00+00",
            "2026-12-03T15:05:00+01:00",
            "2026-12-03 14:05:00",
            "2026-12-03 14:05:00 UTC",
        ] {
            assert_eq!(
                RecoveryTarget::parse(Some(text), None).unwrap(),
                RecoveryTarget::Time(at),
                "{text}"
            );
        }
        assert_eq!(
            RecoveryTarget::parse(Some("latest"), None).unwrap(),
            RecoveryTarget::Latest
        );
        assert!(RecoveryTarget::parse(Some("yesterday"), None).is_err());
        assert!(RecoveryTarget::parse(None, Some("0/3000028")).is_ok());
    }
}
