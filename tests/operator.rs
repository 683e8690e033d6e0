//! What an operator meets after the happy path, against real databases, a real store and the
//! real binary: `serve` seeing a backup and a verification run by hand; `restore` refusing to
//! load under a running `serve` or other sessions, naming their PIDs; `nexusd status` and its
//! JSON; `backup list --json`; `latest`; two backups within one second; "no such backup" told
//! from "incomplete"; progress on a terminal and as plain lines.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use support::backups::{Where, backup_name, nexusd, seed, text};
use support::{Nexusd, nexusd_command, shared_db, spawn_guardian, table_digest, temp_root};

/// Polls `/health` until `done` holds for it, failing with the log after 30 s.
async fn health_until(serve: &Nexusd, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((_, health)) = serve.get("/health").await
            && done(&health)
        {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in /health within 30 s\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One sample of `/metrics`.
async fn metric(serve: &Nexusd, name: &str) -> Option<f64> {
    let text = support::http()
        .get(format!("{}/metrics", serve.metrics))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (30 s at most) until the metric `name` is a time (> 0). A scrape may come from
/// nexusd's one-second scrape cache, or take long on a busy machine: the promise is "within a
/// minute", so the test polls as /health's does.
async fn metric_until(serve: &Nexusd, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metric(serve, name).await.is_some_and(|t| t > 0.0) {
        assert!(
            Instant::now() < deadline,
            "{name}: still 0 or absent after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Variables for a `serve` whose own schedules are off and which looks at the store every second.
fn quiet_serve_vars<'a>(url: &'a str, store: &'a [(String, String)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = vec![
        ("DATABASE_URL", url),
        ("NEXUSD_BACKUP_SCHEDULE", "off"),
        ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "off"),
        ("NEXUSD_BACKUP_STATUS_REFRESH", "1"),
        ("REQUIRE_AUTH_FOR_WRITE", "false"),
        ("NEXUSD_EMBEDDING_BACKFILL", "false"),
    ];
    vars.extend(store.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vars
}

#[tokio::test]
async fn serve_shows_a_backup_and_a_verification_run_by_hand() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let (url, owned) = (db.url(), store.vars());
    let mut serve = Nexusd::serve(&quiet_serve_vars(&url, &owned));
    let health = serve.wait_health(200, Duration::from_secs(60)).await;
    assert!(health["backup"]["last_backup"].is_null(), "{health}");
    assert_eq!(
        metric(&serve, "nexusd_backup_last_success_timestamp_seconds").await,
        Some(0.0)
    );

    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);
    let health = health_until(&serve, "the manual backup", |h| {
        h["backup"]["last_backup"] == name.as_str()
    })
    .await;
    assert_eq!(health["backup"]["last_outcome"], "success");
    assert!(health["backup"]["last_success_at"].is_string());
    metric_until(&serve, "nexusd_backup_last_success_timestamp_seconds").await;
    let status = serve.ok("get_backup_status", json!({})).await;
    assert_eq!(status["newest"]["name"], name.as_str(), "{status}");
    assert_eq!(status["last_attempt"]["outcome"], "success", "{status}");

    let verify = nexusd(&db, &store, &["backup", "verify", "latest"], &[]);
    assert!(verify.status.success(), "{}", text(&verify));
    let health = health_until(&serve, "the manual verification", |h| {
        h["backup"]["last_verify_ok"] == true
    })
    .await;
    assert!(health["backup"]["last_verify_success_at"].is_string());
    metric_until(
        &serve,
        "nexusd_backup_last_verify_success_timestamp_seconds",
    )
    .await;
    serve.terminate(Duration::from_secs(15));
}

#[tokio::test]
async fn restore_refuses_the_embedded_database_while_serve_holds_the_state_directory() {
    let root = temp_root("nexusd-state-");
    let state = root.join("state");
    spawn_guardian(&state.join("pg"), &root);
    let state_str = state.to_str().unwrap().to_string();
    let vars = [
        ("NEXUSD_STATE_DIR", state_str.as_str()),
        ("NEXUSD_BACKUP_SCHEDULE", "off"),
        ("NEXUSD_EMBEDDING_BACKFILL", "false"),
    ];
    let mut serve = Nexusd::serve(&vars);
    serve.wait_health(200, Duration::from_secs(120)).await;
    let run = nexusd_command(&["backup", "run"], &vars).output().unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);

    for args in [
        vec!["restore", name.as_str(), "--force"],
        vec!["restore", "latest", "--into", "devnexus", "--force"],
    ] {
        let out = nexusd_command(&args, &vars).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} ran under serve: {}",
            text(&out)
        );
        assert!(
            stderr.contains(&format!("nexusd serve (pid {})", serve.child.id()))
                && stderr.contains("--into")
                && stderr.contains("stop it"),
            "{args:?}: {stderr}"
        );
    }
    serve.wait_health(200, Duration::from_secs(5)).await;
    // Another database of the cluster is fine while serve runs.
    let out = nexusd_command(&["restore", "latest", "--into", "copy"], &vars)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serve.terminate(Duration::from_secs(15));
}

