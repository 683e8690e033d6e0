//! The skills API's router state: the services skills run against, the registry, the
//! authenticator, the per-skill statistics `/metrics` reads and the read skills' response cache.

use std::sync::Arc;

use super::cache::SkillCache;
use super::context::SkillContext;
use super::registry::Registry;
use crate::http::auth::Authenticator;
use crate::metrics::SkillStats;

/// What every route can reach.
#[derive(Clone)]
pub struct AppState {
    pub ctx: SkillContext,
    pub skills: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    /// Skill calls by skill and outcome, for `/metrics`.
    pub skill_stats: Arc<SkillStats>,
    /// The read skills' answers (`cache.rs`).
    pub cache: Arc<SkillCache>,
}
