//! `nexusd wal-push` and `nexusd wal-fetch`, the commands PostgreSQL runs as `archive_command`
//! and `restore_command`. Their exit codes are a contract with PostgreSQL, so they are fixed here
//! whatever happens inside: wal-push exits 0 or 1 (PostgreSQL retries; a code above 125 or a
//! death by a signal would make the archiver itself fail), wal-fetch 0, 1 (not archived: recovery
//! ends there) or 126 (the archive cannot be read: recovery stops instead of ending early). A
//! panic, a configuration error and SIGTERM/SIGINT/SIGHUP all end in those codes.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};

use crate::backup::wal::{self, FetchError, Pushed};
use crate::config::Config;

/// wal-fetch's code for "the archive could not be read": above 125, so recovery stops.
const FETCH_TRANSPORT: u8 = 126;

/// Runs `wal-push PATH` and returns 0 or 1.
pub fn push(path: PathBuf) -> ExitCode {
    guarded(1, async move {
        let config = load(1)?;
        let outcome =
            wal::push_or_drop(&config.backup, &path, config.backup.wal_push_timeout).await;
        match outcome {
            Ok(Pushed::Stored) => {
                tracing::debug!(file = %path.display(), "archived");
                Ok(())
            }
            Ok(Pushed::AlreadyThere) => Ok(()),
            Ok(Pushed::Dropped) => {
                eprintln!(
                    "nexusd wal-push: {} DROPPED (store unreachable, pg_wal past NEXUSD_WAL_MAX_PENDING)",
                    path.display()
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %format!("{e:#}"), "wal-push failed");
                eprintln!("nexusd wal-push: {e:#}");
                Err(1)
            }
        }
    })
}

/// Runs `wal-fetch NAME PATH` and returns 0, 1 or 126.
pub fn fetch(name: String, path: PathBuf) -> ExitCode {
    guarded(FETCH_TRANSPORT, async move {
        let config = load(FETCH_TRANSPORT)?;
        let deadline = config.backup.wal_push_timeout;
        match wal::fetch(&config.backup, &name, Path::new(&path), deadline).await {
            Ok(()) => Ok(()),
            Err(FetchError::Missing(_)) => Err(1),
            Err(FetchError::Transport(e)) => {
                eprintln!("nexusd wal-fetch: {e:#}");
                Err(FETCH_TRANSPORT)
            }
        }
    })
}

/// The configuration, or `code` after saying what is wrong with it.
fn load(code: u8) -> Result<Config, u8> {
    match Config::from_env() {
        Ok(config) => {
            crate::telemetry::init(&config.log, crate::telemetry::Role::Command);
            Ok(config)
        }
        Err(errors) => {
            eprintln!("nexusd: configuration error: {errors}");
            Err(code)
        }
    }
}

/// Runs `work` on its own runtime; a panic, a failed runtime or a termination signal give
/// `failure` instead of an abort.
fn guarded(failure: u8, work: impl Future<Output = Result<(), u8>> + Send) -> ExitCode {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|_| failure)?;
        let result = runtime.block_on(async {
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                return Err(failure);
            };
            tokio::select! {
                result = work => result,
                _ = term.recv() => Err(failure),
                _ = int.recv() => Err(failure),
                _ = hup.recv() => Err(failure),
            }
        });
        runtime.shutdown_timeout(std::time::Duration::from_millis(200));
        result
    }));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(code)) => ExitCode::from(code),
        Err(_) => {
            eprintln!("nexusd: internal error (a panic); nothing was archived or fetched");
            ExitCode::from(failure)
        }
    }
}
