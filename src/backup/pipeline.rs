//! The dump pipeline: `pg_dump` (at low CPU and I/O priority) → gzip → store, streamed in
//! bounded blocks so memory stays flat whatever the database size, with no temporary file.
//!
//! Compression runs on several threads: the raw dump is cut into blocks that are compressed as
//! independent gzip members and written in order. Concatenated members are one valid gzip file
//! (RFC 1952), so `gunzip < x.sql.gz | psql` restores it as ever. SHA-256 and CRC32C of the
//! object are computed as it streams.
//!
//! The pipeline is one cancellable unit. Its stages — the producer (pg_dump, the block reader
//! and the compression threads), the forwarder (members back in order, hashed and counted as
//! they are handed to the store) and the upload — share one [`Stop`]: the first stage to fail,
//! the caller's cancellation or a dropped pipeline stops all of them within seconds (pg_dump is
//! killed, the upload abandoned) and the first reason is the one reported. The object is
//! finalised only when pg_dump exited 0 with a complete dump and every member it produced was
//! handed to the store; afterwards the store's size (and CRC32C, when it has one) must equal what
//! was sent, so a short object can never count.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::DumpFormat;
use super::store::{ObjectInfo, Store, UploadChunk};
use crate::db::tools::{ClientTools, ToolConnection};

/// Raw bytes per gzip member. Large enough that restarting the dictionary costs nothing
/// measurable, small enough that workers × blocks stay a few MiB.
pub const BLOCK_BYTES: usize = 2 << 20;
/// The last line pg_dump writes to a complete plain dump.
const PLAIN_TRAILER: &str = "-- PostgreSQL database dump complete";
/// Stderr kept for the error message.
const STDERR_TAIL: usize = 4096;
/// How long a stopped upload gets to abandon its session before it is dropped.
const ABANDON_GRACE: Duration = Duration::from_secs(5);

/// What the pipeline runs: pg_dump in a snapshot, or pg_basebackup (a physical base backup as
/// one tar on stdout, WAL left to the archive: src/backup/base.rs).
#[derive(Debug, Clone)]
pub enum Source {
    Dump {
        format: DumpFormat,
        snapshot: String,
    },
    BaseBackup {
        label: String,
    },
}

impl Source {
    fn program(&self) -> &'static str {
        match self {
            Source::Dump { .. } => "pg_dump",
            Source::BaseBackup { .. } => "pg_basebackup",
        }
    }
}

/// What to dump and how.
pub struct DumpSpec {
    pub tools: ClientTools,
    pub connection: ToolConnection,
    pub source: Source,
    pub level: u32,
    pub workers: usize,
    /// Raw bytes read from pg_dump so far, for progress.
    pub dumped: Arc<AtomicU64>,
}

/// A finished dump.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub object: ObjectInfo,
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: String,
    pub crc32c: u32,
    /// The program's last lines on stderr (pg_basebackup's `-v` start and end points).
    pub stderr: String,
}

/// How many compression threads to use: the cores there are, at most four.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// The pipeline's shared stop: cancelled by the caller, by the first stage that fails, or when
/// the pipeline is dropped; remembers the first reason.
#[derive(Clone)]
struct Stop {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Stop {
    fn new(cancel: &CancellationToken) -> Self {
        Stop {
            token: cancel.child_token(),
            reason: Arc::new(Mutex::new(None)),
        }
    }

    /// Stops every stage; the first reason given wins.
    fn fail(&self, reason: impl Into<String>) {
        if let Ok(mut first) = self.reason.lock()
            && first.is_none()
        {
            *first = Some(reason.into());
        }
        self.token.cancel();
    }

    fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Why the pipeline stopped: the first failure, or the caller's cancellation.
    fn reason(&self) -> Option<String> {
        let first = self.reason.lock().ok().and_then(|r| r.clone());
        match first {
            Some(reason) => Some(reason),
            None if self.is_stopped() => Some("the backup was cancelled".to_string()),
            None => None,
        }
    }
}

/// A compressed member and its place in the dump.
struct Member {
    seq: u64,
    bytes: Vec<u8>,
}

/// What the producer made: raw bytes read from pg_dump and members compressed from them.
struct Produced {
    raw_bytes: u64,
    members: u64,
    stderr: String,
}

/// What the forwarder handed to the store, counted as it was sent.
struct Forwarded {
    sha256: String,
    crc32c: u32,
    compressed_bytes: u64,
    members: u64,
}

/// Runs pg_dump into `store` as `name`. Abandons the upload (nothing stored) on any failure or
/// when `cancel` fires; the error is the first stage's reason.
pub async fn dump(
    store: &Store,
    name: &str,
    spec: DumpSpec,
    cancel: CancellationToken,
) -> Result<Dumped> {
    let stop = Stop::new(&cancel);
    // A dropped pipeline (e.g. its caller timed out) stops its threads and pg_dump too.
    let _stop_on_drop = stop.token.clone().drop_guard();
    let (upload_tx, upload_rx) = mpsc::channel::<UploadChunk>(4);
    let (member_tx, member_rx) = mpsc::channel::<Member>(spec.workers * 2);

    let producer = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let produced = produce(spec, member_tx, &stop);
            if let Err(e) = &produced {
                stop.fail(format!("{e:#}"));
            }
            produced
        })
    };
    // Stored as application/gzip without Content-Encoding, so GCS never transcodes it.
    let upload = upload_until_stopped(store, name, "application/gzip", upload_rx, &stop);
    let finishing = stop.clone();
    let finish = async move {
        let stop = finishing;
        let forwarded = forward_in_order(member_rx, &upload_tx, &stop).await;
        if let Some(reason) = stop.reason() {
            // Abandon the upload now, not once pg_dump is gone: a closed channel is enough
            // when the store is too busy to take the message.
            let _ = upload_tx.try_send(UploadChunk::Abort(reason));
            drop(upload_tx);
            return (
                forwarded,
                producer
                    .await
                    .unwrap_or_else(|e| Err(anyhow!("the dump thread failed: {e}"))),
            );
        }
        let produced = match producer.await {
            Ok(produced) => produced,
            Err(e) => {
                stop.fail(format!("the dump thread failed: {e}"));
                Err(anyhow!("the dump thread failed: {e}"))
            }
        };
        let verdict = verdict(&forwarded, &produced, &stop);
        // The store stops reading after this message, whatever it is; a stalled store must not
        // hold the pipeline here.
        tokio::select! {
            _ = upload_tx.send(verdict) => {}
            () = tokio::time::sleep(ABANDON_GRACE) => stop.fail("the store stopped reading the upload"),
        }
        (forwarded, produced)
    };
    let (uploaded, (forwarded, produced)) = tokio::join!(upload, finish);
    if let Some(reason) = stop.reason() {
        bail!("{reason}");
    }
    let (forwarded, produced, object) = (forwarded?, produced?, uploaded?);
    check_stored(name, &object, &forwarded)?;
    Ok(Dumped {
        object,
        raw_bytes: produced.raw_bytes,
        compressed_bytes: forwarded.compressed_bytes,
        sha256: forwarded.sha256,
        crc32c: forwarded.crc32c,
        stderr: produced.stderr,
    })
}

/// `End` only when nothing stopped the pipeline and every member produced was sent.
fn verdict(forwarded: &Result<Forwarded>, produced: &Result<Produced>, stop: &Stop) -> UploadChunk {
    let problem = match (forwarded, produced) {
        _ if stop.is_stopped() => stop.reason(),
        (Ok(f), Ok(p)) if f.members != p.members => Some(format!(
            "{} of {} compressed blocks reached the store",
            f.members, p.members
        )),
        (Ok(_), Ok(p)) if p.raw_bytes == 0 => Some("pg_dump wrote nothing".to_string()),
        (Ok(_), Ok(_)) => None,
        (Err(e), _) | (_, Err(e)) => Some(format!("{e:#}")),
    };
    match problem {
        None => UploadChunk::End,
        Some(why) => {
            stop.fail(why.clone());
            UploadChunk::Abort(why)
        }
    }
}

/// The store must hold exactly what was sent.
fn check_stored(name: &str, object: &ObjectInfo, sent: &Forwarded) -> Result<()> {
    if sent.compressed_bytes == 0 || object.size != sent.compressed_bytes {
        bail!(
            "the store holds {} bytes of {name} but {} were sent",
            object.size,
            sent.compressed_bytes
        );
    }
    if let Some(stored) = object.crc32c
        && stored != sent.crc32c
    {
        bail!(
            "the store's CRC32C of {name} ({stored:08x}) differs from ours ({:08x})",
            sent.crc32c
        );
    }
    Ok(())
}

/// The store's upload, failing the pipeline when it fails; once the pipeline is stopped, the
/// upload gets [`ABANDON_GRACE`] to abandon its session and is then dropped.
async fn upload_until_stopped(
    store: &Store,
    name: &str,
    content_type: &str,
    chunks: mpsc::Receiver<UploadChunk>,
    stop: &Stop,
) -> Result<ObjectInfo> {
    let abandoned = async {
        stop.stopped().await;
        tokio::time::sleep(ABANDON_GRACE).await;
    };
    tokio::select! {
        uploaded = store.upload(name, content_type, chunks) => uploaded.map_err(|e| {
            stop.fail(format!("uploading to {}: {e}", store.describe()));
            anyhow!("uploading to {}: {e}", store.describe())
        }),
        () = abandoned => Err(anyhow!("the upload was abandoned")),
    }
}

