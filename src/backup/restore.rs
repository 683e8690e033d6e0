//! Loading a backup into a database, in an order that never runs unchecked bytes:
//!
//! 1. [`spool`]: the object is downloaded to a private file under the state directory (never more
//!    bytes than the manifest announces; refused when the disk cannot hold it), and its SHA-256,
//!    CRC32C and size are compared with the manifest's;
//! 2. [`check`]: the whole object is decompressed once — every gzip member's own checksum — and a
//!    plain dump is read as SQL ([`super::sql_dump`]), refusing anything pg_dump would not write;
//! 3. only then [`load`]: plain dumps are sent statement by statement over nexusd's own
//!    connection (psql is never involved, so no meta-command can run), custom archives are fed
//!    to `pg_restore`.
//!
//! A target database is touched only after steps 1 and 2 passed (`restore --force` clears it
//! then). Afterwards the restored tables' row counts are compared with the ones the manifest
//! recorded in the dump's snapshot.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use super::manifest::Manifest;
use super::progress::{Progress, Stage};
use super::sql_dump::{Item, Splitter};
use super::store::Store;
use crate::db::cluster::quote_ident;
use crate::db::tools::{ClientTools, ToolConnection};

/// Free space kept on the spool's disk beyond the object itself.
const SPOOL_MARGIN: u64 = 64 << 20;
/// COPY data sent to the server in batches of about this size.
const COPY_BATCH: usize = 256 << 10;

/// A downloaded backup object in a private file, removed when dropped.
pub struct Spool {
    path: PathBuf,
    pub bytes: u64,
    pub sha256_ok: bool,
    pub crc32c_ok: bool,
}

impl Spool {
    /// The object is byte for byte the one the manifest describes.
    pub fn intact(&self) -> bool {
        self.sha256_ok && self.crc32c_ok
    }
}

impl Spool {
    /// The downloaded file (removed when the spool is dropped).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a stored object must be: its name, size and checksums (a dump's or a base backup's
/// manifest).
pub struct Expected<'a> {
    pub name: &'a str,
    pub compressed_bytes: u64,
    pub sha256: &'a str,
    pub crc32c: u32,
}

impl<'a> From<&'a Manifest> for Expected<'a> {
    fn from(m: &'a Manifest) -> Self {
        Expected {
            name: &m.name,
            compressed_bytes: m.compressed_bytes,
            sha256: &m.sha256,
            crc32c: m.crc32c,
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Downloads `manifest.name` into `dir` and checks it against the manifest. More bytes than the
/// manifest announces end the download at once (the object was replaced or altered).
pub async fn spool<'a>(
    store: &Store,
    manifest: impl Into<Expected<'a>>,
    dir: &Path,
    progress: &Progress,
) -> Result<Spool> {
    let manifest: Expected<'a> = manifest.into();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_orphans(dir);
    let free = free_space(dir)?;
    if free < manifest.compressed_bytes + SPOOL_MARGIN {
        bail!(
            "{} has {} MB free, but checking {} needs {} MB: free some space or point \
             NEXUSD_STATE_DIR at a larger disk",
            dir.display(),
            free >> 20,
            manifest.name,
            (manifest.compressed_bytes + SPOOL_MARGIN) >> 20
        );
    }
    let path = dir.join(format!("{}.{}.spool", manifest.name, std::process::id()));
    let mut spool = Spool {
        path,
        bytes: 0,
        sha256_ok: false,
        crc32c_ok: false,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&spool.path)
        .with_context(|| format!("creating {}", spool.path.display()))?;
    let stage = progress.stage("download", Some(manifest.compressed_bytes));
    let mut reader = store.read(manifest.name).await?;
    let (mut sha, mut crc) = (Sha256::new(), 0u32);
    while let Some(chunk) = reader.next_chunk().await? {
        spool.bytes += chunk.len() as u64;
        stage.add(chunk.len() as u64);
        if spool.bytes > manifest.compressed_bytes {
            bail!(
                "{} is larger than its manifest says ({} bytes): it was replaced or altered",
                manifest.name,
                manifest.compressed_bytes
            );
        }
        sha.update(&chunk);
        crc = crc32c::crc32c_append(crc, &chunk);
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", spool.path.display()))?;
    }
    file.sync_all().ok();
    stage.finish();
    spool.sha256_ok = format!("{:x}", sha.finalize()) == manifest.sha256;
    spool.crc32c_ok = crc == manifest.crc32c && spool.bytes == manifest.compressed_bytes;
    Ok(spool)
}

/// Removes spool files whose process is gone (killed mid-download: nothing else removes them).
fn remove_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let pid = name
            .strip_suffix(".spool")
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<i32>().ok());
        let gone = pid.is_some_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH)
        });
        if gone && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed the spool of an interrupted verify or restore");
        }
    }
}

