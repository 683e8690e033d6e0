//! Backups when things go wrong the way they do in production: a store that cannot be reached,
//! answers 503 to every chunk or never answers (a fault-injecting proxy in front of the GCS
//! emulator), a listing that fails after a good backup, a verification killed mid-way, a backup
//! someone altered in the bucket, a corrupted object restored with `--force`, and a shutdown
//! while the store hangs. Nothing lost, nothing half-done, nothing hung.

mod support;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nexusd::backup::{MANIFEST_SUFFIX, Manifest};
use sha2::Digest;
use sqlx::Executor;
use support::backups::{Where, backup_name, nexusd, seed, text};
use support::fault_proxy::{Fault, FaultProxy, Rule};
use support::{
    Nexusd, TestDb, free_port, nexusd_command, sessions_settle, shared_db, shared_gcs, table_digest,
};

/// About 40 MB of text (half that compressed): pg_dump is still producing when a store fails
/// on the first chunks.
async fn big_seed(db: &TestDb) {
    seed(db).await;
    db.pool()
        .await
        .execute(
            "INSERT INTO lessons_learned (repo_id, title, description, category, impact)
             SELECT 1, 'bulk ' || g, repeat(md5(g::text) || md5((g * 7)::text), 16), 'reliability', 'info'
               FROM generate_series(1, 40000) g",
        )
        .await
        .expect("seeding 40 MB");
}

/// A bucket on the shared emulator, reached through a fault proxy of its own.
async fn proxied_bucket(proxy_ip: &str) -> (FaultProxy, Where, String) {
    let gcs = shared_gcs();
    let direct = Where::gcs(gcs).await;
    let bucket = direct.bucket().to_string();
    let proxy = FaultProxy::start(proxy_ip, &gcs.ip);
    let store = direct.through(proxy.endpoint());
    (proxy, store, bucket)
}

