//! Backups against a real database and a real GCS emulator (fake-gcs-server), and the same
//! against the local-directory store: the round trip (seed data with vectors → backup → the
//! documented `gunzip | psql` restore and `nexusd restore` → every table identical), pg_dump
//! failing mid-stream, the emulator dying mid-upload, nexusd killed mid-backup, retention on a
//! store of many ages, verification catching corruption, the backup lock, and the scheduler in
//! `nexusd serve`.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nexusd::backup::{Compression, MANIFEST_SUFFIX, Manifest};
use serde_json::json;
use support::backups::{Where, backup_name, nexusd, seed, text};
use support::{
    FakeGcs, Nexusd, TestDb, nexusd_command, shared_db, shared_gcs, table_digest, temp_root,
};

async fn round_trip(store: Where) {
    let gcs = shared_gcs();
    let db = shared_db().await;
    let pool = seed(&db).await;
    let source = table_digest(&pool).await;
    assert!(
        source.values().any(|s| !s.starts_with("0:")),
        "the seed wrote nothing"
    );

    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);
    let objects = store.objects(gcs).await;
    assert_eq!(objects, [name.clone(), format!("{name}{MANIFEST_SUFFIX}")]);

    // The manifest describes the object exactly.
    let object = store.read(gcs, &name).await;
    let manifest: Manifest =
        serde_json::from_slice(&store.read(gcs, &format!("{name}{MANIFEST_SUFFIX}")).await)
            .unwrap();
    assert_eq!(manifest.compressed_bytes, object.len() as u64);
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&object)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(manifest.sha256, sha);
    assert_eq!(manifest.crc32c, crc32c::crc32c(&object));
    assert_eq!(manifest.tables["public.patterns"], 150);
    assert_eq!(manifest.tables["public.lessons_learned"], 40);
    assert!(manifest.server_version.starts_with("15.") && manifest.pg_dump_version.contains("15."));
    assert_eq!(
        (
            manifest.format.as_str(),
            manifest.compression.codec.as_str()
        ),
        ("plain", "gzip")
    );

    // The documented restore: gunzip < x.sql.gz | psql, into an empty database.
    let documented = shared_db().await;
    let tools = nexusd::db::ClientTools::locate(None, 15).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(&name);
    std::fs::write(&file, &object).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gunzip < '{}' | '{}' -q -X -v ON_ERROR_STOP=1 '{}' > /dev/null",
            file.display(),
            tools.program("psql").display(),
            documented.url()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "gunzip | psql failed");
    assert_eq!(
        table_digest(&documented.pool().await).await,
        source,
        "gunzip | psql restored different data"
    );

    // nexusd restore into a new database.
    let target = format!("{}_restored", db.name);
    let restore = nexusd(&db, &store, &["restore", &name, "--into", &target], &[]);
    assert!(restore.status.success(), "{}", text(&restore));
    assert!(
        text(&restore).contains("row count match"),
        "{}",
        text(&restore)
    );
    let restored = TestDb {
        name: target,
        port: db.port,
    };
    assert_eq!(
        table_digest(&restored.pool().await).await,
        source,
        "nexusd restore restored different data"
    );

    // A non-empty database is refused unless --force.
    let again = nexusd(
        &db,
        &store,
        &["restore", &name, "--into", &restored.name],
        &[],
    );
    assert!(!again.status.success());
    assert!(text(&again).contains("is not empty"), "{}", text(&again));
    // What --force replaces: a changed database comes back as the backup.
    sqlx::raw_sql(
        "DELETE FROM lessons_learned; INSERT INTO repositories (name) VALUES ('changed/after')",
    )
    .execute(&restored.pool().await)
    .await
    .unwrap();
    assert_ne!(table_digest(&restored.pool().await).await, source);
    let forced = nexusd(
        &db,
        &store,
        &[
            "restore",
            &name,
            "--into",
            &restored.name,
            "--force",
            "--ignore-sessions",
        ],
        &[],
    );
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(table_digest(&restored.pool().await).await, source);

    // Verification restores into a scratch database and records the result.
    let verify = nexusd(&db, &store, &["backup", "verify"], &[]);
    assert!(verify.status.success(), "{}", text(&verify));
    let list = nexusd(&db, &store, &["backup", "list"], &[]);
    let listing = text(&list);
    assert!(
        listing.contains(&name) && listing.contains("yes ("),
        "{listing}"
    );
    let verification: nexusd::backup::Verification =
        serde_json::from_slice(&store.read(gcs, &format!("{name}.verify.json")).await).unwrap();
    assert!(verification.ok && verification.rows_ok && verification.sha256_ok);
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&verification.scratch_database)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        !left,
        "the scratch database {} was left behind",
        verification.scratch_database
    );
}

