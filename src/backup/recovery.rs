//! The two jobs that bring a backup back: [`Backups::verify`] restores it into a scratch
//! database, checks it against its manifest and records the result beside it;
//! [`Backups::restore`] loads it into the configured database or another. Both take a name as
//! `backup list` shows it or `latest`, and tell "no such backup" from "incomplete (no manifest)".
//! `restore` refuses a target other sessions are connected to, naming them.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use sha2::Digest;
use sqlx::{Connection, PgConnection};

use super::follow::{apply_verification, verify_detail};
use super::manifest::{LATEST, MANIFEST_SUFFIX, Manifest, VERIFY_SUFFIX, Verification, is_dump};
use super::progress::Progress;
use super::store::StoreError;
use super::{Backups, newest_first, restore};
use crate::db::cluster::quote_ident;
use crate::db::tools::ClientTools;

/// Session advisory lock held during a verification (advisory locks belong to one database):
/// while it is held, no other verification of this database runs, so every scratch database of
/// this database left over is stale.
const VERIFY_LOCK: i64 = 0x6e65_7875_7364_0002;
/// Scratch databases of verifications are named with this prefix, then a hash of the source
/// database's name (so the servers' other databases' verifications are left alone).
const SCRATCH_PREFIX: &str = "nexusd_verify_";
/// How long `restore` waits for sessions that are closing to leave its target.
const IN_USE_GRACE: Duration = Duration::from_secs(3);

/// `nexusd_verify_<8 hex digits of the source database's name>_`.
fn scratch_prefix(database: &str) -> String {
    let digest = sha2::Sha256::digest(database.as_bytes());
    format!(
        "{SCRATCH_PREFIX}{:08x}_",
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    )
}

/// What `restore` did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub name: String,
    pub database: String,
    pub mismatches: Vec<String>,
    pub errors: Vec<String>,
}

