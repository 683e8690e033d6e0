//! What a skill, and the routes beside the skills, can reach: the skills' configuration, the
//! database, where bootstrap stands, search and backups.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::watch;

use super::config::SkillsConfig;
use crate::backup::Backups;
use crate::backup::status::StatusHandle;
use crate::bootstrap::Readiness;
use crate::db::Database;
use crate::embed::Search;

/// Service identity the original reported; clients display and compare it.
pub const SERVICE_NAME: &str = "pattern-discovery-agent";
/// The API version of the original server that nexusd is compatible with.
pub const API_VERSION: &str = "2.0.0";

/// The services a skill runs against.
#[derive(Clone)]
pub struct SkillContext {
    pub config: Arc<SkillsConfig>,
    pub db: Database,
    pub readiness: watch::Receiver<Readiness>,
    /// The embedder and search settings (`query`, `find_similar_patterns`, `record_analysis`).
    pub search: Arc<Search>,
    /// `None` when the backup store could not be opened (the reason is in `backup_status`).
    pub backups: Option<Arc<Backups>>,
    pub backup_status: StatusHandle,
}

impl SkillContext {
    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }
}

/// Current time as RFC 3339 in UTC with microseconds, e.g. `2026-11-24T05:03:00.123456Z`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
