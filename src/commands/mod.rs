//! The command bodies behind `nexusd <command>`: read the environment file and the
//! configuration, start logging, run the command, and turn its outcome into an exit code (2 for
//! a configuration error, 1 for any other failure, with a one-line reason on stderr). `serve`
//! and `proxy` hand over to their capability; the one-off commands (`bootstrap`, `import-json`,
//! `embed`, `backup …`, `restore`, `status`, `check`) live here, each in its own file.
//!
//! Every command resolves its configuration as the systemd unit does — the environment file,
//! then the environment — and only `serve` and `bootstrap` may create an embedded cluster: any
//! other command without a configured database and without an existing embedded cluster stops
//! with one line saying where it looked, rather than work on a new, empty database.

mod backup;
mod bootstrap;
mod check;
mod embed;
mod import;
mod pitr;
mod probes;
mod status;
mod wal;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;

use crate::backup::BackupDestination;
use crate::bootstrap::BootstrapReport;
use crate::cli::{BackupAction, Cli, Command};
use crate::config::Config;
use crate::db::cluster::StateLock;
use crate::db::target::{STOP_GRACE, Target, embedded_exists, start_embedded};
use crate::db::{Database, DatabaseTarget};
use crate::env::ConfigErrors;
use crate::env::file::EnvFile;
use crate::signals::cancel_on_signals;

/// Width of the configuration table in `--help`.
const HELP_WIDTH: usize = 100;

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = parse_command_line();
    let env_file = apply_env_file(cli.env_file.as_deref());
    // PostgreSQL's archive and restore commands: exit codes of their own, even for a bad
    // environment file.
    let command = match (cli.command, env_file.is_ok()) {
        (Command::WalPush { path }, true) => return wal::push(path),
        (Command::WalFetch { name, path }, true) => return wal::fetch(name, path),
        (Command::WalPush { .. }, false) => return ExitCode::FAILURE,
        (Command::WalFetch { .. }, false) => return ExitCode::from(126),
        (command, _) => command,
    };
    let env_file = match env_file {
        Ok(file) => file,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nexusd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(command, env_file));
    // Let background tasks (log forwarders, timers) go without waiting for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// The command line, with the configuration table (made from every capability's list of
/// variables) in `--help`.
fn parse_command_line() -> Cli {
    let matches = Cli::command()
        .after_long_help(crate::config::help_table(HELP_WIDTH))
        .get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

/// Reads the environment file (`--env-file`, else `/etc/nexusd/nexusd.env` when it exists).
/// When it sets variables the environment lacks, nexusd runs itself again (exec: same PID,
/// arguments and standard streams) with them added — the environment file then is the process's
/// environment, as under systemd's `EnvironmentFile=`, so the libraries nexusd uses (Google's
/// credentials lookup, …) see them too; the environment keeps precedence. Runs before any
/// thread is started.
fn apply_env_file(explicit: Option<&Path>) -> Result<EnvFile, ExitCode> {
    let (file, parsed) = crate::env::file::load(explicit).map_err(|e| {
        eprintln!("nexusd: configuration error: {e}");
        ExitCode::from(2)
    })?;
    let missing: Vec<(String, String)> = parsed
        .vars
        .into_iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
        .collect();
    if missing.is_empty() {
        // Warned once: in the process that goes on (after an exec, the file is read again).
        for warning in &parsed.warnings {
            eprintln!("nexusd: warning: environment file: {warning}");
        }
        return Ok(file);
    }
    let error = reexec_with(missing);
    eprintln!(
        "nexusd: cannot apply the environment file ({file}): starting nexusd again with its variables failed: {error}"
    );
    Err(ExitCode::FAILURE)
}

/// Replaces this process with nexusd itself, the same arguments, and `vars` added to the
/// environment. Returns only on failure.
fn reexec_with(vars: Vec<(String, String)>) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    again.args(args).envs(vars).exec()
}

