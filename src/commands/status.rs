//! `nexusd status [--json]`: what an operator asks first, answered without changing anything —
//! is a `serve` running (the state directory's lock, or the API answering), does the database
//! answer and with which version, are the migrations applied, what do the backups look like
//! (store, newest complete backup and its age, last verification, incomplete objects), is WAL
//! archiving set up (not: nexusd takes logical dumps), and the daemon's last errors. Exits 0 when
//! everything is fine, 1 otherwise, listing each problem. The embedded cluster is never started.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;

use crate::backup::{BackupDestination, Entry};
use crate::config::Config;
use crate::db::Database;
use crate::db::target::{Target, state_lock_holder};

/// How long the API and the database get to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A newest backup older than this is a problem while backups are scheduled (the alert's 26 h).
const BACKUP_MAX_AGE_HOURS: i64 = 26;

/// `status` found problems (already printed).
#[derive(Debug, thiserror::Error)]
#[error("status: not everything is fine")]
pub struct NotFine;

/// What `status --json` prints (documented in the README's Backups section).
#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    problems: Vec<String>,
    serve: Serve,
    database: DatabaseState,
    migrations: Migrations,
    backups: Backups,
    archiving: Archiving,
    /// What this replica leaves to the platform (`NEXUSD_BACKUPS`, `NEXUSD_HOST_METRICS`).
    capabilities: Vec<String>,
    /// The replica running the singleton jobs (`host:pid`), from the database's lock table.
    leader: Option<String>,
    last_errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Serve {
    running: bool,
    /// The PID holding the state directory's lock (a serve running the embedded cluster).
    pid: Option<i32>,
    state_dir: String,
    /// `http://addr` the API was looked for at, and its `/health` status when it answered.
    api: String,
    api_status: Option<String>,
}

