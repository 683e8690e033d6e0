//! `nexusd serve` as a real process: honest `/health` with the database up, down and back,
//! the listener opening before the database, SIGTERM, systemd notifications, and the embedded
//! cluster's first start, crash recovery, clean stop and reuse of its data.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use support::{Nexusd, TestCluster, shared_db, spawn_guardian, temp_root};

/// Where things run shows in `/health` only to authenticated callers.
const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";

const START: Duration = Duration::from_secs(60);

#[tokio::test]
async fn health_is_200_with_pgvector_and_sigterm_exits_cleanly() {
    let db = shared_db().await;
    let notify_dir = temp_root("nexusd-notify-");
    let notify_path = notify_dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let url = db.url();
    let mut nexusd = Nexusd::serve(&[
        ("DATABASE_URL", url.as_str()),
        ("KNOWLEDGE_BASE_REPO", "acme/knowledge"),
        ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
        ("NEXUSD_API_TOKENS", OPERATOR_TOKEN),
    ]);
    let anonymous = nexusd.wait_health(200, START).await;
    assert_eq!(anonymous["database"]["database"], "redacted");
    let (_, body) = nexusd
        .get_with("/health", Some(&format!("Bearer {OPERATOR_TOKEN}")))
        .await
        .unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "pattern-discovery-agent");
    assert_eq!(body["knowledge_base_repo"], "acme/knowledge");
    assert_eq!(body["database_type"], "postgresql");
    assert_eq!(body["pgvector_enabled"], true);
    assert_eq!(body["database"]["status"], "healthy");
    assert_eq!(body["database"]["pgvector_version"], "0.8.0");
    assert_eq!(body["database"]["database"], db.name.as_str());
    assert!(
        body["database"]["version"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL 15")
    );
    let pool = &body["database"]["pool"];
    assert!(
        pool["size"].as_u64().unwrap() >= 1 && pool["max"] == 10 && pool["min"] == 0,
        "{pool}"
    );
    assert!(pool["free"].is_u64());
    assert_eq!(body["migrations"]["status"], "current");
    assert_eq!(
        body["migrations"]["version"],
        nexusd::bootstrap::latest_known_migration()
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    // Protocol errors are JSON.
    let (status, body) = nexusd.get("/no/such/path").await.unwrap();
    assert_eq!((status, body["detail"].as_str()), (404, Some("Not Found")));
    let response = support::http()
        .post(format!("{}/health", nexusd.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);

    // systemd heard READY=1, then watchdog pings.
    let mut messages = String::new();
    let mut buf = [0u8; 512];
    while !(messages.contains("READY=1") && messages.contains("WATCHDOG=1")) {
        let n = notify.recv(&mut buf).expect("no sd_notify message");
        messages.push_str(&String::from_utf8_lossy(&buf[..n]));
        messages.push('\n');
    }

    let (status, took) = nexusd.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit status {status}\n{}",
        nexusd.log_text()
    );
    assert!(took <= Duration::from_secs(10), "shutdown took {took:?}");
    while !messages.contains("STOPPING=1") {
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|_| panic!("no STOPPING=1 after {messages}"));
        messages.push_str(&String::from_utf8_lossy(&buf[..n]));
        messages.push('\n');
    }
    std::fs::remove_dir_all(&notify_dir).ok();
}

#[tokio::test]
async fn listener_opens_while_the_database_is_unreachable() {
    let closed = format!(
        "postgresql://app:secret@127.0.0.1:{}/kb",
        support::free_port()
    );
    let mut nexusd = Nexusd::serve(&[
        ("DATABASE_URL", closed.as_str()),
        ("NEXUSD_API_TOKENS", OPERATOR_TOKEN),
    ]);
    let anonymous = nexusd.wait_health(503, Duration::from_secs(10)).await;
    assert_eq!(anonymous["database"]["message"], "redacted");
    let (status, body) = nexusd
        .get_with("/health", Some(&format!("Bearer {OPERATOR_TOKEN}")))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["pgvector_enabled"], false);
    assert_eq!(body["database"]["status"], "disconnected");
    let message = body["database"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused") || message.contains("connect"),
        "the reason names the connection problem: {body}"
    );
    let migrations = body["migrations"]["status"].as_str();
    assert!(
        matches!(migrations, Some("pending" | "failed")),
        "migrations: {body}"
    );
    assert!(
        !body.to_string().contains("secret"),
        "password leaked: {body}"
    );

    let (status, took) = nexusd.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit status {status}\n{}",
        nexusd.log_text()
    );
    assert!(took <= Duration::from_secs(10), "shutdown took {took:?}");
    assert!(!nexusd.log_text().contains("secret"), "password in the log");
}

