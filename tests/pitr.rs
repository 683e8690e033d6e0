//! WAL archiving (`nexusd wal-push`, `nexusd wal-fetch`) against the local store, the GCS
//! emulator behind a fault proxy, and the embedded cluster archiving by itself.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use support::backups::{Where, text};
use support::fault_proxy::{Fault, FaultProxy, Rule};
use support::pitr_rows::{
    ThreeMoments, digest, nexusd_ok, rows_at_three_moments, switch_wal, write_rows,
};
use support::{Nexusd, nexusd_command, shared_gcs, spawn_guardian, temp_root};

const SEGMENT: &str = "000000010000000000000001";

/// A data directory as PostgreSQL runs `archive_command` in: `global/pg_control` starting with
/// the system identifier, and one WAL file of `content`.
fn data_dir(system_identifier: u64, content: &[u8]) -> PathBuf {
    let dir = temp_root("nexusd-pitr-data-").join("pg");
    std::fs::create_dir_all(dir.join("global")).unwrap();
    std::fs::create_dir_all(dir.join("pg_wal")).unwrap();
    let mut control = system_identifier.to_ne_bytes().to_vec();
    control.resize(8192, 0);
    std::fs::write(dir.join("global/pg_control"), control).unwrap();
    std::fs::write(dir.join("pg_wal").join(SEGMENT), content).unwrap();
    dir
}

fn segment_bytes(seed: u8) -> Vec<u8> {
    (0..256 * 1024u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn wal(data: &Path, store: &Where, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let state = data.parent().unwrap().join("state");
    let state = state.to_str().unwrap().to_string();
    let owned = store.vars();
    let mut vars: Vec<(&str, &str)> = vec![("NEXUSD_STATE_DIR", state.as_str())];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vars.extend_from_slice(extra);
    let mut all = vec!["--env-file", "/dev/null"];
    all.extend_from_slice(args);
    let mut cmd = nexusd_command(&all, &vars);
    cmd.current_dir(data);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("running nexusd")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn wal_push_stores_once_accepts_an_identical_repeat_and_refuses_a_different_one() {
    let content = segment_bytes(1);
    let data = data_dir(7_123_456_789, &content);
    let store = Where::local();
    let Where::Local(dir) = &store else {
        unreachable!()
    };
    let path = format!("pg_wal/{SEGMENT}");
    let pushed = run(wal(&data, &store, &["wal-push", &path], &[]));
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed));
    let stored = std::fs::read(dir.join("wal").join(format!("{SEGMENT}.gz"))).unwrap();
    assert_eq!(
        gunzip(&stored),
        content,
        "the archive holds the segment, gzipped"
    );
    let marker = std::fs::read_to_string(dir.join("wal/archive.json")).unwrap();
    assert!(marker.contains("7123456789"), "{marker}");

    // The same segment again (PostgreSQL retrying after a crash): success, nothing changed.
    let again = run(wal(&data, &store, &["wal-push", &path], &[]));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));

    // Other content under the same name: refused, both checksums named, the conflict recorded.
    std::fs::write(data.join(&path), segment_bytes(2)).unwrap();
    let clash = run(wal(&data, &store, &["wal-push", &path], &[]));
    assert_eq!(clash.status.code(), Some(1), "{}", text(&clash));
    let message = text(&clash);
    use sha2::Digest;
    for bytes in [&content, &segment_bytes(2)] {
        let sha = format!("{:x}", sha2::Sha256::digest(bytes));
        assert!(message.contains(&sha), "{message}");
    }
    let records = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".conflict.json"))
        .count();
    assert_eq!(records, 1);
    assert_eq!(
        gunzip(&std::fs::read(dir.join("wal").join(format!("{SEGMENT}.gz"))).unwrap()),
        content,
        "the archived segment is never overwritten"
    );

    // wal-fetch gives the archived content back; a name never archived is "missing" (1).
    let target = data.join("pg_wal/RECOVERYXLOG");
    let fetched = run(wal(
        &data,
        &store,
        &["wal-fetch", SEGMENT, target.to_str().unwrap()],
        &[],
    ));
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched));
    assert_eq!(std::fs::read(&target).unwrap(), content);
    let missing = run(wal(
        &data,
        &store,
        &[
            "wal-fetch",
            "000000010000000000000009",
            target.to_str().unwrap(),
        ],
        &[],
    ));
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));

    // Every kind of name PostgreSQL archives.
    for name in [
        "00000002.history",
        "000000010000000000000001.00000028.backup",
    ] {
        std::fs::write(data.join("pg_wal").join(name), b"label").unwrap();
        let pushed = run(wal(
            &data,
            &store,
            &["wal-push", &format!("pg_wal/{name}")],
            &[],
        ));
        assert_eq!(pushed.status.code(), Some(0), "{name}: {}", text(&pushed));
        assert!(dir.join("wal").join(format!("{name}.gz")).is_file());
    }

    // Another cluster pointed at the same archive is refused before it stores anything.
    let foreign = data_dir(42, &segment_bytes(3));
    std::fs::rename(
        foreign.join("pg_wal").join(SEGMENT),
        foreign.join("pg_wal/000000010000000000000005"),
    )
    .unwrap();
    let refused = run(wal(
        &foreign,
        &store,
        &["wal-push", "pg_wal/000000010000000000000005"],
        &[],
    ));
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("belongs to another cluster"),
        "{}",
        text(&refused)
    );
    assert!(!dir.join("wal/000000010000000000000005.gz").exists());
}

