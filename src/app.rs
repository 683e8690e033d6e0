//! Wiring: composes the capabilities into `nexusd serve` and `nexusd bootstrap`, and owns the
//! shutdown order (stop accepting → drain requests → close the pool → stop the embedded cluster).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backup::Backups;
use crate::backup::status::StatusHandle;
use crate::bootstrap::{self, BootstrapReport};
use crate::config::{Config, DatabaseTarget};
use crate::db::Database;
use crate::db::cluster::{self, Cluster, ClusterSpec, Postmaster, StateLock};
use crate::metrics::{Metrics, SkillStats};
use crate::skills::auth::Authenticator;
use crate::skills::registry::Registry;

/// Shutdown budget, 10 s in all: requests and a backup in flight get `DRAIN_TIMEOUT` to finish
/// (an unfinished backup is then aborted, 1 s), pooled connections `POOL_CLOSE_TIMEOUT` to
/// close, and the embedded PostgreSQL `CLUSTER_STOP_GRACE` for a fast shutdown before
/// [`Postmaster::stop`] escalates (at most 2 s more).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const CLUSTER_STOP_GRACE: Duration = Duration::from_secs(3);
const MAX_BOOTSTRAP_BACKOFF: Duration = Duration::from_secs(60);

/// Where the schema stands, as `/health` reports it.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// No bootstrap attempt has finished yet.
    Starting,
    /// The last attempt failed; nexusd keeps retrying.
    Failed {
        error: String,
        attempts: u32,
    },
    Ready(Arc<BootstrapReport>),
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Database,
    pub readiness: watch::Receiver<Readiness>,
    pub skills: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    /// The embedder and search settings (`query`, `find_similar_patterns`, `record_analysis`).
    pub search: Arc<crate::embed::Search>,
    /// `None` when the backup store could not be opened (the reason is in `backup_status`).
    pub backups: Option<Arc<Backups>>,
    pub backup_status: StatusHandle,
    /// Skill calls by skill and outcome, for `/metrics`.
    pub skill_stats: Arc<SkillStats>,
}

/// Opens the backup store; on failure nexusd keeps serving and reports why backups are off.
async fn open_backups(
    config: &Config,
    db: &Database,
    status: &StatusHandle,
) -> Option<Arc<Backups>> {
    match Backups::open(
        &config.backup,
        db.clone(),
        config.database.pg_bindir.clone(),
        status.clone(),
    )
    .await
    {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            let why = format!(
                "cannot open the backup store {}: {e}",
                config.backup.destination.describe()
            );
            tracing::error!("{why}; backups are off");
            status.update(|s| {
                s.store = config.backup.destination.describe();
                s.unavailable = Some(why);
            });
            None
        }
    }
}

/// The database nexusd talks to: options for connections, a printable name, and the embedded
/// cluster when nexusd runs one.
struct Target {
    options: PgConnectOptions,
    password: Option<String>,
    display: String,
    cluster: Option<Arc<Cluster>>,
}

fn target(config: &Config) -> Result<Target> {
    match &config.database.target {
        DatabaseTarget::External(url) => Ok(Target {
            options: url.options.clone(),
            password: url.password().map(str::to_string),
            display: url.redacted().to_string(),
            cluster: None,
        }),
        DatabaseTarget::Embedded => {
            let spec = ClusterSpec::embedded(&config.state_dir);
            let cluster = Cluster::new(spec, config.database.pg_bindir.as_deref()).context(
                "preparing the embedded PostgreSQL cluster (no DATABASE_URL or POSTGRES_* set)",
            )?;
            Ok(Target {
                options: cluster.connect_options(cluster::EMBEDDED_DATABASE),
                password: None,
                display: format!(
                    "embedded PostgreSQL {} ({}, database {})",
                    cluster.binaries().version,
                    config.state_dir.display(),
                    cluster::EMBEDDED_DATABASE
                ),
                cluster: Some(Arc::new(cluster)),
            })
        }
    }
}