/// Puts the compressed members back in order, hashes them and hands them to the store. Bytes
/// and members are counted only once the store's channel took them.
async fn forward_in_order(
    mut members: mpsc::Receiver<Member>,
    upload: &mpsc::Sender<UploadChunk>,
    stop: &Stop,
) -> Result<Forwarded> {
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut sha = Sha256::new();
    let mut crc = 0u32;
    let mut sent = 0u64;
    loop {
        let member = tokio::select! {
            m = members.recv() => m,
            () = stop.stopped() => bail!("stopped"),
        };
        let Some(member) = member else { break };
        pending.insert(member.seq, member.bytes);
        while let Some(block) = pending.remove(&next) {
            sha.update(&block);
            crc = crc32c::crc32c_append(crc, &block);
            let len = block.len() as u64;
            tokio::select! {
                accepted = upload.send(UploadChunk::Data(Bytes::from(block))) => {
                    if accepted.is_err() {
                        stop.fail("the store stopped accepting data");
                        bail!("the store stopped accepting data");
                    }
                }
                () = stop.stopped() => bail!("stopped"),
            }
            sent += len;
            next += 1;
        }
    }
    if !pending.is_empty() {
        let why = format!(
            "{} compressed blocks arrived out of order and were never sent",
            pending.len()
        );
        stop.fail(why.clone());
        bail!(why);
    }
    Ok(Forwarded {
        sha256: format!("{:x}", sha.finalize()),
        crc32c: crc,
        compressed_bytes: sent,
        members: next,
    })
}

/// `nice`/`ionice` in front of pg_dump when the system has them, so the dump yields the CPU and
/// disk to PostgreSQL's own work (both exec the program, so the pid is pg_dump's).
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

/// pg_dump as a child whose pid the stop watcher may kill until it has been reaped.
struct PgDump {
    child: Child,
    /// `Some` while the process may be killed by pid (cleared under the lock before reaping).
    pid: Arc<Mutex<Option<Pid>>>,
}

impl PgDump {
    fn spawn(spec: &DumpSpec) -> Result<Self> {
        let program = spec.tools.program(spec.source.program());
        let mut cmd = low_priority(program.clone());
        cmd.arg("--no-password");
        match &spec.source {
            Source::Dump { format, snapshot } => {
                cmd.arg(format!("--snapshot={snapshot}"));
                match format {
                    DumpFormat::Plain => cmd.arg("--format=plain"),
                    DumpFormat::Custom => cmd.args(["--format=custom", "--compress=0"]),
                };
            }
            // One tar of the data directory on stdout, no WAL (the archive holds it), a fast
            // checkpoint, and -v for the start and end points of the backup's WAL.
            Source::BaseBackup { label } => {
                cmd.args(["-D", "-", "-Ft", "-X", "none", "-c", "fast", "-v", "-l"])
                    .arg(label);
            }
        }
        spec.connection.apply(&mut cmd);
        // Its own process group, so a kill reaches anything it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| anyhow!("starting {}: {e}", program.display()))?;
        let pid = Arc::new(Mutex::new(Some(Pid::from_raw(child.id() as i32))));
        Ok(PgDump { child, pid })
    }

    /// Kills pg_dump as soon as `stop` fires (until it has been reaped).
    fn kill_on(&self, stop: &Stop) -> tokio::task::JoinHandle<()> {
        let pid = self.pid.clone();
        let token = stop.token.clone();
        let handle = tokio::runtime::Handle::current();
        handle.spawn(async move {
            token.cancelled().await;
            if let Ok(slot) = pid.lock()
                && let Some(pid) = *slot
            {
                let _ = killpg(pid, Signal::SIGKILL);
            }
        })
    }

    /// Waits for pg_dump to exit (killing it first when `kill_first`).
    fn reap(mut self, kill_first: bool) -> std::io::Result<std::process::ExitStatus> {
        if kill_first {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        }
        if let Ok(mut slot) = self.pid.lock() {
            *slot = None;
        }
        self.child.wait()
    }
}

