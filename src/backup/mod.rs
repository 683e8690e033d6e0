//! Backups: nightly `pg_dump` streamed through gzip into a store (GCS or a local directory),
//! with a manifest written last, retention that never loses the last good backups, restore and
//! verified restore. One entry point per job: [`Backups::run`], [`Backups::prune`],
//! [`Backups::list`], [`Backups::verify`], [`Backups::restore`] (the last two in `recovery.rs`);
//! [`schedule`] runs the first and the fourth on their cron schedules inside `nexusd serve`, and
//! [`follow`] keeps serve's view of the store current.

pub(crate) mod base;
pub(crate) mod config;
pub(crate) mod follow;
mod manifest;
mod pipeline;
pub(crate) mod pitr;
pub(crate) mod pitr_status;
pub(crate) mod pitr_verify;
pub(crate) mod progress;
mod recovery;
pub(crate) mod restore;
mod retention;
pub(crate) mod schedule;
mod sql_dump;
pub(crate) mod status;
pub(crate) mod store;
pub mod wal;
pub(crate) mod wal_gaps;
mod wal_retention;

pub use config::{BackupConfig, BackupDestination, DumpFormat, VARIABLES};
pub use manifest::{Compression, LATEST, MANIFEST_SUFFIX, Manifest, Verification};
pub use progress::Progress;
pub use recovery::Restored;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::db::cluster::quote_ident;
use crate::db::leader::Lease;
use crate::db::tools::ClientTools;
use manifest::{VERIFY_SUFFIX, name_order};
use retention::{Plan, Policy};
use status::{Attempt, Outcome, StatusHandle};
use store::{Store, StoreError};

/// Session advisory lock held during a backup, so two nexusd instances never dump at once.
pub const BACKUP_LOCK: i64 = 0x6e65_7875_7364_0001;

/// Why a backup did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "another backup is running (in this nexusd, or another instance holds the backup lock)"
    )]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// One backup as `backup list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub name: String,
    pub created: DateTime<Utc>,
    pub size: u64,
    /// Has a manifest: it counts as a backup.
    pub complete: bool,
    pub manifest: Option<Manifest>,
    pub verification: Option<Verification>,
}

pub struct Backups {
    config: BackupConfig,
    store: Store,
    db: Database,
    pg_bindir: Option<PathBuf>,
    /// Where verify and restore download an object before loading it.
    spool_dir: PathBuf,
    status: StatusHandle,
    /// One backup or verification at a time in this process.
    running: tokio::sync::Mutex<()>,
    /// A backup finding none of these tables (`public.<name>`) fails: the database is not the
    /// knowledge base (empty: no such check).
    expected_tables: &'static [&'static str],
    /// What [`follow`] read last from the store.
    followed: std::sync::Mutex<follow::Seen>,
    /// The physical side's small objects, read once (src/backup/pitr_status.rs).
    physical: tokio::sync::Mutex<pitr_status::Cache>,
}

impl Backups {
    pub async fn open(
        config: &BackupConfig,
        db: Database,
        pg_bindir: Option<PathBuf>,
        spool_dir: PathBuf,
        status: StatusHandle,
    ) -> Result<Backups, StoreError> {
        let store = Store::open(config).await?;
        status.update(|s| s.store = store.describe());
        Ok(Backups {
            config: config.clone(),
            store,
            db,
            pg_bindir,
            spool_dir,
            status,
            running: tokio::sync::Mutex::new(()),
            expected_tables: &[],
            followed: Default::default(),
            physical: Default::default(),
        })
    }

