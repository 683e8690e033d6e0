//! What nexusd writes to stderr and stdout, as an operator's tools read it: journal priorities
//! under systemd, JSON lines Cloud Logging understands, no error on a clean stop of the embedded
//! cluster, a one-off command's result printed once (in a terminal too), and `embed`'s progress
//! lines.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use support::{Nexusd, nexusd_bin, nexusd_command, shared_db, spawn_guardian, temp_root};

const START: Duration = Duration::from_secs(60);

/// A state directory for an embedded cluster, removed (and its server stopped) when the test
/// process exits.
fn state_dir() -> (PathBuf, String) {
    let root = temp_root("nexusd-state-");
    let state = root.join("state");
    spawn_guardian(&state.join("pg"), &root);
    let text = state.to_str().expect("a UTF-8 path").to_string();
    (state, text)
}

/// A session on the embedded cluster, as a `psql` or another nexusd command would hold one.
async fn embedded_session(state: &Path) -> PgConnection {
    let options = PgConnectOptions::new_without_pgpass()
        .socket(state.join("run"))
        .username("nexusd")
        .database("devnexus")
        .disable_statement_logging();
    PgConnection::connect_with(&options)
        .await
        .expect("connecting to the embedded cluster")
}

#[tokio::test]
async fn under_journald_every_line_carries_its_priority() {
    let db = shared_db().await;
    let url = db.url();
    let mut nexusd = Nexusd::serve_to_journal(&[
        ("DATABASE_URL", url.as_str()),
        // A warning: writes are open to anyone.
        ("REQUIRE_AUTH_FOR_WRITE", "false"),
        // An error: the backup store cannot be created.
        ("NEXUSD_BACKUP_DIR", "/dev/null/backups"),
    ]);
    nexusd.wait_health(200, START).await;
    let (status, _) = nexusd.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", nexusd.log_text());

    let log = nexusd.log_text();
    let priority = |line: &str| -> Option<u8> {
        let rest = line.strip_prefix('<')?;
        let (n, _) = rest.split_once('>')?;
        n.parse().ok()
    };
    for line in log.lines() {
        assert!(
            priority(line).is_some_and(|p| (3..=7).contains(&p)),
            "a line without a journal priority: {line:?}\n{log}"
        );
    }
    let with = |p: u8, words: &str| {
        log.lines()
            .any(|l| priority(l) == Some(p) && l.contains(words))
    };
    assert!(with(3, "backup store"), "the error is <3>:\n{log}");
    assert!(
        with(4, "REQUIRE_AUTH_FOR_WRITE"),
        "the warning is <4>:\n{log}"
    );
    assert!(with(6, "skills API listening"), "info is <6>:\n{log}");
    // journald stamps the lines itself; the level word stays for a human reading them.
    assert!(with(6, "INFO"), "{log}");
}

#[tokio::test]
async fn json_logs_are_cloud_logging_lines_and_a_clean_stop_logs_no_error() {
    let (state, state_text) = state_dir();
    let mut nexusd = Nexusd::serve(&[
        ("NEXUSD_STATE_DIR", state_text.as_str()),
        ("NEXUSD_LOG_FORMAT", "json"),
    ]);
    nexusd.wait_health(200, START).await;
    // A client still connected when nexusd stops: the server ends its session.
    let session = embedded_session(&state).await;
    let (status, _) = nexusd.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", nexusd.log_text());
    drop(session);

    let log = nexusd.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    assert!(lines.len() > 5, "{log}");
    for line in &lines {
        let severity = line["severity"].as_str().unwrap_or_default();
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&severity),
            "severity: {line}"
        );
        assert!(line["message"].is_string(), "message: {line}");
        let time = line["time"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "time is RFC 3339: {line}"
        );
        assert!(
            line.get("level").is_none(),
            "level instead of severity: {line}"
        );
        assert_ne!(
            severity, "ERROR",
            "an error on a clean start and stop: {line}\n{log}"
        );
    }
    // The event's fields are keys of their own.
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "skills API listening" && l["addr"].is_string()),
        "{log}"
    );
    // PostgreSQL's lines come through at their level, its routine ones as INFO.
    let postgres = |words: &str| {
        lines.iter().find(|l| {
            l["target"] == "nexusd::postgres"
                && l["message"].as_str().is_some_and(|m| m.contains(words))
        })
    };
    let ready = postgres("ready to accept connections").expect("PostgreSQL's start in the log");
    assert_eq!(ready["severity"], "INFO", "{ready}");
    assert!(ready["pid"].is_u64(), "{ready}");
    let ended = postgres("terminating connection due to administrator command")
        .expect("the session ended by the stop is logged");
    assert_eq!(ended["severity"], "INFO", "{ended}");
}

