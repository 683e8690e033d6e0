//! Point-in-time recovery against a bucket (the GCS emulator), end to end and when things go
//! wrong the way they do in production: the store gone for two minutes while rows are written
//! (first hanging, then its server down), and the push process killed mid-upload. Each test runs
//! the embedded cluster under `nexusd serve`, archiving through its own `archive_command`, and
//! proves what it claims with a `nexusd restore` and a digest of the rows.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use support::backups::{Where, text};
use support::fault_proxy::{Fault, FaultProxy, Rule};
use support::pitr_rows::{ThreeMoments, digest, nexusd_ok, rows_at_three_moments, switch_wal};
use support::throttle_proxy::ThrottleProxy;
use support::{FakeGcs, Nexusd, nexusd_command, shared_gcs, spawn_guardian, temp_root};

fn embedded_options(state: &Path) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .socket(state.join("run"))
        .username("nexusd")
        .database("devnexus")
}

/// An embedded cluster under `serve` archiving into a bucket (reached at `store`'s endpoint),
/// its schedules off, and a table `pitr_rows` to write to.
struct Site {
    state: PathBuf,
    bucket: String,
    vars: Vec<(String, String)>,
}

impl Site {
    async fn start(prefix: &str, store: &Where, extra: &[(&str, &str)]) -> (Site, Nexusd) {
        let Where::Gcs { bucket, .. } = store else {
            panic!("these tests archive into a bucket")
        };
        let root = temp_root(prefix);
        let state = root.join("state");
        spawn_guardian(&state.join("pg"), &root);
        let mut vars: Vec<(String, String)> = [
            ("NEXUSD_STATE_DIR", state.to_str().unwrap()),
            ("NEXUSD_BACKUP_SCHEDULE", "off"),
            ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "off"),
            ("NEXUSD_BASEBACKUP_SCHEDULE", "off"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        vars.extend(store.vars());
        let site = Site {
            state,
            bucket: bucket.clone(),
            vars,
        };
        let nexusd = Nexusd::serve(&site.vars());
        nexusd.wait_health(200, Duration::from_secs(120)).await;
        let mut conn = site.connect().await;
        sqlx::query("CREATE TABLE pitr_rows (id int PRIMARY KEY, note text)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        (site, nexusd)
    }

    fn vars(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&embedded_options(&self.state))
            .await
            .unwrap()
    }

    /// The WAL files archived in the bucket (names without `.gz`), read from `gcs` directly.
    async fn archived(&self, gcs: &FakeGcs) -> Vec<String> {
        gcs.objects(&self.bucket)
            .await
            .into_iter()
            .filter_map(|n| {
                n.strip_prefix("nexusd/wal/")
                    .and_then(|n| n.strip_suffix(".gz"))
                    .map(str::to_string)
            })
            .collect()
    }

    /// Waits (at most `limit`) until `segment` is in the bucket.
    async fn wait_archived(&self, gcs: &FakeGcs, segment: &str, limit: Duration, log: &Nexusd) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.archived(gcs).await.iter().any(|n| n == segment) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "{segment} not archived within {limit:?}\n--- nexusd log ---\n{}",
            log.log_text()
        );
    }

    /// Starts serve on the state directory, reads the digest, stops it.
    async fn served_digest(&self) -> String {
        let mut nexusd = Nexusd::serve(&self.vars());
        nexusd.wait_health(200, Duration::from_secs(120)).await;
        let mut conn = self.connect().await;
        let found = digest(&mut conn).await;
        conn.close().await.ok();
        nexusd.terminate(Duration::from_secs(30));
        found
    }
}

async fn failed_count(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT failed_count FROM pg_stat_archiver")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn restore_from_a_bucket_to_a_point_in_time_gives_exactly_the_rows_committed_by_then() {
    let gcs = shared_gcs();
    let store = Where::gcs(gcs).await;
    let (site, mut nexusd) = Site::start("nexusd-pitrf-gcs-", &store, &[]).await;
    let vars = site.vars();
    let taken = nexusd_ok(&["backup", "run", "--physical"], &vars);
    assert!(taken.contains("base backup base-"), "{taken}");
    let objects = gcs.objects(&site.bucket).await;
    assert!(
        objects
            .iter()
            .any(|n| n.starts_with("nexusd/base/") && n.ends_with(".manifest.json")),
        "the base backup is in the bucket: {objects:?}"
    );

    // Rows at T1, T2, T3, each commit a second or more apart; the target lies between T2 and T3.
    let mut conn = site.connect().await;
    let ThreeMoments { at_t2, t2, .. } = rows_at_three_moments(&mut conn).await;
    let segment = switch_wal(&mut conn).await;
    site.wait_archived(gcs, &segment, Duration::from_secs(60), &nexusd)
        .await;
    conn.close().await.ok();
    nexusd.terminate(Duration::from_secs(30));

    // Everything comes from the bucket: the base backup, then the WAL through wal-fetch.
    let said = nexusd_ok(&["restore", "--target-time", &t2], &vars);
    assert!(said.contains("pg.before-restore-"), "{said}");
    assert!(said.contains("timeline 2"), "{said}");
    assert_eq!(site.served_digest().await, at_t2, "{said}");
}