#[tokio::test]
async fn an_unreachable_store_fails_the_push_in_time_and_a_killed_push_leaves_nothing() {
    let gcs = shared_gcs();
    let direct = Where::gcs(gcs).await;
    let proxy = FaultProxy::start("127.0.9.21", &gcs.ip);
    let store = direct.through(proxy.endpoint());
    let content = segment_bytes(4);
    let data = data_dir(99, &content);
    let path = format!("pg_wal/{SEGMENT}");
    let deadline = [("NEXUSD_WAL_PUSH_TIMEOUT", "5")];

    // The store hangs: the push fails (1, not a signal, not > 125) within its deadline.
    proxy.add(Rule::always("", "/upload/", Fault::Hang));
    let started = Instant::now();
    let hung = run(wal(&data, &store, &["wal-push", &path], &deadline));
    assert_eq!(hung.status.code(), Some(1), "{}", text(&hung));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        text(&hung).contains("NEXUSD_WAL_PUSH_TIMEOUT"),
        "{}",
        text(&hung)
    );

    // A push killed mid-upload leaves nothing wal-fetch would return.
    let mut child = wal(&data, &store, &["wal-push", &path], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.clear();
    let target = data.join("pg_wal/RECOVERYXLOG");
    let fetch = || {
        run(wal(
            &data,
            &store,
            &["wal-fetch", SEGMENT, target.to_str().unwrap()],
            &[],
        ))
    };
    let nothing = fetch();
    assert_eq!(nothing.status.code(), Some(1), "{}", text(&nothing));
    assert!(!target.exists());

    // The store back: the retried push succeeds and the segment comes back whole.
    let pushed = run(wal(&data, &store, &["wal-push", &path], &[]));
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed));
    let fetched = fetch();
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched));
    assert_eq!(std::fs::read(&target).unwrap(), content);

    // A store that cannot be read stops recovery (126) instead of ending it early (1).
    proxy.add(Rule::always("GET", "", Fault::Status(503)));
    let broken = run(wal(
        &data,
        &store,
        &["wal-fetch", SEGMENT, target.to_str().unwrap()],
        &[
            ("NEXUSD_BACKUP_RETRY_SECONDS", "1"),
            ("NEXUSD_WAL_PUSH_TIMEOUT", "10"),
        ],
    ));
    assert_eq!(broken.status.code(), Some(126), "{}", text(&broken));
}

fn embedded_options(state: &Path) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .socket(state.join("run"))
        .username("nexusd")
        .database("devnexus")
}

