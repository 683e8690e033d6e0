//! Bootstrap as `nexusd serve` runs it: retried with backoff until the database is ready, its
//! progress published as a [`Readiness`] that `/health`, the skills and the background jobs read.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::BootstrapReport;
use crate::db::DatabaseUrl;

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

/// Retries bootstrap with exponential backoff until it succeeds or nexusd shuts down.
pub async fn until_ready(
    options: PgConnectOptions,
    display: String,
    superuser: Option<DatabaseUrl>,
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
        match super::run(&options, &display, superuser.as_ref()).await {
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
