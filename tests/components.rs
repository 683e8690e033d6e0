//! The read-only component skills over real HTTP against a seeded knowledge base
//! (`fixtures/components.sql`) where the right home of the duplicated retry code is obvious
//! from the data: each skill finds it, errors name the unknown repository, and none of them
//! writes anything.

mod support;

use serde_json::{Value, json};
use support::{Nexusd, TestDb, table_digest};

async fn seeded() -> (TestDb, Nexusd) {
    support::seeded(include_str!("fixtures/components.sql")).await
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn detect_finds_the_copies_that_belong_in_the_shared_library() {
    let (_db, nexusd) = seeded().await;

    let all = nexusd.ok("detect_misplaced_components", json!({})).await;
    assert_eq!(all["analyzed_repository"], "all");
    assert_eq!(all["components_analyzed"], 4);
    assert_eq!(all["misplaced_components_found"], 2, "{all}");
    let misplaced = &all["misplaced_components"];
    let mut found = ids(misplaced, "component_id");
    found.sort();
    assert_eq!(
        found,
        ["acme/billing:retry-policy", "acme/orders:retry_policy"]
    );
    for m in misplaced.as_array().unwrap() {
        let rec = &m["canonical_recommendation"];
        assert_eq!(rec["repository"], "acme/zephyr", "{m}");
        let best = rec["canonical_score"].as_f64().unwrap();
        let current = rec["current_score"].as_f64().unwrap();
        assert!(best - current >= 0.1, "{m}");
        // all_scores lists every repository, best first; the central-sounding name scores 0.
        let scores: Vec<(&String, f64)> = rec["all_scores"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k, v.as_f64().unwrap()))
            .collect();
        assert_eq!(scores.len(), 5);
        assert_eq!(scores[0].0, "acme/zephyr");
        assert!(scores.windows(2).all(|w| w[0].1 >= w[1].1), "{scores:?}");
        assert_eq!(rec["all_scores"]["acme/core-common"], 0.0);
        assert!(
            rec["reasoning"]
                .as_str()
                .unwrap()
                .starts_with("Repository acme/zephyr scores well on: "),
            "{rec}"
        );
        assert_eq!(m["similar_count"], 1);
        assert_eq!(m["potential_consolidation"], true);
    }
    let billing = misplaced
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["component_id"] == "acme/billing:retry-policy")
        .unwrap();
    assert_eq!(billing["current_location"], "acme/billing");
    assert_eq!(billing["current_files"], json!(["src/retry.rs"]));
    assert_eq!(
        billing["similar_components"][0]["component_id"],
        "acme/orders:retry_policy"
    );
    assert_eq!(billing["similar_components"][0]["similarity"], 1.0);

    // One repository; the diverged copy left out.
    let one = nexusd
        .ok(
            "detect_misplaced_components",
            json!({"repository": "acme/billing", "include_diverged": false}),
        )
        .await;
    assert_eq!(one["analyzed_repository"], "acme/billing");
    assert_eq!(one["components_analyzed"], 2);
    assert_eq!(
        ids(&one["misplaced_components"], "component_id"),
        ["acme/billing:retry-policy"]
    );
    assert_eq!(one["misplaced_components"][0]["similar_count"], 0);
    assert_eq!(
        one["misplaced_components"][0]["potential_consolidation"],
        false
    );

    let typed = nexusd
        .ok(
            "detect_misplaced_components",
            json!({"component_types": ["api_client"], "top_k_matches": 1}),
        )
        .await;
    assert_eq!(typed["components_analyzed"], 1);
    assert_eq!(typed["misplaced_components_found"], 0);

    let none = nexusd
        .ok(
            "detect_misplaced_components",
            json!({"repository": "acme/core-common"}),
        )
        .await;
    assert_eq!(none["summary"], "No components found matching criteria");
    assert_eq!(none["misplaced_components"], json!([]));

    let (status, body) = nexusd
        .exec(
            "detect_misplaced_components",
            json!({"repository": "acme/nope"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"], "Repository not found: acme/nope");
    let (_, body) = nexusd
        .exec(
            "detect_misplaced_components",
            json!({"min_similarity_score": 1.5}),
        )
        .await;
    assert_eq!(
        body["error"],
        "Invalid parameter 'min_similarity_score': must be between 0 and 1"
    );
}

#[tokio::test]
async fn centrality_scores_every_candidate_from_the_data() {
    let (_db, nexusd) = seeded().await;
    let body = nexusd
        .ok(
            "analyze_component_centrality",
            json!({"component_name": "retry-policy", "current_location": "acme/billing"}),
        )
        .await;
    assert_eq!(body["component_found"], true);
    let mut implementations = ids(&body["implementations"], "component_id");
    implementations.sort();
    assert_eq!(
        implementations,
        ["acme/billing:retry-policy", "acme/orders:retry_policy"]
    );
    let analysis = &body["analysis"];
    assert_eq!(analysis["best_location"], "acme/zephyr");
    let zephyr = &analysis["all_scores"]["acme/zephyr"];
    assert_eq!(analysis["best_score"], zephyr["canonical_score"]);
    // The shared library: 2 of the component's 3 words in its vocabulary, every user of the
    // component depends on it, 3 of the 4 other repositories depend on it, analysed last, and
    // it holds no copy.
    assert_eq!(
        zephyr["factors"],
        json!({
            "repository_purpose": 0.667,
            "usage_count": 1.0,
            "dependency_centrality": 0.75,
            "maintenance_activity": 1.0,
            "component_complexity": 0.0,
            "first_implementation": 0.0,
        })
    );
    assert_eq!(zephyr["weights"]["repository_purpose"], 0.3);
    assert_eq!(zephyr["canonical_score"], 0.75);
    let billing = &analysis["all_scores"]["acme/billing"];
    // Billing holds the oldest copy (180 lines, complexity 12) and is used by orders.
    assert_eq!(billing["factors"]["first_implementation"], 1.0);
    assert_eq!(billing["factors"]["component_complexity"], 0.312);
    assert_eq!(billing["factors"]["dependency_centrality"], 0.25);
    assert_eq!(billing["factors"]["repository_purpose"], 0.0);
    let order: Vec<&String> = analysis["all_scores"].as_object().unwrap().keys().collect();
    assert_eq!(order[0], "acme/zephyr");
    assert_eq!(order[4], "acme/core-common");
    assert_eq!(analysis["recommendation"]["from"], "acme/billing");
    assert_eq!(analysis["recommendation"]["to"], "acme/zephyr");
    let improvement = analysis["recommendation"]["improvement"].as_f64().unwrap();
    let expected =
        zephyr["canonical_score"].as_f64().unwrap() - billing["canonical_score"].as_f64().unwrap();
    assert!(
        (improvement - expected).abs() < 0.0015,
        "{improvement} vs {expected}"
    );

    // Candidates limited; the current location is always scored, the bait name still gets 0.
    let body = nexusd
        .ok(
            "analyze_component_centrality",
            json!({"component_name": "retry-policy", "current_location": "acme/billing",
                   "candidate_locations": ["acme/core-common"]}),
        )
        .await;
    let keys: Vec<&String> = body["analysis"]["all_scores"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["acme/billing", "acme/core-common"]);
    assert_eq!(body["analysis"]["best_location"], "acme/billing");
    assert_eq!(body["analysis"]["recommendation"]["improvement"], 0.0);

    for (input, error) in [
        (
            json!({"component_name": "x", "current_location": "acme/nope"}),
            "Repository not found: acme/nope",
        ),
        (
            json!({"component_name": "x", "current_location": "acme/billing", "candidate_locations": ["acme/gone"]}),
            "Repository not found: acme/gone",
        ),
        (
            json!({"current_location": "acme/billing"}),
            "Missing required parameter: 'component_name'",
        ),
    ] {
        let (status, body) = nexusd.exec("analyze_component_centrality", input).await;
        assert_eq!((status, &body["success"]), (200, &json!(false)));
        assert_eq!(body["error"], error);
    }
}

#[tokio::test]
async fn consolidation_plan_moves_the_copy_to_the_best_repository() {
    let (_db, nexusd) = seeded().await;
    let body = nexusd
        .ok(
            "recommend_consolidation_plan",
            json!({"component_name": "retry-policy", "from_repository": "acme/billing"}),
        )
        .await;
    assert_eq!(body["to_repository"], "acme/zephyr");
    let id = body["recommendation_id"].as_str().unwrap();
    assert!(
        id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let plan = &body["consolidation_plan"];
    for phase in ["phase_1", "phase_2", "phase_3", "phase_4"] {
        assert!(plan[phase]["name"].is_string(), "{phase}: {plan}");
        assert!(plan[phase]["tasks"].is_array());
        assert!(plan[phase]["estimated_hours"].as_f64().unwrap() >= 1.0);
    }
    // Billing and orders hold copies (orders also depends on billing); zephyr is the target.
    assert_eq!(
        plan["phase_3"]["affected_repositories"],
        json!(["acme/billing", "acme/orders"])
    );
    // 2 copies: analysis 1.5 h; 180 lines, complexity 12: 180/150 + 1.2 = 2.4 → 2.5 h;
    // 2 affected: 3 h; clean-up 1.5 h.
    let hours: Vec<f64> = ["phase_1", "phase_2", "phase_3", "phase_4"]
        .iter()
        .map(|p| plan[p]["estimated_hours"].as_f64().unwrap())
        .collect();
    assert_eq!(hours, [1.5, 2.5, 3.0, 1.5]);
    assert_eq!(plan["total_estimated_hours"], 8.5);
    assert_eq!(plan["total_estimated_effort"], "9-13 hours");
    // Without the agents, the reference's "not configured" answers.
    assert_eq!(
        body["impact_analysis"],
        json!({"error": "dependency-orchestrator not configured", "affected_repositories": [], "risk_level": "unknown"})
    );
    assert_eq!(
        body["deep_analysis"],
        json!({"error": "pattern-miner not configured", "api_compatibility": null, "behavioral_differences": []})
    );
    let rec = &body["recommendation"];
    assert_eq!(rec["recommendation_id"], body["recommendation_id"]);
    assert_eq!(rec["component_id"], "acme/billing:retry-policy");
    assert_eq!(rec["from_repository"], "acme/billing");
    assert_eq!(rec["priority"], "HIGH");
    assert_eq!(rec["status"], "pending");
    assert_eq!(rec["estimated_effort_hours"], "9-13");
    assert_eq!(rec["benefits"].as_array().unwrap().len(), 3);
    assert_eq!(rec["risks"].as_array().unwrap().len(), 2);
    assert!(
        rec["risks"][1].as_str().unwrap().contains("diverged"),
        "{rec}"
    );

    // A chosen target the data does not support; analyses switched off.
    let body = nexusd
        .ok(
            "recommend_consolidation_plan",
            json!({"component_name": "retry-policy", "from_repository": "acme/billing",
                   "to_repository": "acme/core-common", "include_impact_analysis": false,
                   "include_deep_analysis": false}),
        )
        .await;
    assert_eq!(body["to_repository"], "acme/core-common");
    assert_eq!(body["impact_analysis"], Value::Null);
    assert_eq!(body["deep_analysis"], Value::Null);
    assert_eq!(body["recommendation"]["priority"], "LOW");
    assert_eq!(body["recommendation"]["confidence"], 0.5);
    assert!(
        body["recommendation"]["reasoning"]
            .as_str()
            .unwrap()
            .contains("does not support"),
        "{body}"
    );

    let (_, body) = nexusd
        .exec(
            "recommend_consolidation_plan",
            json!({"component_name": "x", "from_repository": "acme/billing", "to_repository": "acme/nope"}),
        )
        .await;
    assert_eq!(body["error"], "Repository not found: acme/nope");
}

#[tokio::test]
async fn the_read_only_component_skills_write_nothing() {
    let (db, nexusd) = seeded().await;
    let pool = db.pool().await;
    let before = table_digest(&pool).await;
    let calls = [
        ("detect_misplaced_components", json!({})),
        (
            "detect_misplaced_components",
            json!({"repository": "acme/orders", "include_diverged": false}),
        ),
        (
            "analyze_component_centrality",
            json!({"component_name": "retry-policy", "current_location": "acme/billing"}),
        ),
        (
            "analyze_component_centrality",
            json!({"component_name": "never-seen", "current_location": "acme/search"}),
        ),
        (
            "recommend_consolidation_plan",
            json!({"component_name": "retry-policy", "from_repository": "acme/billing"}),
        ),
        (
            "recommend_consolidation_plan",
            json!({"component_name": "http-client", "from_repository": "acme/zephyr"}),
        ),
    ];
    for (skill, input) in calls {
        nexusd.ok(skill, input).await;
    }
    assert_eq!(table_digest(&pool).await, before);
}
