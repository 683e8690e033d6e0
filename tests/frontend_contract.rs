//! The web frontend's contract: for each skill the Dev-Nexus frontend calls, on a seeded
//! knowledge base through the real `nexusd serve`, every field its TypeScript types declare
//! (`src/services/a2aClient.ts` of the frontend) and its pages read is present with the right
//! JSON type. The expectations are a table — skill, input, `path → type` — so more skills are
//! added by adding rows. Then what the lifecycle's history must hold: every writer's change,
//! in its transaction.

mod support;

use serde_json::{Value, json};
use support::{Nexusd, TestDb};

/// A JSON type as the frontend's types declare it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Num,
    Bool,
    Arr,
    Obj,
}
use Kind::*;

impl Kind {
    fn holds(self, v: &Value) -> bool {
        match self {
            Str => v.is_string(),
            Num => v.is_number(),
            Bool => v.is_boolean(),
            Arr => v.is_array(),
            Obj => v.is_object(),
        }
    }
}

/// One row of the contract: call `skill` with `input`; each `path` must hold a `Kind`. A path
/// is dot-separated keys; `key[]` means "every element of the array `key`, which must not be
/// empty" (so the seeded data exercises the element type).
struct Contract {
    skill: &'static str,
    input: Value,
    fields: &'static [(&'static str, Kind)],
}

/// Checks one path, returning what is wrong.
fn check(value: &Value, path: &str, kind: Kind) -> Vec<String> {
    let Some((head, rest)) = path.split_once('.').map_or(Some((path, "")), Some) else {
        return vec![];
    };
    let (key, each) = match head.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (head, false),
    };
    let Some(found) = value.get(key) else {
        return vec![format!("{path}: missing")];
    };
    if each {
        let Some(items) = found.as_array().filter(|a| !a.is_empty()) else {
            return vec![format!("{key}: expected a non-empty array, got {found}")];
        };
        return items
            .iter()
            .flat_map(|item| {
                if rest.is_empty() {
                    check_leaf(item, key, kind)
                } else {
                    check(item, rest, kind)
                }
            })
            .collect();
    }
    if rest.is_empty() {
        check_leaf(found, key, kind)
    } else {
        check(found, rest, kind)
    }
}

fn check_leaf(value: &Value, key: &str, kind: Kind) -> Vec<String> {
    if kind.holds(value) {
        vec![]
    } else {
        vec![format!("{key}: expected {kind:?}, got {value}")]
    }
}

/// Runs every row; answers must succeed and hold every field. Returns the problems found.
async fn verify(nexusd: &Nexusd, contracts: &[Contract]) -> Vec<String> {
    let mut problems = Vec::new();
    for c in contracts {
        let (status, body) = nexusd.exec(c.skill, c.input.clone()).await;
        if status != 200 || body["success"] != true {
            problems.push(format!("{}: failed: {status} {body}", c.skill));
            continue;
        }
        for (path, kind) in c.fields {
            for p in check(&body, path, *kind) {
                problems.push(format!("{} {}: {p}", c.skill, c.input));
            }
        }
    }
    problems
}

async fn seeded() -> (TestDb, Nexusd) {
    let fixture = format!(
        "{}\n{}",
        include_str!("fixtures/components.sql"),
        include_str!("fixtures/frontend.sql")
    );
    support::seeded(&fixture).await
}