#[tokio::test]
async fn round_trip_through_the_gcs_emulator() {
    round_trip(Where::gcs(shared_gcs()).await).await;
}

#[tokio::test]
async fn round_trip_through_a_local_directory() {
    let store = Where::local();
    round_trip(store).await;
}

/// A bin directory whose pg_dump misbehaves as `NEXUSD_TEST_PG_DUMP` says; psql and pg_restore
/// are the real ones.
fn faulty_bindir() -> PathBuf {
    let tools = nexusd::db::ClientTools::locate(None, 15).unwrap();
    let dir = temp_root("nexusd-bin-");
    for program in ["psql", "pg_restore"] {
        std::os::unix::fs::symlink(tools.program(program), dir.join(program)).unwrap();
    }
    let script = format!(
        r#"#!/bin/sh
real='{real}'
case "$1" in --version) exec "$real" --version ;; esac
case "$NEXUSD_TEST_PG_DUMP" in
  fail) "$real" "$@" | head -c 30000; echo "pg_dump: error: simulated failure" >&2; exit 1 ;;
  truncate) "$real" "$@" | head -c 30000; exit 0 ;;
  killed)
    # pg_dump blocks on a full pipe behind a slow reader, and is killed while still dumping.
    fifo=$(mktemp -u); mkfifo "$fifo"
    "$real" "$@" > "$fifo" & pid=$!
    (head -c 100000; sleep 1; cat > /dev/null) < "$fifo" & reader=$!
    sleep 0.5; kill -9 $pid; wait $pid; status=$?; wait $reader; rm -f "$fifo"; exit $status ;;
  slow) tmp=$(mktemp); "$real" "$@" > "$tmp"; head -c 100000 "$tmp"; sleep "${{NEXUSD_TEST_SLEEP:-20}}"; tail -c +100001 "$tmp"; rm -f "$tmp" ;;
  *) exec "$real" "$@" ;;
esac
"#,
        real = tools.program("pg_dump").display()
    );
    let path = dir.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