#[tokio::test]
async fn a_clean_stop_of_the_embedded_cluster_logs_no_error_priority() {
    let (state, state_text) = state_dir();
    let mut nexusd = Nexusd::serve_to_journal(&[("NEXUSD_STATE_DIR", state_text.as_str())]);
    nexusd.wait_health(200, START).await;
    let session = embedded_session(&state).await;
    // A one-off command uses the running cluster, then disconnects.
    let output = nexusd_command(&["bootstrap"], &[("NEXUSD_STATE_DIR", &state_text)])
        .output()
        .expect("running nexusd bootstrap");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, _) = nexusd.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", nexusd.log_text());
    drop(session);

    let log = nexusd.log_text();
    assert!(log.contains("PostgreSQL stopped"), "{log}");
    // The session the stop ended is logged, as routine.
    let ended = log
        .lines()
        .find(|l| l.contains("terminating connection due to administrator command"))
        .unwrap_or_else(|| panic!("the ended session is not logged:\n{log}"));
    assert!(ended.starts_with("<6>"), "{ended}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("<3>")).collect();
    assert!(
        errors.is_empty(),
        "errors on a clean stop: {errors:#?}\n{log}"
    );
}

/// Runs `command` (a shell command line) in a pseudo-terminal, as an operator at a shell would;
/// returns everything the terminal showed.
fn in_terminal(command: &str, vars: &[(&str, &str)]) -> String {
    let mut script = Command::new("script");
    script
        .args(["-qec", command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "dumb");
    for (k, v) in vars {
        script.env(k, v);
    }
    let output = script.output().expect("running script(1) from util-linux");
    assert!(
        output.status.success(),
        "{command} failed in a terminal: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).replace('\r', "")
}

#[tokio::test]
async fn a_one_off_command_prints_its_result_once() {
    // In a terminal, with nothing configured but the state directory: the result, and no log.
    let (_state, state_text) = state_dir();
    let bootstrap = format!("{} bootstrap", nexusd_bin());
    let shown = in_terminal(&bootstrap, &[("NEXUSD_STATE_DIR", &state_text)]);
    assert_eq!(shown.matches("applied migrations").count(), 1, "{shown}");
    assert!(shown.contains("pgvector"), "{shown}");
    for noise in ["INFO", "LOG:"] {
        assert!(
            !shown.contains(noise),
            "{noise:?} in the terminal:\n{shown}"
        );
    }

    // Not a terminal (a script, a timer): the result on stdout, and PostgreSQL's routine lines
    // do not stream by on stderr.
    let output = nexusd_command(&["bootstrap"], &[("NEXUSD_STATE_DIR", &state_text)])
        .env_remove("NEXUSD_LOG")
        .output()
        .expect("running nexusd bootstrap");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.matches("schema already current").count(),
        1,
        "{stdout}"
    );
    assert!(!stderr.contains("schema already current"), "{stderr}");
    assert!(
        !stderr.contains("LOG:"),
        "PostgreSQL's log on stderr:\n{stderr}"
    );
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knowledge_base.json")
}

#[tokio::test]
async fn embed_prints_a_progress_line_per_batch_with_rate_and_time_left() {
    let db = shared_db().await;
    let url = db.url();
    let vars = [("DATABASE_URL", url.as_str())];
    let fixture = fixture();
    let imported = nexusd_command(&["import-json", fixture.to_str().unwrap()], &vars)
        .output()
        .expect("running import-json");
    assert!(imported.status.success());

    let output = nexusd_command(&["embed", "--batch-size", "2"], &vars)
        .output()
        .expect("running nexusd embed");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("embedding patterns with builtin:hash-ngrams-v1: "))
        .collect();
    let counts: Vec<&str> = progress
        .iter()
        .filter_map(|l| l.split(": ").nth(1)?.split(' ').next())
        .collect();
    // Five patterns, two per batch: the start, then a line per batch.
    assert_eq!(counts, ["0/5", "2/5", "4/5", "5/5"], "{stderr}");
    for line in &progress[1..3] {
        assert!(line.contains("/s, ETA "), "rate and time left: {line}");
    }
    assert!(
        progress[3].contains("(100.0%)") && progress[3].contains("done in"),
        "{}",
        progress[3]
    );
    // The result once, on stdout.
    assert_eq!(stdout.matches("embedded 5 patterns").count(), 1, "{stdout}");
    assert!(!stderr.contains("embedded 5 patterns"), "{stderr}");
}