/// The pattern lifecycle, in the order a user goes through it.
fn lifecycle() -> Vec<Contract> {
    vec![
        Contract {
            skill: "update_pattern",
            input: json!({"pattern_name": "Order saga", "description": "Compensating steps, one per service",
                          "keywords": ["saga", "compensation"], "change_summary": "Name the services"}),
            fields: &[
                ("pattern_name", Str),
                ("new_version", Num),
                ("message", Str),
            ],
        },
        Contract {
            skill: "get_pattern_history",
            input: json!({"pattern_name": "Order saga"}),
            fields: &[
                ("pattern_name", Str),
                ("total_versions", Num),
                ("versions[].version_number", Num),
                ("versions[].pattern_name", Str),
                ("versions[].description", Str),
                ("versions[].status", Str),
                ("versions[].created_at", Str),
                ("versions[].created_by", Str),
                ("versions[].change_summary", Str),
                ("versions[].changes", Arr),
            ],
        },
        Contract {
            skill: "deprecate_pattern",
            input: json!({"pattern_name": "Ranking", "reason": "Replaced by learned ranking",
                          "replacement_pattern": "Learned ranking", "migration_notes": ["Retrain weekly"]}),
            fields: &[
                ("pattern_name", Str),
                ("affected_repositories", Arr),
                ("message", Str),
            ],
        },
        Contract {
            skill: "archive_pattern",
            input: json!({"pattern_name": "Ranking"}),
            fields: &[("message", Str)],
        },
        Contract {
            skill: "suggest_pattern_from_component",
            input: json!({"component_name": "retry-policy", "repository": "acme/billing", "duplication_count": 2,
                          "component_type": "utility", "similarity_score": 0.8}),
            fields: &[
                ("pattern_name", Str),
                ("description", Str),
                ("worthiness_score", Num),
                ("rationale", Str),
                ("affected_repositories", Arr),
                ("estimated_effort", Str),
                ("benefits[]", Str),
                ("implementation_notes[]", Str),
            ],
        },
        Contract {
            skill: "create_pattern_from_component",
            input: json!({"component_name": "retry-policy", "repository": "acme/billing", "pattern_name": "Retry Policy",
                          "pattern_description": "Retries with exponential backoff", "duplication_count": 2,
                          "component_type": "utility"}),
            fields: &[
                ("pattern_name", Str),
                ("message", Str),
                ("repositories_affected", Arr),
            ],
        },
    ]
}

fn components() -> Vec<Contract> {
    vec![
        Contract {
            skill: "list_components",
            input: json!({"limit": 100, "offset": 0}),
            fields: &[
                ("components[].name", Str),
                ("components[].type", Str),
                ("components[].repository", Str),
                ("components[].language", Str),
                ("components[].loc", Num),
                ("components[].keywords", Arr),
                ("components[].description", Str),
                ("components[].files", Arr),
                ("total_components", Num),
                ("filtered_count", Num),
                ("filters", Obj),
                ("pagination.limit", Num),
                ("pagination.offset", Num),
            ],
        },
        Contract {
            skill: "get_component_dependencies",
            input: json!({"repository": "acme/billing", "analysis_depth": 3}),
            fields: &[
                ("repository", Str),
                ("dependencies[].source_component", Str),
                ("dependencies[].target_component", Str),
                ("dependencies[].import_type", Str),
                ("dependencies[].import_count", Num),
                ("dependencies[].files_involved", Arr),
                ("dependencies[].strength", Num),
                ("circular_dependencies[].components", Arr),
                ("circular_dependencies[].cycle_length", Num),
                ("circular_dependencies[].severity", Str),
                ("total_dependencies", Num),
                ("analysis_depth", Num),
                ("analysis_timestamp", Str),
            ],
        },
    ]
}

fn analytics() -> Vec<Contract> {
    let start = (chrono::Utc::now() - chrono::Duration::days(60))
        .format("%Y-%m-%d")
        .to_string();
    vec![
        Contract {
            skill: "get_dashboard_overview",
            input: json!({}),
            fields: &[
                ("system_health.overall_health_score", Num),
                ("system_health.status", Str),
                ("system_health.uptime_percentage", Num),
                ("system_health.last_scan_timestamp", Str),
                ("metrics[].label", Str),
                ("metrics[].value", Num),
                ("metrics[].unit", Str),
                ("metrics[].trend", Num),
                ("metrics[].status", Str),
                ("alerts[].id", Str),
                ("alerts[].severity", Str),
                ("alerts[].title", Str),
                ("alerts[].description", Str),
                ("alerts[].timestamp", Str),
                ("alerts[].actionable", Bool),
                ("timeline_highlights[].timestamp", Str),
                ("timeline_highlights[].event_type", Str),
                ("timeline_highlights[].title", Str),
                ("timeline_highlights[].description", Str),
                ("timeline_highlights[].impact", Str),
                ("last_updated", Str),
            ],
        },
        Contract {
            skill: "get_pattern_adoption_trends",
            input: json!({"start_date": start}),
            fields: &[
                ("adoption_timeline[].date", Str),
                ("adoption_timeline[].pattern_count", Num),
                ("adoption_timeline[].repository_count", Num),
                ("adoption_timeline[].new_patterns", Num),
                ("growth_rates[].period", Str),
                ("growth_rates[].growth_percentage", Num),
                ("growth_rates[].adoption_velocity", Num),
                ("start_date", Str),
                ("end_date", Str),
            ],
        },
    ]
}