/// Inserts one row at a time (each its own transaction) until `stop`; returns how many
/// committed. A row counts once its INSERT returned: committed, so it must survive.
async fn keep_writing(site_state: PathBuf, stop: Arc<AtomicBool>) -> i32 {
    let mut conn = PgConnection::connect_with(&embedded_options(&site_state))
        .await
        .unwrap();
    let mut committed = 0;
    while !stop.load(Ordering::SeqCst) {
        sqlx::query("INSERT INTO pitr_rows VALUES ($1, 'during-' || md5($1::text))")
            .bind(1000 + committed)
            .execute(&mut conn)
            .await
            .unwrap();
        committed += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close().await.ok();
    committed
}

/// Switches WAL files every 15 s for `phase`, so PostgreSQL has new files to archive (and wakes
/// its archiver) all through it.
async fn switch_for(conn: &mut PgConnection, phase: Duration) -> Vec<String> {
    let end = Instant::now() + phase;
    let mut switched = Vec::new();
    while Instant::now() < end {
        switched.push(switch_wal(conn).await);
        tokio::time::sleep(Duration::from_secs(15).min(end - Instant::now())).await;
    }
    switched
}

/// A segment name on timeline 1 as a number (16 MB segments: 256 per "log" number).
fn segment_number(name: &str) -> Option<u64> {
    if name.len() != 24 || !name.starts_with("00000001") {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * 256 + seg)
}

/// Every segment from the base backup's start to `last` is in the archive: no gap.
async fn assert_no_gap(site: &Site, gcs: &FakeGcs, last: &str) {
    let bucket = site.bucket.as_str();
    let manifest = gcs
        .objects(bucket)
        .await
        .into_iter()
        .find(|n| n.starts_with("nexusd/base/") && n.ends_with(".manifest.json"))
        .expect("a base backup manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&gcs.download(bucket, &manifest).await).unwrap();
    let start = manifest["start_wal_file"].as_str().unwrap().to_string();
    let mut archived: Vec<u64> = site
        .archived(gcs)
        .await
        .iter()
        .filter_map(|n| segment_number(n))
        .collect();
    archived.sort();
    let (first, end) = (
        segment_number(&start).unwrap(),
        segment_number(last).unwrap(),
    );
    let wanted: Vec<u64> = (first..=end).collect();
    let held: Vec<u64> = archived
        .into_iter()
        .filter(|n| (first..=end).contains(n))
        .collect();
    assert_eq!(held, wanted, "the archive from {start} to {last}");
}

#[tokio::test]
async fn two_minutes_without_the_store_lose_nothing_and_leave_no_gap_in_the_archive() {
    let mut gcs = FakeGcs::start("127.0.9.31");
    let bucket = "outage";
    gcs.bucket(bucket).await;
    let proxy = FaultProxy::start("127.0.9.32", &gcs.ip);
    let store = Where::Gcs {
        endpoint: proxy.endpoint(),
        bucket: bucket.into(),
    };
    // A hung push gives up after 10 s (not 120), so PostgreSQL retries within the outage.
    let (site, mut nexusd) = Site::start(
        "nexusd-pitrf-outage-",
        &store,
        &[("NEXUSD_WAL_PUSH_TIMEOUT", "10")],
    )
    .await;
    let vars = site.vars();
    nexusd_ok(&["backup", "run", "--physical"], &vars);
    let mut conn = site.connect().await;
    let before_outage = switch_wal(&mut conn).await;
    site.wait_archived(&gcs, &before_outage, Duration::from_secs(60), &nexusd)
        .await;
    let failed_before = failed_count(&mut conn).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_writing(site.state.clone(), stop.clone()));

    // Minute one: the store hangs (no answer at all). Minute two: its server is gone (the
    // proxy answers 502, as a front end does when its backend is down).
    proxy.add(Rule::always("", "", Fault::Hang));
    let mut switched = switch_for(&mut conn, Duration::from_secs(60)).await;
    let failed_hanging = failed_count(&mut conn).await;
    gcs.stop();
    proxy.clear();
    switched.extend(switch_for(&mut conn, Duration::from_secs(60)).await);
    let failed_down = failed_count(&mut conn).await;
    // Read from the emulator's files while it is down: no push can land meanwhile.
    let during: Vec<String> =
        std::fs::read_dir(gcs.root.join("data").join(bucket).join("nexusd/wal"))
            .unwrap()
            .flatten()
            .filter_map(|e| Some(e.file_name().to_str()?.strip_suffix(".gz")?.to_string()))
            .collect();
    gcs.restart();
    // (A switch with nothing written since the last one names that last file again.)
    assert!(during.contains(&before_outage), "{during:?}");
    assert!(
        switched.iter().filter(|s| **s > before_outage).count() >= 4,
        "WAL files to archive were finished during the outage: {switched:?}"
    );
    assert!(
        during.iter().all(|s| s.len() != 24 || *s <= before_outage),
        "nothing finished during the outage reached the store: {switched:?} {during:?}"
    );
    assert!(
        failed_before < failed_hanging && failed_hanging < failed_down,
        "PostgreSQL kept retrying while the store hung ({failed_before} → {failed_hanging}) \
         and while it was down (→ {failed_down})"
    );

    // The store is back: a few more rows, then everything catches up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let committed = writer.await.unwrap();
    let expected = digest(&mut conn).await;
    assert!(
        expected.starts_with(&format!("{committed}:")),
        "{expected} vs {committed} committed"
    );
    let last = switch_wal(&mut conn).await;
    site.wait_archived(&gcs, &last, Duration::from_secs(120), &nexusd)
        .await;
    conn.close().await.ok();
    nexusd.terminate(Duration::from_secs(30));

    assert_no_gap(&site, &gcs, &last).await;

    // Every committed row, from the bucket.
    let said = nexusd_ok(&["restore", "--target-time", "latest"], &vars);
    assert_eq!(site.served_digest().await, expected, "{said}");
}

/// The `nexusd wal-push` PostgreSQL runs for `data_dir`, with the file it pushes.
fn running_push(data_dir: &Path) -> Option<(i32, String)> {
    let bin = std::fs::canonicalize(support::nexusd_bin()).ok()?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            if exe != bin || cwd != data_dir {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            let at = args.iter().position(|a| a == "wal-push")?;
            let file = Path::new(args.get(at + 1)?)
                .file_name()?
                .to_str()?
                .to_string();
            Some((pid, file))
        })
}

