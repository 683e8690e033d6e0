//! The dump pipeline: `pg_dump` (at low CPU and I/O priority) → gzip → store, streamed in
//! bounded blocks so memory stays flat whatever the database size, with no temporary file.
//!
//! Compression runs on several threads: the raw dump is cut into blocks that are compressed as
//! independent gzip members and written in order. Concatenated members are one valid gzip file
//! (RFC 1952), so `gunzip < x.sql.gz | psql` restores it as ever. SHA-256 and CRC32C of the
//! object are computed as it streams.
//!
//! The object is finalised only when `pg_dump` exited 0, wrote nothing alarming, and — for
//! plain dumps — its completion trailer was seen; otherwise the upload is abandoned and no
//! object appears.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::DumpFormat;
use super::store::{ObjectInfo, Store, StoreError, UploadChunk};
use crate::db::tools::{ClientTools, ToolConnection};

/// Raw bytes per gzip member. Large enough that restarting the dictionary costs nothing
/// measurable, small enough that workers × blocks stay a few MiB.
pub const BLOCK_BYTES: usize = 2 << 20;
/// The last line pg_dump writes to a complete plain dump.
const PLAIN_TRAILER: &str = "-- PostgreSQL database dump complete";
/// Stderr kept for the error message.
const STDERR_TAIL: usize = 4096;

/// What to dump and how.
pub struct DumpSpec {
    pub tools: ClientTools,
    pub connection: ToolConnection,
    pub format: DumpFormat,
    pub level: u32,
    pub snapshot: String,
    pub workers: usize,
}

/// A finished dump.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub object: ObjectInfo,
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: String,
    pub crc32c: u32,
}

/// How many compression threads to use: the cores there are, at most four.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Runs pg_dump into `store` as `name`. Abandons the upload (nothing stored) on any failure or
/// when `cancel` fires.
pub async fn dump(
    store: &Store,
    name: &str,
    spec: DumpSpec,
    cancel: CancellationToken,
) -> anyhow::Result<Dumped> {
    // Stored as application/gzip without Content-Encoding, so GCS never transcodes it.
    let content_type = "application/gzip";
    let (upload_tx, upload_rx) = mpsc::channel::<UploadChunk>(4);
    let (block_tx, mut block_rx) = mpsc::channel::<(u64, Vec<u8>)>(spec.workers * 2);
    let pid = Arc::new(Mutex::new(None::<Pid>));

    let producer_pid = pid.clone();
    let producer = tokio::task::spawn_blocking(move || produce(spec, block_tx, producer_pid));

    let upload = async { store.upload(name, content_type, upload_rx).await };

    // Reorder the compressed members, hash them and forward them to the store.
    let forward = async {
        let mut next = 0u64;
        let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut sha = Sha256::new();
        let mut crc = 0u32;
        let mut total = 0u64;
        loop {
            let message = tokio::select! {
                m = block_rx.recv() => m,
                () = cancel.cancelled() => {
                    if let Some(pid) = *pid.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))? {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    let _ = upload_tx.send(UploadChunk::Abort("the backup was cancelled".into())).await;
                    anyhow::bail!("the backup was cancelled");
                }
            };
            let Some((seq, block)) = message else { break };
            pending.insert(seq, block);
            while let Some(block) = pending.remove(&next) {
                sha.update(&block);
                crc = crc32c::crc32c_append(crc, &block);
                total += block.len() as u64;
                if upload_tx
                    .send(UploadChunk::Data(Bytes::from(block)))
                    .await
                    .is_err()
                {
                    // The store gave up; its error is reported below.
                    return Ok::<_, anyhow::Error>((String::new(), 0, 0, false));
                }
                next += 1;
            }
        }
        Ok((
            format!("{:x}", sha.finalize()),
            crc,
            total,
            pending.is_empty(),
        ))
    };

    let (uploaded, forwarded) = tokio::join!(upload, async {
        let forwarded = forward.await;
        let produced = match producer.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the dump thread failed: {e}")),
        };
        // Finalise only after pg_dump succeeded and every block went out in order.
        let verdict = match (&forwarded, &produced) {
            (Ok((_, _, _, true)), Ok(_)) => UploadChunk::End,
            (Ok(_), Ok(_)) => UploadChunk::Abort("blocks were lost in the pipeline".into()),
            (Err(e), _) => UploadChunk::Abort(e.to_string()),
            (_, Err(e)) => UploadChunk::Abort(format!("{e:#}")),
        };
        // The store stops reading after this message, whatever it is.
        let _ = upload_tx.send(verdict).await;
        (forwarded, produced)
    });
    let (forwarded, produced) = forwarded;
    let raw_bytes = produced?;
    let (sha256, crc32c, compressed_bytes, _) = forwarded?;
    let object = uploaded.map_err(|e: StoreError| anyhow::anyhow!("{e}"))?;
    if object.size != compressed_bytes {
        anyhow::bail!(
            "the store holds {} bytes of {name} but {compressed_bytes} were sent",
            object.size
        );
    }
    if let Some(stored) = object.crc32c
        && stored != crc32c
    {
        anyhow::bail!(
            "the store's CRC32C of {name} ({stored:08x}) differs from ours ({crc32c:08x})"
        );
    }
    Ok(Dumped {
        object,
        raw_bytes,
        compressed_bytes,
        sha256,
        crc32c,
    })
}

