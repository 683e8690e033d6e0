//! Where the knowledge base is: the configured server, or the embedded cluster nexusd runs
//! under its state directory — resolved once, for `serve` and for the one-off commands alike.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::PgConnectOptions;

use super::cluster::{self, Cluster, ClusterSpec, Postmaster};
use super::config::{DatabaseConfig, DatabaseTarget};

/// How long the embedded PostgreSQL gets for a fast shutdown before [`Postmaster::stop`]
/// escalates (at most 2 s more).
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The database nexusd talks to: options for connections, a printable name, and the embedded
/// cluster when nexusd runs one.
pub struct Target {
    pub options: PgConnectOptions,
    /// The password inside `options` (sqlx does not expose it), for the client tools.
    pub password: Option<String>,
    /// A printable name: the URL without its password, or the embedded cluster's directory.
    pub display: String,
    pub cluster: Option<Arc<Cluster>>,
}

impl Target {
    /// The configured server, or the embedded cluster under `state_dir` (its binaries found,
    /// nothing started).
    pub fn resolve(config: &DatabaseConfig, state_dir: &Path) -> Result<Target> {
        match &config.target {
            DatabaseTarget::External(url) => Ok(Target {
                options: url.options.clone(),
                password: url.password().map(str::to_string),
                display: url.redacted().to_string(),
                cluster: None,
            }),
            DatabaseTarget::Embedded => {
                let spec = ClusterSpec::embedded(state_dir);
                let cluster = Cluster::new(spec, config.pg_bindir.as_deref()).context(
                    "preparing the embedded PostgreSQL cluster (no DATABASE_URL or POSTGRES_* set)",
                )?;
                Ok(Target {
                    options: cluster.connect_options(cluster::EMBEDDED_DATABASE),
                    password: None,
                    display: format!(
                        "embedded PostgreSQL {} ({}, database {})",
                        cluster.binaries().version,
                        state_dir.display(),
                        cluster::EMBEDDED_DATABASE
                    ),
                    cluster: Some(Arc::new(cluster)),
                })
            }
        }
    }
}

/// Starts the embedded cluster for a one-off command (initialising it on first use).
pub async fn start_embedded(cluster: &Cluster) -> Result<Postmaster> {
    cluster.init_if_needed().await?;
    let postmaster = cluster.start().await?;
    if let Err(e) = cluster.ensure_database(cluster::EMBEDDED_DATABASE).await {
        postmaster.stop(STOP_GRACE).await.ok();
        return Err(e);
    }
    Ok(postmaster)
}
