//! Backups: nightly `pg_dump` streamed through gzip into a store (GCS or a local directory),
//! with a manifest written last, retention that never loses the last good backups, restore and
//! verified restore. One entry point per job: [`Backups::run`], [`Backups::prune`],
//! [`Backups::list`], [`Backups::verify`], [`Backups::restore`]; [`schedule`] runs the first and
//! the fourth on their cron schedules inside `nexusd serve`.

pub(crate) mod config;
mod manifest;
mod pipeline;
pub(crate) mod restore;
mod retention;
pub(crate) mod schedule;
mod sql_dump;
pub(crate) mod status;
pub(crate) mod store;

pub use config::{BackupConfig, BackupDestination, DumpFormat, VARIABLES};
pub use manifest::{Compression, MANIFEST_SUFFIX, Manifest, Verification};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::Digest;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::db::cluster::quote_ident;
use crate::db::tools::ClientTools;
use manifest::VERIFY_SUFFIX;
use retention::{Plan, Policy};
use status::{Attempt, Outcome, StatusHandle, Success, VerifyRecord};
use store::{Store, StoreError};

/// Session advisory lock held during a backup, so two nexusd instances never dump at once.
pub const BACKUP_LOCK: i64 = 0x6e65_7875_7364_0001;
/// Session advisory lock held during a verification (advisory locks belong to one database):
/// while it is held, no other verification of this database runs, so every scratch database of
/// this database left over is stale.
const VERIFY_LOCK: i64 = 0x6e65_7875_7364_0002;
/// Scratch databases of verifications are named with this prefix, then a hash of the source
/// database's name (so the servers' other databases' verifications are left alone).
const SCRATCH_PREFIX: &str = "nexusd_verify_";

/// `nexusd_verify_<8 hex digits of the source database's name>_`.
fn scratch_prefix(database: &str) -> String {
    let digest = sha2::Sha256::digest(database.as_bytes());
    format!(
        "{SCRATCH_PREFIX}{:08x}_",
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    )
}

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