#[derive(Debug, Serialize)]
struct DatabaseState {
    target: String,
    reachable: bool,
    version: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Migrations {
    applied: Vec<i64>,
    known: Vec<i64>,
    /// Known but not applied.
    pending: Vec<i64>,
    /// `current`, `pending`, `newer` (applied ones this nexusd does not know) or `unknown`.
    state: &'static str,
}

#[derive(Debug, Serialize)]
struct Backups {
    store: String,
    complete: usize,
    incomplete: usize,
    newest: Option<Value>,
    newest_age_seconds: Option<i64>,
    last_verification: Option<Value>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Archiving {
    configured: bool,
    note: String,
    /// The point-in-time side as serve's `/health` reports it (`backup.pitr`), or read from the
    /// store when no serve answers (then without the server's archiver figures).
    pitr: Option<Value>,
}

pub async fn run(config: &Config, json: bool) -> Result<()> {
    let report = gather(config).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if report.ok {
        Ok(())
    } else {
        Err(NotFine.into())
    }
}

async fn gather(config: &Config) -> Report {
    let (serve, health) = serve(config).await;
    let (database, migrations) = database(config).await;
    let backups = backups(config).await;
    let archiving = archiving(config, health.as_ref()).await;
    let leader = leader(config).await;
    let last_errors = health.as_ref().map(last_errors).unwrap_or_default();
    let mut report = Report {
        ok: false,
        problems: Vec::new(),
        serve,
        database,
        migrations,
        backups,
        archiving,
        capabilities: vec![
            config.capabilities.backups.describe("backups"),
            config.capabilities.host_metrics.describe("host metrics"),
        ],
        leader,
        last_errors,
    };
    // Backups the platform takes are no problem of nexusd's.
    let scheduled = config.backup.schedule.is_some() && config.capabilities.backups.on;
    report.problems = problems(&report, scheduled);
    report.ok = report.problems.is_empty();
    report
}

/// Whether a serve runs: the state directory's lock, or the API answering `/health` (with the
/// first configured API token, so the details are not redacted).
async fn serve(config: &Config) -> (Serve, Option<Value>) {
    let holder = state_lock_holder(&config.state_dir);
    let addr = loopback(config.skills.api.addr);
    let url = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build();
    let mut health = None;
    if let Ok(client) = client {
        let mut request = client.get(format!("{url}/health"));
        if let Some(token) = config.skills.api.auth.api_tokens.first() {
            request = request.bearer_auth(token);
        }
        if let Ok(response) = request.send().await {
            health = response.json::<Value>().await.ok();
        }
    }
    // Only a nexusd's /health names its version.
    health = health.filter(|h| h.get("nexusd_version").is_some());
    let api_status = health
        .as_ref()
        .and_then(|h| h["status"].as_str().map(str::to_string));
    let serve = Serve {
        running: holder.is_some() || health.is_some(),
        pid: holder.and_then(|h| h.pid),
        state_dir: config.state_dir.display().to_string(),
        api: url,
        api_status,
    };
    (serve, health)
}

/// Where to reach a listener bound to all addresses: the loopback address of its family.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The database's version and migrations, over one bounded connection; the embedded cluster is
/// asked only when it runs.
async fn database(config: &Config) -> (DatabaseState, Migrations) {
    let known: Vec<i64> = crate::bootstrap::MIGRATOR
        .iter()
        .map(|m| m.version)
        .collect();
    let mut migrations = Migrations {
        applied: Vec::new(),
        known: known.clone(),
        pending: Vec::new(),
        state: "unknown",
    };
    let mut state = DatabaseState {
        target: String::new(),
        reachable: false,
        version: None,
        error: None,
    };
    let target = match Target::resolve(&config.database, &config.state_dir) {
        Ok(target) => target,
        Err(e) => {
            state.error = Some(format!("{e:#}"));
            return (state, migrations);
        }
    };
    state.target = target.display.clone();
    if let Some(cluster) = &target.cluster
        && cluster.running_pid().is_none()
    {
        state.error = Some("the embedded cluster is not running (nexusd serve runs it)".into());
        return (state, migrations);
    }
    match tokio::time::timeout(PROBE_TIMEOUT, facts(&target.options, &target.display)).await {
        Ok(Ok((version, applied))) => {
            state.reachable = true;
            state.version = Some(version);
            migrations.pending = known
                .iter()
                .copied()
                .filter(|v| !applied.contains(v))
                .collect();
            migrations.state = if applied.iter().any(|v| !known.contains(v)) {
                "newer"
            } else if migrations.pending.is_empty() {
                "current"
            } else {
                "pending"
            };
            migrations.applied = applied;
        }
        Ok(Err(e)) => state.error = Some(e),
        Err(_) => state.error = Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
    (state, migrations)
}

/// Which replica leads (`db/leader.rs`): the holder of the leader lock, asked of the server.
async fn leader(config: &Config) -> Option<String> {
    use sqlx::Connection;
    let target = Target::resolve(&config.database, &config.state_dir).ok()?;
    if target
        .cluster
        .as_ref()
        .is_some_and(|c| c.running_pid().is_none())
    {
        return None;
    }
    let options = config.connections.direct_or(&target.options);
    let ask = async {
        let mut conn = sqlx::PgConnection::connect_with(&options).await.ok()?;
        let holder = crate::db::leader::current_holder(&mut conn).await.ok()?;
        conn.close().await.ok();
        holder
    };
    tokio::time::timeout(PROBE_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// The server's version and the migrations applied.
async fn facts(options: &PgConnectOptions, display: &str) -> Result<(String, Vec<i64>), String> {
    let pool = crate::bootstrap::connect(options, display)
        .await
        .map_err(|e| e.to_string())?;
    let version = sqlx::query_scalar::<_, String>("SELECT current_setting('server_version')")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string());
    let applied = crate::bootstrap::applied_versions(&pool)
        .await
        .map_err(|e| e.to_string());
    pool.close().await;
    Ok((version?, applied?))
}

/// The store's backups; a default local store that does not exist yet is reported, not created.
async fn backups(config: &Config) -> Backups {
    let mut out = Backups {
        store: config.backup.destination.describe(),
        complete: 0,
        incomplete: 0,
        newest: None,
        newest_age_seconds: None,
        last_verification: None,
        error: None,
    };
    // A local store that does not exist yet holds no backup: said so (as "no complete
    // backup"), without creating it.
    if let BackupDestination::Local { dir } = &config.backup.destination
        && !dir.is_dir()
    {
        return out;
    }
    // Listing reads the store only; the pool is never used.
    let options = Target::resolve(&config.database, &config.state_dir)
        .map(|t| t.options)
        .unwrap_or_else(|_| PgConnectOptions::new_without_pgpass());
    let db = Database::new(options, None, &config.database);
    let listed = match super::backup::open(config, &db).await {
        Ok(backups) => backups.list().await,
        Err(e) => Err(e),
    };
    match listed {
        Ok(entries) => summarise(&mut out, &entries, Utc::now()),
        Err(e) => out.error = Some(format!("{e:#}")),
    }
    out
}

fn summarise(out: &mut Backups, entries: &[Entry], now: DateTime<Utc>) {
    out.complete = entries.iter().filter(|e| e.complete).count();
    out.incomplete = entries.len() - out.complete;
    if let Some(newest) = entries.iter().find(|e| e.complete) {
        out.newest = Some(super::backup::entry_json(newest));
        out.newest_age_seconds = newest
            .manifest
            .as_ref()
            .map(|m| (now - m.finished_at).num_seconds());
    }
    out.last_verification = entries
        .iter()
        .filter_map(|e| e.verification.as_ref())
        .max_by_key(|v| v.verified_at)
        .map(|v| serde_json::json!({"name": v.name, "verified_at": v.verified_at, "ok": v.ok}));
}

/// WAL archiving: from serve's `/health` when it answers, else from the store.
async fn archiving(config: &Config, health: Option<&Value>) -> Archiving {
    let from_serve = health
        .map(|h| h["backup"]["pitr"].clone())
        .filter(|p| !p.is_null());
    let pitr = match from_serve {
        Some(p) => Some(p),
        None => pitr_from_store(config).await,
    };
    let on = pitr.as_ref().is_some_and(|p| {
        p["archiving"] == true
            || (p["archiving"].is_null() && p["last_archived_segment"].is_string())
    });
    let note = match &pitr {
        Some(p) if on => format!(
            "on: newest segment {} ({} ago); recoverable window {} to {}{}",
            p["last_archived_segment"].as_str().unwrap_or("none"),
            p["last_archived_age_seconds"]
                .as_f64()
                .map_or("-".into(), |a| age_text(a as i64)),
            p["window_start"].as_str().unwrap_or("-"),
            p["window_end"].as_str().unwrap_or("-"),
            p["gap"]
                .as_str()
                .map(|g| format!("; {g}"))
                .unwrap_or_default()
        ),
        _ => "not configured: WAL archiving is off, so the recovery point is the newest backup \
              (docs/pitr.md: turning archiving on)"
            .into(),
    };
    Archiving {
        configured: on,
        note,
        pitr,
    }
}

/// The archive's state read from the store (no serve to ask); `None` when there is no archive.
async fn pitr_from_store(config: &Config) -> Option<Value> {
    if let BackupDestination::Local { dir } = &config.backup.destination
        && !dir.join(crate::backup::wal::WAL_DIR).is_dir()
    {
        return None;
    }
    let options = Target::resolve(&config.database, &config.state_dir)
        .map(|t| t.options)
        .unwrap_or_else(|_| PgConnectOptions::new_without_pgpass());
    let db = Database::new(options, None, &config.database);
    let backups = super::backup::open(config, &db).await.ok()?;
    let report = backups.archive_report().await.ok()?;
    let mut p = crate::backup::status::PitrStatus::default();
    crate::backup::pitr_status::apply_report(&mut p, &report, Utc::now());
    (p.last_archived_segment.is_some() || p.base_backups > 0)
        .then(|| serde_json::to_value(p).ok())
        .flatten()
}

/// The errors a running serve reports in `/health`.
fn last_errors(health: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut note = |what: &str, value: &Value| {
        if let Some(text) = value.as_str() {
            errors.push(format!("{what}: {text}"));
        }
    };
    if health["backup"]["last_outcome"] == "failed" {
        note("last backup", &health["backup"]["last_error"]);
    }
    note("retention", &health["backup"]["retention_error"]);
    note("backups unavailable", &health["backup"]["unavailable"]);
    note("migrations", &health["migrations"]["error"]);
    note(
        "database (as serve sees it)",
        &health["database"]["message"],
    );
    errors
}

fn problems(r: &Report, scheduled: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !r.serve.running {
        out.push(format!(
            "no nexusd serve is running (no lock on {}/nexusd.lock, no nexusd answering on {})",
            r.serve.state_dir, r.serve.api
        ));
    } else if r
        .serve
        .api_status
        .as_deref()
        .is_some_and(|s| s != "healthy")
    {
        out.push(format!(
            "serve's /health says {}",
            r.serve.api_status.as_deref().unwrap_or("?")
        ));
    }
    if let Some(e) = &r.database.error {
        out.push(format!("database: {e}"));
    }
    match r.migrations.state {
        "pending" => out.push(format!(
            "migrations {:?} are not applied: run nexusd bootstrap (serve applies them at start)",
            r.migrations.pending
        )),
        "newer" => out.push("the database was migrated by a newer nexusd".into()),
        _ => {}
    }
    let b = &r.backups;
    match (&b.error, b.newest_age_seconds) {
        (Some(e), _) => out.push(format!("backups: {e}")),
        (None, None) => out.push(format!("no complete backup in {}", b.store)),
        (None, Some(age)) if scheduled && age > BACKUP_MAX_AGE_HOURS * 3600 => out.push(format!(
            "the newest backup is {} old (more than {BACKUP_MAX_AGE_HOURS} h)",
            age_text(age)
        )),
        _ => {}
    }
    if let Some(v) = &b.last_verification
        && v["ok"] == false
    {
        out.push(format!(
            "the last verification ({}) FAILED",
            v["name"].as_str().unwrap_or("?")
        ));
    }
    if let Some(gap) = r.archiving.pitr.as_ref().and_then(|p| p["gap"].as_str()) {
        out.push(gap.to_string());
    }
    out.extend(r.last_errors.iter().cloned());
    out
}

/// `45 s`, `12 min`, `3 h 5 min`, `2 days 4 h`.
fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn render(r: &Report) -> String {
    let serve = match (r.serve.running, r.serve.pid, &r.serve.api_status) {
        (false, _, _) => "not running".to_string(),
        (true, pid, api) => format!(
            "running{}; API {}: {}",
            pid.map(|p| format!(" (pid {p}, holds {})", r.serve.state_dir))
                .unwrap_or_default(),
            r.serve.api,
            api.as_deref().unwrap_or("not answering")
        ),
    };
    let database = match (&r.database.version, &r.database.error) {
        (Some(v), _) => format!("PostgreSQL {v}, {}", r.database.target),
        (None, Some(e)) => format!("unreachable: {e}"),
        (None, None) => "unknown".into(),
    };
    let m = &r.migrations;
    let migrations = format!(
        "{} of {} applied ({})",
        m.known.iter().filter(|v| m.applied.contains(v)).count(),
        m.known.len(),
        m.state
    );
    let mut lines = vec![
        ("serve", serve),
        ("database", database),
        ("migrations", migrations),
        ("backups", render_backups(&r.backups)),
        ("archiving", r.archiving.note.clone()),
        ("switches", r.capabilities.join("; ")),
        (
            "leader",
            r.leader
                .clone()
                .unwrap_or_else(|| "none (no serve holds the leader lock)".into()),
        ),
    ];
    let errors = if r.last_errors.is_empty() {
        "none".into()
    } else {
        r.last_errors.join("; ")
    };
    lines.push(("errors", errors));
    let mut out: String = lines
        .iter()
        .map(|(k, v)| format!("{k:<11} {v}\n"))
        .collect();
    if r.ok {
        out.push_str("status: ok\n");
    } else {
        out.push_str(&format!("status: {} problem(s)\n", r.problems.len()));
        out.extend(r.problems.iter().map(|p| format!("  - {p}\n")));
    }
    out
}

fn render_backups(b: &Backups) -> String {
    if let Some(e) = &b.error {
        return format!("{}: {e}", b.store);
    }
    let newest = match (&b.newest, b.newest_age_seconds) {
        (Some(n), Some(age)) => format!(
            "newest {} ({} ago, {} bytes)",
            n["name"].as_str().unwrap_or("?"),
            age_text(age),
            n["size_bytes"]
        ),
        _ => "no complete backup".into(),
    };
    let verified = match &b.last_verification {
        Some(v) => format!(
            "; last verification {} {}",
            v["name"].as_str().unwrap_or("?"),
            if v["ok"] == true { "ok" } else { "FAILED" }
        ),
        None => "; never verified".into(),
    };
    format!(
        "{}: {newest}; {} complete, {} incomplete{verified}",
        b.store, b.complete, b.incomplete
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_an_operator_says_them() {
        assert_eq!(age_text(42), "42 s");
        assert_eq!(age_text(720), "12 min");
        assert_eq!(age_text(3 * 3600 + 300), "3 h 5 min");
        assert_eq!(age_text(2 * 86_400 + 4 * 3600), "2 days 4 h");
    }

    #[test]
    fn a_listener_on_every_address_is_asked_on_loopback() {
        assert_eq!(
            loopback("0.0.0.0:8080".parse().unwrap()).to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            loopback("[::]:8080".parse().unwrap()).to_string(),
            "[::1]:8080"
        );
        assert_eq!(
            loopback("10.0.0.2:80".parse().unwrap()).to_string(),
            "10.0.0.2:80"
        );
    }
}
