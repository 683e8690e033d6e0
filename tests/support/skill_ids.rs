//! Every skill id nexusd registers, in the order the agent card lists them: the reference
//! server's, then the web frontend's complexity/dependency/workflow skills, nexusd's own, and the
//! frontend's lifecycle, catalog and analytics skills. One list for every test that checks it.

pub const REFERENCE_ORDER: [&str; 22] = [
    "query_patterns",
    "get_cross_repo_patterns",
    "get_repository_list",
    "get_deployment_info",
    "add_repository",
    "add_lesson_learned",
    "update_dependency_info",
    "add_deployment_info",
    "health_check_external",
    "check_documentation_standards",
    "validate_documentation_update",
    "add_runtime_issue",
    "get_pattern_health",
    "query_known_issues",
    "get_recent_actions",
    "validate_repository_architecture",
    "check_specific_standard",
    "suggest_improvements",
    "detect_misplaced_components",
    "analyze_component_centrality",
    "recommend_consolidation_plan",
    "scan_repository_components",
];

/// The frontend's complexity, dependency and workflow skills, registered after the reference's
/// with or without a token.
pub const FRONTEND_WORKFLOWS: [&str; 7] = [
    "analyze_repository_complexity",
    "get_repository_complexity_details",
    "discover_repository_dependencies",
    "update_dependency_verification",
    "trigger_full_analysis_workflow",
    "extract_repository_patterns",
    "get_workflow_metadata",
];

/// nexusd's own skills, registered after the reference's.
pub const NEXUSD_OWN: [&str; 3] = [
    "record_analysis",
    "find_similar_patterns",
    "get_backup_status",
];

/// The web frontend's skills the original never had, registered after nexusd's own.
pub const FRONTEND: [&str; 13] = [
    "update_pattern",
    "deprecate_pattern",
    "archive_pattern",
    "get_pattern_history",
    "suggest_pattern_from_component",
    "create_pattern_from_component",
    "list_components",
    "get_component_dependencies",
    "get_dashboard_overview",
    "get_pattern_adoption_trends",
    "get_pattern_health_summary",
    "get_repository_activity_summary",
    "get_component_duplication_stats",
];

/// The registration order, leaving out `skip`.
pub fn registration_order(skip: &[&str]) -> Vec<String> {
    REFERENCE_ORDER
        .iter()
        .filter(|id| !skip.contains(id))
        .chain(FRONTEND_WORKFLOWS.iter())
        .chain(NEXUSD_OWN.iter())
        .chain(FRONTEND.iter())
        .map(|id| id.to_string())
        .collect()
}