/// What `restore` did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub name: String,
    pub database: String,
    pub mismatches: Vec<String>,
    pub errors: Vec<String>,
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
        })
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

    /// Takes one backup now (the nightly job's code path). Records the outcome in the status.
    pub async fn run(&self, cancel: CancellationToken) -> Result<Manifest, BackupError> {
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
        let result = Box::pin(self.take(started, stop.clone())).await;
        deadline.abort();
        let result = match result {
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
                    s.last_success = Some(Success {
                        name: m.name.clone(),
                        finished_at: m.finished_at,
                        compressed_bytes: m.compressed_bytes,
                        duration_seconds: m.duration_seconds,
                    });
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
    ) -> Result<Manifest, BackupError> {
        let clock = Instant::now();
        let name = manifest::dump_name(started, self.config.format);
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
        let tools = ClientTools::locate(
            self.pg_bindir.as_deref(),
            (server_version_num / 10_000) as u32,
        )?;
        let spec = pipeline::DumpSpec {
            tools: tools.clone(),
            connection: self.db.tools.clone(),
            format: self.config.format,
            level: self.config.gzip_level,
            snapshot: snapshot.clone(),
            workers: pipeline::default_workers(),
        };
        let dumped = pipeline::dump(&self.store, &name, spec, cancel).await;
        // The snapshot and the lock end with the session either way.
        sqlx::query("ROLLBACK").execute(&mut conn).await.ok();
        conn.close().await.ok();
        let dumped =
            dumped.with_context(|| format!("dumping {database} to {}", self.store.describe()))?;

        let finished = Utc::now();
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
            finished_at: finished,
            duration_seconds: clock.elapsed().as_secs_f64(),
            snapshot,
            tables,
            store: self.store.kind().into(),
            generation: dumped.object.generation,
            nexusd_version: env!("CARGO_PKG_VERSION").into(),
        };
        let body = serde_json::to_vec_pretty(&manifest).context("serialising the manifest")?;
        self.store
            .put(
                &format!("{name}{MANIFEST_SUFFIX}"),
                Bytes::from(body),
                "application/json",
            )
            .await
            .map_err(|e| anyhow!("writing the manifest of {name}: {e}"))?;
        Ok(manifest)
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
        entries.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
        Ok(entries)
    }

    async fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        match self.store.read_all(name).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "unreadable backup metadata; ignoring it");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(%name, error = %e, "cannot read backup metadata");
                None
            }
        }
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
        if dry_run {
            return Ok(plan);
        }
        for d in &plan.delete {
            match self.store.delete(&d.name, d.generation).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {
                    tracing::info!(name = %d.name, reason = %d.reason, "pruned");
                }
                Err(e) => bail!("deleting {}: {e}", d.name),
            }
        }
        Ok(plan)
    }

    /// The newest complete backup's name.
    async fn newest(&self) -> Result<String> {
        self.list()
            .await?
            .into_iter()
            .find(|e| e.complete)
            .map(|e| e.name)
            .ok_or_else(|| anyhow!("there is no complete backup in {}", self.store.describe()))
    }

    async fn manifest_of(&self, name: &str) -> Result<Manifest> {
        let bytes = self
            .store
            .read_all(&format!("{name}{MANIFEST_SUFFIX}"))
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => {
                    anyhow!("{name} has no manifest: it is not a complete backup")
                }
                other => anyhow!("reading the manifest of {name}: {other}"),
            })?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("the manifest of {name} is unreadable"))
    }

    fn tools_for(&self, manifest: &Manifest) -> Result<ClientTools> {
        let major = manifest
            .server_version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(13);
        ClientTools::locate(self.pg_bindir.as_deref(), major)
    }

    /// Restores backup `id` (default: the newest) into a scratch database, checks the object's
    /// hashes and the restored row counts against the manifest, drops the scratch database and
    /// records the result beside the backup. An object that differs from its manifest, or is not
    /// what pg_dump writes, is never loaded: the verification fails with the reason.
    pub async fn verify(&self, id: Option<&str>) -> Result<Verification> {
        let Ok(_running) = self.running.try_lock() else {
            bail!("a backup or verification is already running");
        };
        let clock = Instant::now();
        let name = match id {
            Some(id) => id.to_string(),
            None => self.newest().await?,
        };
        let manifest = self.manifest_of(&name).await?;
        let tools = self.tools_for(&manifest)?;
        let mut admin = PgConnection::connect_with(self.db.connect_options())
            .await
            .context("connecting to PostgreSQL")?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(VERIFY_LOCK)
            .fetch_one(&mut admin)
            .await
            .context("taking the verification lock")?;
        if !locked {
            bail!("another nexusd is verifying a backup of this database");
        }
        let prefix = scratch_prefix(self.db.tools.database());
        drop_stale_scratch(&mut admin, &prefix).await;
        let spool = restore::spool(&self.store, &manifest, &self.spool_dir).await?;
        let scratch = format!("{prefix}{}", Utc::now().format("%Y%m%d%H%M%S%3f"));
        let outcome = if !spool.intact() {
            Err(anyhow!("not loaded: the object differs from its manifest"))
        } else if let Err(e) = restore::check(&spool, &manifest).await {
            Err(anyhow!("not loaded: {e:#}"))
        } else {
            Ok(self
                .load_scratch(&mut admin, &scratch, &spool, &manifest, &tools)
                .await?)
        };
        admin.close().await.ok();
        let (restore_errors, mismatches, loaded) = match outcome {
            Ok((errors, counts)) => (
                errors,
                restore::compare_counts(&manifest.tables, &counts),
                true,
            ),
            Err(e) => (vec![format!("{e:#}")], Vec::new(), false),
        };
        let verification = Verification {
            name: name.clone(),
            verified_at: Utc::now(),
            ok: spool.intact() && loaded && mismatches.is_empty(),
            sha256_ok: spool.sha256_ok,
            crc32c_ok: spool.crc32c_ok,
            rows_ok: loaded && mismatches.is_empty(),
            mismatches,
            restore_errors,
            scratch_database: scratch,
            duration_seconds: clock.elapsed().as_secs_f64(),
        };
        self.record_verification(&verification).await?;
        Ok(verification)
    }

    /// Loads a checked spool into a new scratch database, counts its rows and drops it.
    async fn load_scratch(
        &self,
        admin: &mut PgConnection,
        scratch: &str,
        spool: &restore::Spool,
        manifest: &Manifest,
        tools: &ClientTools,
    ) -> Result<(Vec<String>, BTreeMap<String, i64>)> {
        sqlx::query(&format!("CREATE DATABASE {}", quote_ident(scratch)))
            .execute(&mut *admin)
            .await
            .with_context(|| {
                format!("creating the scratch database {scratch} (the role needs CREATEDB)")
            })?;
        let options = self.db.connect_options().clone().database(scratch);
        let outcome = async {
            let target = restore::LoadTarget {
                options: options.clone(),
                tools,
                connection: self.db.tools.with_database(scratch),
            };
            let errors = Box::pin(restore::load(spool, manifest, target, false)).await?;
            let mut conn = PgConnection::connect_with(&options)
                .await
                .context("connecting to the scratch database")?;
            let counts = restore::count_rows(&mut conn, &manifest.tables).await?;
            conn.close().await.ok();
            Ok::<_, anyhow::Error>((errors, counts))
        }
        .await;
        let dropped = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(scratch)
        ))
        .execute(&mut *admin)
        .await;
        if let Err(e) = dropped {
            tracing::error!(database = %scratch, error = %e, "could not drop the scratch database; the next verification drops it");
        }
        outcome
    }

    async fn record_verification(&self, v: &Verification) -> Result<()> {
        let verify_name = format!("{}{VERIFY_SUFFIX}", v.name);
        // A newer verification replaces an older one.
        if let Ok(listing) = self.store.list().await
            && let Some(old) = listing.objects.iter().find(|o| o.name == verify_name)
        {
            self.store.delete(&verify_name, old.generation).await.ok();
        }
        let body = serde_json::to_vec_pretty(v)?;
        self.store
            .put(&verify_name, Bytes::from(body), "application/json")
            .await
            .map_err(|e| anyhow!("recording the verification of {}: {e}", v.name))?;
        let detail = if v.ok {
            None
        } else if !v.sha256_ok || !v.crc32c_ok {
            Some("the object's checksums differ from the manifest".to_string())
        } else {
            Some(v.mismatches.join("; "))
        };
        self.status.update(|s| {
            s.last_verify = Some(VerifyRecord {
                name: v.name.clone(),
                verified_at: v.verified_at,
                ok: v.ok,
                detail: detail.clone(),
            });
            if v.ok {
                s.last_verify_success_at = Some(v.verified_at);
            }
        });
        if v.ok {
            tracing::info!(name = %v.name, seconds = v.duration_seconds, "backup verified");
        } else {
            tracing::error!(name = %v.name, problem = ?detail, "backup verification FAILED");
        }
        Ok(())
    }

    /// Restores backup `id` into `into` (default: the configured database). Refuses a database
    /// that already holds tables unless `force`, which first drops them — but only once the
    /// object has been downloaded and checked: a backup that differs from its manifest, or is not
    /// what pg_dump writes, leaves the target untouched.
    pub async fn restore(
        &self,
        id: &str,
        into: Option<&str>,
        force: bool,
        progress: bool,
    ) -> Result<Restored> {
        let manifest = self.manifest_of(id).await?;
        let tools = self.tools_for(&manifest)?;
        let target = into.unwrap_or(self.db.tools.database()).to_string();
        let spool = restore::spool(&self.store, &manifest, &self.spool_dir).await?;
        if !spool.intact() {
            bail!(
                "{id} differs from its manifest (SHA-256 or CRC32C or size): it was not restored and \
                 {target} was not touched"
            );
        }
        restore::check(&spool, &manifest)
            .await
            .with_context(|| format!("{id} was not restored and {target} was not touched"))?;
        let mut conn = self.prepare_target(&target, force).await?;
        let load_target = restore::LoadTarget {
            options: self.db.connect_options().clone().database(&target),
            tools: &tools,
            connection: self.db.tools.with_database(&target),
        };
        let errors = Box::pin(restore::load(&spool, &manifest, load_target, progress)).await?;
        let counts = restore::count_rows(&mut conn, &manifest.tables).await?;
        conn.close().await.ok();
        Ok(Restored {
            name: manifest.name,
            database: target,
            mismatches: restore::compare_counts(&manifest.tables, &counts),
            errors,
        })
    }

    /// Creates `target` if missing; refuses it when it holds tables unless `force`, which
    /// clears it. Returns a connection to it.
    async fn prepare_target(&self, target: &str, force: bool) -> Result<PgConnection> {
        let mut admin = PgConnection::connect_with(self.db.connect_options())
            .await
            .context("connecting to PostgreSQL")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(target)
                .fetch_one(&mut admin)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {}", quote_ident(target)))
                .execute(&mut admin)
                .await
                .with_context(|| format!("creating database {target} (the role needs CREATEDB)"))?;
        }
        admin.close().await.ok();
        let options = self.db.connect_options().clone().database(target);
        let mut conn = PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        let objects = restore::user_objects(&mut conn).await?;
        if objects > 0 {
            if !force {
                bail!(
                    "database {target} is not empty ({objects} tables, views or sequences): restore into a new \
                     database with --into NAME, or add --force to drop its contents first"
                );
            }
            tracing::warn!(database = %target, objects, "--force: dropping the database's tables, views, sequences and functions");
            restore::clear(&mut conn)
                .await
                .context("clearing the target database")?;
        }
        Ok(conn)
    }

    /// Fills the status from the store (newest good backup, newest verification), so a restart
    /// does not forget them.
    pub async fn load_status(&self) {
        match self.list().await {
            Ok(entries) => {
                let newest = entries.iter().find_map(|e| e.manifest.as_ref());
                let verified = entries
                    .iter()
                    .filter_map(|e| e.verification.as_ref())
                    .max_by_key(|v| v.verified_at);
                let verified_ok = entries
                    .iter()
                    .filter_map(|e| e.verification.as_ref())
                    .filter(|v| v.ok)
                    .map(|v| v.verified_at)
                    .max();
                self.status.update(|s| {
                    if s.last_success.is_none()
                        && let Some(m) = newest
                    {
                        s.last_success = Some(Success {
                            name: m.name.clone(),
                            finished_at: m.finished_at,
                            compressed_bytes: m.compressed_bytes,
                            duration_seconds: m.duration_seconds,
                        });
                    }
                    if s.last_verify.is_none()
                        && let Some(v) = verified
                    {
                        s.last_verify = Some(VerifyRecord {
                            name: v.name.clone(),
                            verified_at: v.verified_at,
                            ok: v.ok,
                            detail: None,
                        });
                    }
                    if s.last_verify_success_at.is_none() {
                        s.last_verify_success_at = verified_ok;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), store = %self.store.describe(), "cannot list backups")
            }
        }
    }
}

/// Drops the scratch databases earlier verifications of this database left behind (killed
/// mid-way); the caller holds the verification lock, so none of them is in use.
async fn drop_stale_scratch(admin: &mut PgConnection, prefix: &str) {
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    for name in stale {
        let dropped = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&name)
        ))
        .execute(&mut *admin)
        .await;
        match dropped {
            Ok(_) => {
                tracing::info!(database = %name, "dropped the scratch database of an interrupted verification")
            }
            Err(e) => {
                tracing::warn!(database = %name, error = %e, "cannot drop a stale scratch database")
            }
        }
    }
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
