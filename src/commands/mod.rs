//! The command bodies behind `nexusd <command>`: read the configuration, start logging, run the
//! command, and turn its outcome into an exit code (2 for a configuration error, 1 for any other
//! failure, with a one-line reason on stderr). `serve` and `proxy` hand over to their capability;
//! the one-off commands (`bootstrap`, `import-json`, `embed`, `backup …`, `restore`, `check`)
//! live here, each in its own file.

mod backup;
mod bootstrap;
mod check;
mod embed;
mod import;
mod probes;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;

use crate::bootstrap::BootstrapReport;
use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::db::Database;
use crate::db::cluster::StateLock;
use crate::db::target::{STOP_GRACE, Target, start_embedded};
use crate::env::ConfigErrors;
use crate::signals::cancel_on_signals;

/// Width of the configuration table in `--help`.
const HELP_WIDTH: usize = 100;

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let command = parse_command_line();
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
    let code = runtime.block_on(run(command));
    // Let background tasks (log forwarders, timers) go without waiting for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// The command line, with the configuration table (made from every capability's list of
/// variables) in `--help`.
fn parse_command_line() -> Command {
    let matches = Cli::command()
        .after_long_help(crate::config::help_table(HELP_WIDTH))
        .get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli.command,
        Err(e) => e.exit(),
    }
}

async fn run(command: Command) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) if matches!(command, Command::Check) => {
            check::report_invalid(&errors);
            return ExitCode::FAILURE;
        }
        Err(errors) => return configuration_error(&errors),
    };
    crate::telemetry::init(&config.log);
    match execute(command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        // `check` has printed every finding already.
        Err(e) if e.is::<check::ChecksFailed>() => ExitCode::FAILURE,
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
        Command::Restore { id, into, force } => {
            Box::pin(backup::restore(&config, &id, into.as_deref(), force)).await
        }
        Command::Check => check::run(&config).await,
    }
}

/// What a one-off command needs from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Only where it is (listing or pruning backups touches the store alone).
    AddressOnly,
    /// A running server, as it is (backups and restores must not migrate what they copy).
    RunningServer,
    /// A running server with the schema bootstrapped (`bootstrap`, `import-json`, `embed`).
    CurrentSchema,
}

/// Runs `work` for a one-off command against the configured database. With the embedded
/// cluster, uses the running one (a `nexusd serve` may own it) or starts it just for the command
/// and stops it afterwards. `work` gets the bootstrap report when `needs` is
/// [`Needs::CurrentSchema`].
async fn with_database<T>(
    config: &Config,
    needs: Needs,
    work: impl AsyncFnOnce(&Database, Option<BootstrapReport>) -> Result<T>,
) -> Result<T> {
    let target = Target::resolve(&config.database, &config.state_dir)?;
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
        own = Some(start_embedded(cluster).await?);
    }
    let result = async {
        let report = if needs == Needs::CurrentSchema {
            Some(
                crate::bootstrap::run(
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
        postmaster.stop(STOP_GRACE).await?;
    }
    result
}