#[tokio::test]
async fn health_follows_the_database_down_and_back_up_without_a_restart() {
    let mut cluster = TestCluster::start().await;
    let db = cluster.create_db().await;
    let url = db.url();
    let mut nexusd = Nexusd::serve(&[("DATABASE_URL", url.as_str())]);
    nexusd.wait_health(200, START).await;

    cluster.stop().await;
    let body = nexusd.wait_health(503, Duration::from_secs(20)).await;
    assert_eq!(body["database"]["status"], "disconnected");
    assert_eq!(body["pgvector_enabled"], false);

    cluster.restart().await;
    let body = nexusd.wait_health(200, Duration::from_secs(30)).await;
    assert_eq!(body["pgvector_enabled"], true);
    assert!(
        nexusd.child.try_wait().unwrap().is_none(),
        "nexusd must not have restarted"
    );

    let (status, _) = nexusd.terminate(Duration::from_secs(15));
    assert!(status.success());
}

#[tokio::test]
async fn bootstrap_waits_for_a_database_that_starts_later() {
    let mut cluster = TestCluster::start().await;
    let db = cluster.create_db().await;
    cluster.stop().await;
    let url = db.url();
    let mut nexusd = Nexusd::serve(&[("DATABASE_URL", url.as_str())]);
    let body = nexusd.wait_health(503, Duration::from_secs(10)).await;
    assert_eq!(body["migrations"]["status"], "failed", "{body}");
    cluster.restart().await;
    // Backoff is at most a minute; the first retries come after 1, 2, 4 s.
    let body = nexusd.wait_health(200, Duration::from_secs(70)).await;
    assert_eq!(
        body["migrations"]["version"],
        nexusd::bootstrap::latest_known_migration()
    );
    nexusd.terminate(Duration::from_secs(15));
}