async fn pg_dump_failures_store_nothing(store: Where) {
    let gcs = shared_gcs();
    let db = shared_db().await;
    seed(&db).await;
    let bindir = faulty_bindir();
    let bin = bindir.display().to_string();
    for (mode, reason) in [
        ("fail", "pg_dump failed"),
        ("truncate", "without the completion trailer"),
        ("killed", "pg_dump failed"),
    ] {
        let run = nexusd(
            &db,
            &store,
            &["backup", "run"],
            &[("NEXUSD_PG_BINDIR", &bin), ("NEXUSD_TEST_PG_DUMP", mode)],
        );
        assert!(!run.status.success(), "{mode}: {}", text(&run));
        assert!(text(&run).contains(reason), "{mode}: {}", text(&run));
        assert_eq!(
            store.objects(gcs).await,
            Vec::<String>::new(),
            "{mode} left objects behind"
        );
    }
    // The next healthy run works.
    let run = nexusd(
        &db,
        &store,
        &["backup", "run"],
        &[("NEXUSD_PG_BINDIR", &bin)],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(store.objects(gcs).await.len(), 2);
}

#[tokio::test]
async fn failed_dumps_store_nothing_in_gcs() {
    pg_dump_failures_store_nothing(Where::gcs(shared_gcs()).await).await;
}

#[tokio::test]
async fn failed_dumps_store_nothing_locally() {
    pg_dump_failures_store_nothing(Where::local()).await;
}

async fn killed_mid_backup(store: Where) {
    let db = shared_db().await;
    seed(&db).await;
    let bin = faulty_bindir().display().to_string();
    let url = db.url();
    let owned = store.vars();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", url.as_str()),
        ("NEXUSD_PG_BINDIR", bin.as_str()),
        ("NEXUSD_TEST_PG_DUMP", "slow"),
        ("NEXUSD_TEST_SLEEP", "30"),
    ];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut child = nexusd_command(&["backup", "run"], &vars)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();

    // Whatever the crash left is not a backup…
    let list = nexusd(&db, &store, &["backup", "list"], &[]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        !text(&list).contains("complete backups in") || text(&list).contains("0 complete backups"),
        "{}",
        text(&list)
    );
    // …and the next run succeeds.
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let list = nexusd(&db, &store, &["backup", "list"], &[]);
    assert!(
        text(&list).contains("1 complete backups in"),
        "{}",
        text(&list)
    );

    if let Where::Local(dir) = &store {
        // A crash leaves a partial upload: never listed, pruned once it is a day old.
        let partials: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect();
        assert_eq!(
            partials.len(),
            1,
            "the killed upload should have left its partial file"
        );
        age(&partials[0], 2);
        let prune = nexusd(&db, &store, &["backup", "prune"], &[]);
        assert!(prune.status.success(), "{}", text(&prune));
        assert!(
            !partials[0].exists(),
            "the stale partial upload was not pruned"
        );
    }
}

/// Sets a file's modification time `days` days back.
fn age(path: &Path, days: i64) {
    let when = (Utc::now() - chrono::Duration::days(days))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let status = Command::new("touch")
        .args(["-d", &when])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn killing_nexusd_mid_backup_counts_nothing_locally() {
    killed_mid_backup(Where::local()).await;
}

#[tokio::test]
async fn killing_nexusd_mid_backup_counts_nothing_in_gcs() {
    killed_mid_backup(Where::gcs(shared_gcs()).await).await;
}

#[tokio::test]
async fn emulator_dying_mid_upload_fails_the_backup_and_keeps_the_old_ones() {
    let mut gcs = FakeGcs::start("127.0.0.3");
    let bucket = "dying";
    gcs.bucket(bucket).await;
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::Gcs {
        endpoint: gcs.endpoint(),
        bucket: bucket.into(),
    };
    let first = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(first.status.success(), "{}", text(&first));
    let before = gcs.objects(bucket).await;
    assert_eq!(before.len(), 2);

    let bin = faulty_bindir().display().to_string();
    let url = db.url();
    let owned = store.vars();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", url.as_str()),
        ("NEXUSD_PG_BINDIR", bin.as_str()),
        ("NEXUSD_TEST_PG_DUMP", "slow"),
        ("NEXUSD_TEST_SLEEP", "3"),
    ];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let child = nexusd_command(&["backup", "run"], &vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    gcs.stop();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the backup claimed success: {}",
        text(&out)
    );
    gcs.restart();
    assert_eq!(
        gcs.objects(bucket).await,
        before,
        "old backups must be untouched, nothing new counted"
    );
}

#[tokio::test]
async fn one_backup_at_a_time_across_instances() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let mut holder = sqlx::PgConnection::connect_with(&db.options())
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(nexusd::backup::BACKUP_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(!run.status.success());
    assert!(
        text(&run).contains("another backup is running"),
        "{}",
        text(&run)
    );
    use sqlx::Connection;
    holder.close().await.unwrap();
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
}