/// The dashboards' reports.
fn reports() -> Vec<Contract> {
    vec![
        Contract {
            skill: "get_pattern_health_summary",
            input: json!({}),
            fields: &[
                ("time_range_days", Num),
                ("overall_health.average_score", Num),
                ("overall_health.status", Str),
                ("overall_health.critical_count", Num),
                ("overall_health.warning_count", Num),
                ("overall_health.healthy_count", Num),
                ("patterns_by_health[].pattern_name", Str),
                ("patterns_by_health[].health_score", Num),
                ("health_trends[].week", Str),
                ("health_trends[].average_score", Num),
                ("top_issue_types[].type", Str),
                ("top_issue_types[].count", Num),
            ],
        },
        Contract {
            skill: "get_repository_activity_summary",
            input: json!({"period": "week", "limit": 10}),
            fields: &[
                ("activity_timeline[].date", Str),
                ("activity_timeline[].pattern_scans", Num),
                ("activity_timeline[].component_scans", Num),
                ("activity_timeline[].compliance_checks", Num),
                ("activity_by_type[].activity_type", Str),
                ("activity_by_type[].count", Num),
                ("activity_by_type[].percentage", Num),
                ("repository_rankings[].repository_name", Str),
                ("repository_rankings[].total_activity", Num),
                ("repository_rankings[].pattern_scans", Num),
                ("repository_rankings[].component_scans", Num),
                ("repository_rankings[].compliance_checks", Num),
                ("period", Str),
                ("total_activities", Num),
            ],
        },
        Contract {
            skill: "get_component_duplication_stats",
            input: json!({}),
            fields: &[
                ("total_duplicates", Num),
                ("total_unique_components", Num),
                ("duplication_distribution[].duplication_level", Str),
                ("duplication_distribution[].component_count", Num),
                ("duplication_distribution[].percentage", Num),
                ("consolidation_progress[].phase", Str),
                ("consolidation_progress[].total_components", Num),
                ("consolidation_progress[].completed", Num),
                ("consolidation_progress[].percentage", Num),
                ("effort_savings[].consolidation_type", Str),
                ("effort_savings[].estimated_hours_saved", Num),
                ("effort_savings[].complexity_level", Str),
                ("last_analysis", Str),
            ],
        },
    ]
}

