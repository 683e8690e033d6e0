//! `nexusd serve`: composes the capabilities into the daemon and owns the shutdown order. Each
//! capability has one start function; this file only says in which order they start and stop:
//! listeners first (they answer 503 until the database is ready), then the database (the
//! embedded cluster supervised, bootstrap retried in the background), backups, metrics, the
//! skills API and the embedding backfill; on shutdown, stop accepting → drain requests and a
//! backup in flight → close the pool → stop the embedded cluster.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backup::Backups;
use crate::backup::schedule::Schedule;
use crate::backup::status::StatusHandle;
use crate::bootstrap::Readiness;
use crate::config::Config;
use crate::db::Database;
use crate::db::cluster::{self, StateLock};
use crate::db::target::{STOP_GRACE, Target};
use crate::embed::Search;
use crate::http::auth::Authenticator;
use crate::metrics::{Metrics, SkillStats};
use crate::skills::{AppState, Caller, SkillCache, SkillContext};

/// Shutdown budget, 10 s in all: requests and a backup in flight get `DRAIN_TIMEOUT` to finish
/// (an unfinished backup is then aborted, 1 s), pooled connections `POOL_CLOSE_TIMEOUT` to
/// close, and the embedded PostgreSQL [`STOP_GRACE`] for a fast shutdown before it is stopped
/// harder (at most 2 s more).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `nexusd serve`: runs until `shutdown` is cancelled, then stops everything in order.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<()> {
    let config = Arc::new(config);
    let skills = Arc::new(crate::skills::registry(&config.skills)?);
    let search = Search::new(&config.embedding)?;
    if !config.skills.api.auth.required {
        tracing::warn!(
            "REQUIRE_AUTH_FOR_WRITE is false: write skills accept calls without credentials"
        );
    }
    let listeners = Listeners::bind(&config).await?;
    let database = DatabaseTask::start(&config, &shutdown).await?;
    let backups = BackupTask::start(&config, &database.db).await;
    tracing::info!(
        "{}; {}",
        config.capabilities.backups.describe("backups"),
        config.capabilities.host_metrics.describe("host metrics")
    );

    let skill_stats = Arc::new(SkillStats::default());
    let metrics_server = listeners.metrics.map(|listener| {
        let metrics = Arc::new(Metrics::new(
            &config.metrics,
            database.db.clone(),
            backups.status.clone(),
            skill_stats.clone(),
        ));
        tokio::spawn(crate::metrics::serve(
            listener,
            metrics,
            config.skills.api.http,
            shutdown.clone(),
        ))
    });
    let state = AppState {
        ctx: SkillContext {
            caller: Caller::default(),
            config: Arc::new(config.skills.clone()),
            db: Arc::new(database.db.clone()),
            readiness: database.readiness.clone(),
            search: search.clone(),
            backups: backups.backups.clone(),
            backup_status: backups.status.clone(),
            workflow_wake: Arc::new(tokio::sync::Notify::new()),
            cache: Arc::new(SkillCache::new(
                config.skills.cache_bytes,
                skill_stats.cache.clone(),
            )),
        },
        skills,
        auth: Arc::new(Authenticator::new(&config.skills.api.auth)),
        skill_stats,
    };
    let cache_listener = crate::skills::spawn_cache_listener(
        state.ctx.cache.clone(),
        &database.db,
        database.readiness.clone(),
    );
    let backfill = crate::embed::job::spawn_backfill(
        database.db.clone(),
        search,
        state.ctx.cache.clone(),
        database.readiness.clone(),
        shutdown.clone(),
    );
    let folder = crate::kb::keyword_uses::spawn_folder(
        database.db.pool().clone(),
        database.readiness.clone(),
        shutdown.clone(),
    );
    let workers = crate::skills::spawn_workflow_workers(
        state.ctx.clone(),
        state.ctx.workflow_wake.clone(),
        state.skill_stats.workflows.clone(),
        config.skills.workflow_concurrency,
    );
    crate::systemd::notify_ready();
    let watchdog = crate::systemd::spawn_watchdog(shutdown.clone());

    let (served, (), ()) = tokio::join!(
        serve_api(listeners.api, state, &shutdown),
        backups.stop(&shutdown),
        stop_metrics(metrics_server, &shutdown),
    );
    // A running workflow goes back to the queue before the pool closes.
    workers.stop(DRAIN_TIMEOUT).await;
    served?;
    crate::systemd::notify_stopping();
    tracing::info!("shutting down");
    for task in [backfill, watchdog, cache_listener].into_iter().flatten() {
        task.abort();
    }
    folder.abort();
    database.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// The API and metrics listeners, bound before anything else so a port clash fails at once.