#[tokio::test]
async fn the_embedded_cluster_archives_its_wal_into_the_store() {
    let root = temp_root("nexusd-pitr-embedded-");
    let state = root.join("state");
    let store_dir = root.join("store");
    spawn_guardian(&state.join("pg"), &root);
    let (state_str, store_str) = (
        state.to_str().unwrap().to_string(),
        store_dir.to_str().unwrap().to_string(),
    );
    let vars = [
        ("NEXUSD_STATE_DIR", state_str.as_str()),
        ("NEXUSD_BACKUP_DIR", store_str.as_str()),
        ("NEXUSD_BACKUP_SCHEDULE", "off"),
        ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "off"),
    ];
    let mut nexusd = Nexusd::serve(&vars);
    nexusd.wait_health(200, Duration::from_secs(120)).await;
    let mut conn = PgConnection::connect_with(&embedded_options(&state))
        .await
        .unwrap();
    let level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(level, "replica");
    sqlx::query("CREATE TABLE pitr_probe AS SELECT g FROM generate_series(1, 1000) g")
        .execute(&mut conn)
        .await
        .unwrap();
    let segment = switch_wal(&mut conn).await;
    let archived = store_dir.join("wal").join(format!("{segment}.gz"));
    let limit = Instant::now() + Duration::from_secs(60);
    while !archived.is_file() && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (count, failed): (i64, i64) =
        sqlx::query_as("SELECT archived_count, failed_count FROM pg_stat_archiver")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        archived.is_file(),
        "{segment} not archived (archived {count}, failed {failed}): {}",
        nexusd.log_text()
    );
    assert_eq!(gunzip(&std::fs::read(&archived).unwrap()).len(), 16 << 20);
    assert_eq!(failed, 0, "{}", nexusd.log_text());
    conn.close().await.ok();
    nexusd.terminate(Duration::from_secs(30));
}

#[tokio::test]
async fn check_prints_the_archiving_settings_for_a_server_of_ones_own() {
    let db = support::shared_db().await;
    let url = db.url();
    let out = nexusd_command(
        &["--env-file", "/dev/null", "check"],
        &[("DATABASE_URL", &url)],
    )
    .output()
    .unwrap();
    let said = text(&out);
    assert!(said.contains("WAL archiving is off"), "{said}");
    assert!(said.contains("archive_mode = on"), "{said}");
    assert!(said.contains("wal-push %p'"), "{said}");
}

/// An embedded cluster under `serve` with a local store, its schedules off, and a table
/// `pitr_rows` to write to.
struct Site {
    state: PathBuf,
    store_dir: PathBuf,
    vars: Vec<(String, String)>,
}