/// The blocking half: runs pg_dump, cuts its output into blocks, compresses them on worker
/// threads and sends the members on. Returns once pg_dump has exited cleanly with a complete
/// dump; on any failure (or when `stop` fires) pg_dump is killed and every thread ends.
fn produce(spec: DumpSpec, members: mpsc::Sender<Member>, stop: &Stop) -> Result<Produced> {
    let mut pg_dump = PgDump::spawn(&spec)?;
    let watcher = pg_dump.kill_on(stop);
    let stdout = pg_dump.child.stdout.take();
    let stderr = pg_dump.child.stderr.take();
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        let _ = pg_dump.reap(true);
        bail!("pg_dump has no stdout or stderr");
    };
    let stderr_reader = std::thread::spawn(move || read_stderr(stderr));
    let (work_tx, workers) = start_workers(spec.workers, spec.level, members);
    let read = read_blocks(stdout, &work_tx, &spec.dumped);
    drop(work_tx);
    let status = pg_dump.reap(read.is_err());
    watcher.abort();
    let stderr_text = stderr_reader.join().unwrap_or_default();
    for worker in workers {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("compressing: {e}"),
            Err(_) => bail!("a compression thread panicked"),
        }
    }
    let read = read?;
    let status = status.map_err(|e| anyhow!("waiting for pg_dump: {e}"))?;
    if stop.is_stopped() {
        bail!("stopped");
    }
    check_pg_dump(&spec, status, &stderr_text, &read.tail)?;
    Ok(Produced {
        raw_bytes: read.raw_bytes,
        members: read.blocks,
        stderr: stderr_text,
    })
}

/// Raw blocks for the compression threads, with their sequence numbers.
type WorkQueue = std::sync::mpsc::SyncSender<(u64, Vec<u8>)>;

/// Compression threads: they take raw blocks from a bounded queue and send members on; each
/// ends when the queue closes or the member channel does (the pipeline stopped).
fn start_workers(
    count: usize,
    level: u32,
    members: mpsc::Sender<Member>,
) -> (WorkQueue, Vec<std::thread::JoinHandle<Result<()>>>) {
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(count);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let workers = (0..count)
        .map(|_| {
            let rx = work_rx.clone();
            let out = members.clone();
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let next = rx.lock().map_err(|_| anyhow!("lock poisoned"))?.recv();
                    let Ok((seq, raw)) = next else { return Ok(()) };
                    let mut encoder =
                        GzEncoder::new(Vec::with_capacity(raw.len() / 2), Compression::new(level));
                    encoder.write_all(&raw)?;
                    let bytes = encoder.finish()?;
                    if out.blocking_send(Member { seq, bytes }).is_err() {
                        // The pipeline stopped; its reason is reported elsewhere.
                        return Ok(());
                    }
                }
            })
        })
        .collect();
    (work_tx, workers)
}

/// What the block reader saw of pg_dump's output.
struct Output {
    raw_bytes: u64,
    blocks: u64,
    /// The last bytes, where a plain dump's completion trailer is.
    tail: Vec<u8>,
}

/// Reads pg_dump's stdout into [`BLOCK_BYTES`] blocks and queues them for compression.
fn read_blocks(
    mut stdout: std::process::ChildStdout,
    work: &WorkQueue,
    dumped: &AtomicU64,
) -> Result<Output> {
    let mut read = Output {
        raw_bytes: 0,
        blocks: 0,
        tail: Vec::new(),
    };
    loop {
        let mut block = vec![0u8; BLOCK_BYTES];
        let (filled, eof) =
            fill(&mut stdout, &mut block).map_err(|e| anyhow!("reading pg_dump's output: {e}"))?;
        block.truncate(filled);
        read.raw_bytes += filled as u64;
        dumped.fetch_add(filled as u64, Ordering::Relaxed);
        read.tail
            .extend_from_slice(&block[filled.saturating_sub(256)..]);
        if read.tail.len() > 256 {
            read.tail.drain(..read.tail.len() - 256);
        }
        if !block.is_empty() {
            work.send((read.blocks, block))
                .map_err(|_| anyhow!("the compression workers stopped"))?;
            read.blocks += 1;
        }
        if eof {
            return Ok(read);
        }
    }
}

