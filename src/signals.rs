//! Signals: SIGTERM, SIGINT and SIGHUP cancel the one shutdown token every long-lived task takes.
//!
//! SIGHUP is a hangup, not a reload: nexusd reads its configuration once and has nothing to
//! reload, and the SIGHUP it meets in practice is an SSH session closing on a foreground `nexusd
//! serve`. It therefore stops in order like SIGTERM (requests drained, the embedded PostgreSQL
//! shut down cleanly), with a log line saying why, instead of dying at once and leaving the
//! cluster behind. Under systemd nothing sends it (the unit has no `ExecReload=`).

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on SIGTERM, SIGINT or SIGHUP. A second SIGINT (Ctrl-C twice in a terminal)
/// exits at once; repeated SIGTERMs and SIGHUPs are ignored while the orderly shutdown runs.
pub fn cancel_on_signals(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            _ = hup.recv() => tracing::warn!(
                signal = "SIGHUP",
                "hangup (the terminal or SSH session closed): shutting down as for SIGTERM; \
                 nexusd has nothing to reload (run it under systemd, nohup or tmux to keep it \
                 running)"
            ),
        }
        token.cancel();
        loop {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM again: already shutting down"),
                _ = hup.recv() => tracing::debug!("SIGHUP again: already shutting down"),
                _ = int.recv() => {
                    tracing::warn!("second SIGINT: exiting immediately");
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(())
}
