//! `nexusd check`: validates the configuration and inspects PostgreSQL without changing anything,
//! printing one line per finding with the fix, so an operator knows what to do before `serve`.

use std::fmt::Display;
use std::path::Path;

use super::probes::{self, Finding};
use crate::bootstrap::{self, MIN_SERVER_VERSION_NUM, ServerFacts, StatementsStatus};
use crate::config::Config;
use crate::db::DatabaseTarget;
use crate::db::cluster::{self, Cluster, ClusterSpec};
use crate::embed::{Embedder, mixed_models_message};
use crate::env::ConfigErrors;

/// Some check failed (each was printed with its fix).
#[derive(Debug, thiserror::Error)]
#[error("{0} checks failed")]
pub struct ChecksFailed(usize);

/// Prints every configuration problem as a failed check (`json`: as `check --json` does).
pub fn report_invalid(errors: &ConfigErrors, json: bool) {
    let mut report = Report::new(json);
    for e in &errors.0 {
        report.fail(e);
    }
    report.print_json();
}

/// Collects findings: printed as they come, or kept for one JSON object at the end (`--json`).
#[derive(Default)]
struct Report {
    failures: usize,
    /// `Some` with `--json`: the findings so far, as `(level, message)`.
    json: Option<Vec<(&'static str, String)>>,
}

impl Report {
    fn new(json: bool) -> Self {
        Report {
            failures: 0,
            json: json.then(Vec::new),
        }
    }
    fn finding(&mut self, level: &'static str, what: impl Display) {
        match &mut self.json {
            Some(findings) => findings.push((level, what.to_string())),
            None => println!("{:<6}{what}", if level == "fail" { "FAIL" } else { level }),
        }
    }
    fn ok(&mut self, what: impl Display) {
        self.finding("ok", what);
    }
    fn warn(&mut self, what: impl Display) {
        self.finding("warn", what);
    }
    fn fail(&mut self, what: impl Display) {
        self.failures += 1;
        self.finding("fail", what);
    }
    /// With `--json`, prints `{"ok", "failures", "checks": [{"level", "message"}]}`.
    fn print_json(&self) {
        if let Some(findings) = &self.json {
            let checks: Vec<serde_json::Value> = findings
                .iter()
                .map(|(level, message)| serde_json::json!({"level": level, "message": message}))
                .collect();
            let out = serde_json::json!({
                "ok": self.failures == 0,
                "failures": self.failures,
                "checks": checks,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
    fn record(&mut self, finding: Finding) {
        match finding {
            Finding::Ok(what) => self.ok(what),
            Finding::Warn(what) => self.warn(what),
            Finding::Fail(what) => self.fail(what),
        }
    }
    fn outcome(&self) -> anyhow::Result<()> {
        self.print_json();
        match self.failures {
            0 => Ok(()),
            n => Err(ChecksFailed(n).into()),
        }
    }
}

/// Runs every check; fails with [`ChecksFailed`] when one did (warnings allowed).
pub async fn run(config: &Config, json: bool) -> anyhow::Result<()> {
    let mut report = Report::new(json);
    let (options, display) = match &config.database.target {
        DatabaseTarget::External(url) => {
            report.ok(format!(
                "configuration (database {} from {})",
                url.redacted(),
                url.source
            ));
            (url.options.clone(), url.redacted().to_string())
        }
        DatabaseTarget::Embedded => {
            report.ok("configuration (no database configured: embedded cluster)");
            match check_embedded(config, &mut report) {
                Some(cluster) => (
                    cluster.connect_options(cluster::EMBEDDED_DATABASE),
                    format!("embedded cluster in {}", config.state_dir.display()),
                ),
                None => {
                    check_outside_the_database(config, &mut report).await;
                    return report.outcome();
                }
            }
        }
    };
    let model = check_embedder(config, &mut report).await;
    check_database(&options, &display, config, model.as_deref(), &mut report).await;
    check_outside_the_database(config, &mut report).await;
    report.outcome()
}

/// The backup store (a real write, read and delete) and the environment's `NEXUSD_*` names.
async fn check_outside_the_database(config: &Config, report: &mut Report) {
    report.ok(config.capabilities.backups.describe("backups"));
    report.ok(config.capabilities.host_metrics.describe("host metrics"));
    if config.capabilities.backups.on {
        let finding = probes::backup_store(&config.backup).await;
        report.record(finding);
    }
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    for finding in probes::unknown_variables(names.iter().map(String::as_str)) {
        report.record(finding);
    }
}

/// The configured embeddings provider; for openai, whether the endpoint embeds a probe text.
/// Returns the model id stored embeddings must have.
async fn check_embedder(config: &Config, report: &mut Report) -> Option<String> {
    let embedder = match Embedder::from_config(&config.embedding) {
        Ok(Some(e)) => e,
        Ok(None) => {
            report.ok("embeddings off (NEXUSD_EMBEDDING_PROVIDER=none): free-text search is full-text only");
            return None;
        }
        Err(e) => {
            report.fail(format!("embeddings: {e}"));
            return None;
        }
    };
    let model = embedder.model_id();
    match &embedder {
        Embedder::Builtin => report.ok(format!("embeddings by {model} (local, no network)")),
        Embedder::OpenAi(o) => {
            let started = std::time::Instant::now();
            match embedder.embed_one("nexusd check").await {
                Ok(_) => report.ok(format!(
                    "embeddings by {model}: {} answered in {} ms",
                    o.endpoint(),
                    started.elapsed().as_millis()
                )),
                Err(e) => report.fail(format!("embeddings by {model}: {e}")),
            }
        }
    }
    Some(model)
}

/// Whether the stored embeddings were made by `model`, and how many patterns have none.
async fn check_stored_embeddings(
    pool: &sqlx::PgPool,
    config: &Config,
    model: &str,
    report: &mut Report,
) {
    let Ok(mut conn) = pool.acquire().await else {
        return;
    };
    // Before migration 3 there is nothing to say (the pending migration is reported).
    if let Ok((models, missing)) = crate::kb::search::models(&mut conn).await {
        let others: Vec<(String, i64)> =
            models.iter().filter(|(m, _)| m != model).cloned().collect();
        let current = models
            .iter()
            .find(|(m, _)| m == model)
            .map_or(0, |(_, n)| *n);
        if !others.is_empty() {
            report.fail(mixed_models_message(model, &others));
        } else if missing > 0 && !config.embedding.backfill {
            report.warn(format!(
                "{current} patterns embedded, {missing} without an embedding: run nexusd embed \
                 (NEXUSD_EMBEDDING_BACKFILL is off)"
            ));
        } else if missing > 0 {
            report.ok(format!(
                "{current} patterns embedded, {missing} without an embedding (nexusd serve embeds them in the background)"
            ));
        } else {
            report.ok(format!("{current} patterns embedded by {model}"));
        }
    }
}

/// Binaries, state directory and whether the cluster runs; returns it when it can be queried.
fn check_embedded(config: &Config, report: &mut Report) -> Option<Cluster> {
    check_writable(&config.state_dir, report);
    let spec = ClusterSpec::embedded(&config.state_dir);
    let cluster = match Cluster::new(spec, config.database.pg_bindir.as_deref()) {
        Ok(cluster) => cluster,
        Err(e) => {
            report.fail(format!("embedded cluster: {e:#}"));
            return None;
        }
    };
    let bins = cluster.binaries();
    report.ok(format!(
        "PostgreSQL {} server binaries in {}",
        bins.version,
        bins.bindir.display()
    ));
    if !cluster.is_initialised() {
        report.warn(
            "embedded cluster not initialised yet: nexusd serve or nexusd bootstrap creates it",
        );
        return None;
    }
    match cluster.running_pid() {
        Some(pid) => {
            report.ok(format!("embedded cluster running (pid {pid})"));
            Some(cluster)
        }
        None => {
            report.warn(
                "embedded cluster not running: nexusd serve starts it (database checks skipped)",
            );
            None
        }
    }
}

fn check_writable(dir: &Path, report: &mut Report) {
    let probe = dir.join(".nexusd-check");
    let writable = std::fs::create_dir_all(dir).is_ok() && std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    if writable {
        report.ok(format!("state directory {} is writable", dir.display()));
    } else {
        report.fail(format!(
            "state directory {} is not writable: create it for the user running nexusd, or set NEXUSD_STATE_DIR",
            dir.display()
        ));
    }
}

async fn check_database(
    options: &sqlx::postgres::PgConnectOptions,
    display: &str,
    config: &Config,
    embedding_model: Option<&str>,
    report: &mut Report,
) {
    let conn = match bootstrap::connect(options, display).await {
        Ok(conn) => conn,
        Err(e) => {
            report.fail(format!(
                "{e}: check the address, credentials and that PostgreSQL runs"
            ));
            return;
        }
    };
    let facts = match ServerFacts::read(&conn).await {
        Ok(facts) => facts,
        Err(e) => {
            report.fail(e);
            return;
        }
    };
    if facts.version_num < MIN_SERVER_VERSION_NUM {
        report.fail(format!(
            "PostgreSQL {} is too old: nexusd needs 13 or newer",
            facts.version
        ));
    } else {
        report.ok(format!(
            "PostgreSQL {} reachable as {} (database {})",
            facts.version, facts.role, facts.database
        ));
    }
    match (&facts.vector.available, &facts.vector.installed) {
        (None, _) => report.fail(bootstrap::BootstrapError::PgvectorMissing {
            major: facts.major(),
        }),
        (Some(_), Some(v)) => report.ok(format!("pgvector {v} installed")),
        (Some(v), None) => {
            let how = if config.database.bootstrap.is_some() {
                "bootstrap creates it over NEXUSD_BOOTSTRAP_DATABASE_URL".to_string()
            } else {
                format!(
                    "bootstrap creates it if role {} may (superusers may), else set NEXUSD_BOOTSTRAP_DATABASE_URL",
                    facts.role
                )
            };
            report.warn(format!("pgvector {v} available but not created yet: {how}"));
        }
    }
    if facts.statements.installed.is_some() {
        match bootstrap::statements_status(&conn).await {
            StatementsStatus::Ready => report.ok("pg_stat_statements ready"),
            StatementsStatus::NotPreloaded { fix } => {
                report.warn(format!("pg_stat_statements not preloaded: {fix}"))
            }
            StatementsStatus::Unavailable { reason } => {
                report.warn(format!("pg_stat_statements unavailable: {reason}"))
            }
        }
    } else if facts.statements.available.is_some() {
        report.warn("pg_stat_statements not created yet: bootstrap creates it (statement metrics are off until then)");
    } else {
        report.warn("pg_stat_statements is not installed on the server (postgresql-contrib): statement metrics are off");
    }
    check_migrations(&conn, report).await;
    check_archiving(&conn, config, report).await;
    if let Some(model) = embedding_model {
        check_stored_embeddings(&conn, config, model, report).await;
    }
    if let Ok(mut one) = conn.acquire().await {
        for finding in probes::restore_rights(&mut one).await {
            report.record(finding);
        }
    }
    conn.close().await;
}

/// Whether WAL is archived through nexusd (point-in-time recovery, docs/pitr.md): the settings,
/// and pg_stat_archiver's last success and failure. When it is not, the exact settings to use.
async fn check_archiving(conn: &sqlx::PgPool, config: &Config, report: &mut Report) {
    type Row = (
        String,
        String,
        String,
        i64,
        i64,
        Option<String>,
        Option<String>,
    );
    let row: Result<Row, _> = sqlx::query_as(
        "SELECT current_setting('archive_mode'), current_setting('wal_level'),
                current_setting('archive_command'), archived_count, failed_count,
                to_char(last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC',
                CASE WHEN last_failed_time > coalesce(last_archived_time, '-infinity')
                     THEN last_failed_wal END
           FROM pg_stat_archiver",
    )
    .fetch_one(conn)
    .await;
    let (mode, level, command, archived, failed, last, failing) = match row {
        Ok(row) => row,
        Err(e) => {
            report.warn(format!("WAL archiving: cannot read the settings: {e}"));
            return;
        }
    };
    let on = mode != "off" && level != "minimal" && command.contains("wal-push");
    if !on {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/usr/local/bin/nexusd".into());
        let env_file = match &config.env_file {
            crate::env::file::EnvFile::Read(p) | crate::env::file::EnvFile::AppliedBySystemd(p) => {
                format!(" --env-file {}", p.display())
            }
            _ => String::new(),
        };
        report.warn(format!(
            "WAL archiving is off (archive_mode = {mode}, wal_level = {level}, archive_command = \
             {command:?}): point-in-time recovery needs, in postgresql.conf (then restart \
             PostgreSQL): wal_level = replica, archive_mode = on, archive_timeout = 60s, \
             archive_command = '{exe}{env_file} wal-push %p' (the environment file must be \
             readable by the server's user; see docs/pitr.md)"
        ));
        return;
    }
    match failing {
        Some(wal) => report.fail(format!(
            "WAL archiving fails: {wal} was not archived ({failed} failures, {archived} archived; \
             the server's log says why); PostgreSQL keeps the WAL until it is"
        )),
        None => report.ok(format!(
            "WAL archived through nexusd to {} ({archived} files, last {})",
            crate::backup::wal::archive_config(&config.backup)
                .destination
                .describe(),
            last.unwrap_or_else(|| "none yet".into())
        )),
    }
}

/// Whether the schema is current, behind (pending migrations) or ahead of this nexusd.
async fn check_migrations(conn: &sqlx::PgPool, report: &mut Report) {
    match bootstrap::applied_versions(conn).await {
        Ok(applied) => {
            let latest = bootstrap::latest_known_migration();
            let current = applied.iter().copied().max().unwrap_or(0);
            let pending: Vec<i64> = bootstrap::MIGRATOR
                .iter()
                .map(|m| m.version)
                .filter(|v| !applied.contains(v))
                .collect();
            if current > latest {
                report.fail(format!(
                    "the schema is at migration {current}, newer than this nexusd knows ({latest}): run the newer nexusd"
                ));
            } else if pending.is_empty() {
                report.ok(format!("schema current (migration {current})"));
            } else {
                report.warn(format!(
                    "migrations pending {pending:?}: nexusd bootstrap applies them (nexusd serve does at start)"
                ));
            }
        }
        Err(e) => report.fail(e),
    }
}