async fn run(command: Command, env_file: EnvFile) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => Config { env_file, ..config },
        Err(errors) if matches!(command, Command::Check { .. }) => {
            check::report_invalid(&errors, matches!(command, Command::Check { json: true }));
            return ExitCode::FAILURE;
        }
        Err(errors) => return configuration_error(&errors),
    };
    crate::telemetry::init(&config.log, crate::telemetry::Role::of(&command));
    match execute(command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        // `check` has printed every finding already.
        Err(e) if e.is::<check::ChecksFailed>() || e.is::<status::NotFine>() => ExitCode::FAILURE,
        Err(e) if e.is::<NoDatabase>() => {
            eprintln!("nexusd: {e}");
            ExitCode::from(2)
        }
        Err(e) => match e.downcast_ref::<ConfigErrors>() {
            Some(errors) => configuration_error(errors),
            None => {
                tracing::error!(error = %format!("{e:#}"), "nexusd failed");
                eprintln!("nexusd: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn configuration_error(errors: &ConfigErrors) -> ExitCode {
    eprintln!("nexusd: configuration error: {errors}");
    ExitCode::from(2)
}

async fn execute(command: Command, config: Config) -> Result<()> {
    if needs_a_database(&command) {
        require_database(&config, &command)?;
    }
    match command {
        Command::Serve => {
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone())?;
            crate::app::serve(config, shutdown).await
        }
        Command::Proxy => {
            let proxy = crate::proxy::ProxyConfig::from_env()?;
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone())?;
            let api = &config.skills.api;
            crate::proxy::run(api.addr, proxy, api.cors.clone(), shutdown).await
        }
        Command::Bootstrap => bootstrap::run(&config).await,
        Command::ImportJson { source, dry_run } => import::run(&config, &source, dry_run).await,
        Command::Embed {
            reembed,
            batch_size,
        } => embed::run(&config, reembed, batch_size as usize).await,
        // Boxed: these futures are deep enough to exceed the compiler's layout recursion.
        Command::Backup { action } => Box::pin(backup::run(&config, action)).await,
        Command::Restore {
            target_time,
            target_lsn,
            ..
        } if target_time.is_some() || target_lsn.is_some() => {
            let restore = pitr::restore(&config, target_time.as_deref(), target_lsn.as_deref());
            Box::pin(restore).await
        }
        Command::Restore {
            id,
            into,
            force,
            ignore_sessions,
            ..
        } => {
            let id = id.unwrap_or_else(|| crate::backup::LATEST.to_string());
            let restore = backup::restore(&config, &id, into.as_deref(), force, ignore_sessions);
            Box::pin(restore).await
        }
        Command::Status { json } => status::run(&config, json).await,
        Command::Check { json } => check::run(&config, json).await,
        Command::WalPush { .. } | Command::WalFetch { .. } => {
            bail!("wal-push and wal-fetch run before the configuration is read")
        }
    }
}

/// The commands that work on the knowledge base without being allowed to create it (a
/// point-in-time restore creates the embedded cluster's data directory from a base backup).
fn needs_a_database(command: &Command) -> bool {
    let pitr = matches!(command, Command::Restore { target_time, target_lsn, .. }
        if target_time.is_some() || target_lsn.is_some());
    !pitr
        && !matches!(
            command,
            Command::Serve | Command::Proxy | Command::Bootstrap | Command::Check { .. }
        )
}

/// Why a command will not run: no database is configured and there is no embedded cluster.
#[derive(Debug, thiserror::Error)]
#[error(
    "no database configured (DATABASE_URL or POSTGRES_*) and no embedded cluster in {state_dir} \
     (NEXUSD_STATE_DIR); {env_file}: set DATABASE_URL, pass --env-file with the daemon's \
     environment file, or run `nexusd bootstrap` to create an embedded cluster there"
)]
pub struct NoDatabase {
    state_dir: String,
    env_file: EnvFile,
}

/// Fails with [`NoDatabase`] when nothing is configured and no embedded cluster exists, before
/// anything is created. Listing and pruning backups need only the store: they go on when one is
/// configured or the default local store exists.
fn require_database(config: &Config, command: &Command) -> Result<(), NoDatabase> {
    if !matches!(config.database.target, DatabaseTarget::Embedded)
        || embedded_exists(&config.state_dir)
    {
        return Ok(());
    }
    let store_only = matches!(
        command,
        Command::Backup {
            action: BackupAction::List { .. } | BackupAction::Prune { .. }
        }
    );
    let store_there = match &config.backup.destination {
        BackupDestination::Local { dir } => {
            *dir != config.state_dir.join("backups") || dir.is_dir()
        }
        BackupDestination::Gcs { .. } => true,
    };
    if store_only && store_there {
        return Ok(());
    }
    Err(NoDatabase {
        state_dir: config.state_dir.display().to_string(),
        env_file: config.env_file.clone(),
    })
}

/// What a one-off command needs from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Only where it is (listing or pruning backups touches the store alone).
    AddressOnly,
    /// A running server, as it is (backups and restores must not migrate what they copy).
    RunningServer,
    /// A running server with the schema bootstrapped (`import-json`, `embed`).
    CurrentSchema,
    /// The same, creating the embedded cluster if there is none yet (`bootstrap` only).
    Bootstrap,
}

/// Runs `work` for a one-off command against the configured database. With the embedded
/// cluster, uses the running one (a `nexusd serve` may own it) or starts it just for the command
/// and stops it afterwards (only [`Needs::Bootstrap`] creates it). `work` gets the bootstrap
/// report when the schema is bootstrapped first.
async fn with_database<T>(
    config: &Config,
    needs: Needs,
    work: impl AsyncFnOnce(&Database, Option<BootstrapReport>) -> Result<T>,
) -> Result<T> {
    let (settings, dirs) = crate::backup::wal::embedded_archiving_if_on(config);
    let target = Target::resolve_with(&config.database, &config.state_dir, settings, dirs)?;
    let mut own = None;
    let mut _lock = None;
    if let Some(cluster) = &target.cluster
        && needs != Needs::AddressOnly
        && cluster.running_pid().is_none()
    {
        _lock = match StateLock::try_acquire(&config.state_dir)? {
            Some(lock) => Some(lock),
            None => bail!(
                "a nexusd serve owns {} but its PostgreSQL is not up yet; try again in a moment",
                config.state_dir.display()
            ),
        };
        own = Some(start_embedded(cluster, needs == Needs::Bootstrap).await?);
    }
    // Migrations take an advisory lock for their session: past a pooler, as under `serve`.
    let direct = config.connections.direct_or(&target.options);
    let result = async {
        let report = if matches!(needs, Needs::CurrentSchema | Needs::Bootstrap) {
            Some(
                crate::bootstrap::run(&direct, &target.display, config.database.bootstrap.as_ref())
                    .await?,
            )
        } else {
            None
        };
        let db = Database::new(
            target.options.clone(),
            target.password.as_deref(),
            &config.database,
        )
        .past_the_pooler(&config.connections);
        let outcome = work(&db, report).await;
        db.close().await;
        outcome
    }
    .await;
    if let Some(postmaster) = own {
        postmaster.stop(STOP_GRACE).await?;
    }
    result
}