fn free_space(dir: &Path) -> Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("reading the free space of {}", dir.display()))?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// What [`check`] learnt of a dump: how many of its statements build indexes and constraints
/// after the data (the slow end of a restore, shown as its own phase).
#[derive(Debug, Clone, Copy, Default)]
pub struct Checked {
    pub post_data: usize,
}

/// Decompresses the whole spooled object (each gzip member checks its own CRC) and, for a plain
/// dump, reads it as SQL; fails on the first problem, before anything is loaded.
pub async fn check(spool: &Spool, manifest: &Manifest, progress: &Progress) -> Result<Checked> {
    let stage = progress.stage("check", Some(spool.bytes));
    let read = stage.counter();
    let path = spool.path.clone();
    let plain = manifest.format != "custom";
    let checked = tokio::task::spawn_blocking(move || -> Result<Checked> {
        let file = std::fs::File::open(&path)?;
        let mut decoder = BufReader::new(MultiGzDecoder::new(Counted { inner: file, read }));
        let mut checked = Checked::default();
        if plain {
            split(&mut decoder, |item| {
                if let Item::Sql(sql) = &item
                    && is_post_data(sql)
                {
                    checked.post_data += 1;
                }
                true
            })?;
        } else {
            std::io::copy(&mut decoder, &mut std::io::sink())
                .map_err(|e| anyhow!("decompressing: {e}"))?;
        }
        Ok(checked)
    })
    .await
    .map_err(|e| anyhow!("the checking thread failed: {e}"))??;
    stage.finish();
    Ok(checked)
}

/// Whether a statement of a plain dump builds an index or a constraint (pg_dump writes them after
/// all the data).
fn is_post_data(sql: &str) -> bool {
    let code = sql
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .unwrap_or_default()
        .to_ascii_uppercase();
    code.starts_with("CREATE INDEX")
        || code.starts_with("CREATE UNIQUE INDEX")
        || (code.starts_with("ALTER TABLE") && sql.to_ascii_uppercase().contains("ADD CONSTRAINT"))
}

/// Reads a decompressed plain dump line by line and hands its items to `emit` (which returns
/// false to stop early).
fn split(source: &mut impl BufRead, mut emit: impl FnMut(Item) -> bool) -> Result<()> {
    let mut splitter = Splitter::default();
    let mut line = Vec::new();
    let mut open = true;
    loop {
        line.clear();
        let n = source
            .read_until(b'\n', &mut line)
            .map_err(|e| anyhow!("decompressing: {e}"))?;
        if n == 0 {
            break;
        }
        splitter
            .push_line(&line, &mut |item| open = open && emit(item))
            .map_err(|e| anyhow!(e))?;
        if !open {
            return Ok(());
        }
    }
    splitter
        .finish(&mut |item| open = open && emit(item))
        .map_err(|e| anyhow!(e))
}

/// Where a backup is loaded.
pub struct LoadTarget<'a> {
    /// For plain dumps: nexusd's own connection to the target database.
    pub options: PgConnectOptions,
    /// For custom archives: `pg_restore` and how it connects.
    pub tools: &'a ClientTools,
    pub connection: ToolConnection,
}

/// Loads a checked spool into the target; returns the errors the server reported (the load
/// carries on past failed statements, as psql and pg_restore do; the row counts decide).
pub async fn load(
    spool: &Spool,
    manifest: &Manifest,
    target: LoadTarget<'_>,
    progress: &Progress,
    checked: &Checked,
) -> Result<Vec<String>> {
    let stage = progress.stage("load", Some(spool.bytes));
    let errors = if manifest.format == "custom" {
        load_archive(spool, &target, stage.counter()).await
    } else {
        load_sql(spool, &target, &stage, checked.post_data).await
    };
    if errors.is_ok() {
        stage.finish();
    }
    errors
}

/// Counts the compressed bytes read from the spool, for progress.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn open_decompressed(spool: &Spool, read: Arc<AtomicU64>) -> Result<impl BufRead + use<>> {
    let file = std::fs::File::open(&spool.path)
        .with_context(|| format!("opening {}", spool.path.display()))?;
    Ok(BufReader::new(MultiGzDecoder::new(Counted {
        inner: file,
        read,
    })))
}

