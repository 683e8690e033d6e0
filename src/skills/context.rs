//! What a skill, and the routes beside the skills, can reach: the skills' configuration, the
//! database, where bootstrap stands, search and backups.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::watch;

use super::cache::SkillCache;
use super::config::SkillsConfig;
use super::error::SkillError;
use crate::backup::Backups;
use crate::backup::status::StatusHandle;
use crate::bootstrap::Readiness;
use crate::db::Database;
use crate::embed::Search;

/// Service identity the original reported; clients display and compare it.
pub const SERVICE_NAME: &str = "pattern-discovery-agent";
/// The API version of the original server that nexusd is compatible with.
pub const API_VERSION: &str = "2.0.0";

/// Who is calling, as far as a skill needs to know.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    /// The request carried valid credentials (an API token or an allowed ID token).
    pub authenticated: bool,
}

/// The services a skill runs against.
#[derive(Clone)]
pub struct SkillContext {
    /// Set per call.
    pub caller: Caller,
    pub config: Arc<SkillsConfig>,
    /// Shared: a `Database` holds its connection settings, so cloning one copies several strings,
    /// and every call clones its context.
    pub db: Arc<Database>,
    pub readiness: watch::Receiver<Readiness>,
    /// The embedder and search settings (`query`, `find_similar_patterns`, `record_analysis`).
    pub search: Arc<Search>,
    /// `None` when the backup store could not be opened (the reason is in `backup_status`).
    pub backups: Option<Arc<Backups>>,
    pub backup_status: StatusHandle,
    /// Wakes this replica's workflow workers when a job is queued (`workflows/worker.rs`).
    pub workflow_wake: Arc<tokio::sync::Notify>,
    /// The read skills' answers (`cache.rs`); whatever writes the knowledge base outside a
    /// write skill's call empties it after its commit.
    pub cache: Arc<SkillCache>,
}

impl SkillContext {
    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    /// Whether the GitHub skills may read `repository` for this caller: any repository with
    /// credentials; without, only the knowledge base's repositories and those of
    /// `NEXUSD_GITHUB_REPOSITORIES` — nexusd's `GITHUB_TOKEN` may see private repositories that
    /// anonymous callers must not read through it.
    pub async fn may_read_github(&self, repository: &str) -> Result<(), SkillError> {
        if self.caller.authenticated || self.config.external.github.is_open(repository) {
            return Ok(());
        }
        let mut conn = self.pool().acquire().await?;
        if crate::kb::repository_id(&mut conn, repository)
            .await?
            .is_some()
        {
            return Ok(());
        }
        Err(SkillError::Failed {
            error: format!(
                "Repository {repository} is not in the knowledge base: without credentials, the \
                 GitHub skills read only its repositories (and those of NEXUSD_GITHUB_REPOSITORIES)"
            ),
            extra: serde_json::Map::from_iter([(
                "error_type".to_string(),
                serde_json::Value::String("not_allowed".into()),
            )]),
        })
    }
}

/// Current time as RFC 3339 in UTC with microseconds, e.g. `2026-11-24T05:03:00.123456Z`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