#[tokio::test]
async fn restore_refuses_a_database_other_sessions_use_and_names_them() {
    let db = shared_db().await;
    let pool = seed(&db).await;
    let before = table_digest(&pool).await;
    pool.close().await;
    let store = Where::local();
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);
    // A pool of its own, closed: only the session below is connected during the refusal.
    let changer = db.pool().await;
    sqlx::raw_sql("DELETE FROM lessons_learned")
        .execute(&changer)
        .await
        .unwrap();
    changer.close().await;

    let mut session = sqlx::PgConnection::connect_with(&db.options())
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut session)
        .await
        .unwrap();
    let out = nexusd(&db, &store, &["restore", &name, "--force"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restored under a session: {}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!("database {} is in use", db.name))
            && stderr.contains(&format!("pid {pid}"))
            && stderr.contains("--into"),
        "{stderr}"
    );
    let lessons: i64 = sqlx::query_scalar("SELECT count(*) FROM lessons_learned")
        .fetch_one(&mut session)
        .await
        .unwrap();
    assert_eq!(lessons, 0, "the refused restore touched the database");
    // What the operator does: end what uses it (here also the test process's own idle pools).
    session.close().await.unwrap();
    let mut admin = sqlx::PgConnection::connect_with(&db.options().database("postgres"))
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db.name)
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();

    let out = nexusd(&db, &store, &["restore", &name, "--force"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(table_digest(&db.pool().await).await, before);
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

#[tokio::test]
async fn status_tells_what_runs_and_exits_by_it() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let api = format!("127.0.0.1:{}", support::free_port());
    let extra = [("NEXUSD_API_ADDR", api.as_str())];

    // No serve, no backup: two problems, exit 1, the rest reported.
    let out = nexusd(&db, &store, &["status"], &extra);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "serve       not running",
        "database    PostgreSQL 15.",
        "(current)",
        "no complete backup",
        "archiving   not configured",
        "status: 2 problem(s)",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in:\n{stdout}");
    }
    let report = json_out(&nexusd(&db, &store, &["status", "--json"], &extra));
    assert_eq!(report["ok"], false);
    assert_eq!(report["serve"]["running"], false);
    assert_eq!(report["database"]["reachable"], true);
    assert_eq!(report["migrations"]["state"], "current");
    assert_eq!(report["migrations"]["pending"], json!([]));
    assert_eq!(report["archiving"]["configured"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 2, "{report}");

    // serve running, a fresh backup: everything is fine.
    let (url, owned) = (db.url(), store.vars());
    let mut serve = Nexusd::serve(&quiet_serve_vars(&url, &owned));
    serve.wait_health(200, Duration::from_secs(60)).await;
    let api = serve.api.trim_start_matches("http://").to_string();
    let extra = [("NEXUSD_API_ADDR", api.as_str())];
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    let name = backup_name(&run);
    let out = nexusd(&db, &store, &["status", "--json"], &extra);
    let report = json_out(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["serve"]["running"], true);
    assert_eq!(report["serve"]["api_status"], "healthy");
    assert_eq!(report["backups"]["newest"]["name"], name.as_str());
    assert!(report["backups"]["newest_age_seconds"].as_i64().unwrap() < 600);
    let out = nexusd(&db, &store, &["status"], &extra);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status: ok"));
    serve.terminate(Duration::from_secs(15));
}

#[tokio::test]
async fn names_latest_json_and_the_two_kinds_of_missing_backup() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let Where::Local(dir) = &store else {
        unreachable!()
    };
    // Objects without manifests under the names of the next two minutes: the backup's own
    // name is taken whenever it starts, as when two start within one second.
    std::fs::create_dir_all(dir).unwrap();
    let now = chrono::Utc::now();
    for s in 0..120 {
        let at = now + chrono::Duration::seconds(s);
        let name = format!("dev-nexus-{}.sql.gz", at.format("%Y%m%d_%H%M%S"));
        std::fs::write(dir.join(name), b"x").unwrap();
    }
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);
    assert!(name.ends_with("-2.sql.gz"), "{name}");

    let listed = json_out(&nexusd(&db, &store, &["backup", "list", "--json"], &[]));
    assert_eq!(listed["store"], dir.display().to_string());
    let backups = listed["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 121);
    let ours = backups.iter().find(|b| b["name"] == name.as_str()).unwrap();
    assert_eq!(ours["complete"], true);
    assert!(ours["rows"].as_i64().unwrap() > 0 && ours["size_bytes"].as_u64().unwrap() > 0);
    assert!(ours["duration_seconds"].is_number() && ours["time"].is_string());
    assert!(ours["verification"].is_null());
    let other = backups.iter().find(|b| b["name"] != name.as_str()).unwrap();
    assert_eq!(
        (&other["complete"], &other["rows"]),
        (&json!(false), &Value::Null)
    );

    // latest is the complete one, wherever a name is taken.
    let verify = nexusd(&db, &store, &["backup", "verify", "latest"], &[]);
    assert!(
        text(&verify).contains(&format!("verified {name}")),
        "{}",
        text(&verify)
    );
    let listed = json_out(&nexusd(&db, &store, &["backup", "list", "--json"], &[]));
    let ours = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name.as_str())
        .cloned()
        .unwrap();
    assert_eq!(ours["verification"]["ok"], true);
    assert_eq!(ours["verification"]["problems"], json!([]));
    let target = format!("{}_latest", db.name);
    let restore = nexusd(&db, &store, &["restore", "latest", "--into", &target], &[]);
    assert!(
        text(&restore).contains(&format!("restored {name} into {target}")),
        "{}",
        text(&restore)
    );

    // A name the store does not hold, and one without a manifest, read differently.
    let absent = nexusd(
        &db,
        &store,
        &["restore", "dev-nexus-20000101_000000.sql.gz", "--into", "x"],
        &[],
    );
    assert!(!absent.status.success());
    assert!(
        text(&absent).contains("no backup named dev-nexus-20000101_000000.sql.gz"),
        "{}",
        text(&absent)
    );
    let incomplete = other["name"].as_str().unwrap();
    let out = nexusd(&db, &store, &["backup", "verify", incomplete], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{incomplete} is incomplete: it has no manifest")),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn progress_is_one_line_per_stage_off_a_terminal_and_redrawn_on_one() {
    let db = shared_db().await;
    seed(&db).await;
    let store = Where::local();
    let run = nexusd(&db, &store, &["backup", "run"], &[]);
    let name = backup_name(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("backup {name}: dump\n")),
        "{stderr}"
    );
    // The next backup's dump is sized after this one (the time left on a terminal).
    let again = nexusd(&db, &store, &["backup", "run"], &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    let line = format!("backup {}: dump (about ", backup_name(&again));
    assert!(stderr.contains(&line), "{stderr}");

    let target = format!("{}_progress", db.name);
    let restore = nexusd(&db, &store, &["restore", &name, "--into", &target], &[]);
    assert!(restore.status.success(), "{}", text(&restore));
    let stderr = String::from_utf8_lossy(&restore.stderr);
    let stages: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("restore {name}: ")))
        .collect();
    assert_eq!(stages.len(), 5, "{stderr}");
    assert!(
        stages[0].starts_with("download (") && stages[0].ends_with(" MB)"),
        "{stderr}"
    );
    assert!(
        stages[1].starts_with("check (") && stages[2].starts_with("load ("),
        "{stderr}"
    );
    assert!(
        stages[3].starts_with("load: indexes and constraints ("),
        "{stderr}"
    );
    assert_eq!(stages[4], "row counts", "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "no redraws off a terminal: {stderr:?}"
    );

    // On a terminal (script(1) gives it one), each stage ends on its figures.
    let url = db.url();
    let mut cmd = std::process::Command::new("script");
    let inner = format!(
        "{} restore {name} --into {target}_tty",
        support::nexusd_bin()
    );
    cmd.args(["-qefc", &inner, "/dev/null"])
        .env_clear()
        .env("DATABASE_URL", &url);
    for (k, v) in store.vars() {
        cmd.env(k, v);
    }
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    let out = cmd.output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    for stage in ["download", "check", "load"] {
        let line = format!("restore {name}: {stage} ");
        let shown = screen
            .lines()
            .find(|l| l.contains(&line))
            .unwrap_or_else(|| panic!("{stage}: {screen:?}"));
        assert!(
            shown.contains(" MB in ") && shown.contains(" MB/s)"),
            "{shown:?}"
        );
    }
    assert!(
        screen.contains("\x1b[K"),
        "the line is redrawn in place: {screen:?}"
    );
}