/// A plain dump, statement by statement over one connection; COPY data in batches. The
/// `post_data` index and constraint statements at the end show as a phase of their own.
async fn load_sql(
    spool: &Spool,
    target: &LoadTarget<'_>,
    stage: &Stage,
    post_data: usize,
) -> Result<Vec<String>> {
    let mut source = open_decompressed(spool, stage.counter())?;
    let (tx, mut items) = mpsc::channel::<Item>(16);
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        split(&mut source, |item| match item {
            Item::CopyData(line) => {
                batch.extend_from_slice(&line);
                batch.len() < COPY_BATCH
                    || tx
                        .blocking_send(Item::CopyData(std::mem::take(&mut batch)))
                        .is_ok()
            }
            other => {
                (batch.is_empty()
                    || tx
                        .blocking_send(Item::CopyData(std::mem::take(&mut batch)))
                        .is_ok())
                    && tx.blocking_send(other).is_ok()
            }
        })
    });
    let mut conn = PgConnection::connect_with(&target.options)
        .await
        .context("connecting to the target database")?;
    let mut errors = Vec::new();
    let mut built = 0;
    while let Some(item) = items.recv().await {
        match item {
            Item::Sql(sql) => {
                if post_data > 0 && is_post_data(&sql) {
                    built += 1;
                    if built == 1 {
                        stage.phase(format!("indexes and constraints ({post_data} statements)"));
                    }
                    stage.note(format!("index or constraint {built} of {post_data}"));
                }
                if let Err(e) = sqlx::Executor::execute(&mut conn, sqlx::raw_sql(&sql)).await {
                    note(&mut errors, &e);
                }
            }
            Item::CopyStart(sql) => copy_in(&mut conn, &sql, &mut items, &mut errors).await?,
            Item::CopyData(_) | Item::CopyEnd => {}
        }
    }
    drop(items);
    conn.close().await.ok();
    reader
        .await
        .map_err(|e| anyhow!("the reading thread failed: {e}"))??;
    Ok(errors)
}

/// One `COPY … FROM stdin` with the data items that follow it, up to its end.
async fn copy_in(
    conn: &mut PgConnection,
    sql: &str,
    items: &mut mpsc::Receiver<Item>,
    errors: &mut Vec<String>,
) -> Result<()> {
    let mut copy = match conn.copy_in_raw(sql).await {
        Ok(copy) => Some(copy),
        Err(e) => {
            note(errors, &e);
            None
        }
    };
    while let Some(item) = items.recv().await {
        let data = match item {
            Item::CopyData(data) => data,
            Item::CopyEnd => {
                if let Some(c) = copy {
                    let finished = c.finish().await;
                    if let Err(e) = finished {
                        note(errors, &e);
                    }
                }
                return Ok(());
            }
            Item::Sql(_) | Item::CopyStart(_) => bail!("COPY data ended without its terminator"),
        };
        let Some(c) = copy.as_mut() else { continue };
        let sent = c.send(data).await;
        if let Err(e) = sent {
            note(errors, &e);
            if let Some(c) = copy.take() {
                c.abort("nexusd stopped this COPY after an error")
                    .await
                    .ok();
            }
        }
    }
    bail!("the dump ended inside COPY data")
}

/// Keeps a server error (at most 50), as the restore tools print them.
fn note(errors: &mut Vec<String>, e: &sqlx::Error) {
    if errors.len() < 50 {
        let text = match e.as_database_error() {
            Some(db) => format!("ERROR: {}", db.message()),
            None => format!("ERROR: {e}"),
        };
        errors.push(text);
    }
}

/// A custom archive through `pg_restore`, fed from the spool.
async fn load_archive(
    spool: &Spool,
    target: &LoadTarget<'_>,
    read: Arc<AtomicU64>,
) -> Result<Vec<String>> {
    let mut cmd = Command::new(target.tools.program("pg_restore"));
    cmd.arg("--no-password")
        .arg(format!("--dbname={}", target.connection.database()));
    target.connection.apply(&mut cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow!("starting pg_restore: {e}"))?;
    let (Some(mut stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
        let _ = child.kill();
        bail!("pg_restore has no stdin or stderr");
    };
    let mut source = open_decompressed(spool, read)?;
    let errors_reader = tokio::task::spawn_blocking(move || error_lines(stderr));
    let fed = tokio::task::spawn_blocking(move || {
        let copied = std::io::copy(&mut source, &mut stdin);
        drop(stdin);
        copied
    })
    .await
    .map_err(|e| anyhow!("the feeding thread failed: {e}"))?;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| anyhow!("waiting for pg_restore: {e}"))??;
    let mut errors = errors_reader.await.unwrap_or_default();
    if let Err(e) = fed {
        errors.insert(0, format!("feeding pg_restore: {e}"));
    }
    if !status.success() {
        tracing::warn!(%status, errors = errors.len(), "pg_restore reported errors");
    }
    Ok(errors)
}