/// `nexusd serve`: listeners first (they answer 503 until the database is ready), then the
/// embedded cluster and bootstrap in the background, until `shutdown` is cancelled.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<()> {
    let config = Arc::new(config);
    let skills = Arc::new(crate::skills::registry(&config)?);
    let search = crate::embed::Search::new(&config.embedding)?;
    if !config.api.auth.required {
        tracing::warn!(
            "REQUIRE_AUTH_FOR_WRITE is false: write skills accept calls without credentials"
        );
    }
    let api_addr = config.api.addr;
    let listener = TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("cannot listen on {api_addr} (NEXUSD_API_ADDR)"))?;
    tracing::info!(addr = %api_addr, "skills API listening");
    let metrics_listener = match config.metrics.addr {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => {
            tracing::info!("metrics listener off (NEXUSD_METRICS_ADDR=off)");
            None
        }
    };

    let target = target(&config)?;
    let cluster_stop = CancellationToken::new();
    let mut _state_lock = None;
    let mut supervisor = None;
    // Bootstrap waits for the embedded cluster's first start rather than fail against it.
    let (cluster_up_tx, cluster_up) = watch::channel(target.cluster.is_none());
    if let Some(cluster) = &target.cluster {
        _state_lock = Some(StateLock::try_acquire(&config.state_dir)?.with_context(|| {
            format!(
                "another nexusd is running with state directory {} (NEXUSD_STATE_DIR)",
                config.state_dir.display()
            )
        })?);
        if let Some(pid) = cluster.running_pid() {
            cluster.stop_stray(pid).await?;
        }
        supervisor = Some(tokio::spawn(cluster::supervise(
            cluster.clone(),
            cluster::EMBEDDED_DATABASE.to_string(),
            CLUSTER_STOP_GRACE,
            cluster_stop.clone(),
            move |pid| {
                tracing::debug!(pid, "embedded PostgreSQL running");
                cluster_up_tx.send_replace(true);
            },
        )));
    }
    tracing::info!(database = %target.display, "knowledge base");

    let db = Database::new(
        target.options.clone(),
        target.password.as_deref(),
        &config.database,
    );
    let (ready_tx, ready_rx) = watch::channel(Readiness::Starting);
    let bootstrapper = tokio::spawn(bootstrap_until_ready(
        target.options.clone(),
        target.display.clone(),
        config.clone(),
        cluster_up,
        ready_tx,
        shutdown.clone(),
    ));

    let backup_status = StatusHandle::default();
    let backups = open_backups(&config, &db, &backup_status).await;
    let schedule = match &backups {
        Some(b) => {
            let seed = b.clone();
            // Remember the last good backup across restarts (/health, metrics) without delaying start.
            tokio::spawn(async move { seed.load_status().await });
            match crate::backup::schedule::start(b.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "backups will not be scheduled");
                    backup_status.update(|s| s.unavailable = Some(format!("{e:#}")));
                    None
                }
            }
        }
        None => None,
    };

    let skill_stats = Arc::new(SkillStats::default());
    let metrics_server = metrics_listener.map(|listener| {
        let metrics = Arc::new(Metrics::new(
            &config.metrics,
            db.clone(),
            backup_status.clone(),
            skill_stats.clone(),
        ));
        tokio::spawn(crate::metrics::serve(listener, metrics, shutdown.clone()))
    });
    let state = AppState {
        auth: Arc::new(Authenticator::new(&config.api.auth)),
        config: config.clone(),
        db: db.clone(),
        readiness: ready_rx.clone(),
        skills,
        search: search.clone(),
        backups: backups.clone(),
        backup_status,
        skill_stats,
    };
    let app = crate::skills::router(state);
    let backfill =
        crate::embed::job::spawn_backfill(db.clone(), search, ready_rx, shutdown.clone());

    crate::systemd::notify_ready();
    let watchdog = crate::systemd::spawn_watchdog(shutdown.clone());

    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    // A backup in flight gets the same drain time as requests, then is aborted cleanly.
    let stop_backups = async {
        shutdown.cancelled().await;
        if let (Some(schedule), Some(b)) = (schedule, &backups) {
            schedule.stop(b, DRAIN_TIMEOUT).await;
        }
    };
    let serve_requests = async {
        tokio::select! {
            result = server => result.context("serving the skills API"),
            () = drain_deadline => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still running at shutdown were cut off");
                Ok(())
            }
        }
    };
    // Scrapes are bounded (a few seconds at most) and their listener stops with the API's.
    let stop_metrics = async {
        if let Some(server) = metrics_server {
            shutdown.cancelled().await;
            match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %format!("{e:#}"), "metrics listener failed")
                }
                Err(_) => tracing::warn!("a metrics scrape was still running at shutdown"),
                _ => {}
            }
        }
    };
    let (served, (), ()) = tokio::join!(serve_requests, stop_backups, stop_metrics);
    served?;
    crate::systemd::notify_stopping();
    tracing::info!("shutting down");

    bootstrapper.abort();
    if let Some(task) = backfill {
        task.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    if tokio::time::timeout(POOL_CLOSE_TIMEOUT, db.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections did not close in time");
    }
    cluster_stop.cancel();
    if let Some(supervisor) = supervisor {
        let limit = CLUSTER_STOP_GRACE + Duration::from_millis(2500);
        if tokio::time::timeout(limit, supervisor).await.is_err() {
            tracing::error!("the embedded PostgreSQL did not stop in time");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Retries bootstrap with exponential backoff until it succeeds or nexusd shuts down.
async fn bootstrap_until_ready(
    options: PgConnectOptions,
    display: String,
    config: Arc<Config>,
    mut cluster_up: watch::Receiver<bool>,
    ready: watch::Sender<Readiness>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = cluster_up.wait_for(|up| *up) => {}
        () = shutdown.cancelled() => return,
    }
    let mut backoff = Duration::from_secs(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match bootstrap::run(&options, &display, config.database.bootstrap.as_ref()).await {
            Ok(report) => {
                log_report(&report);
                crate::systemd::notify_status("serving; database ready");
                ready.send_replace(Readiness::Ready(Arc::new(report)));
                return;
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(%error, attempt = attempts, retry_in = ?backoff, "bootstrap failed; retrying");
                crate::systemd::notify_status(&format!(
                    "serving; waiting for the database: {error}"
                ));
                ready.send_replace(Readiness::Failed { error, attempts });
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BOOTSTRAP_BACKOFF);
    }
}

fn log_report(report: &BootstrapReport) {
    if report.applied_now.is_empty() {
        tracing::info!(
            server = %report.server_version,
            pgvector = %report.pgvector_version,
            migration = report.migration_version,
            "database ready; schema already current"
        );
    } else {
        tracing::info!(
            server = %report.server_version,
            pgvector = %report.pgvector_version,
            migration = report.migration_version,
            applied = ?report.applied_now,
            "database ready; migrations applied"
        );
    }
}

/// What a one-off command needs from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Only its address (listing or pruning backups touches the store alone).
    Address,
    /// A running server, as it is (backups and restores must not migrate what they copy).
    Server,
    /// A running server with the schema bootstrapped (`bootstrap`, `import-json`).
    Schema,
}

/// Runs `work` for a one-off command against the configured database. With the embedded
/// cluster, uses the running one (a `nexusd serve` may own it) or starts it just for the command
/// and stops it afterwards. `work` gets the bootstrap report when `needs` is [`Needs::Schema`].
pub async fn with_database<T>(
    config: &Config,
    needs: Needs,
    work: impl AsyncFnOnce(&Database, Option<BootstrapReport>) -> Result<T>,
) -> Result<T> {
    let target = target(config)?;
    let mut own = None;
    let mut _lock = None;
    if let Some(cluster) = &target.cluster
        && needs != Needs::Address
        && cluster.running_pid().is_none()
    {
        _lock = match StateLock::try_acquire(&config.state_dir)? {
            Some(lock) => Some(lock),
            None => bail!(
                "a nexusd serve owns {} but its PostgreSQL is not up yet; try again in a moment",
                config.state_dir.display()
            ),
        };
        own = Some(start_embedded(cluster).await?);
    }
    let result = async {
        let report = if needs == Needs::Schema {
            Some(
                bootstrap::run(
                    &target.options,
                    &target.display,
                    config.database.bootstrap.as_ref(),
                )
                .await?,
            )
        } else {
            None
        };
        let db = Database::new(
            target.options.clone(),
            target.password.as_deref(),
            &config.database,
        );
        let outcome = work(&db, report).await;
        db.close().await;
        outcome
    }
    .await;
    if let Some(postmaster) = own {
        postmaster.stop(CLUSTER_STOP_GRACE).await?;
    }
    result
}

/// Starts the embedded cluster for a one-off command (initialising it on first use).
pub async fn start_embedded(cluster: &Cluster) -> Result<Postmaster> {
    cluster.init_if_needed().await?;
    let postmaster = cluster.start().await?;
    if let Err(e) = cluster.ensure_database(cluster::EMBEDDED_DATABASE).await {
        postmaster.stop(CLUSTER_STOP_GRACE).await.ok();
        return Err(e);
    }
    Ok(postmaster)
}

/// Cancels `token` on SIGTERM or SIGINT. A second SIGINT (Ctrl-C twice in a terminal) exits at
/// once; repeated SIGTERMs are ignored while the orderly shutdown runs.
pub fn cancel_on_signals(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
        token.cancel();
        loop {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM again: already shutting down"),
                _ = int.recv() => {
                    tracing::warn!("second SIGINT: exiting immediately");
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(())
}
