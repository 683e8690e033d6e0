//! Signals: SIGTERM and SIGINT cancel the one shutdown token every long-lived task takes.

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

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