#[tokio::test]
async fn a_push_killed_mid_upload_leaves_nothing_restorable_and_the_retry_succeeds() {
    let gcs = shared_gcs();
    let direct = Where::gcs(gcs).await;
    let bucket = direct.bucket().to_string();
    let proxy = ThrottleProxy::start("127.0.9.33", &gcs.ip);
    let store = direct.through(proxy.endpoint());
    let (site, mut nexusd) = Site::start("nexusd-pitrf-kill-", &store, &[]).await;
    let vars = site.vars();
    nexusd_ok(&["backup", "run", "--physical"], &vars);
    let mut conn = site.connect().await;
    let quiet = switch_wal(&mut conn).await;
    site.wait_archived(gcs, &quiet, Duration::from_secs(60), &nexusd)
        .await;

    // A slow uplink, then a full segment of hardly compressible rows: its upload takes minutes.
    proxy.throttle(128 * 1024);
    sqlx::query(
        "INSERT INTO pitr_rows SELECT g, repeat(md5(random()::text), 8) FROM generate_series(100, 80099) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let data_dir = std::fs::canonicalize(site.state.join("pg")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (pid, file) = loop {
        if let Some(push) = running_push(&data_dir)
            && proxy.sent() > 256 * 1024
        {
            break push;
        }
        assert!(Instant::now() < deadline, "no upload under way");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let sent_at_kill = proxy.sent();

    // Nothing half-written is in the bucket, and wal-fetch says the file is not archived.
    let target = temp_root("nexusd-pitrf-fetch-").join(&file);
    let fetch = nexusd_command(
        &[
            "--env-file",
            "/dev/null",
            "wal-fetch",
            &file,
            target.to_str().unwrap(),
        ],
        &vars,
    )
    .output()
    .unwrap();
    assert_eq!(fetch.status.code(), Some(1), "{}", text(&fetch));
    assert!(!target.exists());
    assert!(!site.archived(gcs).await.contains(&file));

    // The uplink recovers: PostgreSQL pushes the file again, and it arrives whole.
    proxy.throttle(0);
    site.wait_archived(gcs, &file, Duration::from_secs(120), &nexusd)
        .await;
    let stored = gcs
        .download(&bucket, &format!("nexusd/wal/{file}.gz"))
        .await;
    assert!(
        sent_at_kill < stored.len() as u64,
        "the kill landed mid-body: {sent_at_kill} of {} bytes sent",
        stored.len()
    );
    let mut whole = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(&stored[..]),
        &mut whole,
    )
    .unwrap();
    assert_eq!(whole.len(), 16 << 20);

    // And a restore replays it: every row.
    let expected = digest(&mut conn).await;
    let last = switch_wal(&mut conn).await;
    site.wait_archived(gcs, &last, Duration::from_secs(120), &nexusd)
        .await;
    conn.close().await.ok();
    nexusd.terminate(Duration::from_secs(30));
    let said = nexusd_ok(&["restore", "--target-time", "latest"], &vars);
    assert_eq!(site.served_digest().await, expected, "{said}");
}