impl Backups {
    /// Backup `id` — a name as `backup list` shows it, or `latest` for the newest complete
    /// backup — with its manifest. Says apart a name the store does not hold and an object
    /// without a manifest (an upload that never finished: not a backup).
    pub async fn find(&self, id: &str) -> Result<(String, Manifest)> {
        let store = self.store.describe();
        let listing = self
            .store
            .list()
            .await
            .map_err(|e| anyhow!("listing the backups in {store}: {e}"))?;
        let names: HashSet<&str> = listing.objects.iter().map(|o| o.name.as_str()).collect();
        let complete = |name: &str| names.contains(format!("{name}{MANIFEST_SUFFIX}").as_str());
        let name = if id == LATEST {
            listing
                .objects
                .iter()
                .filter(|o| is_dump(&o.name) && complete(&o.name))
                .min_by(|a, b| newest_first((a.created, &a.name), (b.created, &b.name)))
                .map(|o| o.name.clone())
                .ok_or_else(|| anyhow!("there is no complete backup in {store}"))?
        } else if !is_dump(id) {
            bail!(
                "{id:?} is not a backup name: give one as `nexusd backup list` shows it \
                 (dev-nexus-YYYYmmdd_HHMMSS.sql.gz), or `latest`"
            );
        } else if !names.contains(id) {
            bail!(
                "no backup named {id} in {store}: `nexusd backup list` shows the backups there \
                 (`latest` names the newest)"
            );
        } else if !complete(id) {
            bail!(incomplete(id));
        } else {
            id.to_string()
        };
        let bytes = self
            .store
            .read_all(&format!("{name}{MANIFEST_SUFFIX}"))
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => anyhow!(incomplete(&name)),
                other => anyhow!("reading the manifest of {name}: {other}"),
            })?;
        let manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("the manifest of {name} is unreadable"))?;
        Ok((name, manifest))
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
    pub async fn verify(&self, id: Option<&str>, progress: &Progress) -> Result<Verification> {
        let Ok(_running) = self.running.try_lock() else {
            bail!("a backup or verification is already running");
        };
        let clock = Instant::now();
        let (name, manifest) = self.find(id.unwrap_or(LATEST)).await?;
        let progress = progress.relabel(format!("verify {name}"));
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
        let spool = restore::spool(&self.store, &manifest, &self.spool_dir, &progress).await?;
        let scratch = format!("{prefix}{}", Utc::now().format("%Y%m%d%H%M%S%3f"));
        let outcome = if !spool.intact() {
            Err(anyhow!("not loaded: the object differs from its manifest"))
        } else {
            match restore::check(&spool, &manifest, &progress).await {
                Err(e) => Err(anyhow!("not loaded: {e:#}")),
                Ok(checked) => Ok(self
                    .load_scratch(
                        &mut admin, &scratch, &spool, &manifest, &tools, &progress, &checked,
                    )
                    .await?),
            }
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
    #[allow(clippy::too_many_arguments)]
    async fn load_scratch(
        &self,
        admin: &mut PgConnection,
        scratch: &str,
        spool: &restore::Spool,
        manifest: &Manifest,
        tools: &ClientTools,
        progress: &Progress,
        checked: &restore::Checked,
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
            let load = restore::load(spool, manifest, target, progress, checked);
            let errors = Box::pin(load).await?;
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
        self.store
            .put_json(&verify_name, v)
            .await
            .map_err(|e| anyhow!("recording the verification of {}: {e}", v.name))?;
        self.status.update(|s| apply_verification(s, v));
        if v.ok {
            tracing::info!(name = %v.name, seconds = v.duration_seconds, "backup verified");
        } else {
            tracing::error!(name = %v.name, problem = ?verify_detail(v), "backup verification FAILED");
        }
        Ok(())
    }

    /// Restores backup `id` (a name or `latest`) into `into` (default: the configured
    /// database). Refuses a database that already holds tables unless `force`, which first drops
    /// them, and one other sessions are connected to unless `ignore_sessions` — but only once the object has been
    /// downloaded and checked: a backup that differs from its manifest, or is not what pg_dump
    /// writes, leaves the target untouched.
    pub async fn restore(
        &self,
        id: &str,
        into: Option<&str>,
        force: bool,
        ignore_sessions: bool,
        progress: &Progress,
    ) -> Result<Restored> {
        let (name, manifest) = self.find(id).await?;
        let progress = progress.relabel(format!("restore {name}"));
        let tools = self.tools_for(&manifest)?;
        let target = into.unwrap_or(self.db.tools.database()).to_string();
        let spool = restore::spool(&self.store, &manifest, &self.spool_dir, &progress).await?;
        if !spool.intact() {
            bail!(
                "{name} differs from its manifest (SHA-256 or CRC32C or size): it was not restored \
                 and {target} was not touched"
            );
        }
        let checked = restore::check(&spool, &manifest, &progress)
            .await
            .with_context(|| format!("{name} was not restored and {target} was not touched"))?;
        let mut conn = self.prepare_target(&target, force, ignore_sessions).await?;
        let load_target = restore::LoadTarget {
            options: self.db.connect_options().clone().database(&target),
            tools: &tools,
            connection: self.db.tools.with_database(&target),
        };
        let load = restore::load(&spool, &manifest, load_target, &progress, &checked);
        let errors = Box::pin(load).await?;
        let counting = progress.stage("row counts", None);
        let counts = restore::count_rows(&mut conn, &manifest.tables).await?;
        counting.finish();
        conn.close().await.ok();
        Ok(Restored {
            name,
            database: target,
            mismatches: restore::compare_counts(&manifest.tables, &counts),
            errors,
        })
    }

    /// Creates `target` if missing; refuses it when it holds tables unless `force` (which clears
    /// it), and when other sessions are connected to it unless `ignore_sessions`. Returns a
    /// connection to it.
    async fn prepare_target(
        &self,
        target: &str,
        force: bool,
        ignore_sessions: bool,
    ) -> Result<PgConnection> {
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
        let options = self.db.connect_options().clone().database(target);
        let mut conn = PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        let objects = restore::user_objects(&mut conn).await?;
        if objects > 0 && !force {
            bail!(
                "database {target} is not empty ({objects} tables, views or sequences): restore into a new \
                 database with --into NAME, or add --force to drop its contents first"
            );
        }
        if exists && !ignore_sessions {
            let ours: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await?;
            refuse_if_in_use(&mut admin, target, ours).await?;
        }
        admin.close().await.ok();
        if objects > 0 {
            tracing::warn!(database = %target, objects, "--force: dropping the database's tables, views, sequences and functions");
            restore::clear(&mut conn)
                .await
                .context("clearing the target database")?;
        }
        Ok(conn)
    }
}

/// The message for an object without a manifest.
fn incomplete(name: &str) -> String {
    format!(
        "{name} is incomplete: it has no manifest (its upload or its dump never finished), so it \
         is not a backup; `nexusd backup list` shows the complete ones (`latest` names the newest)"
    )
}

/// Fails when sessions other than ours are connected to `database` (a running `nexusd serve`'s
/// pool, a psql, …): loading under them would show them a half-restored database, and `--force`
/// would drop tables they use. Sessions that are just closing get [`IN_USE_GRACE`] to go.
async fn refuse_if_in_use(admin: &mut PgConnection, database: &str, ours: i32) -> Result<()> {
    let deadline = Instant::now() + IN_USE_GRACE;
    loop {
        let sessions: Vec<(i32, String, String, String)> = sqlx::query_as(
            "SELECT pid, coalesce(nullif(application_name, ''), 'unnamed client'),
                    coalesce(host(client_addr), 'local socket'), coalesce(usename::text, '?')
               FROM pg_stat_activity
              WHERE datname = $1 AND pid <> pg_backend_pid() AND pid <> $2
                AND backend_type = 'client backend'
              ORDER BY pid",
        )
        .bind(database)
        .bind(ours)
        .fetch_all(&mut *admin)
        .await
        .context("looking for sessions on the target database")?;
        if sessions.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let list: Vec<String> = sessions
                .iter()
                .map(|(pid, app, from, user)| format!("pid {pid} ({app}, {user}, {from})"))
                .collect();
            bail!(
                "database {database} is in use by {} other session(s): {}; stop what uses it \
                 (a nexusd serve: systemctl stop nexusd), restore into another database with \
                 --into NAME, or load anyway with --ignore-sessions",
                sessions.len(),
                list.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