/// `nice`/`ionice` in front of pg_dump when the system has them, so the dump yields the CPU and
/// disk to PostgreSQL's own work.
fn low_priority(program: std::path::PathBuf) -> Command {
    let find = |name: &str| {
        ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    match (find("nice"), find("ionice")) {
        (Some(nice), Some(ionice)) => {
            let mut cmd = Command::new(nice);
            cmd.args(["-n", "10"])
                .arg(ionice)
                .args(["-c", "2", "-n", "7"])
                .arg(program);
            cmd
        }
        (Some(nice), None) => {
            let mut cmd = Command::new(nice);
            cmd.args(["-n", "10"]).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// The blocking half: runs pg_dump, cuts its output into blocks, compresses them on worker
/// threads and sends `(sequence, member)` pairs. Returns the raw byte count once pg_dump has
/// exited cleanly with a complete dump.
fn produce(
    spec: DumpSpec,
    blocks: mpsc::Sender<(u64, Vec<u8>)>,
    pid_slot: Arc<Mutex<Option<Pid>>>,
) -> anyhow::Result<u64> {
    let mut cmd = low_priority(spec.tools.program("pg_dump"));
    cmd.arg("--no-password")
        .arg(format!("--snapshot={}", spec.snapshot));
    match spec.format {
        DumpFormat::Plain => cmd.arg("--format=plain"),
        DumpFormat::Custom => cmd.args(["--format=custom", "--compress=0"]),
    };
    spec.connection.apply(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        anyhow::anyhow!("starting {}: {e}", spec.tools.program("pg_dump").display())
    })?;
    if let Ok(mut slot) = pid_slot.lock() {
        *slot = Some(Pid::from_raw(child.id() as i32));
    }
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("pg_dump has no stdout"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("pg_dump has no stderr"))?;
    let stderr_reader = std::thread::spawn(move || read_stderr(stderr));

    // Workers take raw blocks from a bounded queue and send compressed members on.
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(spec.workers);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let level = spec.level;
    let workers: Vec<_> = (0..spec.workers)
        .map(|_| {
            let rx = work_rx.clone();
            let out = blocks.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let next = rx
                        .lock()
                        .map_err(|_| anyhow::anyhow!("lock poisoned"))?
                        .recv();
                    let Ok((seq, raw)) = next else { return Ok(()) };
                    let mut encoder =
                        GzEncoder::new(Vec::with_capacity(raw.len() / 2), Compression::new(level));
                    encoder.write_all(&raw)?;
                    let member = encoder.finish()?;
                    if out.blocking_send((seq, member)).is_err() {
                        // The pipeline was cancelled; stop quietly.
                        return Ok(());
                    }
                }
            })
        })
        .collect();
    drop(blocks);

    let mut raw_total = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    let mut seq = 0u64;
    let mut read_error = None;
    let read_result = loop {
        let mut block = vec![0u8; BLOCK_BYTES];
        let mut filled = 0;
        let eof = loop {
            match stdout.read(&mut block[filled..]) {
                Ok(0) => break true,
                Ok(n) => {
                    filled += n;
                    if filled == BLOCK_BYTES {
                        break false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    read_error = Some(e);
                    break true;
                }
            }
        };
        block.truncate(filled);
        raw_total += filled as u64;
        tail.extend_from_slice(&block[filled.saturating_sub(256)..]);
        if tail.len() > 256 {
            tail.drain(..tail.len() - 256);
        }
        if !block.is_empty() && work_tx.send((seq, block)).is_err() {
            break Err(anyhow::anyhow!("the compression workers stopped"));
        }
        seq += 1;
        if eof {
            break Ok(());
        }
    };
    drop(work_tx);
    let status = child.wait();
    if let Ok(mut slot) = pid_slot.lock() {
        *slot = None;
    }
    let stderr_text = stderr_reader.join().unwrap_or_default();
    for worker in workers {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(anyhow::anyhow!("compressing: {e}")),
            Err(_) => return Err(anyhow::anyhow!("a compression thread panicked")),
        }
    }
    read_result?;
    if let Some(e) = read_error {
        anyhow::bail!("reading pg_dump's output: {e}");
    }
    let status = status.map_err(|e| anyhow::anyhow!("waiting for pg_dump: {e}"))?;
    if !status.success() {
        anyhow::bail!("pg_dump failed ({status}): {}", stderr_text.trim());
    }
    if stderr_text.contains("pg_dump: error") {
        anyhow::bail!("pg_dump reported an error: {}", stderr_text.trim());
    }
    if spec.format == DumpFormat::Plain && !String::from_utf8_lossy(&tail).contains(PLAIN_TRAILER) {
        anyhow::bail!(
            "pg_dump exited 0 but its output ends without the completion trailer: the dump is truncated"
        );
    }
    if !stderr_text.trim().is_empty() {
        tracing::warn!(stderr = %stderr_text.trim(), "pg_dump wrote to stderr");
    }
    Ok(raw_total)
}

/// Reads pg_dump's stderr to the end, keeping the last few kB.
fn read_stderr(mut stderr: std::process::ChildStderr) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&kept).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    #[test]
    fn concatenated_members_are_one_gzip_stream() {
        let parts = [b"hello ".to_vec(), b"world".to_vec()];
        let mut joined = Vec::new();
        for p in parts {
            let mut e = GzEncoder::new(Vec::new(), Compression::new(3));
            e.write_all(&p).unwrap();
            joined.extend(e.finish().unwrap());
        }
        let mut out = String::new();
        MultiGzDecoder::new(&joined[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }
}
