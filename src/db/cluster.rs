//! The embedded PostgreSQL cluster: when no database is configured nexusd finds the server
//! binaries on the machine, `initdb`s a cluster under its state directory, runs `postgres` as a
//! supervised child on a Unix socket (no TCP), and stops it cleanly on shutdown. Its output goes
//! to nexusd's log at PostgreSQL's own levels ([`pg_log`]); a guardian process stops it if nexusd
//! dies without doing so ([`guardian`]).
//!
//! The same code starts the throwaway clusters of the test harness (with a TCP port and no fsync).

mod guardian;
mod pg_log;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User, chown, geteuid};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::Level;

use self::pg_log::LogSink;
use super::programs;

/// The database the embedded cluster serves (the original's name).
pub const EMBEDDED_DATABASE: &str = "devnexus";
/// The embedded cluster's superuser, which nexusd connects as over the private socket.
const EMBEDDED_SUPERUSER: &str = "nexusd";
/// Oldest server major version nexusd supports.
const MIN_MAJOR: u32 = 13;

/// How long a starting server may take before we give up (crash recovery can be slow).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A set of PostgreSQL server programs (`postgres`, `initdb`) of one version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bindir: PathBuf,
    /// Full version, e.g. `15.20`.
    pub version: String,
    pub major: u32,
}

impl PgBinaries {
    /// Finds server binaries in [`programs::search_dirs`]. With `want_major`, only that major version is accepted (an existing data
    /// directory can only be run by the version that created it).
    pub fn locate(explicit: Option<&Path>, want_major: Option<u32>) -> Result<Self> {
        let candidates = programs::search_dirs(explicit);
        let found: Vec<PgBinaries> = candidates
            .iter()
            .filter_map(|d| programs::probe(d, &["postgres", "initdb"]))
            .map(|f| PgBinaries {
                bindir: f.bindir,
                version: f.version,
                major: f.major,
            })
            .collect();
        let searched = candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let chosen = match want_major {
            Some(major) => found
                .iter()
                .find(|b| b.major == major)
                .cloned()
                .ok_or_else(|| {
                    let others = found
                        .iter()
                        .map(|b| b.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    anyhow!(
                        "the embedded data directory was initialised by PostgreSQL {major}, but no \
                     PostgreSQL {major} server binaries were found (found: {}); install \
                     postgresql-{major} or upgrade the cluster with pg_upgrade, and set \
                     NEXUSD_PG_BINDIR to its bin directory",
                        if others.is_empty() { "none" } else { &others }
                    )
                })?,
            None => found.first().cloned().ok_or_else(|| {
                anyhow!(
                    "no PostgreSQL server binaries (postgres, initdb) found in {}: install \
                     postgresql-15 (scripts/setup-debian does) or set NEXUSD_PG_BINDIR",
                    if searched.is_empty() {
                        "the usual places"
                    } else {
                        &searched
                    }
                )
            })?,
        };
        if chosen.major < MIN_MAJOR {
            bail!(
                "PostgreSQL {} in {} is too old: nexusd needs {MIN_MAJOR} or newer",
                chosen.version,
                chosen.bindir.display()
            );
        }
        Ok(chosen)
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// The Unix user that owns and runs the cluster when nexusd itself runs as root
/// (PostgreSQL refuses to run as root).
#[derive(Debug, Clone)]
struct RunAs {
    uid: Uid,
    gid: Gid,
    name: String,
}

fn run_as() -> Result<Option<RunAs>> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = User::from_name(name).context("looking up system users")? {
            return Ok(Some(RunAs {
                uid: user.uid,
                gid: user.gid,
                name: name.to_string(),
            }));
        }
    }
    bail!(
        "nexusd runs as root and PostgreSQL refuses to: create a 'postgres' system user to own the \
         embedded cluster, or run nexusd as an unprivileged user"
    )
}

/// What cluster to run and how.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub data_dir: PathBuf,
    /// Directory of the Unix socket (`.s.PGSQL.<port>`), private to the cluster's owner.
    pub socket_dir: PathBuf,
    pub port: u16,
    /// Also listen on `127.0.0.1:<port>` (test clusters); the embedded cluster is socket-only.
    pub tcp: bool,
    pub superuser: String,
    /// `false` for throwaway clusters: no fsync anywhere.
    pub durable: bool,
    /// Server settings written to `nexusd.conf` at every start.
    pub settings: Vec<(String, String)>,
}