#[tokio::test]
async fn verification_catches_a_corrupted_backup() {
    let gcs = shared_gcs();
    let db = shared_db().await;
    seed(&db).await;
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

    let verify = nexusd(&db, &store, &["backup", "verify", &name], &[]);
    assert!(!verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains("SHA-256 differs"),
        "{}",
        text(&verify)
    );
    let list = nexusd(&db, &store, &["backup", "list"], &[]);
    assert!(text(&list).contains("FAILED ("), "{}", text(&list));
    assert!(
        store
            .objects(gcs)
            .await
            .contains(&format!("{name}.verify.json"))
    );
}

/// Writes a fake complete backup `days` old into the store.
async fn fake_backup(store: &Where, gcs: &FakeGcs, days: i64) -> String {
    let created = Utc::now() - chrono::Duration::days(days) - chrono::Duration::minutes(5);
    let name = format!("dev-nexus-{}.sql.gz", created.format("%Y%m%d_%H%M%S"));
    let manifest = Manifest {
        manifest_version: 1,
        name: name.clone(),
        format: "plain".into(),
        compression: Compression {
            codec: "gzip".into(),
            level: 3,
            block_bytes: 1,
        },
        raw_bytes: 1,
        compressed_bytes: 1,
        sha256: String::new(),
        crc32c: 0,
        database: "x".into(),
        server_version: "15.0".into(),
        pg_dump_version: "15.0".into(),
        started_at: created,
        finished_at: created,
        duration_seconds: 1.0,
        snapshot: String::new(),
        tables: BTreeMap::new(),
        store: "test".into(),
        generation: None,
        nexusd_version: "test".into(),
    };
    let manifest_name = format!("{name}{MANIFEST_SUFFIX}");
    let body = serde_json::to_vec(&manifest).unwrap();
    match store {
        Where::Local(dir) => {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(&name), b"x").unwrap();
            std::fs::write(dir.join(&manifest_name), body).unwrap();
            age(&dir.join(&name), days);
            age(&dir.join(&manifest_name), days);
        }
        Where::Gcs { bucket, .. } => {
            for (object, content) in [(&name, b"x".to_vec()), (&manifest_name, body)] {
                let full = format!("nexusd/{object}");
                gcs.upload(bucket, &full, content).await;
                gcs.set_created(bucket, &full, created);
            }
        }
    }
    name
}