impl Site {
    async fn start(prefix: &str, extra: &[(&str, &str)]) -> (Site, Nexusd, PgConnection) {
        let root = temp_root(prefix);
        let (state, store_dir) = (root.join("state"), root.join("store"));
        spawn_guardian(&state.join("pg"), &root);
        let vars: Vec<(String, String)> = [
            ("NEXUSD_STATE_DIR", state.to_str().unwrap()),
            ("NEXUSD_BACKUP_DIR", store_dir.to_str().unwrap()),
            ("NEXUSD_BACKUP_SCHEDULE", "off"),
            ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "off"),
            ("NEXUSD_BASEBACKUP_SCHEDULE", "off"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let site = Site {
            state,
            store_dir,
            vars,
        };
        let nexusd = Nexusd::serve(&site.vars());
        nexusd.wait_health(200, Duration::from_secs(120)).await;
        let mut conn = PgConnection::connect_with(&embedded_options(&site.state))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE pitr_rows (id int PRIMARY KEY, note text)")
            .execute(&mut conn)
            .await
            .unwrap();
        (site, nexusd, conn)
    }

    fn vars(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

#[tokio::test]
async fn restore_to_a_point_in_time_gives_exactly_the_rows_committed_by_then() {
    let (site, mut nexusd, mut conn) = Site::start("nexusd-pitr-restore-", &[]).await;
    let vars = site.vars();
    let (state, store_dir) = (&site.state, &site.store_dir);

    // A base backup before T1, listed apart from the dumps.
    let taken = nexusd_ok(&["backup", "run", "--physical"], &vars);
    assert!(taken.contains("base backup base-"), "{taken}");
    let listed: serde_json::Value =
        serde_json::from_str(&nexusd_ok(&["backup", "list", "--json"], &vars)).unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(listed["base_backups"][0]["complete"], true, "{listed}");

    // Rows at T1, T2, T3, each commit a second or more apart; the target lies between T2 and T3.
    let ThreeMoments { at_t2, t2, at_t3 } = rows_at_three_moments(&mut conn).await;
    let segment = switch_wal(&mut conn).await;
    let archived = store_dir.join("wal").join(format!("{segment}.gz"));
    let limit = Instant::now() + Duration::from_secs(60);
    while !archived.is_file() && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(archived.is_file(), "{segment}: {}", nexusd.log_text());
    conn.close().await.ok();

    // Refused while serve runs the cluster.
    let mut refused = nexusd_command(
        &[
            "--env-file",
            "/dev/null",
            "restore",
            "--target-time",
            "latest",
        ],
        &vars,
    );
    let refused = refused.output().unwrap();
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("stop it first"),
        "{}",
        text(&refused)
    );
    nexusd.terminate(Duration::from_secs(30));

    // Latest: every committed row (timeline 2).
    let said = nexusd_ok(&["restore", "--target-time", "latest"], &vars);
    assert!(said.contains("pg.before-restore-"), "{said}");
    assert!(said.contains("timeline 2"), "{said}");
    assert_eq!(served_digest(&vars, state).await, at_t3, "{said}");

    // Then T2, from the same base backup along timeline 2's history: exactly T2's rows.
    let said = nexusd_ok(&["restore", "--target-time", &t2], &vars);
    assert!(said.contains("timeline 3"), "{said}");
    assert_eq!(served_digest(&vars, state).await, at_t2, "{said}");
}

/// Starts serve on the state directory, reads the digest, stops it.
async fn served_digest(vars: &[(&str, &str)], state: &Path) -> String {
    let mut nexusd = Nexusd::serve(vars);
    nexusd.wait_health(200, Duration::from_secs(120)).await;
    let mut conn = PgConnection::connect_with(&embedded_options(state))
        .await
        .unwrap();
    let found = digest(&mut conn).await;
    conn.close().await.ok();
    nexusd.terminate(Duration::from_secs(30));
    found
}

/// Switches to a new WAL file and waits until the one just finished is in the archive.
async fn archive_now(conn: &mut PgConnection, store_dir: &Path) {
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let archived = store_dir.join("wal").join(format!("{segment}.gz"));
    let limit = Instant::now() + Duration::from_secs(60);
    while !archived.is_file() && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(archived.is_file(), "{segment} not archived");
}

#[tokio::test]
async fn prune_drops_old_base_backups_and_only_the_wal_no_kept_one_needs() {
    let (site, mut nexusd, mut conn) =
        Site::start("nexusd-pitr-prune-", &[("NEXUSD_BACKUP_MIN_KEEP", "1")]).await;
    let vars = site.vars();
    let (state, store_dir) = (&site.state, &site.store_dir);
    let base_name = |said: &str| {
        said.split_whitespace()
            .skip_while(|w| *w != "backup")
            .nth(1)
            .unwrap()
            .trim_end_matches(':')
            .to_string()
    };
    let old = base_name(&nexusd_ok(&["backup", "run", "--physical"], &vars));
    write_rows(&mut conn, 1, "a-").await;
    archive_now(&mut conn, store_dir).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let kept = base_name(&nexusd_ok(&["backup", "run", "--physical"], &vars));
    assert_ne!(old, kept);
    let last = write_rows(&mut conn, 4, "b-").await;
    archive_now(&mut conn, store_dir).await;
    conn.close().await.ok();
    nexusd.terminate(Duration::from_secs(30));

    // The first base backup is 40 days old: past retention, and not the newest.
    let base_dir = store_dir.join("base");
    for name in [old.clone(), format!("{old}.manifest.json")] {
        let aged = Command::new("touch")
            .args(["-d", "40 days ago"])
            .arg(base_dir.join(name))
            .status()
            .unwrap();
        assert!(aged.success());
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(base_dir.join(format!("{kept}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let start = manifest["start_wal_file"].as_str().unwrap().to_string();
    let segments = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.len() == 27 && n.ends_with(".gz"))
            .collect();
        names.sort();
        names
    };
    let before = segments(&store_dir.join("wal"));
    assert!(
        before.iter().any(|n| n[..24] < *start),
        "{before:?} {start}"
    );

    let said = nexusd_ok(&["backup", "prune"], &vars);
    assert!(said.contains(&format!("deleted base/{old}")), "{said}");
    assert!(!base_dir.join(&old).exists() && base_dir.join(&kept).exists());
    let after = segments(&store_dir.join("wal"));
    let expected: Vec<String> = before
        .iter()
        .filter(|n| n[8..24] >= start[8..])
        .cloned()
        .collect();
    assert_eq!(after, expected, "{said}");
    assert!(after.contains(&format!("{start}.gz")), "{after:?}");

    // Nothing the kept base backup needs is gone: a restore to the latest has every row.
    let restored = nexusd_ok(&["restore", "--target-time", "latest"], &vars);
    assert!(restored.contains(&kept), "{restored}");
    assert_eq!(served_digest(&vars, state).await, last, "{restored}");
}

/// Runs nexusd, returning its output whatever the exit.
fn nexusd_out(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut all = vec!["--env-file", "/dev/null"];
    all.extend_from_slice(args);
    nexusd_command(&all, vars).output().unwrap()
}

/// The scratch directories `backup verify --physical` made under the state directory.
fn scratch_left(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("pg.verify-") || n.starts_with("run.verify-"))
        .collect()
}

/// Polls `/health` until its `backup.pitr` satisfies `ok`.
async fn pitr_health(
    nexusd: &Nexusd,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let health = nexusd.wait_health(200, Duration::from_secs(30)).await;
        if ok(&health["backup"]["pitr"]) {
            return health["backup"]["pitr"].clone();
        }
        assert!(
            Instant::now() < limit,
            "backup.pitr never as expected: {}\n{}",
            health["backup"],
            nexusd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn verify_physical_restores_every_archived_wal_in_a_scratch_directory_and_finds_gaps() {
    let refresh = [("NEXUSD_BACKUP_STATUS_REFRESH", "1")];
    let (site, nexusd, mut conn) = Site::start("nexusd-pitr-verify-", &refresh).await;
    let vars = site.vars();
    let (state, store_dir) = (&site.state, &site.store_dir);
    let taken = nexusd_ok(&["backup", "run", "--physical"], &vars);
    let base = taken
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':');
    write_rows(&mut conn, 1, "v-").await;
    archive_now(&mut conn, store_dir).await;

    // The newest base backup and every archived WAL file restore; counts match the live ones.
    let out = nexusd_out(&["backup", "verify", "--physical", "--json"], &vars);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["base_backup"], base, "{v}");
    assert_eq!(v["counts_from"], "live", "{v}");
    assert!(v["tables"].as_u64().unwrap() > 1, "{v}");
    assert!(
        v["window_start"].is_string() && v["window_end"].is_string(),
        "{v}"
    );
    assert!(
        v["window_start"].as_str() <= v["window_end"].as_str(),
        "{v}"
    );
    assert_eq!(v["first_missing_segment"], serde_json::Value::Null, "{v}");
    assert!(scratch_left(state).is_empty(), "{:?}", scratch_left(state));
    // The restore really replayed the WAL after the base backup: it reached the rows' commit.
    assert!(v["last_transaction"].is_string(), "{v}");

    // serve shows the window, the newest segment and its age, failures, conflicts, the base backup.
    let pitr = pitr_health(&nexusd, |p| p["window_end"].is_string()).await;
    assert_eq!(pitr["archiving"], true, "{pitr}");
    assert_eq!(pitr["last_base_backup"], base, "{pitr}");
    assert!(pitr["last_archived_segment"].is_string(), "{pitr}");
    assert!(
        pitr["last_archived_age_seconds"].as_f64().unwrap() < 600.0,
        "{pitr}"
    );
    assert_eq!(pitr["archive_failures"], 0, "{pitr}");
    assert_eq!(pitr["duplicate_conflicts"], 0, "{pitr}");
    assert_eq!(pitr["gap"], serde_json::Value::Null, "{pitr}");
    assert!(pitr["pg_wal_bytes"].as_u64().unwrap() > 0, "{pitr}");
    let skill = nexusd.ok("get_backup_status", serde_json::json!({})).await;
    assert_eq!(skill["pitr"]["window_base"], base, "{skill}");
    let scrape = support::scrape::fetch(&nexusd.metrics, None).await;
    for name in [
        "nexusd_wal_last_archived_timestamp_seconds",
        "nexusd_basebackup_last_success_timestamp_seconds",
        "nexusd_pg_wal_bytes",
    ] {
        assert!(scrape.value(name, &[]).unwrap_or(0.0) > 0.0, "{name}");
    }
    for name in [
        "nexusd_wal_archive_failures_total",
        "nexusd_wal_duplicate_conflicts",
        "nexusd_wal_archive_gap",
    ] {
        assert_eq!(scrape.value(name, &[]), Some(0.0), "{name}");
    }
    assert!(scrape.value("nexusd_pitr_window_seconds", &[]).is_some());
    let status: serde_json::Value =
        serde_json::from_slice(&nexusd_out(&["status", "--json"], &vars).stdout).unwrap();
    assert_eq!(status["archiving"]["configured"], true, "{status}");
    assert!(
        status["archiving"]["pitr"]["window_start"].is_string(),
        "{status}"
    );

    // A segment goes missing between the base backup's start and the newest one.
    let lost = base_start_and_later(store_dir, base);
    archive_now(&mut conn, store_dir).await;
    std::fs::remove_file(store_dir.join("wal").join(format!("{lost}.gz"))).unwrap();
    let listed = nexusd_ok(&["backup", "list"], &vars);
    assert!(
        listed.contains(&format!(
            "error: the WAL archive has a gap: {lost} is missing"
        )),
        "{listed}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&nexusd_ok(&["backup", "list", "--json"], &vars)).unwrap();
    assert_eq!(
        listed["wal"]["first_missing_segment"],
        lost.as_str(),
        "{listed}"
    );
    let out = nexusd_out(&["backup", "verify", "--physical"], &vars);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{lost} is missing")),
        "{}",
        text(&out)
    );
    assert!(scratch_left(state).is_empty(), "{:?}", scratch_left(state));
    let pitr = pitr_health(&nexusd, |p| p["gap"].is_string()).await;
    assert_eq!(pitr["first_missing_segment"], lost.as_str(), "{pitr}");
    let scrape = support::scrape::fetch(&nexusd.metrics, None).await;
    assert_eq!(scrape.value("nexusd_wal_archive_gap", &[]), Some(1.0));
    conn.close().await.ok();
    drop(nexusd);
}

/// The first archived segment after base backup `base`'s start segment (there is one: rows
/// were archived since).
fn base_start_and_later(store_dir: &Path, base: &str) -> String {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store_dir.join("base").join(format!("{base}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let start = manifest["start_wal_file"].as_str().unwrap().to_string();
    let mut names: Vec<String> = std::fs::read_dir(store_dir.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter_map(|n| n.strip_suffix(".gz").map(str::to_string))
        .filter(|n| n.len() == 24 && *n > start)
        .collect();
    names.sort();
    names.first().cloned().unwrap()
}

/// Switches WAL and waits until PostgreSQL counts the finished file archived (stored or, at
/// the ceiling, dropped): `pg_stat_archiver.last_archived_wal` reaches it.
async fn switch_and_wait(conn: &mut PgConnection) -> String {
    sqlx::query("INSERT INTO pitr_rows SELECT max(id) + 1, 'w' FROM pitr_rows")
        .execute(&mut *conn)
        .await
        .unwrap();
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let limit = Instant::now() + Duration::from_secs(90);
    loop {
        let last: Option<String> =
            sqlx::query_scalar("SELECT last_archived_wal FROM pg_stat_archiver")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        if last.as_deref() >= Some(segment.as_str()) {
            return segment;
        }
        assert!(
            Instant::now() < limit,
            "{segment} never archived (last {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn past_the_pg_wal_ceiling_an_unreachable_store_drops_wal_loudly_and_a_base_backup_starts_anew()
 {
    let gcs = shared_gcs();
    let direct = Where::gcs(gcs).await;
    let bucket = direct.bucket().to_string();
    let proxy = FaultProxy::start("127.0.9.47", &gcs.ip);
    let store = direct.through(proxy.endpoint());
    let owned = store.vars();
    let mut extra: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    extra.extend([
        ("NEXUSD_WAL_MAX_PENDING", "1MB"),
        ("NEXUSD_WAL_PUSH_TIMEOUT", "5"),
        ("NEXUSD_BACKUP_RETRY_SECONDS", "1"),
        ("NEXUSD_BACKUP_STATUS_REFRESH", "1"),
    ]);
    let (site, nexusd, mut conn) = Site::start("nexusd-pitr-ceiling-", &extra).await;
    let vars = site.vars();
    sqlx::query("INSERT INTO pitr_rows VALUES (1, 'first')")
        .execute(&mut conn)
        .await
        .unwrap();
    nexusd_ok(&["backup", "run", "--physical"], &vars);
    switch_and_wait(&mut conn).await;

    // The store unreachable: PostgreSQL is told the files are archived, and keeps running.
    proxy.add(Rule::always("", "", Fault::Status(503)));
    let dropped = switch_and_wait(&mut conn).await;
    switch_and_wait(&mut conn).await;
    let note = site.state.join("pg/nexusd_wal_dropped");
    assert!(std::fs::read_to_string(&note).unwrap().contains(&dropped));
    // Loud while it happens, before the store can hold a record of it.
    let pitr = pitr_health(&nexusd, |p| {
        p["dropped_segments"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    assert!(pitr["gap"].as_str().unwrap().contains("DROPPED"), "{pitr}");
    assert_eq!(pitr["first_missing_segment"], dropped.as_str(), "{pitr}");

    // The store back: the next push records the drop in the archive.
    proxy.clear();
    switch_and_wait(&mut conn).await;
    assert!(!note.exists(), "the note is removed once recorded");
    let objects = gcs.objects(&bucket).await;
    assert!(
        objects
            .iter()
            .any(|o| o.starts_with(&format!("nexusd/wal/dropped-{dropped}-"))),
        "{objects:?}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&nexusd_ok(&["backup", "list", "--json"], &vars)).unwrap();
    assert_eq!(
        listed["wal"]["first_missing_segment"],
        dropped.as_str(),
        "{listed}"
    );
    assert!(
        listed["wal"]["dropped_segments"].as_u64().unwrap() >= 2,
        "{listed}"
    );
    assert!(
        listed["wal"]["gap"]
            .as_str()
            .unwrap()
            .contains("NEXUSD_WAL_MAX_PENDING"),
        "{listed}"
    );
    let pitr = pitr_health(&nexusd, |p| p["gap"].is_string()).await;
    assert!(pitr["dropped_segments"].as_u64().unwrap() >= 2, "{pitr}");
    let before = pitr["window_base"].clone();

    // A new base backup starts a new recoverable window after the gap.
    let taken = nexusd_ok(&["backup", "run", "--physical"], &vars);
    let base = taken
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let pitr = pitr_health(&nexusd, |p| p["window_base"] == base.as_str()).await;
    assert_ne!(before, pitr["window_base"], "{pitr}");
    assert!(
        pitr["window_start"].as_str() <= pitr["window_end"].as_str(),
        "{pitr}"
    );
    let scrape = support::scrape::fetch(&nexusd.metrics, None).await;
    assert!(scrape.value("nexusd_wal_dropped_segments", &[]).unwrap() >= 2.0);
    conn.close().await.ok();
    drop(nexusd);
}

#[tokio::test]
async fn after_two_restores_the_gap_check_follows_the_timelines_and_verify_adds_none() {
    let (site, mut nexusd, mut conn) = Site::start("nexusd-pitr-timelines-", &[]).await;
    let vars = site.vars();
    let store_dir = &site.store_dir;
    nexusd_ok(&["backup", "run", "--physical"], &vars);
    write_rows(&mut conn, 1, "a-").await;
    archive_now(&mut conn, store_dir).await;
    conn.close().await.ok();
    nexusd.terminate(Duration::from_secs(30));

    // Timeline 2, then 3: each restore's cluster archives its history file and segments.
    for timeline in ["timeline 2", "timeline 3"] {
        let said = nexusd_ok(&["restore", "--target-time", "latest"], &vars);
        assert!(said.contains(timeline), "{said}");
        let mut nexusd = Nexusd::serve(&vars);
        nexusd.wait_health(200, Duration::from_secs(120)).await;
        let mut conn = PgConnection::connect_with(&embedded_options(&site.state))
            .await
            .unwrap();
        write_rows(
            &mut conn,
            if timeline.ends_with('2') { 10 } else { 20 },
            "b-",
        )
        .await;
        archive_now(&mut conn, store_dir).await;
        conn.close().await.ok();
        nexusd.terminate(Duration::from_secs(30));
    }
    let histories = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("wal"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".history.gz"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        histories(store_dir),
        ["00000002.history.gz", "00000003.history.gz"]
    );

    // No false gap across the switches, and the newest segment is on timeline 3.
    let listed: serde_json::Value =
        serde_json::from_str(&nexusd_ok(&["backup", "list", "--json"], &vars)).unwrap();
    assert_eq!(listed["wal"]["gap"], serde_json::Value::Null, "{listed}");
    assert!(
        listed["wal"]["newest_segment"]
            .as_str()
            .unwrap()
            .starts_with("00000003"),
        "{listed}"
    );

    // Verify replays timelines 1 → 2 → 3 from the base backup, and its promoted scratch cluster
    // leaves no timeline 4 in the archive.
    let out = nexusd_out(&["backup", "verify", "--physical", "--json"], &vars);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        histories(store_dir),
        ["00000002.history.gz", "00000003.history.gz"]
    );
    assert!(scratch_left(&site.state).is_empty());
}

/// With `NEXUSD_BACKUPS=off` the embedded cluster archives nothing, whoever starts it: the
/// settings a one-off command (`nexusd bootstrap`) writes for it carry no archiving, under
/// `serve` `archive_mode` is off, and a finished WAL segment lands nowhere in the store. Before,
/// the one-off commands turned archiving on regardless (`nexusd.conf` had `archive_mode = on`).
#[tokio::test]
async fn with_backups_off_the_embedded_cluster_archives_no_wal() {
    let root = temp_root("nexusd-pitr-off-");
    let state = root.join("state");
    spawn_guardian(&state.join("pg"), &root);
    let state_str = state.to_str().unwrap().to_string();
    let vars = [
        ("NEXUSD_STATE_DIR", state_str.as_str()),
        ("NEXUSD_BACKUPS", "off"),
        ("NEXUSD_EMBEDDING_PROVIDER", "none"),
    ];
    // The default local store: where archiving would put WAL.
    let wal_dir = state.join("backups").join("wal");
    let archived = || {
        std::fs::read_dir(&wal_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };

    nexusd_ok(&["bootstrap"], &vars);
    let conf = std::fs::read_to_string(state.join("pg").join("nexusd.conf"))
        .expect("the cluster's nexusd.conf");
    assert!(
        !conf.contains("archive_mode") && !conf.contains("archive_command"),
        "{conf}"
    );

    let mut nexusd = Nexusd::serve(&vars);
    nexusd.wait_health(200, Duration::from_secs(120)).await;
    let mut conn = PgConnection::connect_with(&embedded_options(&state))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("SELECT current_setting('archive_mode')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "off");
    // PostgreSQL shows "(disabled)" for a command it would not run.
    let command: String = sqlx::query_scalar("SELECT current_setting('archive_command')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(command.is_empty() || command == "(disabled)", "{command}");
    sqlx::query("CREATE TABLE off_rows AS SELECT g FROM generate_series(1, 1000) g")
        .execute(&mut conn)
        .await
        .unwrap();
    let segment = switch_wal(&mut conn).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (count, failed): (i64, i64) =
        sqlx::query_as("SELECT archived_count, failed_count FROM pg_stat_archiver")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((count, failed), (0, 0), "{segment}");
    assert_eq!(archived(), Vec::<String>::new(), "{}", nexusd.log_text());
    conn.close().await.ok();
    let (status, _) = nexusd.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", nexusd.log_text());
    assert_eq!(archived(), Vec::<String>::new());
}