struct Listeners {
    api: TcpListener,
    metrics: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Self> {
        let addr = config.skills.api.addr;
        let api = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (NEXUSD_API_ADDR)"))?;
        tracing::info!(%addr, "skills API listening");
        let metrics = match config.metrics.addr {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => {
                tracing::info!("metrics listener off (NEXUSD_METRICS_ADDR=off)");
                None
            }
        };
        Ok(Listeners { api, metrics })
    }
}

/// The database side of the daemon: the pool, the embedded cluster's supervisor (with the state
/// directory's lock) when nexusd runs one, and bootstrap retried in the background.
struct DatabaseTask {
    db: Database,
    readiness: watch::Receiver<Readiness>,
    bootstrapper: JoinHandle<()>,
    /// The leader election (`db/leader.rs`), on its own direct connection.
    election: JoinHandle<()>,
    resign: CancellationToken,
    /// Checks the read replicas' lag (`db/replicas.rs`), when there are any.
    replica_checker: Option<JoinHandle<()>>,
    supervisor: Option<JoinHandle<()>>,
    cluster_stop: CancellationToken,
    _state_lock: Option<StateLock>,
}

impl DatabaseTask {
    async fn start(config: &Arc<Config>, shutdown: &CancellationToken) -> Result<Self> {
        let (settings, dirs) = crate::backup::wal::embedded_archiving_if_on(config);
        let target = Target::resolve_with(&config.database, &config.state_dir, settings, dirs)?;
        let cluster_stop = CancellationToken::new();
        let mut state_lock = None;
        let mut supervisor = None;
        // Bootstrap waits for the embedded cluster's first start rather than fail against it.
        let (cluster_up_tx, cluster_up) = watch::channel(target.cluster.is_none());
        if let Some(cluster) = &target.cluster {
            state_lock = Some(StateLock::try_acquire(&config.state_dir)?.with_context(|| {
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
                STOP_GRACE,
                cluster_stop.clone(),
                move |pid| {
                    tracing::debug!(pid, "embedded PostgreSQL running");
                    cluster_up_tx.send_replace(true);
                },
            )));
        }
        tracing::info!(database = %target.display, "knowledge base");
        // Sessions that must last (the leader's lock, migrations under sqlx's advisory lock)
        // bypass a transaction-pooling PgBouncer.
        let direct = config.connections.direct_or(&target.options);
        // Leadership is given up only in `stop`, after a backup in flight had its drain time.
        let resign = CancellationToken::new();
        let (ready_tx, readiness) = watch::channel(Readiness::Starting);
        let mut bootstrapped = readiness.clone();
        let (leader, election) = crate::db::leader::Leader::start(
            crate::db::session_options(direct.clone()),
            async move {
                let _ = bootstrapped
                    .wait_for(|r| matches!(r, Readiness::Ready(_)))
                    .await;
            },
            resign.clone(),
        );
        let db = Database::new(
            target.options.clone(),
            target.password.as_deref(),
            &config.database,
        )
        // Named after this replica: its writes skip the knowledge base's notification while no
        // other replica listens (`skills/cache.rs`).
        .with_pool_name(&crate::skills::session_names().pool)
        .with_leader(leader);
        let (db, replica_checker) = past_one_machine(config, db);
        let bootstrapper = tokio::spawn(crate::bootstrap::until_ready(
            direct,
            target.display,
            config.database.bootstrap.clone(),
            cluster_up,
            ready_tx,
            shutdown.clone(),
        ));
        Ok(DatabaseTask {
            db,
            readiness,
            bootstrapper,
            election,
            resign,
            replica_checker,
            supervisor,
            cluster_stop,
            _state_lock: state_lock,
        })
    }

    /// Stops bootstrap, closes the pool, then stops the embedded cluster.
    async fn stop(self) {
        self.bootstrapper.abort();
        if let Some(checker) = &self.replica_checker {
            checker.abort();
        }
        // Release the leader lock at once, so another replica takes over without waiting for
        // this process's connections to drop.
        self.resign.cancel();
        let _ = tokio::time::timeout(POOL_CLOSE_TIMEOUT, self.election).await;
        if tokio::time::timeout(POOL_CLOSE_TIMEOUT, self.db.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections did not close in time");
        }
        self.cluster_stop.cancel();
        if let Some(supervisor) = self.supervisor {
            let limit = STOP_GRACE + Duration::from_millis(2500);
            if tokio::time::timeout(limit, supervisor).await.is_err() {
                tracing::error!("the embedded PostgreSQL did not stop in time");
            }
        }
    }
}