    /// Backups of a database holding none of `tables` (in schema `public`) fail instead of
    /// storing a dump of nothing (a command pointed at the wrong database).
    pub fn expecting_tables(mut self, tables: &'static [&'static str]) -> Self {
        self.expected_tables = tables;
        self
    }

    pub fn status(&self) -> &StatusHandle {
        &self.status
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &BackupConfig {
        &self.config
    }

    /// Takes one backup now (the nightly job's code path), showing `progress`. Records the
    /// outcome in the status.
    pub async fn run(
        &self,
        cancel: CancellationToken,
        progress: &Progress,
    ) -> Result<Manifest, BackupError> {
        self.run_fenced(cancel, progress, None).await
    }

    /// [`Backups::run`] for a leader's job: the manifest, which makes the backup count, is
    /// written only if `lease` still holds right before (`db/leader.rs`).
    pub async fn run_fenced(
        &self,
        cancel: CancellationToken,
        progress: &Progress,
        lease: Option<&Lease>,
    ) -> Result<Manifest, BackupError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(BackupError::Busy);
        };
        let started = Utc::now();
        self.status.update(|s| s.running = true);
        // The deadline cancels the backup like a shutdown does: every stage stops, and the
        // snapshot and the lock are released at once.
        let stop = cancel.child_token();
        let deadline = {
            let stop = stop.clone();
            let limit = self.config.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                stop.cancel();
            })
        };
        // Boxed: the pipeline's future is too deep to nest unboxed in callers'.
        let result = Box::pin(self.take(started, stop.clone(), progress, lease)).await;
        deadline.abort();
        let result = match result {
            // The lease's guard cancelled it: say so, rather than only "cancelled".
            Err(BackupError::Failed(e)) if lease.is_some_and(Lease::ended) => {
                Err(BackupError::Failed(e.context(
                    "this replica lost leadership (its lock session ended) during the backup; \
                     the new leader takes the next one",
                )))
            }
            Err(BackupError::Failed(e)) if stop.is_cancelled() && !cancel.is_cancelled() => {
                Err(BackupError::Failed(e.context(format!(
                    "the backup did not finish within {} s (NEXUSD_BACKUP_TIMEOUT)",
                    self.config.timeout.as_secs()
                ))))
            }
            other => other,
        };
        let finished = Utc::now();
        self.status.update(|s| {
            s.running = false;
            match &result {
                Ok(m) => {
                    s.last_attempt = Some(Attempt {
                        started_at: started,
                        finished_at: finished,
                        outcome: Outcome::Success,
                        name: Some(m.name.clone()),
                        error: None,
                    });
                    s.last_success = Some(follow::success(m));
                }
                Err(e) => {
                    let outcome = match e {
                        BackupError::Busy => Outcome::Skipped,
                        BackupError::Failed(_) => {
                            s.failures_total += 1;
                            Outcome::Failed
                        }
                    };
                    s.last_attempt = Some(Attempt {
                        started_at: started,
                        finished_at: finished,
                        outcome,
                        name: None,
                        error: Some(format!("{e:#}")),
                    });
                }
            }
        });
        match &result {
            Ok(m) => tracing::info!(
                name = %m.name,
                bytes = m.compressed_bytes,
                raw_bytes = m.raw_bytes,
                seconds = m.duration_seconds,
                store = %self.store.describe(),
                "backup complete"
            ),
            Err(BackupError::Busy) => tracing::info!("backup skipped: another one is running"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "backup failed; nothing was stored as a backup")
            }
        }
        result
    }

    async fn take(
        &self,
        started: DateTime<Utc>,
        cancel: CancellationToken,
        progress: &Progress,
        lease: Option<&Lease>,
    ) -> Result<Manifest, BackupError> {
        let clock = Instant::now();
        let mut conn = PgConnection::connect_with(self.db.connect_options())
            .await
            .context("connecting to PostgreSQL for the backup")?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(BACKUP_LOCK)
            .fetch_one(&mut conn)
            .await
            .context("taking the backup lock")?;
        if !locked {
            conn.close().await.ok();
            return Err(BackupError::Busy);
        }
        // One snapshot for the row counts and for pg_dump (--snapshot), so they must agree.
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut conn)
            .await
            .context("starting the snapshot transaction")?;
        let (snapshot, database, server_version, server_version_num): (String, String, String, i32) = sqlx::query_as(
            "SELECT pg_export_snapshot(), current_database()::text, current_setting('server_version'),
                    current_setting('server_version_num')::int",
        )
        .fetch_one(&mut conn)
        .await
        .context("exporting a snapshot")?;
        let tables = count_tables(&mut conn)
            .await
            .context("counting rows for the manifest")?;
        self.check_tables(&database, &tables)?;
        let tools = ClientTools::locate(
            self.pg_bindir.as_deref(),
            (server_version_num / 10_000) as u32,
        )?;
        let (name, estimate) = self.free_name(started).await;
        let stage = progress
            .relabel(format!("backup {name}"))
            .estimated_stage("dump", estimate);
        let spec = pipeline::DumpSpec {
            tools: tools.clone(),
            connection: self.db.tools.clone(),
            source: pipeline::Source::Dump {
                format: self.config.format,
                snapshot: snapshot.clone(),
            },
            level: self.config.gzip_level,
            workers: pipeline::default_workers(),
            dumped: stage.counter(),
        };
        let dumped = pipeline::dump(&self.store, &name, spec, cancel).await;
        // The snapshot and the lock end with the session either way.
        sqlx::query("ROLLBACK").execute(&mut conn).await.ok();
        conn.close().await.ok();
        let dumped =
            dumped.with_context(|| format!("dumping {database} to {}", self.store.describe()))?;
        stage.finish();

        let manifest = Manifest {
            manifest_version: 1,
            name: name.clone(),
            format: match self.config.format {
                DumpFormat::Plain => "plain".into(),
                DumpFormat::Custom => "custom".into(),
            },
            compression: manifest::Compression {
                codec: "gzip".into(),
                level: self.config.gzip_level,
                block_bytes: pipeline::BLOCK_BYTES as u64,
            },
            raw_bytes: dumped.raw_bytes,
            compressed_bytes: dumped.compressed_bytes,
            sha256: dumped.sha256,
            crc32c: dumped.crc32c,
            database,
            server_version,
            pg_dump_version: tools.version,
            started_at: started,
            finished_at: Utc::now(),
            duration_seconds: clock.elapsed().as_secs_f64(),
            snapshot,
            tables,
            store: self.store.kind().into(),
            generation: dumped.object.generation,
            nexusd_version: env!("CARGO_PKG_VERSION").into(),
        };
        if let Some(lease) = lease
            && !lease.confirm(self.db.pool()).await
        {
            return Err(BackupError::Failed(anyhow!(
                "this replica lost leadership during backup {name}: no manifest written, so it does not count"
            )));
        }
        self.store
            .put_json(&format!("{name}{MANIFEST_SUFFIX}"), &manifest)
            .await
            .map_err(|e| anyhow!("writing the manifest of {name}: {e}"))?;
        Ok(manifest)
    }

    /// Refuses a database holding none of the knowledge-base tables: a dump of it would be a
    /// "backup" of nothing (a command pointed at the wrong or a new database).
    fn check_tables(&self, database: &str, tables: &BTreeMap<String, i64>) -> Result<()> {
        if self.expected_tables.is_empty()
            || self
                .expected_tables
                .iter()
                .any(|t| tables.contains_key(&format!("public.{t}")))
        {
            return Ok(());
        }
        bail!(
            "database {database} holds none of the knowledge-base tables ({}, …; {} tables in all): \
             it is not the knowledge base, so nothing was backed up; check DATABASE_URL (or \
             --env-file), or run `nexusd bootstrap` first on a new database",
            self.expected_tables[..self.expected_tables.len().min(3)].join(", "),
            tables.len()
        )
    }

    /// The name for a backup started at `started` that the store does not hold yet (two backups
    /// within one second get `-2`, `-3`, …). When the store cannot be listed, the plain name:
    /// the store never overwrites an object, so a clash fails the upload rather than lose one.
    /// Also returns the raw size of the newest complete backup: about what this dump will be,
    /// for the progress's time left.
    async fn free_name(&self, started: DateTime<Utc>) -> (String, Option<u64>) {
        let listing = match self.store.list().await {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the store to choose the backup's name");
                Default::default()
            }
        };
        // An upload in progress (`<name>.<pid>.partial` in a local store) takes its name too.
        let name = manifest::unique_dump_name(started, self.config.format, |name| {
            listing.objects.iter().any(|o| o.name == name)
                || listing.partials.iter().any(|p| {
                    p.name
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with('.'))
                })
        });
        let complete = |dump: &str| {
            let manifest = format!("{dump}{MANIFEST_SUFFIX}");
            listing.objects.iter().any(|o| o.name == manifest)
        };
        let previous = listing
            .objects
            .iter()
            .filter(|o| manifest::is_dump(&o.name) && complete(&o.name))
            .min_by(|a, b| newest_first((a.created, &a.name), (b.created, &b.name)));
        let estimate = match previous {
            Some(o) => self
                .read_json::<Manifest>(&format!("{}{MANIFEST_SUFFIX}", o.name))
                .await
                .map(|m| m.raw_bytes),
            None => None,
        };
        (name, estimate)
    }

    /// Every backup in the store, newest first, with its manifest and verification.
    pub async fn list(&self) -> Result<Vec<Entry>> {
        let listing = self.store.list().await.map_err(|e| anyhow!("{e}"))?;
        let names: std::collections::HashSet<&str> =
            listing.objects.iter().map(|o| o.name.as_str()).collect();
        let mut entries = Vec::new();
        for object in listing
            .objects
            .iter()
            .filter(|o| manifest::is_dump(&o.name))
        {
            let manifest_name = format!("{}{MANIFEST_SUFFIX}", object.name);
            let verify_name = format!("{}{VERIFY_SUFFIX}", object.name);
            let manifest = if names.contains(manifest_name.as_str()) {
                self.read_json::<Manifest>(&manifest_name).await
            } else {
                None
            };
            let verification = if names.contains(verify_name.as_str()) {
                self.read_json::<Verification>(&verify_name).await
            } else {
                None
            };
            entries.push(Entry {
                name: object.name.clone(),
                created: object.created,
                size: object.size,
                complete: manifest.is_some(),
                manifest,
                verification,
            });
        }
        entries.sort_by(|a, b| newest_first((a.created, &a.name), (b.created, &b.name)));
        Ok(entries)
    }

    async fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        self.store.read_json(name).await
    }

    /// Applies the retention policy (or, with `dry_run`, only says what it would delete). A
    /// failure or refusal is also kept in the status, apart from the backups' own outcome.
    pub async fn prune(&self, dry_run: bool) -> Result<Plan> {
        let result = self.apply_retention(dry_run).await;
        if !dry_run {
            let problem = match &result {
                Ok(plan) => plan.refused.clone(),
                Err(e) => Some(format!("{e:#}")),
            };
            self.status.update(|s| s.retention_error = problem);
        }
        result
    }

    async fn apply_retention(&self, dry_run: bool) -> Result<Plan> {
        let listing = self.store.list().await.map_err(|e| anyhow!("{e}"))?;
        let now = match listing.server_time {
            Some(server) => {
                let skew = (Utc::now() - server).num_seconds().abs();
                if skew > 300 {
                    tracing::warn!(
                        skew_seconds = skew,
                        "the local clock disagrees with the store's; ages use the store's"
                    );
                }
                server
            }
            None => Utc::now(),
        };
        let mut verified = HashMap::new();
        for entry in listing
            .objects
            .iter()
            .filter(|o| o.name.ends_with(VERIFY_SUFFIX))
        {
            if let Some(v) = self.read_json::<Verification>(&entry.name).await {
                verified.insert(v.name.clone(), v.ok);
            }
        }
        let policy = Policy::new(
            self.config.retention_days,
            self.config.min_keep,
            self.config.max_deletions,
        );
        let plan = retention::plan(&listing, &verified, now, &policy);
        if let Some(why) = &plan.refused {
            tracing::error!(reason = %why, "pruning refused");
            return Ok(plan);
        }
        if !plan.deferred.is_empty() {
            tracing::warn!(
                deferred = plan.deferred.len(),
                cap = self.config.max_deletions,
                "more backups are due for deletion than one run may delete (NEXUSD_BACKUP_MAX_DELETIONS)"
            );
        }
        let mut plan = plan;
        if !dry_run {
            for d in &plan.delete {
                match self.store.delete(&d.name, d.generation).await {
                    Ok(()) | Err(StoreError::NotFound(_)) => {
                        tracing::info!(name = %d.name, reason = %d.reason, "pruned");
                    }
                    Err(e) => bail!("deleting {}: {e}", d.name),
                }
            }
        }
        self.prune_physical(now, &policy, dry_run, &mut plan)
            .await?;
        Ok(plan)
    }
}

/// Orders backups newest first: by the store's creation time, then by name (time stamp, then
/// the `-N` of backups taken within one second).
pub(super) fn newest_first(
    a: (DateTime<Utc>, &str),
    b: (DateTime<Utc>, &str),
) -> std::cmp::Ordering {
    (b.0, name_order(b.1)).cmp(&(a.0, name_order(a.1)))
}

/// Row counts of every table pg_dump will dump (user tables, not those of extensions).
async fn count_tables(conn: &mut PgConnection) -> Result<BTreeMap<String, i64>> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
          ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        ))
        .fetch_one(&mut *conn)
        .await?;
        counts.insert(format!("{schema}.{table}"), count);
    }
    Ok(counts)
}