/// The original's skills whose answers gained the frontend's keys (the original's stay).
fn shapes() -> Vec<Contract> {
    vec![
        Contract {
            skill: "detect_misplaced_components",
            input: json!({"repository": null}),
            fields: &[
                ("misplaced_components", Arr),
                ("component_issues[].component_name", Str),
                ("component_issues[].current_location", Str),
                ("component_issues[].suggested_location", Str),
                ("component_issues[].similarity_score", Num),
                ("component_issues[].issue_type", Str),
                ("component_issues[].reason", Str),
                ("total_duplicates", Num),
                ("total_misplaced", Num),
                ("filters_applied", Arr),
            ],
        },
        Contract {
            skill: "analyze_component_centrality",
            input: json!({"component_name": "retry-policy", "current_location": "acme/billing"}),
            fields: &[
                ("analysis.best_location", Str),
                ("component_name", Str),
                ("current_location", Str),
                ("best_location", Str),
                ("improvement_score", Num),
                ("all_scores", Obj),
            ],
        },
        Contract {
            skill: "recommend_consolidation_plan",
            input: json!({"component_name": "retry-policy", "from_repository": "acme/billing"}),
            fields: &[
                ("consolidation_plan.phase_1", Obj),
                ("component_name", Str),
                ("consolidation_recommendation_id", Str),
                ("from_repository", Str),
                ("to_repository", Str),
                ("best_location", Str),
                ("improvement_score", Num),
                ("confidence", Num),
                ("priority", Str),
                ("phases[].phase", Num),
                ("phases[].phase_number", Num),
                ("phases[].phase_name", Str),
                ("phases[].name", Str),
                ("phases[].description", Str),
                ("phases[].tasks", Arr),
                ("phases[].blockers", Arr),
                ("phases[].estimated_effort_hours", Num),
                ("phases[].risk_level", Str),
                ("benefits[]", Str),
                ("risks[]", Str),
                ("estimated_total_effort_hours", Num),
            ],
        },
    ]
}

/// More of the original's skills with the frontend's keys, and the GitHub skills without a token.
fn more_shapes() -> Vec<Contract> {
    vec![
        Contract {
            skill: "get_deployment_info",
            input: json!({"repository": "acme/billing"}),
            fields: &[
                ("deployment.scripts[].name", Str),
                ("deployment.scripts[].commands", Arr),
                ("deployment.scripts[].environment_variables", Obj),
                ("deployment.infrastructure", Obj),
            ],
        },
        Contract {
            skill: "get_recent_actions",
            input: json!({"action_types": ["deployment"]}),
            fields: &[
                ("actions[].metadata.description", Str),
                ("actions[].metadata.infrastructure", Obj),
            ],
        },
        // Without GITHUB_TOKEN (this server has none): explained, in the shape the pages render.
        Contract {
            skill: "validate_repository_architecture",
            input: json!({"repository": "acme/billing"}),
            fields: &[
                ("status", Str),
                ("repository", Str),
                ("overall_compliance_score", Num),
                ("compliance_grade", Str),
                ("summary.total_checks", Num),
                ("summary.passed_checks", Num),
                ("summary.failed_checks", Num),
                ("summary.critical_violations", Num),
                ("categories", Obj),
                ("critical_violations", Arr),
                ("recommendations[].priority", Str),
                ("recommendations[].title", Str),
                ("recommendations[].description", Str),
            ],
        },
        Contract {
            skill: "suggest_improvements",
            input: json!({"repository": "acme/billing", "max_recommendations": 10}),
            fields: &[
                ("status", Str),
                ("recommendations[].priority", Str),
                ("recommendations[].title", Str),
                ("recommendations[].description", Str),
                ("total_recommendations", Num),
            ],
        },
        Contract {
            skill: "scan_repository_components",
            input: json!({"repository": "acme/billing"}),
            fields: &[
                ("repository", Str),
                ("pattern_extraction", Str),
                ("components_found", Num),
                ("components[].name", Str),
                ("components[].type", Str),
                ("components[].files", Arr),
                ("components[].loc", Num),
            ],
        },
    ]
}

