//! Loading a backup into a database: the object is streamed from the store, checked against the
//! manifest's SHA-256 and CRC32C as it arrives, gunzipped on a thread and fed to `psql` (plain
//! dumps) or `pg_restore` (custom archives); afterwards the restored tables' row counts are
//! compared with the ones the manifest recorded in the dump's snapshot.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use super::manifest::Manifest;
use super::store::Store;
use crate::db::cluster::quote_ident;
use crate::db::tools::{ClientTools, ToolConnection};

/// What loading a backup found.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub sha256_ok: bool,
    pub crc32c_ok: bool,
    /// Error lines the restore tool printed (it carries on past them).
    pub errors: Vec<String>,
}

/// Streams backup `manifest.name` into the database `target`.
pub async fn load(
    store: &Store,
    manifest: &Manifest,
    tools: &ClientTools,
    target: &ToolConnection,
    show_progress: bool,
) -> anyhow::Result<Loaded> {
    let mut reader = store
        .read(&manifest.name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let mut cmd = match manifest.format.as_str() {
        "custom" => {
            let mut cmd = Command::new(tools.program("pg_restore"));
            cmd.arg("--no-password")
                .arg(format!("--dbname={}", target.database()));
            cmd
        }
        _ => {
            let mut cmd = Command::new(tools.program("psql"));
            cmd.args([
                "--no-password",
                "--no-psqlrc",
                "--quiet",
                "--output=/dev/null",
                "--file=-",
            ]);
            cmd
        }
    };
    target.apply(&mut cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let tool_name = if manifest.format == "custom" {
        "pg_restore"
    } else {
        "psql"
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {tool_name}: {e}"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("{tool_name} has no stdin"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("{tool_name} has no stderr"))?;

    let feeder = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut decoder = MultiGzDecoder::new(ChannelReader {
            rx,
            current: Bytes::new(),
        });
        let mut stdin = stdin;
        let copied = std::io::copy(&mut decoder, &mut stdin);
        drop(stdin);
        copied
            .map(drop)
            .map_err(|e| anyhow::anyhow!("decompressing the backup: {e}"))
    });
    let errors_reader = tokio::task::spawn_blocking(move || error_lines(stderr));

    let mut sha = Sha256::new();
    let mut crc = 0u32;
    let mut bytes = 0u64;
    let mut last_report = Instant::now();
    let progress = show_progress && std::io::stderr().is_terminal();
    let mut download_error = None;
    loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => {
                sha.update(&chunk);
                crc = crc32c::crc32c_append(crc, &chunk);
                bytes += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    break;
                }
                if progress && last_report.elapsed() > Duration::from_millis(500) {
                    last_report = Instant::now();
                    let pct = bytes as f64 * 100.0 / manifest.compressed_bytes.max(1) as f64;
                    eprint!(
                        "\rrestoring {}: {pct:5.1}% ({:.1} of {:.1} MB)",
                        manifest.name,
                        bytes as f64 / 1e6,
                        manifest.compressed_bytes as f64 / 1e6
                    );
                }
            }
            Ok(None) => break,
            Err(e) => {
                download_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    if progress {
        eprintln!();
    }
    let fed = feeder
        .await
        .map_err(|e| anyhow::anyhow!("the decompression thread failed: {e}"))?;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| anyhow::anyhow!("waiting for {tool_name}: {e}"))??;
    let errors = errors_reader.await.unwrap_or_default();
    if let Some(e) = download_error {
        anyhow::bail!("downloading {}: {e}", manifest.name);
    }
    let mut errors = errors;
    if let Err(e) = fed {
        // A corrupt object: the checksums below say so; the restore is incomplete.
        errors.insert(0, format!("{e:#}"));
    }
    let sha256_ok = format!("{:x}", sha.finalize()) == manifest.sha256;
    let crc32c_ok = crc == manifest.crc32c && bytes == manifest.compressed_bytes;
    // Both tools carry on past failed statements (e.g. a COMMENT on an extension the role does
    // not own) and report them; the row counts decide whether the data made it.
    if !status.success() {
        tracing::warn!(%status, tool = tool_name, errors = errors.len(), "the restore tool reported errors");
    }
    Ok(Loaded {
        sha256_ok,
        crc32c_ok,
        errors,
    })
}

/// Feeds the decoder from the download channel.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
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
) -> anyhow::Result<BTreeMap<String, i64>> {
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
pub async fn user_objects(conn: &mut PgConnection) -> anyhow::Result<i64> {
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
pub async fn clear(conn: &mut PgConnection) -> anyhow::Result<()> {
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