/// `nexusd` with `args` as a child, so a test can bound how long it runs.
fn spawn(db: &TestDb, store: &Where, args: &[&str], extra: &[(&str, &str)]) -> Child {
    let url = db.url();
    let owned = store.vars();
    let mut vars: Vec<(&str, &str)> = vec![("DATABASE_URL", url.as_str())];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vars.extend_from_slice(extra);
    nexusd_command(args, &vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nexusd")
}

/// Waits for `child` at most `limit`; a child still running then is killed and the test fails.
fn finish_within(mut child: Child, limit: Duration) -> (bool, String, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for nexusd") {
            let mut out = String::new();
            for stream in [
                child.stdout.take().map(|s| Box::new(s) as Box<dyn Read>),
                child.stderr.take().map(|s| Box::new(s) as Box<dyn Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut s = stream;
                s.read_to_string(&mut out).ok();
            }
            return (status.success(), out, started.elapsed());
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("nexusd was still running after {limit:?}: it hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn run_bounded(
    db: &TestDb,
    store: &Where,
    args: &[&str],
    extra: &[(&str, &str)],
    limit: Duration,
) -> (bool, String, Duration) {
    let child = spawn(db, store, args, extra);
    tokio::task::spawn_blocking(move || finish_within(child, limit))
        .await
        .expect("the waiting thread")
}

/// Complete backups (with a manifest) in the bucket, read straight from the emulator.
async fn manifests(bucket: &str) -> Vec<String> {
    shared_gcs()
        .objects(bucket)
        .await
        .into_iter()
        .filter(|n| n.ends_with(MANIFEST_SUFFIX))
        .collect()
}

#[tokio::test]
async fn an_unreachable_store_fails_the_backup_at_once() {
    let db = shared_db().await;
    big_seed(&db).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let store = Where::Gcs {
        endpoint: closed,
        bucket: "nowhere".into(),
    };
    let (ok, out, took) = run_bounded(
        &db,
        &store,
        &["backup", "run"],
        &[],
        Duration::from_secs(90),
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("backup failed"), "{out}");
    assert!(took < Duration::from_secs(45), "took {took:?}:\n{out}");
}

#[tokio::test]
async fn a_store_failing_every_chunk_stops_the_backup_and_counts_nothing() {
    let db = shared_db().await;
    big_seed(&db).await;
    let (proxy, store, bucket) = proxied_bucket("127.0.9.1").await;
    let first = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(manifests(&bucket).await.len(), 1);
    let objects_before = shared_gcs().objects(&bucket).await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    proxy.add(Rule::always("PUT", "/upload/", Fault::Status(503)));
    proxy.add(Rule::always(
        "POST",
        "uploadType=multipart",
        Fault::Status(503),
    ));
    let (ok, out, took) = run_bounded(
        &db,
        &store,
        &["backup", "run"],
        &[],
        Duration::from_secs(90),
    )
    .await;
    assert!(!ok, "{out}");
    assert!(took < Duration::from_secs(45), "took {took:?}:\n{out}");
    assert!(proxy.seen("PUT /upload/") > 0, "no chunk was ever sent");
    proxy.clear();
    assert_eq!(
        shared_gcs().objects(&bucket).await,
        objects_before,
        "the failed backup left objects behind"
    );
    let list = nexusd(&db, &store, &["backup", "list"], &[]);
    assert!(
        text(&list).contains("1 complete backups"),
        "{}",
        text(&list)
    );
}

#[tokio::test]
async fn a_store_claiming_success_for_a_short_object_is_never_a_good_backup() {
    let db = shared_db().await;
    seed(&db).await;
    let (proxy, store, bucket) = proxied_bucket("127.0.9.5").await;
    // The first chunk is answered as if the object were complete, with nothing in it.
    proxy.add(Rule::once("PUT", "/upload/", Fault::FakeSuccess));
    proxy.add(Rule::once(
        "POST",
        "uploadType=multipart",
        Fault::FakeSuccess,
    ));
    let (ok, out, _) = run_bounded(
        &db,
        &store,
        &["backup", "run"],
        &[],
        Duration::from_secs(90),
    )
    .await;
    proxy.clear();
    assert!(!ok, "{out}");
    assert!(
        manifests(&bucket).await.is_empty(),
        "a manifest was written:\n{out}"
    );
    let list = nexusd(&db, &store, &["backup", "list"], &[]);
    assert!(
        !text(&list).contains("1 complete"),
        "a short object counts as a backup:\n{}",
        text(&list)
    );
}

#[tokio::test]
async fn a_store_that_never_answers_fails_the_backup_within_the_request_deadline() {
    let db = shared_db().await;
    big_seed(&db).await;
    let (proxy, store, bucket) = proxied_bucket("127.0.9.2").await;
    proxy.add(Rule::always("PUT", "/upload/", Fault::Hang));
    proxy.add(Rule::always("POST", "/upload/", Fault::Hang));
    let (ok, out, took) = run_bounded(
        &db,
        &store,
        &["backup", "run"],
        &[("NEXUSD_BACKUP_REQUEST_TIMEOUT", "3")],
        Duration::from_secs(90),
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("no answer"), "{out}");
    assert!(took < Duration::from_secs(45), "took {took:?}:\n{out}");
    assert!(manifests(&bucket).await.is_empty());

    // A listing that never answers fails `backup list` as quickly.
    proxy.clear();
    proxy.add(Rule::always("GET", "/storage/v1/b/", Fault::Hang));
    let (ok, out, took) = run_bounded(
        &db,
        &store,
        &["backup", "list"],
        &[("NEXUSD_BACKUP_REQUEST_TIMEOUT", "2")],
        Duration::from_secs(60),
    )
    .await;
    assert!(!ok, "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{out}");
}

#[tokio::test]
async fn a_failed_listing_after_a_good_backup_keeps_it_a_success() {
    let db = shared_db().await;
    seed(&db).await;
    let (proxy, store, bucket) = proxied_bucket("127.0.9.3").await;
    // Once: retried, and retention runs.
    proxy.add(Rule::once("GET", "/o?", Fault::Status(503)));
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("retention:"), "{}", text(&run));
    assert!(
        proxy.seen("GET /storage/v1/b/") >= 2,
        "the listing was not retried"
    );

    // Always: the backup still stands, and retention's failure is reported apart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    proxy.clear();
    proxy.add(Rule::always("GET", "/o?", Fault::Status(503)));
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("retention failed"), "{}", text(&run));
    let name = backup_name(&run);
    assert!(
        manifests(&bucket)
            .await
            .iter()
            .any(|m| m.ends_with(&format!("{name}{MANIFEST_SUFFIX}"))),
        "the second backup has no manifest"
    );
}

/// Scratch databases of verifications on the test cluster.
async fn scratch_databases(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'nexusd\\_verify\\_%' ORDER BY 1",
    )
    .fetch_all(&db.pool().await)
    .await
    .expect("listing databases")
}