#[tokio::test]
async fn every_skill_the_frontend_calls_answers_the_fields_its_types_declare() {
    let (_db, nexusd) = seeded().await;
    let mut table = components();
    table.extend(analytics());
    table.extend(reports());
    table.extend(shapes());
    table.extend(more_shapes());
    table.extend(lifecycle());
    let problems = verify(&nexusd, &table).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The values the pages show, not only their types.
    let scan = nexusd
        .ok(
            "scan_repository_components",
            json!({"repository": "acme/billing"}),
        )
        .await;
    assert_eq!(scan["pattern_extraction"], "disabled");
    assert_eq!(scan["components_found"], 2);
    // The dashboards' numbers, from the seed: one open critical and one open high issue; the
    // retry policy held by two repositories; both repositories using "Retry with backoff" have
    // an issue naming it.
    let overview = nexusd.ok("get_dashboard_overview", json!({})).await;
    assert_eq!(overview["system_health"]["overall_health_score"], 80);
    assert_eq!(overview["system_health"]["status"], "healthy");
    assert_eq!(overview["alerts"].as_array().unwrap().len(), 2);
    let duplication = nexusd
        .ok("get_component_duplication_stats", json!({}))
        .await;
    assert_eq!(
        (
            &duplication["total_duplicates"],
            &duplication["total_unique_components"]
        ),
        (&json!(1), &json!(3))
    );
    let health = nexusd.ok("get_pattern_health_summary", json!({})).await;
    let worst = &health["patterns_by_health"][0];
    assert_eq!(
        (
            worst["pattern_name"].as_str(),
            worst["health_score"].as_f64()
        ),
        (Some("Retry with backoff"), Some(0.0))
    );
    assert_eq!(
        health["top_issue_types"][0],
        json!({"type": "timeout", "count": 2})
    );
    // A repository card shows `total_components` as the repository's count.
    let billing = nexusd
        .ok(
            "list_components",
            json!({"repository": "acme/billing", "limit": 1}),
        )
        .await;
    assert_eq!(
        (&billing["total_components"], &billing["filtered_count"]),
        (&json!(2), &json!(1))
    );
    let validate = nexusd
        .ok(
            "validate_repository_architecture",
            json!({"repository": "acme/billing"}),
        )
        .await;
    assert_eq!(validate["status"], "not_configured");
    let feed = nexusd
        .ok(
            "get_recent_actions",
            json!({"action_types": ["deployment"]}),
        )
        .await;
    assert_eq!(
        feed["actions"][0]["metadata"]["description"],
        "Deployment via cloud_build (region: us-central1, service: cloud_run)"
    );
    let detect = nexusd.ok("detect_misplaced_components", json!({})).await;
    assert_eq!(
        detect["component_issues"].as_array().unwrap().len(),
        detect["misplaced_components"].as_array().unwrap().len()
    );
    let deps = nexusd
        .ok(
            "get_component_dependencies",
            json!({"repository": "acme/billing"}),
        )
        .await;
    assert_eq!(
        deps["circular_dependencies"][0]["components"],
        json!(["invoice-number", "retry-policy"])
    );
    let (_, card) = nexusd.get("/.well-known/agent.json").await.unwrap();
    for (name, value) in card["metadata"]["external_agents"].as_object().unwrap() {
        assert_eq!(value, "not configured", "{name}");
    }

    // No skill id the frontend calls is unknown (the other engineer's skills join this list).
    let (_, root) = nexusd.get("/").await.unwrap();
    let ids: Vec<&str> = root["skills"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for id in frontend_ids() {
        assert!(ids.contains(&id), "{id} is not registered");
    }
}

/// The ids of this part of the frontend's client (`a2aClient.ts`): its lifecycle, catalog and
/// analytics skills and the architecture skills it calls.
fn frontend_ids() -> impl Iterator<Item = &'static str> {
    support::skill_ids::FRONTEND.into_iter().chain([
        "validate_repository_architecture",
        "check_specific_standard",
        "suggest_improvements",
    ])
}

/// A pattern's history as `get_pattern_history` answers it.
async fn history(nexusd: &Nexusd, name: &str) -> Value {
    nexusd
        .ok("get_pattern_history", json!({"pattern_name": name}))
        .await
}

