//! systemd integration: `sd_notify` READY/STATUS/STOPPING and watchdog pings when
//! `NOTIFY_SOCKET` is set (`Type=notify`, `WatchdogSec=`); silent no-ops otherwise.

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The listeners are up: systemd may consider the service started.
pub fn notify_ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

pub fn notify_status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn notify_stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval while the runtime is alive.
pub fn spawn_watchdog(shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    tracing::debug!(?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => send(&[NotifyState::Watchdog]),
                () = shutdown.cancelled() => return,
            }
        }
    }))
}