#[tokio::test]
async fn a_verification_killed_mid_way_leaves_no_scratch_database_behind() {
    let db = shared_db().await;
    big_seed(&db).await;
    let store = Where::local();
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let before = scratch_databases(&db).await;
    let state = support::temp_root("nexusd-verify-state-");
    let state_var = state.display().to_string();
    let state_vars = [("NEXUSD_STATE_DIR", state_var.as_str())];

    let mut verify = spawn(&db, &store, &["backup", "verify"], &state_vars);
    let deadline = Instant::now() + Duration::from_secs(60);
    let scratch = loop {
        let now: Vec<String> = scratch_databases(&db).await;
        if let Some(new) = now.into_iter().find(|d| !before.contains(d)) {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "the verification never created its scratch database"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    verify.kill().expect("kill -9");
    verify.wait().ok();
    assert!(scratch_databases(&db).await.contains(&scratch));

    let spools = || -> Vec<String> {
        std::fs::read_dir(state.join("spool"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(spools().len(), 1, "the killed verification's download");

    let again = nexusd(&db, &store, &["backup", "verify"], &state_vars);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        !scratch_databases(&db).await.contains(&scratch),
        "the killed verification's scratch database is still there"
    );
    assert!(spools().is_empty(), "downloads left behind: {:?}", spools());
}

/// Rewrites backup `name` in a local store as someone with write access to the store would:
/// `edit` changes the SQL, and the manifest is rewritten to match.
fn alter_backup(dir: &std::path::Path, name: &str, edit: impl Fn(&str) -> String) {
    let path = dir.join(name);
    let mut sql = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut sql)
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(edit(&sql).as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let manifest_path = dir.join(format!("{name}{MANIFEST_SUFFIX}"));
    let mut manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest.sha256 = format!("{:x}", sha2::Sha256::digest(&bytes));
    manifest.crc32c = crc32c::crc32c(&bytes);
    manifest.compressed_bytes = bytes.len() as u64;
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

#[tokio::test]
async fn an_altered_backup_never_runs_a_command() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);
    let Where::Local(dir) = &store else {
        unreachable!()
    };
    let marker = dir.with_file_name("pwned");
    let shell = format!("\\! touch {}\n", marker.display());
    // Between statements, and hidden after a statement on the same line.
    alter_backup(dir, &name, |sql| {
        sql.replacen(
            "SET statement_timeout = 0;\n",
            &format!("SET statement_timeout = 0;\n{shell}"),
            1,
        )
        .replacen(
            "SET lock_timeout = 0;\n",
            &format!("SET lock_timeout = 0; {shell}"),
            1,
        )
    });

    let verify = nexusd(&db, &store, &["backup", "verify", &name], &[]);
    assert!(!verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("altered"), "{}", text(&verify));
    assert!(
        !marker.exists(),
        "the verification ran the dump's shell command"
    );

    let target = format!("{}_altered", db.name);
    let restore = nexusd(&db, &store, &["restore", &name, "--into", &target], &[]);
    assert!(!restore.status.success(), "{}", text(&restore));
    assert!(
        text(&restore).contains("was not touched"),
        "{}",
        text(&restore)
    );
    assert!(!marker.exists(), "the restore ran the dump's shell command");
    let created: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&target)
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    assert!(
        !created,
        "the restore created its target before checking the dump"
    );
}

#[tokio::test]
async fn restore_force_checks_the_object_before_touching_the_target() {
    let db = shared_db().await;
    let pool = seed(&db).await;
    let store = Where::local();
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);
    let Where::Local(dir) = &store else {
        unreachable!()
    };
    let path = dir.join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let before = table_digest(&pool).await;
    let restore = nexusd(
        &db,
        &store,
        &["restore", &name, "--into", &db.name, "--force"],
        &[],
    );
    assert!(!restore.status.success(), "{}", text(&restore));
    assert!(
        text(&restore).contains("was not touched"),
        "{}",
        text(&restore)
    );
    assert_eq!(
        table_digest(&pool).await,
        before,
        "the corrupt backup's restore changed the target"
    );
}

#[tokio::test]
async fn shutdown_while_the_store_hangs_takes_seconds() {
    let db = shared_db().await;
    big_seed(&db).await;
    let (proxy, store, _bucket) = proxied_bucket("127.0.9.4").await;
    proxy.add(Rule::always("PUT", "/upload/", Fault::Hang));
    let url = db.url();
    let owned = store.vars();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", url.as_str()),
        ("NEXUSD_BACKUP_SCHEDULE", "*/2 * * * * *"),
        ("NEXUSD_BACKUP_REQUEST_TIMEOUT", "600"),
    ];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut serve = Nexusd::serve(&vars);
    serve.wait_health(200, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.seen("PUT /upload/") == 0 {
        assert!(
            Instant::now() < deadline,
            "no upload began:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, took) = serve.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", serve.log_text());
    assert!(took <= Duration::from_secs(10), "shutdown took {took:?}");
    // pg_dump went with it: no session of nexusd's (pg_dump's included) is left on the server.
    let pool = db.pool().await;
    let sessions = sessions_settle(&pool, "nexusd%", 0, Duration::from_secs(5)).await;
    assert_eq!(sessions, 0, "{sessions} sessions of nexusd outlived it");
}