/// Fills `block` from `source`; returns how much was read and whether the end was reached.
fn fill(source: &mut impl Read, block: &mut [u8]) -> std::io::Result<(usize, bool)> {
    let mut filled = 0;
    while filled < block.len() {
        match source.read(&mut block[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

/// pg_dump must have exited 0, reported no error and — for plain dumps — written its trailer.
fn check_pg_dump(
    spec: &DumpSpec,
    status: std::process::ExitStatus,
    stderr: &str,
    tail: &[u8],
) -> Result<()> {
    let program = spec.source.program();
    if !status.success() {
        bail!("{program} failed ({status}): {}", stderr.trim());
    }
    if stderr.contains(&format!("{program}: error")) {
        bail!("{program} reported an error: {}", stderr.trim());
    }
    let plain = matches!(
        spec.source,
        Source::Dump {
            format: DumpFormat::Plain,
            ..
        }
    );
    if plain && !String::from_utf8_lossy(tail).contains(PLAIN_TRAILER) {
        bail!(
            "pg_dump exited 0 but its output ends without the completion trailer: the dump is truncated"
        );
    }
    if !stderr.trim().is_empty() && matches!(spec.source, Source::Dump { .. }) {
        tracing::warn!(stderr = %stderr.trim(), "pg_dump wrote to stderr");
    }
    Ok(())
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

    fn member(seq: u64, bytes: &[u8]) -> Member {
        Member {
            seq,
            bytes: bytes.to_vec(),
        }
    }

    #[tokio::test]
    async fn members_reach_the_store_in_order_and_are_counted_when_taken() {
        let stop = Stop::new(&CancellationToken::new());
        let (member_tx, member_rx) = mpsc::channel(8);
        let (upload_tx, mut upload_rx) = mpsc::channel(8);
        for (seq, bytes) in [(2, b"cc"), (0, b"aa"), (1, b"bb")] {
            member_tx.send(member(seq, bytes)).await.unwrap();
        }
        drop(member_tx);
        let sent = forward_in_order(member_rx, &upload_tx, &stop)
            .await
            .unwrap();
        assert_eq!((sent.members, sent.compressed_bytes), (3, 6));
        assert_eq!(sent.crc32c, crc32c::crc32c(b"aabbcc"));
        let mut got = Vec::new();
        while let Ok(UploadChunk::Data(bytes)) = upload_rx.try_recv() {
            got.extend_from_slice(&bytes);
        }
        assert_eq!(got, b"aabbcc");
    }

    #[tokio::test]
    async fn a_store_that_stops_taking_data_stops_the_pipeline_with_its_reason() {
        let stop = Stop::new(&CancellationToken::new());
        let (member_tx, member_rx) = mpsc::channel(8);
        let (upload_tx, upload_rx) = mpsc::channel(8);
        drop(upload_rx);
        member_tx.send(member(0, b"aa")).await.unwrap();
        drop(member_tx);
        assert!(
            forward_in_order(member_rx, &upload_tx, &stop)
                .await
                .is_err()
        );
        assert!(stop.is_stopped());
        assert_eq!(
            stop.reason().as_deref(),
            Some("the store stopped accepting data")
        );
        // Nothing counted, so nothing can be finalised.
        let forwarded: Result<Forwarded> = Err(anyhow!("stopped"));
        let produced = Ok(Produced {
            raw_bytes: 10,
            members: 1,
            stderr: String::new(),
        });
        assert!(matches!(
            verdict(&forwarded, &produced, &stop),
            UploadChunk::Abort(_)
        ));
    }

    #[test]
    fn only_a_complete_dump_is_finalised() {
        let stop = Stop::new(&CancellationToken::new());
        let sent = |members| {
            Ok(Forwarded {
                sha256: String::new(),
                crc32c: 0,
                compressed_bytes: 10,
                members,
            })
        };
        let produced = |raw_bytes, members| {
            Ok(Produced {
                raw_bytes,
                members,
                stderr: String::new(),
            })
        };
        assert!(matches!(
            verdict(&sent(2), &produced(100, 2), &stop),
            UploadChunk::End
        ));
        assert!(matches!(
            verdict(
                &sent(1),
                &produced(100, 2),
                &Stop::new(&CancellationToken::new())
            ),
            UploadChunk::Abort(_)
        ));
        assert!(matches!(
            verdict(
                &sent(0),
                &produced(0, 0),
                &Stop::new(&CancellationToken::new())
            ),
            UploadChunk::Abort(_)
        ));
    }

    #[test]
    fn an_empty_or_short_object_never_counts() {
        let object = |size, crc32c| ObjectInfo {
            name: "x".into(),
            size,
            created: chrono::Utc::now(),
            generation: None,
            crc32c,
        };
        let sent = |compressed_bytes, crc32c| Forwarded {
            sha256: String::new(),
            crc32c,
            compressed_bytes,
            members: 1,
        };
        // The reviewer's case: the store failed before any byte was counted, and it says 0.
        assert!(check_stored("x", &object(0, None), &sent(0, 0)).is_err());
        assert!(check_stored("x", &object(5, None), &sent(10, 7)).is_err());
        assert!(check_stored("x", &object(10, Some(8)), &sent(10, 7)).is_err());
        assert!(check_stored("x", &object(10, Some(7)), &sent(10, 7)).is_ok());
    }
}