/// The error lines a restore tool printed (at most 50).
fn error_lines(stderr: std::process::ChildStderr) -> Vec<String> {
    let mut text = String::new();
    let mut stderr = stderr;
    let _ = stderr.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.contains("ERROR:") || l.contains("error:"))
        .take(50)
        .map(str::to_string)
        .collect()
}

/// Row counts of `tables` (`schema.table`) in the database `conn` points at; a missing table
/// counts as -1.
pub async fn count_rows(
    conn: &mut PgConnection,
    tables: &BTreeMap<String, i64>,
) -> Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for name in tables.keys() {
        let Some((schema, table)) = name.split_once('.') else {
            continue;
        };
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        let count = if exists {
            sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {}.{}",
                quote_ident(schema),
                quote_ident(table)
            ))
            .fetch_one(&mut *conn)
            .await?
        } else {
            -1
        };
        counts.insert(name.clone(), count);
    }
    Ok(counts)
}

/// `schema.table: expected N, restored M` for every difference.
pub fn compare_counts(
    expected: &BTreeMap<String, i64>,
    actual: &BTreeMap<String, i64>,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(table, want)| {
            let got = actual.get(table).copied().unwrap_or(-1);
            (got != *want).then(|| {
                if got < 0 {
                    format!("{table}: expected {want} rows, the table is missing")
                } else {
                    format!("{table}: expected {want} rows, restored {got}")
                }
            })
        })
        .collect()
}

/// Tables, views, sequences and functions of the database that did not come with an extension.
pub async fn user_objects(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')",
    )
    .fetch_one(conn)
    .await?)
}

/// Drops everything [`user_objects`] counts, and functions not from extensions, so a dump can be
/// loaded over an existing database (`restore --force`). Extensions stay.
pub async fn clear(conn: &mut PgConnection) -> Result<()> {
    // A dedicated connection, closed when the restore ends: no pool to hand it on half-begun.
    #[allow(clippy::disallowed_methods)]
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(
        "DO $$
         DECLARE r record;
         BEGIN
           FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') LOOP
             EXECUTE format(CASE r.relkind WHEN 'v' THEN 'DROP VIEW IF EXISTS %I.%I CASCADE'
                                           ELSE 'DROP MATERIALIZED VIEW IF EXISTS %I.%I CASCADE' END,
                            r.nspname, r.relname);
           END LOOP;
           FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND n.nspname NOT LIKE 'pg_toast%'
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') LOOP
             EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE', r.nspname, r.relname);
           END LOOP;
           FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') LOOP
             EXECUTE format('DROP SEQUENCE IF EXISTS %I.%I CASCADE', r.nspname, r.relname);
           END LOOP;
           FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') LOOP
             EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.sig);
           END LOOP;
         END $$",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_constraint_statements_are_post_data() {
        assert!(is_post_data(
            "--\n-- Name: patterns_pkey; Type: CONSTRAINT\n--\n\nALTER TABLE ONLY public.patterns\n    ADD CONSTRAINT patterns_pkey PRIMARY KEY (id);"
        ));
        assert!(is_post_data(
            "CREATE INDEX idx_patterns_name ON public.patterns USING btree (name);"
        ));
        assert!(is_post_data("create unique index u on t (a);"));
        assert!(!is_post_data(
            "-- CREATE INDEX in a comment\nCREATE TABLE public.t (a int);"
        ));
        assert!(!is_post_data("ALTER TABLE public.t OWNER TO devnexus;"));
    }

    #[test]
    fn count_differences_are_named() {
        let expected = BTreeMap::from([
            ("public.a".to_string(), 3),
            ("public.b".to_string(), 0),
            ("public.c".to_string(), 5),
        ]);
        let actual = BTreeMap::from([
            ("public.a".to_string(), 3),
            ("public.b".to_string(), 1),
            ("public.c".to_string(), -1),
        ]);
        assert_eq!(
            compare_counts(&expected, &actual),
            [
                "public.b: expected 0 rows, restored 1",
                "public.c: expected 5 rows, the table is missing"
            ]
        );
    }
}