/// The pool's direct side (`NEXUSD_DIRECT_DATABASE_URL`: dedicated sessions bypass a pooler)
/// and the read replicas (`DATABASE_READ_URL`) with their lag checker.
fn past_one_machine(config: &Config, db: Database) -> (Database, Option<JoinHandle<()>>) {
    let db = db.past_the_pooler(&config.connections);
    if config.connections.read.is_empty() {
        return (db, None);
    }
    let reads = crate::db::replicas::ReadReplicas::new(
        &config.connections.read,
        config.connections.read_max_lag,
        config.database.max_connections,
    );
    let checker = reads.spawn_checker();
    (db.with_read_replicas(reads), Some(checker))
}

/// Backups under `serve`: the store, the status `/health` and `/metrics` read, and the schedule.
struct BackupTask {
    /// `None` when the store could not be opened (the reason is in `status`).
    backups: Option<Arc<Backups>>,
    status: StatusHandle,
    schedule: Option<Schedule>,
    /// Re-reads the store's newest backup and verification (`backup::follow`).
    follower: Option<JoinHandle<()>>,
}

impl BackupTask {
    /// Opens the store and starts the schedule; on failure nexusd keeps serving and reports why
    /// backups are off.
    async fn start(config: &Config, db: &Database) -> Self {
        let status = StatusHandle::default();
        if !config.capabilities.backups.on {
            let why = config.capabilities.backups.describe("backups");
            status.update(|s| s.unavailable = Some(why));
            return BackupTask {
                backups: None,
                status,
                schedule: None,
                follower: None,
            };
        }
        let opened = Backups::open(
            &config.backup,
            db.clone(),
            config.database.pg_bindir.clone(),
            config.state_dir.join("spool"),
            status.clone(),
        )
        .await;
        let backups = match opened {
            Ok(b) => Arc::new(b.expecting_tables(crate::bootstrap::KNOWLEDGE_BASE_TABLES)),
            Err(e) => {
                let store = config.backup.destination.describe();
                let why = format!("cannot open the backup store {store}: {e}");
                tracing::error!("{why}; backups are off");
                status.update(|s| {
                    s.store = store;
                    s.unavailable = Some(why);
                });
                return BackupTask {
                    backups: None,
                    status,
                    schedule: None,
                    follower: None,
                };
            }
        };
        // Remember the last good backup across restarts (/health, metrics) without delaying
        // start, and follow the store: backups and verifications run by hand show too.
        let follower = tokio::spawn(crate::backup::follow::follow(
            backups.clone(),
            config.backup.status_refresh,
        ));
        let schedule =
            match crate::backup::schedule::start(backups.clone(), db.leader().clone()).await {
                Ok(schedule) => schedule,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "backups will not be scheduled");
                    status.update(|s| s.unavailable = Some(format!("{e:#}")));
                    None
                }
            };
        BackupTask {
            backups: Some(backups),
            status,
            schedule,
            follower: Some(follower),
        }
    }

    /// At shutdown, a backup in flight gets the same drain time as requests, then is aborted
    /// cleanly.
    async fn stop(self, shutdown: &CancellationToken) {
        shutdown.cancelled().await;
        if let Some(follower) = &self.follower {
            follower.abort();
        }
        if let (Some(schedule), Some(backups)) = (self.schedule, &self.backups) {
            schedule.stop(backups, DRAIN_TIMEOUT).await;
        }
    }
}

/// Serves the skills API until shutdown, then gives requests in flight `DRAIN_TIMEOUT` (a skill
/// still running then goes on in its own task until the runtime stops).
async fn serve_api(
    listener: TcpListener,
    state: AppState,
    shutdown: &CancellationToken,
) -> Result<()> {
    let http = state.ctx.config.api.http;
    let server = crate::http::server::serve(
        listener,
        crate::skills::router(state),
        http,
        shutdown.clone(),
    );
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        () = server => Ok(()),
        () = drain_deadline => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still running at shutdown were cut off");
            Ok(())
        }
    }
}

/// Scrapes are bounded (a few seconds at most) and their listener stops with the API's.
async fn stop_metrics(server: Option<JoinHandle<Result<()>>>, shutdown: &CancellationToken) {
    let Some(server) = server else {
        return;
    };
    shutdown.cancelled().await;
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %format!("{e:#}"), "metrics listener failed"),
        Err(_) => tracing::warn!("a metrics scrape was still running at shutdown"),
        _ => {}
    }
}