fn postmaster_pid(state: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(state.join("pg/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn embedded_options(state: &Path) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .socket(state.join("run"))
        .username("nexusd")
        .database("devnexus")
        .disable_statement_logging()
}

#[tokio::test]
async fn embedded_cluster_starts_recovers_stops_and_keeps_its_data() {
    let root = temp_root("nexusd-state-");
    let state = root.join("state");
    spawn_guardian(&state.join("pg"), &root);
    let state_str = state.to_str().unwrap().to_string();
    let vars = [
        ("NEXUSD_STATE_DIR", state_str.as_str()),
        ("NEXUSD_API_TOKENS", OPERATOR_TOKEN),
    ];

    // First start: initdb, start, create the database, bootstrap.
    let mut nexusd = Nexusd::serve(&vars);
    nexusd.wait_health(200, START).await;
    let (_, body) = nexusd
        .get_with("/health", Some(&format!("Bearer {OPERATOR_TOKEN}")))
        .await
        .unwrap();
    assert_eq!(body["pgvector_enabled"], true);
    assert_eq!(body["database"]["database"], "devnexus");
    assert!(state.join("pg/PG_VERSION").is_file());
    let conf = std::fs::read_to_string(state.join("pg/nexusd.conf")).unwrap();
    assert!(
        conf.contains("shared_preload_libraries = 'pg_stat_statements'"),
        "{conf}"
    );
    assert!(
        conf.contains("listen_addresses = ''"),
        "the embedded cluster must not listen on TCP"
    );

    let mut conn = PgConnection::connect_with(&embedded_options(&state))
        .await
        .unwrap();
    sqlx::query("INSERT INTO repositories (name) VALUES ('kept/across-restarts')")
        .execute(&mut conn)
        .await
        .unwrap();
    let preloaded: String = sqlx::query_scalar("SHOW shared_preload_libraries")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(preloaded, "pg_stat_statements");
    conn.close().await.ok();

    // A second daemon on the same state directory is refused.
    let second = support::nexusd_command(
        &["serve"],
        &[
            ("NEXUSD_STATE_DIR", state_str.as_str()),
            (
                "NEXUSD_API_ADDR",
                &format!("127.0.0.1:{}", support::free_port()),
            ),
        ],
    )
    .output()
    .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr)
            .contains("another nexusd is running with state directory")
    );

    // The server dies: the supervisor restarts it and health recovers.
    let first_pid = postmaster_pid(&state).expect("postmaster.pid");
    kill(Pid::from_raw(first_pid), Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = postmaster_pid(&state)
            && pid != first_pid
            && alive(pid)
            && nexusd.get("/health").await.is_some_and(|(s, _)| s == 200)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no restart\n{}",
            nexusd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restarted_pid = postmaster_pid(&state).unwrap();

    // SIGTERM stops PostgreSQL too.
    let (status, took) = nexusd.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", nexusd.log_text());
    assert!(took <= Duration::from_secs(10), "shutdown took {took:?}");
    assert!(
        !alive(restarted_pid),
        "PostgreSQL still running after nexusd stopped\n{}",
        nexusd.log_text()
    );
    assert!(
        !state.join("pg/postmaster.pid").exists(),
        "not a clean shutdown"
    );
    assert!(nexusd.log_text().contains("PostgreSQL stopped"));

    // Second start reuses the data.
    let mut again = Nexusd::serve(&vars);
    let body = again.wait_health(200, START).await;
    assert_eq!(
        body["migrations"]["version"],
        nexusd::bootstrap::latest_known_migration()
    );
    assert!(
        !again.log_text().contains("initialising"),
        "initdb ran twice"
    );
    let mut conn = PgConnection::connect_with(&embedded_options(&state))
        .await
        .unwrap();
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM repositories WHERE name = 'kept/across-restarts'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(kept, 1);
    conn.close().await.ok();
    let (status, _) = again.terminate(Duration::from_secs(15));
    assert!(status.success());
}

#[tokio::test]
async fn embedded_bootstrap_command_starts_and_stops_its_own_cluster() {
    let root = temp_root("nexusd-state-");
    let state = root.join("state");
    spawn_guardian(&state.join("pg"), &root);
    let state_str = state.to_str().unwrap();
    let output = support::nexusd_command(&["bootstrap"], &[("NEXUSD_STATE_DIR", state_str)])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("applied migrations [1, "));
    assert!(
        postmaster_pid(&state).is_none(),
        "bootstrap left its cluster running"
    );

    let output = support::nexusd_command(&["check"], &[("NEXUSD_STATE_DIR", state_str)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("embedded cluster not running"), "{stdout}");
}

/// Whether `pid` is a live process: not gone and not a zombie waiting for a parent to reap it.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `1234 (postgres) S …`.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Waits up to `limit` for the postmaster `pid` to be gone and its data directory released.
async fn wait_gone(pid: i32, state: &Path, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while running(pid) || state.join("pg/postmaster.pid").exists() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

#[tokio::test]
async fn sighup_is_logged_and_stops_serve_and_its_embedded_cluster() {
    let root = temp_root("nexusd-state-");
    let state = root.join("state");
    spawn_guardian(&state.join("pg"), &root);
    let state_str = state.to_str().unwrap().to_string();
    let mut nexusd = Nexusd::serve(&[("NEXUSD_STATE_DIR", state_str.as_str())]);
    nexusd.wait_health(200, START).await;
    let postmaster = postmaster_pid(&state).expect("postmaster.pid");

    // What an SSH session closing does to a foreground `nexusd serve`.
    kill(Pid::from_raw(nexusd.child.id() as i32), Signal::SIGHUP).unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = nexusd.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still running after SIGHUP\n{}",
            nexusd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = nexusd.log_text();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("SIGHUP") && l.contains("shutting down")),
        "{log}"
    );
    assert!(log.contains("PostgreSQL stopped"), "{log}");
    assert!(
        wait_gone(postmaster, &state, Duration::from_secs(5)).await,
        "PostgreSQL left running after SIGHUP\n{log}"
    );
}

#[tokio::test]
async fn a_killed_nexusd_does_not_leave_its_embedded_cluster_running() {
    let root = temp_root("nexusd-state-");
    let state = root.join("state");
    spawn_guardian(&state.join("pg"), &root);
    let state_str = state.to_str().unwrap().to_string();
    let vars = [("NEXUSD_STATE_DIR", state_str.as_str())];
    let mut nexusd = Nexusd::serve(&vars);
    nexusd.wait_health(200, START).await;
    let postmaster = postmaster_pid(&state).expect("postmaster.pid");

    // No chance to clean up: SIGKILL.
    nexusd.child.kill().unwrap();
    nexusd.child.wait().unwrap();
    assert!(
        wait_gone(postmaster, &state, Duration::from_secs(10)).await,
        "PostgreSQL (pid {postmaster}) still running 10 s after nexusd was killed"
    );

    // The next start finds nothing left behind and serves the same data.
    let mut again = Nexusd::serve(&vars);
    again.wait_health(200, START).await;
    let log = again.log_text();
    assert!(!log.contains("left running"), "{log}");
    assert!(!log.contains("initialising"), "initdb ran twice\n{log}");
    let (status, _) = again.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", again.log_text());
}