fn versions(history: &Value) -> Vec<(String, String)> {
    history["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions: {history}"))
        .iter()
        .map(|v| {
            (
                v["created_by"].as_str().unwrap_or_default().to_string(),
                v["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn pattern_history_holds_every_writers_change_in_its_transaction() {
    let (db, nexusd) = seeded().await;
    let pool = db.pool().await;

    // Seeded rows: one version each, "created".
    let start = history(&nexusd, "Invoice numbering").await;
    assert_eq!(start["total_versions"], 1);
    assert_eq!(start["versions"][0]["operation"], "created");

    // update_pattern: new text and keywords, one version with both changes and the reason.
    let updated = nexusd
        .ok(
            "update_pattern",
            json!({"pattern_name": "Invoice numbering", "description": "Gapless numbers per year and country",
                   "keywords": ["invoice", "tax"], "change_summary": "Numbers restart per country"}),
        )
        .await;
    assert_eq!(updated["new_version"], 2);
    let h = history(&nexusd, "Invoice numbering").await;
    let v2 = &h["versions"][1];
    assert_eq!(v2["created_by"], "update_pattern");
    assert_eq!(v2["change_summary"], "Numbers restart per country");
    let changed: Vec<&str> = v2["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["description", "keywords"], "{v2}");
    assert_eq!(
        v2["changes"][0]["old_value"],
        "Gapless invoice numbers per year"
    );
    assert_eq!(v2["changes"][1]["old_value"], r#"["invoice","payments"]"#);
    assert_eq!(v2["changes"][1]["new_value"], r#"["invoice","tax"]"#);

    // A writer that is not a skill (psql, an import): caught by the trigger.
    sqlx::query(
        "UPDATE patterns SET context = 'Finance team owns it' WHERE name = 'Invoice numbering'",
    )
    .execute(&pool)
    .await
    .unwrap();
    // A rolled-back change leaves no version.
    let mut tx = nexusd::db::begin(&pool).await.unwrap();
    sqlx::query("UPDATE patterns SET context = 'never' WHERE name = 'Invoice numbering'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // record_analysis rewording the pattern: a version by nexusd's own connection.
    nexusd
        .ok(
            "record_analysis",
            json!({"repository": "acme/billing", "patterns": [
                {"name": "Invoice numbering", "description": "Gapless numbers, one sequence per year and country"}]}),
        )
        .await;
    let h = history(&nexusd, "Invoice numbering").await;
    assert_eq!(h["total_versions"], 4, "{h}");
    let by: Vec<(String, String)> = versions(&h);
    assert_eq!(by[3].1, "active");
    assert_ne!(by[2].0, "update_pattern");
    assert_eq!(
        h["versions"][3]["changes"][0]["new_value"],
        "Gapless numbers, one sequence per year and country"
    );
}

#[tokio::test]
async fn deprecating_and_archiving_are_versions_and_archived_is_final() {
    let (db, nexusd) = seeded().await;
    let pool = db.pool().await;
    // Deprecate, then archive: each a version with its status; an archived pattern stays so.
    nexusd
        .ok(
            "deprecate_pattern",
            json!({"pattern_name": "Invoice numbering", "reason": "Moved to the ledger service"}),
        )
        .await;
    nexusd
        .ok(
            "archive_pattern",
            json!({"pattern_name": "Invoice numbering"}),
        )
        .await;
    let (_, again) = nexusd
        .exec(
            "deprecate_pattern",
            json!({"pattern_name": "Invoice numbering", "reason": "again"}),
        )
        .await;
    assert_eq!(again["success"], false, "{again}");
    let h = history(&nexusd, "Invoice numbering").await;
    let tail: Vec<(String, String)> = versions(&h).split_off(1);
    assert_eq!(
        tail,
        [
            ("deprecate_pattern".to_string(), "deprecated".to_string()),
            ("archive_pattern".to_string(), "archived".to_string())
        ]
    );
    assert_eq!(h["current_status"], "archived");
    let status: String =
        sqlx::query_scalar("SELECT status::text FROM patterns WHERE name = 'Invoice numbering'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "archived");

    // A cross-repository pattern changed in one call is one version, naming both repositories.
    nexusd
        .ok(
            "update_pattern",
            json!({"pattern_name": "Retry with backoff", "context": "Outbound calls only"}),
        )
        .await;
    let h = history(&nexusd, "Retry with backoff").await;
    let last = h["versions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["repositories"], json!(["acme/orders", "acme/zephyr"]));
    // The seed created both in one transaction: that is version 1.
    assert_eq!(h["total_versions"], 2, "{h}");
}