async fn retention(store: Where) {
    let gcs = shared_gcs();
    let db = shared_db().await;
    let mut by_age = BTreeMap::new();
    for days in [1, 5, 29, 31, 40, 60, 90] {
        by_age.insert(days, fake_backup(&store, gcs, days).await);
    }
    let dry = nexusd(&db, &store, &["backup", "prune", "--dry-run"], &[]);
    assert!(dry.status.success(), "{}", text(&dry));
    for days in [31, 40, 60, 90] {
        assert!(
            text(&dry).contains(&format!("would delete {}", by_age[&days])),
            "{days}: {}",
            text(&dry)
        );
    }
    assert_eq!(
        store.objects(gcs).await.len(),
        14,
        "a dry run deleted something"
    );

    let prune = nexusd(&db, &store, &["backup", "prune"], &[]);
    assert!(prune.status.success(), "{}", text(&prune));
    let mut left = store.objects(gcs).await;
    left.retain(|n| !n.ends_with(MANIFEST_SUFFIX));
    let mut expected: Vec<String> = [1, 5, 29].iter().map(|d| by_age[d].clone()).collect();
    expected.sort();
    assert_eq!(left, expected);

    // All old: the newest three stay, whatever their age.
    let db2 = shared_db().await;
    let old = match &store {
        Where::Local(_) => Where::local(),
        Where::Gcs { .. } => Where::gcs(gcs).await,
    };
    let mut names = Vec::new();
    for days in [100, 110, 120, 130] {
        names.push(fake_backup(&old, gcs, days).await);
    }
    let prune = nexusd(&db2, &old, &["backup", "prune"], &[]);
    assert!(prune.status.success(), "{}", text(&prune));
    let mut left = old.objects(gcs).await;
    left.retain(|n| !n.ends_with(MANIFEST_SUFFIX));
    let mut expected = names[..3].to_vec();
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn retention_on_a_local_store_of_many_ages() {
    retention(Where::local()).await;
}

#[tokio::test]
async fn retention_on_a_gcs_store_of_many_ages() {
    retention(Where::gcs(shared_gcs()).await).await;
}

#[tokio::test]
async fn scheduled_backups_in_serve_report_success_and_failure() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let owned = store.vars();
    let url = db.url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", url.as_str()),
        ("NEXUSD_BACKUP_SCHEDULE", "*/2 * * * * *"),
        ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "*/3 * * * * *"),
    ];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut serve = Nexusd::serve(&vars);
    serve.wait_health(200, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let (_, health) = serve.get("/health").await.unwrap();
        if health["backup"]["last_success_at"].is_string() {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled backup:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(health["backup"]["last_outcome"], "success");
    assert!(health["backup"]["next_run_at"].is_string());
    let status = serve
        .ok("get_backup_status", json!({"include_backups": true}))
        .await;
    assert!(status["count"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        status["newest"]["name"]
            .as_str()
            .unwrap()
            .starts_with("dev-nexus-")
    );
    assert_eq!(status["newest"]["complete"], true);
    assert!(status["next_backup_at"].is_string());
    // The verification job runs on its own schedule and reports its outcome and next tick.
    let left = deadline.saturating_duration_since(Instant::now());
    let status = support::eventually(left, || async {
        let status = serve.ok("get_backup_status", json!({})).await;
        if status["last_verification"]["ok"] == true {
            Ok(status)
        } else {
            let log = serve.log_text();
            Err(format!("no scheduled verification: {status}\n{log}"))
        }
    })
    .await;
    assert!(status["next_verify_at"].is_string(), "{status}");
    assert!(status["last_verify_success_at"].is_string(), "{status}");
    let (code, _) = serve.terminate(Duration::from_secs(15));
    assert!(code.success());

    // A failing job is counted and the scheduler keeps going.
    let bin = faulty_bindir().display().to_string();
    let failing = Where::local();
    let owned = failing.vars();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", url.as_str()),
        ("NEXUSD_BACKUP_SCHEDULE", "*/2 * * * * *"),
        ("NEXUSD_PG_BINDIR", bin.as_str()),
        ("NEXUSD_TEST_PG_DUMP", "fail"),
        // The error's words show in /health to authenticated callers only.
        ("NEXUSD_API_TOKENS", "operator-token-0123456789abcdef"),
    ];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut serve = Nexusd::serve(&vars);
    serve.wait_health(200, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let (_, health) = serve
            .get_with("/health", Some("Bearer operator-token-0123456789abcdef"))
            .await
            .unwrap();
        if health["backup"]["failures_total"].as_u64().unwrap_or(0) >= 2 {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "failures not counted:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        health["status"], "healthy",
        "a failed backup does not make the API unhealthy"
    );
    assert_eq!(health["backup"]["last_outcome"], "failed");
    assert!(
        health["backup"]["last_error"]
            .as_str()
            .unwrap()
            .contains("pg_dump failed")
    );
    assert_eq!(failing.objects(shared_gcs()).await, Vec::<String>::new());
    serve.terminate(Duration::from_secs(15));
}

#[tokio::test]
async fn shutdown_aborts_a_backup_in_flight_and_leaves_nothing() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let bin = faulty_bindir().display().to_string();
    let owned = store.vars();
    let url = db.url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", url.as_str()),
        ("NEXUSD_BACKUP_SCHEDULE", "*/2 * * * * *"),
        ("NEXUSD_PG_BINDIR", bin.as_str()),
        ("NEXUSD_TEST_PG_DUMP", "slow"),
        ("NEXUSD_TEST_SLEEP", "60"),
    ];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut serve = Nexusd::serve(&vars);
    serve.wait_health(200, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = serve.get("/health").await.unwrap();
        if health["backup"]["running"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backup never started:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = serve.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", serve.log_text());
    assert!(took <= Duration::from_secs(10), "shutdown took {took:?}");
    assert!(
        serve.log_text().contains("aborting the backup in flight"),
        "{}",
        serve.log_text()
    );
    assert_eq!(
        store.objects(shared_gcs()).await,
        Vec::<String>::new(),
        "the aborted backup left files"
    );
}

/// `nexusd check`'s output, exit status first.
fn check(db_url: &str, store: Option<&Where>, extra: &[(&str, &str)]) -> (bool, String) {
    let owned = store.map(Where::vars).unwrap_or_default();
    let mut vars: Vec<(&str, &str)> = vec![("DATABASE_URL", db_url)];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vars.extend_from_slice(extra);
    let output = nexusd_command(&["check"], &vars).output().unwrap();
    (output.status.success(), text(&output))
}

/// `check` tries the store as a backup will (write, read back, delete: nothing is left), fails
/// when it cannot, names the credential sources when Google's fail, says whether the role may
/// create verify's scratch database, and names misspelt `NEXUSD_*` variables.
#[tokio::test]
async fn check_probes_the_store_the_rights_and_the_variable_names() {
    let gcs = shared_gcs();
    let db = shared_db().await;
    for store in [Where::gcs(gcs).await, Where::local()] {
        let (ok, out) = check(
            &db.url(),
            Some(&store),
            &[("NEXUSD_BACKUP_BUKET", "gs://typo")],
        );
        assert!(ok, "{out}");
        let probed = out.lines().any(|l| {
            l.starts_with("ok    backup store")
                && l.ends_with("a probe object was written, read back and deleted")
        });
        assert!(probed, "{out}");
        assert_eq!(store.objects(gcs).await, Vec::<String>::new(), "{out}");
        assert!(
            out.contains("warn  NEXUSD_BACKUP_BUKET is not a variable nexusd reads, so it is ignored (did you mean NEXUSD_BACKUP_BUCKET?)"),
            "{out}"
        );
        assert!(out.contains("ok    role postgres is a superuser"), "{out}");
    }

    // A store that cannot be written fails the check.
    let file = temp_root("nexusd-check-").join("a-file");
    std::fs::write(&file, b"").unwrap();
    let broken = Where::Local(file.join("backups"));
    let (ok, out) = check(&db.url(), Some(&broken), &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  backup store"), "{out}");

    // Google's credentials: every source tried is named.
    let (ok, out) = check(
        &db.url(),
        None,
        &[
            ("NEXUSD_BACKUP_BUCKET", "gs://no-such-bucket/nexusd"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
        ],
    );
    assert!(!ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL  backup store gs://no-such-bucket"))
        .unwrap_or_else(|| panic!("{out}"));
    for source in [
        "GOOGLE_APPLICATION_CREDENTIALS (set to /nonexistent/key.json)",
        "Application Default Credentials file",
        "metadata server",
    ] {
        assert!(line.contains(source), "{line}");
    }

    // A role without CREATEDB is warned about; with it, not.
    let role = db.app_role("").await;
    let app_url = db.url().replace("postgres@", &format!("{role}@"));
    let store = Where::local();
    let (_, out) = check(&app_url, Some(&store), &[]);
    assert!(
        out.contains(&format!(
            "warn  role {role} lacks CREATEDB: the weekly backup verify"
        )),
        "{out}"
    );
    let admin = db.pool().await;
    sqlx::query(&format!("ALTER ROLE {role} CREATEDB"))
        .execute(&admin)
        .await
        .unwrap();
    let (_, out) = check(&app_url, Some(&store), &[]);
    assert!(
        out.contains(&format!("ok    role {role} has CREATEDB")),
        "{out}"
    );
}