impl ClusterSpec {
    /// The embedded cluster under `state_dir`: data in `pg/`, socket in `run/`.
    pub fn embedded(state_dir: &Path) -> Self {
        ClusterSpec {
            data_dir: state_dir.join("pg"),
            socket_dir: state_dir.join("run"),
            port: 5432,
            tcp: false,
            superuser: EMBEDDED_SUPERUSER.to_string(),
            durable: true,
            settings: small_vm_settings(),
        }
    }

    fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{}", self.port))
    }
}

/// Settings for a 1 GB machine shared with nexusd itself: small shared memory, few
/// connections, no JIT, pg_stat_statements preloaded (for the metrics), I/O timing on.
pub fn small_vm_settings() -> Vec<(String, String)> {
    [
        ("max_connections", "25"),
        ("shared_buffers", "128MB"),
        ("effective_cache_size", "384MB"),
        ("work_mem", "4MB"),
        ("maintenance_work_mem", "64MB"),
        ("max_wal_size", "512MB"),
        ("min_wal_size", "80MB"),
        ("checkpoint_completion_target", "0.9"),
        ("random_page_cost", "1.1"),
        ("jit", "off"),
        ("max_worker_processes", "4"),
        ("max_parallel_workers_per_gather", "1"),
        ("autovacuum_max_workers", "2"),
        ("autovacuum_naptime", "30s"),
        ("shared_preload_libraries", "pg_stat_statements"),
        ("pg_stat_statements.max", "5000"),
        ("pg_stat_statements.track", "top"),
        ("track_io_timing", "on"),
        ("log_min_duration_statement", "1000"),
        ("timezone", "UTC"),
        ("log_timezone", "UTC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A cluster on disk, with the binaries that run it.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    bins: PgBinaries,
    run_as: Option<RunAs>,
    /// Directories the server's user must write (the local WAL archive), prepared at each start.
    shared_dirs: Vec<PathBuf>,
}

impl Cluster {
    /// Finds binaries matching the data directory's version (any supported one for a new
    /// cluster) and checks the socket path fits the kernel's limit.
    pub fn new(spec: ClusterSpec, pg_bindir: Option<&Path>) -> Result<Self> {
        let data_major = std::fs::read_to_string(spec.data_dir.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse().ok());
        let bins = PgBinaries::locate(pg_bindir, data_major)?;
        let socket = spec.socket_path();
        // sun_path holds 108 bytes including the terminating NUL; PostgreSQL adds a lock file name.
        if socket.as_os_str().len() > 100 {
            bail!(
                "the embedded cluster's socket path {} is too long for a Unix socket: choose a \
                 shorter NEXUSD_STATE_DIR",
                socket.display()
            );
        }
        Ok(Cluster {
            spec,
            bins,
            run_as: run_as()?,
            shared_dirs: Vec::new(),
        })
    }

    /// Adds server settings (written to `nexusd.conf` at every start) and directories the
    /// server's own user must be able to write.
    pub fn with_settings(mut self, settings: Vec<(String, String)>, dirs: Vec<PathBuf>) -> Self {
        self.spec.settings.extend(settings);
        self.shared_dirs.extend(dirs);
        self
    }

    /// Creates each shared directory for the server's user (when it is not nexusd's own) and
    /// lets that user through its parent (traverse only: `o+x`, nothing readable).
    fn prepare_shared_dirs(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for dir in &self.shared_dirs {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let Some(user) = &self.run_as else { continue };
            chown(dir, Some(user.uid), Some(user.gid))
                .with_context(|| format!("giving {} to user {}", dir.display(), user.name))?;
            if let Some(parent) = dir.parent() {
                let mode = std::fs::metadata(parent)
                    .with_context(|| format!("reading {}", parent.display()))?
                    .permissions()
                    .mode();
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o011))
                    .with_context(|| format!("opening {} to {}", parent.display(), user.name))?;
            }
        }
        Ok(())
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// Creates the data directory empty, owned by the server's user, mode 0700 (a restore
    /// unpacks a base backup into it: src/backup/pitr.rs).
    pub fn prepare_data_dir(&self) -> Result<()> {
        self.private_dir(&self.spec.data_dir)
    }

    /// The uid and gid the server runs as, when not nexusd's own.
    pub fn owner_ids(&self) -> Option<(u32, u32)> {
        self.run_as
            .as_ref()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    }

    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    /// Connection options for `database` over the cluster's socket, as its superuser.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.spec.socket_dir)
            .port(self.spec.port)
            .username(&self.spec.superuser)
            .database(database)
            .application_name("nexusd")
    }

    /// Whether the data directory holds an initialised cluster.
    pub fn is_initialised(&self) -> bool {
        self.spec.data_dir.join("PG_VERSION").is_file()
    }

    /// The PID of a postmaster running on this data directory (ours or a stray one), if any.
    pub fn running_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.spec.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let pid = Pid::from_raw(pid);
        // Signal 0 only checks that the process exists.
        kill(pid, None).ok().map(|_| pid)
    }

    /// Runs `initdb` when the data directory is not initialised yet. Returns whether it did.
    pub async fn init_if_needed(&self) -> Result<bool> {
        if self.is_initialised() {
            return Ok(false);
        }
        let data = &self.spec.data_dir;
        if data.is_dir()
            && std::fs::read_dir(data)
                .with_context(|| format!("reading {}", data.display()))?
                .next()
                .is_some()
        {
            bail!(
                "{} is not empty but holds no PostgreSQL cluster (no PG_VERSION): move its contents \
                 away or choose another NEXUSD_STATE_DIR",
                data.display()
            );
        }
        self.private_dir(data)?;
        tracing::info!(
            data_dir = %data.display(),
            version = %self.bins.version,
            "initialising the embedded PostgreSQL cluster"
        );
        let mut cmd = self.command(self.bins.program("initdb"));
        cmd.arg("-D")
            .arg(data)
            .arg("-U")
            .arg(&self.spec.superuser)
            .args([
                "-E",
                "UTF8",
                "--no-locale",
                "--auth-local=trust",
                "--no-instructions",
            ])
            .arg(if self.spec.tcp {
                "--auth-host=trust"
            } else {
                "--auth-host=reject"
            });
        if !self.spec.durable {
            cmd.arg("--no-sync");
        }
        let output = cmd.output().await.context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // Our settings live in their own file, rewritten at every start.
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).context("reading postgresql.conf")?;
        text.push_str("\n# Settings managed by nexusd (rewritten at every start):\ninclude_if_exists = 'nexusd.conf'\n");
        std::fs::write(&conf, text).context("writing postgresql.conf")?;
        Ok(true)
    }

    /// Starts `postgres` as a child for a one-off job (a command, a test) and waits until it
    /// accepts connections. Its routine lines are logged at debug: they are not what the job
    /// reports.
    pub async fn start(&self) -> Result<Postmaster> {
        let mut postmaster = self.spawn_logging(Level::DEBUG)?;
        match self.wait_ready(&mut postmaster).await {
            Ok(()) => Ok(postmaster),
            Err(e) => {
                postmaster.stop(Duration::from_secs(5)).await.ok();
                Err(e)
            }
        }
    }

    /// Starts `postgres` as a child, its output forwarded to our log (routine lines at info).
    pub fn spawn(&self) -> Result<Postmaster> {
        self.spawn_logging(Level::INFO)
    }

    /// Starts `postgres` as a child with its guardian; routine lines are logged at `routine`.
    fn spawn_logging(&self, routine: Level) -> Result<Postmaster> {
        self.write_settings()?;
        self.prepare_shared_dirs()?;
        self.private_dir(&self.spec.socket_dir)?;
        let mut cmd = self.command(self.bins.program("postgres"));
        cmd.arg("-D")
            .arg(&self.spec.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in a terminal reaches nexusd only, which then
            // stops the server in order instead of racing it.
            .process_group(0);
        let mut child = cmd.spawn().context("starting postgres")?;
        let pid = child
            .id()
            .map(|id| Pid::from_raw(id as i32))
            .ok_or_else(|| anyhow!("postgres exited at once"))?;
        let log = LogSink::new(routine);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(log.clone().forward(out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(log.clone().forward(err));
        }
        let guardian = guardian::spawn(self.command("/bin/sh"), pid, &self.spec.data_dir);
        Ok(Postmaster {
            child,
            pid,
            log,
            guardian,
            exited: false,
        })
    }

    /// Waits until a spawned server accepts connections (crash recovery may take a while).
    async fn wait_ready(&self, postmaster: &mut Postmaster) -> Result<()> {
        let probe = self.connect_options("postgres").disable_statement_logging();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = postmaster.child.try_wait().context("watching postgres")? {
                postmaster.exited = true;
                // Let the log forwarders catch the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "postgres exited during start-up ({status}); its last output:\n{}",
                    postmaster.log_tail()
                );
            }
            let attempt =
                tokio::time::timeout(Duration::from_secs(2), PgConnection::connect_with(&probe))
                    .await;
            if let Ok(Ok(conn)) = attempt {
                let _ = conn.close().await;
                break;
            }
            if Instant::now() > deadline {
                bail!("postgres did not accept connections within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(pid = postmaster.pid(), socket = %self.spec.socket_path().display(), "PostgreSQL is up");
        Ok(())
    }

    /// Creates `database` if it does not exist yet.
    pub async fn ensure_database(&self, database: &str) -> Result<()> {
        let mut conn = PgConnection::connect_with(
            &self.connect_options("postgres").disable_statement_logging(),
        )
        .await
        .context("connecting to the embedded cluster")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {}", quote_ident(database)))
                .execute(&mut conn)
                .await
                .with_context(|| format!("creating database {database}"))?;
            tracing::info!(database, "created the database");
        }
        conn.close().await.ok();
        Ok(())
    }

    /// Stops a postmaster this process did not start (left behind by a killed nexusd).
    pub async fn stop_stray(&self, pid: Pid) -> Result<()> {
        tracing::warn!(
            pid = pid.as_raw(),
            "found a PostgreSQL left running on the embedded data directory; stopping it to take over"
        );
        kill(pid, Signal::SIGINT).context("signalling the stray postgres")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while kill(pid, None).is_ok() {
            if Instant::now() > deadline {
                bail!("the stray postgres (pid {pid}) did not stop within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// `program` run as the cluster's user, in a clean environment.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        // Neither our working directory nor our PG* environment concern the server.
        cmd.current_dir("/");
        // Nor do systemd's notification variables: the server would announce itself as us.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("PG") || name == "NOTIFY_SOCKET" || name.starts_with("WATCHDOG_") {
                cmd.env_remove(key);
            }
        }
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }

    /// Creates `dir` owned by the cluster's user with mode 0700.
    fn private_dir(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.check_reachable(dir)?;
        if let Some(user) = &self.run_as {
            chown(dir, Some(user.uid), Some(user.gid))
                .with_context(|| format!("giving {} to user {}", dir.display(), user.name))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
        Ok(())
    }

    /// When the server runs as another user than nexusd, every directory above `dir` must let
    /// that user through; say which one does not rather than let initdb fail obscurely.
    fn check_reachable(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        for ancestor in dir.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.mode();
            let passable = mode & 0o001 != 0
                || (meta.uid() == user.uid.as_raw() && mode & 0o100 != 0)
                || (meta.gid() == user.gid.as_raw() && mode & 0o010 != 0);
            if !passable {
                bail!(
                    "user {} (who runs the embedded PostgreSQL) cannot enter {} (mode {:o}): \
                     choose a NEXUSD_STATE_DIR outside it, or allow others to traverse it \
                     (chmod o+x)",
                    user.name,
                    ancestor.display(),
                    mode & 0o7777
                );
            }
        }
        Ok(())
    }

    fn write_settings(&self) -> Result<()> {
        let spec = &self.spec;
        let mut text = String::from(
            "# Written by nexusd at every start; edit NEXUSD_* settings or use ALTER SYSTEM instead.\n",
        );
        let listen = if spec.tcp { "127.0.0.1" } else { "" };
        let mut all: Vec<(String, String)> = vec![
            ("listen_addresses".into(), listen.into()),
            ("port".into(), spec.port.to_string()),
            (
                "unix_socket_directories".into(),
                spec.socket_dir.display().to_string(),
            ),
            ("unix_socket_permissions".into(), "0700".into()),
            ("logging_collector".into(), "off".into()),
            ("log_destination".into(), "stderr".into()),
            ("log_line_prefix".into(), "[%p] ".into()),
        ];
        if !spec.durable {
            for (k, v) in [
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ] {
                all.push((k.into(), v.into()));
            }
        }
        all.extend(spec.settings.iter().cloned());
        for (key, value) in all {
            let _ = writeln!(text, "{key} = '{}'", value.replace('\'', "''"));
        }
        let path = spec.data_dir.join("nexusd.conf");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if let Some(user) = &self.run_as {
            chown(&path, Some(user.uid), Some(user.gid)).context("chown nexusd.conf")?;
        }
        Ok(())
    }
}

/// A running `postgres` child. Dropped without [`Postmaster::stop`] (e.g. a start abandoned at
/// shutdown), it still gets an immediate-shutdown signal rather than being left behind; if nexusd
/// dies without either, its guardian stops it.
#[derive(Debug)]
pub struct Postmaster {
    child: Child,
    pid: Pid,
    log: LogSink,
    /// Holds the guardian's pipe open while nexusd lives.
    guardian: Option<Child>,
    /// Set once the process has been reaped, so its PID is never signalled again.
    exited: bool,
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        if !self.exited && matches!(self.child.try_wait(), Ok(None)) {
            self.log.stopping.store(true, Ordering::Relaxed);
            tracing::warn!(
                pid = self.pid.as_raw(),
                "abandoning a starting PostgreSQL: immediate shutdown"
            );
            let _ = kill(self.pid, Signal::SIGQUIT);
        }
    }
}

impl Postmaster {
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Waits until the server exits on its own.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        let status = self.child.wait().await.context("waiting for postgres")?;
        self.exited = true;
        Ok(status)
    }

    /// Fast shutdown (SIGINT: disconnect clients, checkpoint, exit); immediate shutdown
    /// (SIGQUIT, safe: the next start replays the WAL) if that takes longer than `grace`, SIGKILL
    /// as a last resort. Takes at most `grace` + 2 s.
    pub async fn stop(mut self, grace: Duration) -> Result<()> {
        // The sessions the server now ends are ours to end: not errors in the log.
        self.log.stopping.store(true, Ordering::Relaxed);
        let stopped = self.stop_escalating(grace).await;
        if stopped.is_ok()
            && let Some(guardian) = self.guardian.take()
        {
            guardian::release(guardian).await;
        }
        stopped
    }

    async fn stop_escalating(&mut self, grace: Duration) -> Result<()> {
        for (signal, wait) in [
            (Signal::SIGINT, grace),
            (Signal::SIGQUIT, Duration::from_secs(1)),
            (Signal::SIGKILL, Duration::from_secs(1)),
        ] {
            if let Some(status) = self.child.try_wait()? {
                self.exited = true;
                tracing::debug!(%status, "postgres already stopped");
                return Ok(());
            }
            // The process may exit between the check and the signal.
            let _ = kill(self.pid, signal);
            if let Ok(status) = tokio::time::timeout(wait, self.child.wait()).await {
                let status = status?;
                self.exited = true;
                tracing::info!(%status, ?signal, "PostgreSQL stopped");
                return Ok(());
            }
            tracing::warn!(?signal, ?wait, "postgres did not stop in time; escalating");
        }
        bail!("postgres (pid {}) could not be stopped", self.pid)
    }

    /// The server's last lines of output when it has exited on its own, `None` while it runs.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = true;
                Some(format!("{status}; its last output:\n{}", self.log_tail()))
            }
            _ => None,
        }
    }

    /// The server's last lines of output, for error messages.
    fn log_tail(&self) -> String {
        self.log.tail_text()
    }
}