#[tokio::test]
async fn check_speaks_json_for_scripts() {
    // Migrations pending are a warning: ok, exit 0, the findings in order, stdout only JSON.
    let db = shared_db().await;
    let out = nexusd_command(&["check", "--json"], &[("DATABASE_URL", &db.url())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = json_out(&out);
    assert_eq!(
        (&report["ok"], &report["failures"]),
        (&json!(true), &json!(0)),
        "{report}"
    );
    let checks = report["checks"].as_array().unwrap();
    assert!(
        checks[0]["level"] == "ok"
            && checks[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("configuration"),
        "{report}"
    );
    assert!(
        checks.iter().any(|c| c["level"] == "warn"
            && c["message"]
                .as_str()
                .unwrap()
                .starts_with("migrations pending")),
        "{report}"
    );

    // An invalid configuration: each problem a failed check, exit 1.
    let out = nexusd_command(&["check", "--json"], &[("POSTGRES_PORT", "port")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json_out(&out);
    assert_eq!(
        (&report["ok"], &report["failures"]),
        (&json!(false), &json!(1)),
        "{report}"
    );
    assert_eq!(report["checks"][0]["level"], "fail");
    assert!(
        report["checks"][0]["message"]
            .as_str()
            .unwrap()
            .contains("POSTGRES_PORT"),
        "{report}"
    );
}
