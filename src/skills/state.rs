//! The skills API's router state: the services skills run against (the read skills' response
//! cache among them), the registry, the authenticator and the per-skill statistics `/metrics`
//! reads.

use std::sync::Arc;

use super::context::SkillContext;
use super::registry::Registry;
use crate::http::auth::Authenticator;
use crate::metrics::SkillStats;

/// What every route can reach. The router holds it in an `Arc`: axum clones the state for every
/// request (twice), and a clone of this struct would clone each of its services.
pub struct AppState {
    pub ctx: SkillContext,
    pub skills: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    /// Skill calls by skill and outcome, for `/metrics`.
    pub skill_stats: Arc<SkillStats>,
}