/// Runs the cluster until `cancel`: initdb on first use, start, create `database`, restart with
/// backoff whenever the server dies, shutdown (fast within `stop_grace`) at the end. `on_up` is
/// told each start's PID.
pub async fn supervise(
    cluster: Arc<Cluster>,
    database: String,
    stop_grace: Duration,
    cancel: CancellationToken,
    on_up: impl Fn(i32) + Send + 'static,
) {
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let mut backoff = Duration::from_secs(1);
    loop {
        match run_once(&cluster, &database, stop_grace, &cancel, &on_up).await {
            Ok(Run::Stopped) => return,
            Ok(Run::Died { uptime }) => {
                if uptime > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::info!(restart_in = ?backoff, "restarting the embedded PostgreSQL");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), retry_in = ?backoff, "could not start the embedded PostgreSQL");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// An exclusive lock on the state directory, held by `nexusd serve` for its whole life so two
/// daemons never run one embedded cluster.
#[derive(Debug)]
pub struct StateLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl StateLock {
    /// Takes the lock without waiting: `Ok(None)` when another nexusd holds it.
    pub fn try_acquire(state_dir: &Path) -> Result<Option<Self>> {
        use nix::fcntl::{Flock, FlockArg};
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
        let path = state_dir.join("nexusd.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(StateLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(anyhow!("locking {}: {errno}", path.display())),
        }
    }
}

/// How one run of the server ended.
enum Run {
    /// Shutdown was asked for and the server stopped.
    Stopped,
    /// The server exited on its own after `uptime`.
    Died { uptime: Duration },
}

/// Starts the server once and runs it until it dies or `cancel`. Once `postgres` is spawned,
/// shutdown always stops it properly, even in the middle of start-up.
async fn run_once(
    cluster: &Cluster,
    database: &str,
    stop_grace: Duration,
    cancel: &CancellationToken,
    on_up: &(impl Fn(i32) + Send),
) -> Result<Run> {
    tokio::select! {
        r = cluster.init_if_needed() => { r?; }
        () = cancel.cancelled() => return Ok(Run::Stopped),
    }
    let mut postmaster = cluster.spawn()?;
    let ready = async {
        cluster.wait_ready(&mut postmaster).await?;
        cluster.ensure_database(database).await
    };
    let ready = tokio::select! {
        r = ready => r,
        () = cancel.cancelled() => {
            stop_logged(postmaster, stop_grace).await;
            return Ok(Run::Stopped);
        }
    };
    if let Err(e) = ready {
        postmaster.stop(Duration::from_secs(5)).await.ok();
        return Err(e);
    }
    on_up(postmaster.pid());
    let up_since = Instant::now();
    tokio::select! {
        status = postmaster.wait() => {
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            tracing::error!(
                %status,
                last_output = %postmaster.log_tail(),
                "the embedded PostgreSQL exited unexpectedly; restarting it"
            );
            Ok(Run::Died { uptime: up_since.elapsed() })
        }
        () = cancel.cancelled() => {
            stop_logged(postmaster, stop_grace).await;
            Ok(Run::Stopped)
        }
    }
}

async fn stop_logged(postmaster: Postmaster, grace: Duration) {
    if let Err(e) = postmaster.stop(grace).await {
        tracing::error!(error = %format!("{e:#}"), "stopping PostgreSQL");
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("devnexus"), "\"devnexus\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn settings_fit_a_small_machine_and_preload_statements() {
        let settings = small_vm_settings();
        let get = |k: &str| {
            settings
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("shared_preload_libraries"), Some("pg_stat_statements"));
        assert_eq!(get("jit"), Some("off"));
        assert_eq!(get("max_connections"), Some("25"));
    }
}