/// The JSON lines of `log` as objects.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

#[tokio::test]
async fn json_lines_of_a_traced_request_carry_cloud_loggings_trace_keys() {
    let db = shared_db().await;
    let url = db.url();
    let json = [
        ("NEXUSD_LOG_FORMAT", "json"),
        ("GOOGLE_CLOUD_PROJECT", "example-project"),
    ];
    let mut vars = vec![("DATABASE_URL", url.as_str())];
    vars.extend_from_slice(&json);
    let mut nexusd = Nexusd::serve(&vars);
    nexusd.wait_health(200, START).await;
    // Cloud Run in front: the proxy's lines and nexusd's own join the caller's trace.
    let mut edge_vars = vec![("NEXUSD_PROXY_UPSTREAM", nexusd.api.as_str())];
    edge_vars.extend_from_slice(&json);
    let mut edge = Nexusd::start("proxy", &edge_vars);

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let deadline = std::time::Instant::now() + START;
    let response = loop {
        let sent = support::http()
            .get(format!("{}/.well-known/agent.json", edge.api))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .send()
            .await;
        match sent {
            Ok(response) => break response,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the proxy does not answer: {e}\n{}", edge.log_text()),
        }
    };
    assert_eq!(response.status(), 200);
    // Google's older header, straight to nexusd.
    let response = support::http()
        .get(format!("{}/", nexusd.api))
        .header(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/255;o=1",
        )
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status(), 200);
    let (status, _) = edge.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", edge.log_text());
    let (status, _) = nexusd.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", nexusd.log_text());

    let traced = |log: &str, message: &str, path: &str| -> serde_json::Value {
        json_lines(log)
            .into_iter()
            .find(|l| l["message"] == message && l["path"] == path)
            .unwrap_or_else(|| panic!("no {message:?} line for {path}:\n{log}"))
    };
    let full = format!("projects/example-project/traces/{trace}");
    for line in [
        traced(&edge.log_text(), "proxied", "/.well-known/agent.json"),
        traced(&nexusd.log_text(), "request", "/.well-known/agent.json"),
    ] {
        assert_eq!(
            line["logging.googleapis.com/trace"],
            full.as_str(),
            "{line}"
        );
        assert_eq!(
            line["logging.googleapis.com/spanId"], "00f067aa0ba902b7",
            "{line}"
        );
        assert_eq!(line["logging.googleapis.com/trace_sampled"], true, "{line}");
    }
    let line = traced(&nexusd.log_text(), "request", "/");
    assert_eq!(
        line["logging.googleapis.com/trace"],
        "projects/example-project/traces/105445aa7843bc8bf206b12000100000",
        "{line}"
    );
    assert_eq!(
        line["logging.googleapis.com/spanId"], "00000000000000ff",
        "{line}"
    );
    // A line outside any request has no trace.
    let listening = traced_free(&nexusd.log_text());
    assert!(
        listening.get("logging.googleapis.com/trace").is_none(),
        "{listening}"
    );
}

/// nexusd's "skills API listening" line.
fn traced_free(log: &str) -> serde_json::Value {
    json_lines(log)
        .into_iter()
        .find(|l| l["message"] == "skills API listening")
        .unwrap_or_else(|| panic!("no listening line:\n{log}"))
}
