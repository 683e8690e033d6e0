//! The skills API over real HTTP against a real database: every endpoint and database skill on
//! an empty and a seeded knowledge base, each write followed by the read that must see it,
//! validation and protocol errors, the response envelope, read skills writing nothing, the agent
//! card and OpenAPI document, and concurrent first writers.

mod support;

use serde_json::{Value, json};
use support::{Nexusd, TestDb, assert_envelope, http, shared_db, table_digest};

/// A seeded database and a nexusd serving it without auth (auth has its own tests), and
/// without the background embedding of the seeded patterns, so that every write seen is a
/// skill's (search has its own tests).
async fn seeded() -> (TestDb, Nexusd) {
    support::seeded(include_str!("fixtures/seed.sql")).await
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_string())
        .collect()
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn empty_database_answers_every_read_skill_with_empty_results() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;

    let list = nexusd.ok("get_repository_list", json!({})).await;
    assert_envelope(&list);
    assert_eq!(list["repositories"], json!([]));
    assert_eq!(
        (
            list["total_count"].as_i64(),
            list["total_repositories"].as_i64()
        ),
        (Some(0), Some(0))
    );

    let q = nexusd
        .ok("query_patterns", json!({"keywords": ["auth"]}))
        .await;
    assert_eq!(
        (q["matches"].clone(), q["total_matches"].as_i64()),
        (json!([]), Some(0))
    );

    let cross = nexusd.ok("get_cross_repo_patterns", json!({})).await;
    assert_eq!(cross["cross_repo_patterns"], json!([]));

    let actions = nexusd.ok("get_recent_actions", json!({})).await;
    assert_eq!(actions["count"], 0);
    assert_eq!(
        actions["pagination"],
        json!({"limit": 20, "offset": 0, "has_more": false, "next_offset": null, "total_pages": 0})
    );

    let issues = nexusd.ok("query_known_issues", json!({})).await;
    assert_eq!(
        (issues["count"].as_i64(), issues["issues"].clone()),
        (Some(0), json!([]))
    );

    let health = nexusd
        .ok("get_pattern_health", json!({"pattern_name": "Anything"}))
        .await;
    assert_eq!(health["health_score"], 1.0);
    assert_eq!(
        health["recommendation"],
        "Pattern 'Anything' is not currently in use."
    );

    let (status, missing) = nexusd
        .exec("get_deployment_info", json!({"repository": "no/such"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(missing["success"], false);
    assert_eq!(
        missing["error"],
        "Repository 'no/such' not found in knowledge base"
    );
    assert_eq!(missing["available_repositories"], json!([]));
    assert_envelope(&missing);
}

#[tokio::test]
async fn seeded_reads_return_what_the_tables_hold() {
    let (_db, nexusd) = seeded().await;

    // get_repository_list: real counts (zeta/tools has 60 patterns, above the original's cap of 50).
    let list = nexusd.ok("get_repository_list", json!({})).await;
    let repos = &list["repositories"];
    assert_eq!(
        names(repos, "name"),
        ["acme/api", "acme/web", "acme/worker", "zeta/tools"]
    );
    assert_eq!(repos[0]["pattern_count"], 3);
    assert_eq!(repos[3]["pattern_count"], 60);
    assert_eq!(repos[0]["last_updated"], "2026-11-01T10:00:00.000000+00:00");
    assert_eq!(repos[0]["problem_domain"], "payments");
    assert_eq!(
        strings(&repos[0]["keywords"]),
        ["auth", "jwt", "postgres", "resilience", "retry"]
    );
    assert_eq!(repos[3]["last_updated"], Value::Null);
    assert_eq!(list["total_repositories"], 4);
    let bare = nexusd
        .ok("get_repository_list", json!({"include_metadata": false}))
        .await;
    assert_eq!(
        bare["repositories"],
        json!(["acme/api", "acme/web", "acme/worker", "zeta/tools"])
    );

    // query_patterns by keywords: most matches first, then by name.
    let q = nexusd
        .ok(
            "query_patterns",
            json!({"keywords": ["Auth", "JWT", "retry"]}),
        )
        .await;
    assert_eq!(
        names(&q["matches"], "repository"),
        ["acme/api", "acme/web", "acme/worker"]
    );
    let api = &q["matches"][0];
    assert_eq!(api["match_count"], 3);
    assert_eq!(strings(&api["matched_keywords"]), ["auth", "jwt", "retry"]);
    assert_eq!(
        strings(&api["all_keywords"]),
        ["auth", "jwt", "postgres", "resilience", "retry", "security"]
    );
    assert_eq!(
        strings(&api["patterns"]),
        [
            "Connection pooling",
            "Retry with backoff",
            "JWT authentication"
        ]
    );
    assert_eq!(api["problem_domain"], "payments");
    let deployment = &api["deployment_info"];
    assert_eq!(deployment["ci_cd_platform"], "cloud_build");
    assert_eq!(
        deployment["infrastructure"],
        json!({"region": "us-central1", "service": "cloud_run"})
    );
    assert_eq!(deployment["scripts"][0]["name"], "deploy");
    assert_eq!(
        deployment["lessons_learned"][0]["lesson"],
        "Pin dependencies"
    );
    assert_eq!(deployment["reusable_components"][0]["name"], "http-client");
    assert_eq!(
        q["search_criteria"],
        json!({"keywords": ["Auth", "JWT", "retry"], "patterns": [], "min_matches": 1})
    );
    let two = nexusd
        .ok(
            "query_patterns",
            json!({"keywords": ["auth", "jwt", "retry"], "min_matches": 2}),
        )
        .await;
    assert_eq!(
        names(&two["matches"], "repository"),
        ["acme/api", "acme/web"]
    );
    let all = nexusd
        .ok(
            "query_patterns",
            json!({"keywords": ["auth"], "min_matches": 0}),
        )
        .await;
    assert_eq!(all["total_matches"], 4);

    // query_patterns by pattern names (case-insensitive, whole names).
    let p = nexusd
        .ok(
            "query_patterns",
            json!({"patterns": ["retry WITH backoff", "idempotent jobs"]}),
        )
        .await;
    assert_eq!(
        names(&p["matches"], "repository"),
        ["acme/worker", "acme/api", "acme/web"]
    );
    assert_eq!(
        strings(&p["matches"][0]["matched_patterns"]),
        ["idempotent jobs", "retry with backoff"]
    );
    assert_eq!(
        strings(&p["matches"][0]["all_patterns"]),
        ["Idempotent jobs", "Retry with backoff"]
    );
    let component = &p["matches"][1]["reusable_components"][0];
    assert_eq!(component["description"], "Shared HTTP client with retries");
    assert_eq!(component["files"], json!(["src/http.rs"]));
    assert_eq!(component["tags"], json!(["http", "client"]));

    // query_patterns by repository: the frontend's call; similar repositories, itself left out.
    let similar = nexusd
        .ok(
            "query_patterns",
            json!({"repository": "acme/web", "keywords": []}),
        )
        .await;
    assert_eq!(
        names(&similar["matches"], "repository"),
        ["acme/api", "acme/worker"]
    );

    // get_cross_repo_patterns, with the frontend's min_occurrences spelling.
    let cross = nexusd.ok("get_cross_repo_patterns", json!({})).await;
    assert_eq!(
        cross["cross_repo_patterns"],
        json!([
            {"pattern": "Retry with backoff", "repositories": ["acme/api", "acme/web", "acme/worker"], "repo_count": 3},
            {"pattern": "JWT authentication", "repositories": ["acme/api", "acme/web"], "repo_count": 2},
        ])
    );
    assert_eq!(cross["min_repos"], 2);
    let three = nexusd
        .ok("get_cross_repo_patterns", json!({"min_occurrences": 3}))
        .await;
    assert_eq!(
        names(&three["cross_repo_patterns"], "pattern"),
        ["Retry with backoff"]
    );
    let jwt = nexusd
        .ok("get_cross_repo_patterns", json!({"pattern_type": "jwt"}))
        .await;
    assert_eq!(
        names(&jwt["cross_repo_patterns"], "pattern"),
        ["JWT authentication"]
    );

    // get_deployment_info: keys in the reference's order, every section from its table.
    let info = nexusd
        .ok(
            "get_deployment_info",
            json!({"repository": "acme/api", "include_history": true}),
        )
        .await;
    let keys: Vec<&String> = info.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "success",
            "repository",
            "deployment",
            "dependencies",
            "testing",
            "security",
            "latest_patterns",
            "lessons_learned",
            "history",
            "timestamp",
            "execution_time_ms"
        ]
    );
    let lesson = &info["lessons_learned"][0];
    assert_eq!(
        (
            lesson["lesson"].as_str(),
            lesson["context"].as_str(),
            lesson["severity"].as_str(),
            lesson["category"].as_str()
        ),
        (
            Some("Pin dependencies"),
            Some("A minor release broke production"),
            Some("warning"),
            Some("reliability")
        )
    );
    assert_eq!(lesson["timestamp"], "2026-11-05T12:00:00.000000+00:00");
    let deps = &info["dependencies"];
    assert_eq!(names(&deps["consumers"], "repository"), ["acme/web"]);
    assert_eq!(names(&deps["derivatives"], "target_repo"), ["acme/worker"]);
    assert_eq!(deps["external_dependencies"], json!(["tokio"]));
    assert_eq!(info["testing"]["test_frameworks"], json!(["cargo test"]));
    assert_eq!(info["testing"]["coverage_percentage"], 81.5);
    assert_eq!(
        info["security"]["authentication_methods"],
        json!(["oauth2"])
    );
    assert_eq!(info["latest_patterns"]["problem_domain"], "payments");
    assert_eq!(
        info["latest_patterns"]["keywords"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(info["history"][0]["commit_sha"], "abc123");
    assert_eq!(info["history"][0]["patterns_count"], 3);
    let lean = nexusd
        .ok(
            "get_deployment_info",
            json!({"repository": "acme/api", "include_lessons": false}),
        )
        .await;
    assert!(
        lean.get("lessons_learned").is_none() && lean.get("history").is_none(),
        "{lean}"
    );

    // get_recent_actions: one timeline of four tables, metadata as objects.
    let feed = nexusd.ok("get_recent_actions", json!({})).await;
    assert_eq!(feed["count"], 5);
    assert_eq!(
        names(&feed["actions"], "action_type"),
        [
            "runtime_issue",
            "deployment",
            "lesson",
            "analysis",
            "runtime_issue"
        ]
    );
    let lesson_action = &feed["actions"][2];
    assert_eq!(
        lesson_action["metadata"],
        json!({"category": "reliability", "impact": "warning", "description": "A minor release broke production"})
    );
    assert_eq!(
        feed["actions"][0]["metadata"]["log_snippet"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        200
    );
    let page = nexusd
        .ok("get_recent_actions", json!({"limit": 2, "offset": 2}))
        .await;
    assert_eq!(
        page["pagination"],
        json!({"limit": 2, "offset": 2, "has_more": true, "next_offset": 4, "total_pages": 3})
    );
    let last = nexusd
        .ok("get_recent_actions", json!({"limit": 2, "offset": 4}))
        .await;
    assert_eq!(
        (
            last["returned"].as_i64(),
            last["pagination"]["next_offset"].clone()
        ),
        (Some(1), Value::Null)
    );
    let lessons = nexusd
        .ok("get_recent_actions", json!({"action_types": ["lesson"]}))
        .await;
    assert_eq!(lessons["count"], 1);
    let worker = nexusd
        .ok("get_recent_actions", json!({"repository": "acme/worker"}))
        .await;
    assert_eq!(names(&worker["actions"], "reference_id"), ["iss-2"]);
    assert_eq!(
        worker["filters"],
        json!({"action_types": null, "repository": "acme/worker"})
    );

    // query_known_issues: both spellings of the original's fields.
    let issues = nexusd.ok("query_known_issues", json!({})).await;
    assert_eq!(issues["count"], 2);
    assert_eq!(names(&issues["issues"], "issue_id"), ["iss-1", "iss-2"]);
    assert_eq!(
        issues["repositories_affected"],
        json!(["acme/api", "acme/worker"])
    );
    assert_eq!(issues["query"], json!({}));
    let first = &issues["issues"][0];
    assert_eq!(first["logs"], first["log_snippet"]);
    assert_eq!(
        first["github_issue"],
        "https://github.com/acme/api/issues/7"
    );
    assert_eq!(first["repository"], "acme/api");
    let high = nexusd
        .ok(
            "query_known_issues",
            json!({"severity": "high", "limit": 5}),
        )
        .await;
    assert_eq!(
        (high["count"].as_i64(), high["query"].clone()),
        (Some(1), json!({"severity": "high"}))
    );
    let limited = nexusd.ok("query_known_issues", json!({"limit": 1})).await;
    assert_eq!(
        (limited["count"].as_i64(), limited["returned"].as_i64()),
        (Some(2), Some(1))
    );

    // get_pattern_health: the 40-day-old issue is outside the default 30-day window.
    let health = nexusd
        .ok(
            "get_pattern_health",
            json!({"pattern_name": "Retry with backoff"}),
        )
        .await;
    assert_eq!(health["total_repos"], 3);
    assert_eq!(health["repos_with_issues_list"], json!(["acme/api"]));
    assert_eq!(health["health_score"], 0.67);
    assert_eq!(
        health["issue_breakdown"],
        json!({"critical": 0, "high": 1, "medium": 0, "low": 0})
    );
    assert!(
        health["recommendation"]
            .as_str()
            .unwrap()
            .starts_with("⚠️ WARNING: Pattern 'Retry with backoff' has issues in 1/3 repos")
    );
    let wide = nexusd
        .ok(
            "get_pattern_health",
            json!({"pattern_name": "Retry with backoff", "time_range_days": 60}),
        )
        .await;
    assert_eq!(wide["health_score"], 0.33);
    let severe = nexusd
        .ok(
            "get_pattern_health",
            json!({"pattern_name": "Retry with backoff", "time_range_days": 60, "severity_threshold": "high"}),
        )
        .await;
    assert_eq!(severe["issue_count"], 1);
}

#[tokio::test]
async fn every_write_is_seen_by_the_read_that_must_see_it() {
    let (db, nexusd) = seeded().await;
    let pool = db.pool().await;

    // add_repository → get_repository_list.
    let added = nexusd
        .ok(
            "add_repository",
            json!({"repository": "new/repo", "problem_domain": "search"}),
        )
        .await;
    assert!(added["repository_id"].is_i64());
    assert_eq!(added["message"], "Repository 'new/repo' added successfully");
    let list = nexusd.ok("get_repository_list", json!({})).await;
    let new = list["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "new/repo")
        .cloned();
    assert_eq!(
        new.map(|r| (r["problem_domain"].clone(), r["pattern_count"].clone())),
        Some((json!("search"), json!(0)))
    );
    let (status, dup) = nexusd
        .exec("add_repository", json!({"repository": "new/repo"}))
        .await;
    assert_eq!((status, dup["success"].clone()), (200, json!(false)));
    assert!(
        dup["error"].as_str().unwrap().contains("already exists"),
        "{dup}"
    );

    // add_lesson_learned creates the repository and shows up in get_deployment_info and the feed.
    let lesson = nexusd
        .ok(
            "add_lesson_learned",
            json!({"repository": "brand/new", "category": "performance", "lesson": "Batch inserts",
                   "context": "Row-by-row inserts took minutes", "severity": "critical",
                   "recorded_by": "ops-bot", "tags": ["db"]}),
        )
        .await;
    assert_eq!(lesson["message"], "Lesson learned recorded for brand/new");
    assert_eq!(
        (lesson["category"].as_str(), lesson["severity"].as_str()),
        (Some("performance"), Some("critical"))
    );
    let info = nexusd
        .ok("get_deployment_info", json!({"repository": "brand/new"}))
        .await;
    let stored = &info["lessons_learned"][0];
    assert_eq!(
        (
            stored["lesson"].as_str(),
            stored["context"].as_str(),
            stored["severity"].as_str(),
            stored["recorded_by"].as_str()
        ),
        (
            Some("Batch inserts"),
            Some("Row-by-row inserts took minutes"),
            Some("critical"),
            Some("ops-bot")
        )
    );
    assert_eq!(stored["tags"], json!(["db"]));
    // The frontend's field names (title/description/impact) are accepted.
    nexusd
        .ok(
            "add_lesson_learned",
            json!({"repository": "brand/new", "title": "Cache tokens", "description": "Token fetch per request was slow",
                   "category": "cost", "impact": "info"}),
        )
        .await;
    let feed = nexusd
        .ok(
            "get_recent_actions",
            json!({"repository": "brand/new", "action_types": ["lesson"]}),
        )
        .await;
    assert_eq!(names(&feed["actions"], "reference_id").len(), 2);
    assert!(names(&feed["actions"], "reference_id").contains(&"Cache tokens".to_string()));

    // update_dependency_info replaces the whole graph.
    nexusd
        .ok(
            "update_dependency_info",
            json!({"repository": "acme/api", "dependency_info": {
                "consumers": ["x/y", {"repository": "z/w", "version": "2.0"}],
                "external_dependencies": ["serde"]}}),
        )
        .await;
    let deps = nexusd
        .ok("get_deployment_info", json!({"repository": "acme/api"}))
        .await["dependencies"]
        .clone();
    assert_eq!(names(&deps["consumers"], "repository"), ["x/y", "z/w"]);
    assert_eq!(deps["consumers"][1]["dependency_version"], "2.0");
    assert_eq!(deps["derivatives"], json!([]));
    assert_eq!(
        deps["external_dependencies"],
        json!(["serde"]),
        "tokio must be gone"
    );
    // The frontend's form adds one edge and keeps the rest; sending it twice adds nothing.
    let form = json!({"repository": "acme/api", "dependency_type": "derivative",
                      "dependent_repo": "acme/api-fork", "description": "Fork for the EU region"});
    let added = nexusd.ok("update_dependency_info", form.clone()).await;
    assert_eq!(added["dependencies_written"], 1);
    assert_eq!(
        nexusd.ok("update_dependency_info", form).await["dependencies_written"],
        0
    );
    let deps = nexusd
        .ok("get_deployment_info", json!({"repository": "acme/api"}))
        .await["dependencies"]
        .clone();
    assert_eq!(names(&deps["derivatives"], "repository"), ["acme/api-fork"]);
    assert_eq!(names(&deps["consumers"], "repository"), ["x/y", "z/w"]);

    // add_deployment_info → get_deployment_info; recording it again replaces the one row.
    let deployment = json!({"repository": "acme/web", "deployment_info": {
        "ci_cd_platform": "github_actions",
        "scripts": [{"name": "release", "description": "Build and push", "script_path": ".github/workflows/release.yml",
                     "platform": "github", "triggers": ["tag"]}],
        "infrastructure": {"region": "europe-west1"},
        "deployment_frequency": "daily",
        "last_deployed": "2026-11-20T10:00:00Z"}});
    nexusd.ok("add_deployment_info", deployment.clone()).await;
    let mut again = deployment;
    again["deployment_info"]["infrastructure"] = json!({"region": "us-east1"});
    nexusd.ok("add_deployment_info", again).await;
    let web = nexusd
        .ok("get_deployment_info", json!({"repository": "acme/web"}))
        .await["deployment"]
        .clone();
    assert_eq!(web["ci_cd_platform"], "github_actions");
    assert_eq!(web["infrastructure"], json!({"region": "us-east1"}));
    assert_eq!(web["scripts"][0]["triggers"], json!(["tag"]));
    assert_eq!(web["deployment_frequency"], "daily");
    assert_eq!(web["last_deployed"], "2026-11-20T10:00:00.000000+00:00");
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployment_scripts d JOIN repositories r ON r.id = d.repo_id WHERE r.name = 'acme/web'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    let feed = nexusd
        .ok(
            "get_recent_actions",
            json!({"repository": "acme/web", "action_types": ["deployment"]}),
        )
        .await;
    assert_eq!(names(&feed["actions"], "reference_id"), ["github_actions"]);

    // add_runtime_issue → query_known_issues and get_pattern_health.
    let issue = nexusd
        .ok(
            "add_runtime_issue",
            json!({"repository": "acme/web", "service_type": "cloud_run", "issue_type": "timeout",
                   "severity": "critical", "log_snippet": "x".repeat(1500), "pattern_reference": "Retry with backoff",
                   "metrics": {"error_rate": 0.2, "latency_p95": 1200}}),
        )
        .await;
    assert_eq!(issue["pattern_updated"], true);
    assert_eq!(issue["message"], "Runtime issue recorded for acme/web");
    let new_id = issue["issue_id"].as_str().unwrap().to_string();
    assert_eq!(
        names(&issue["similar_issues"], "issue_id"),
        ["iss-1"],
        "similar issues exclude the new one"
    );
    let found = nexusd
        .ok("query_known_issues", json!({"issue_type": "timeout"}))
        .await;
    assert_eq!(
        names(&found["issues"], "issue_id"),
        [new_id.clone(), "iss-1".to_string()]
    );
    assert_eq!(
        found["issues"][0]["log_snippet"].as_str().unwrap().len(),
        1000
    );
    assert_eq!(
        found["issues"][0]["metrics"],
        json!({"error_rate": 0.2, "latency_p95": 1200})
    );
    let health = nexusd
        .ok(
            "get_pattern_health",
            json!({"pattern_name": "Retry with backoff"}),
        )
        .await;
    assert_eq!(
        health["repos_with_issues_list"],
        json!(["acme/api", "acme/web"])
    );
    let unrelated = nexusd
        .ok(
            "add_runtime_issue",
            json!({"repository": "other/repo", "service_type": "gke", "issue_type": "memory",
                   "severity": "low", "log_snippet": "OOMKilled"}),
        )
        .await;
    assert_eq!(
        (
            unrelated["pattern_updated"].clone(),
            unrelated["similar_issues"].clone()
        ),
        (json!(false), json!([]))
    );
}

#[tokio::test]
async fn validation_errors_name_the_field_and_change_nothing() {
    let (db, nexusd) = seeded().await;
    let pool = db.pool().await;
    let before = table_digest(&pool).await;
    let long = "x".repeat(501);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "add_repository",
            json!({}),
            "Missing required parameter: 'repository'",
        ),
        (
            "add_repository",
            json!({"repository": null}),
            "Missing required parameter: 'repository'",
        ),
        (
            "add_repository",
            json!({"repository": ""}),
            "Invalid parameter 'repository': must not be empty",
        ),
        (
            "add_repository",
            json!({"repository": "noslash"}),
            "Invalid parameter 'repository': must have the form 'owner/repo'",
        ),
        (
            "add_repository",
            json!({"repository": "a/b/c"}),
            "Invalid parameter 'repository': must have the form 'owner/repo'",
        ),
        (
            "add_repository",
            json!({"repository": 42}),
            "Invalid parameter 'repository': expected string, got integer",
        ),
        (
            "get_recent_actions",
            json!({"limit": 0}),
            "Invalid parameter 'limit': must be between 1 and 100",
        ),
        (
            "get_recent_actions",
            json!({"limit": 101}),
            "Invalid parameter 'limit': must be between 1 and 100",
        ),
        (
            "get_recent_actions",
            json!({"limit": "10"}),
            "Invalid parameter 'limit': expected integer, got string",
        ),
        (
            "get_recent_actions",
            json!({"offset": -1}),
            "Invalid parameter 'offset': must be at least 0",
        ),
        (
            "get_recent_actions",
            json!({"action_types": ["deploys"]}),
            "Invalid parameter 'action_types[0]': must be one of: analysis, lesson, deployment, runtime_issue",
        ),
        (
            "get_repository_list",
            json!({"include_metadata": "false"}),
            "Invalid parameter 'include_metadata': expected boolean, got string",
        ),
        (
            "add_lesson_learned",
            json!({"repository": "a/b", "category": "fun", "lesson": "x", "context": "y"}),
            "Invalid parameter 'category': must be one of: performance, security, reliability, cost, observability",
        ),
        (
            "add_lesson_learned",
            json!({"repository": "a/b", "category": "cost", "lesson": "x"}),
            "Missing required parameter: 'context'",
        ),
        (
            "add_lesson_learned",
            json!({"repository": "a/b", "category": "cost", "lesson": "x", "context": "y", "severity": "huge"}),
            "Invalid parameter 'severity': must be one of: info, warning, critical",
        ),
        (
            "add_runtime_issue",
            json!({"repository": "a/b", "service_type": "cloud_run", "issue_type": "error", "severity": "WRONG", "log_snippet": "x"}),
            "Invalid parameter 'severity': must be one of: critical, high, medium, low",
        ),
        (
            "add_runtime_issue",
            json!({"repository": "a/b", "service_type": "heroku", "issue_type": "error", "severity": "low", "log_snippet": "x"}),
            "Invalid parameter 'service_type': must be one of: cloud_run, cloud_functions, cloud_build, gce, gke, app_engine, other",
        ),
        (
            "add_runtime_issue",
            json!({"repository": "a/b", "service_type": "gce", "issue_type": "error", "severity": "low", "log_snippet": "x",
                   "metrics": {"error_rate": "high"}}),
            "Invalid parameter 'metrics.error_rate': expected number, got string",
        ),
        (
            "add_deployment_info",
            json!({"repository": "a/b", "deployment_info": {}}),
            "Invalid parameter 'deployment_info': must not be empty",
        ),
        (
            "add_deployment_info",
            json!({"repository": "a/b", "deployment_info": {"infrastructure": {"replicas": 3}}}),
            "Invalid parameter 'deployment_info.infrastructure.replicas': expected string, got integer",
        ),
        (
            "add_deployment_info",
            json!({"repository": "a/b", "deployment_info": {"scripts": [{"description": "no name"}]}}),
            "Invalid parameter 'deployment_info.scripts[0]': missing required field 'name'",
        ),
        (
            "add_deployment_info",
            json!({"repository": "a/b", "deployment_info": {"last_deployed": "yesterday"}}),
            "Invalid parameter 'deployment_info.last_deployed': \"yesterday\" is not an ISO 8601 date-time",
        ),
        (
            "update_dependency_info",
            json!({"repository": "a/b", "dependency_info": {"consumers": [{"relationship": "uses"}]}}),
            "Invalid parameter 'dependency_info.consumers[0]': missing required field 'repository'",
        ),
        (
            "update_dependency_info",
            json!({"repository": "a/b", "dependent_repo": "c/d", "dependency_type": "runtime"}),
            "Invalid parameter 'dependency_type': must be one of: consumer, derivative",
        ),
        (
            "update_dependency_info",
            json!({"repository": "a/b", "dependent_repo": "c/d"}),
            "Missing required parameter: one of 'dependency_info' or 'dependent_repo' with 'dependency_type'",
        ),
        (
            "update_dependency_info",
            json!({"repository": "a/b", "dependency_info": {"external_dependencies": [1]}}),
            "Invalid parameter 'dependency_info.external_dependencies[0]': expected string, got integer",
        ),
        (
            "get_pattern_health",
            json!({"pattern_name": long}),
            "Invalid parameter 'pattern_name': must be at most 500 characters long",
        ),
        (
            "get_pattern_health",
            json!({"pattern_name": "p", "time_range_days": 0}),
            "Invalid parameter 'time_range_days': must be between 1 and 3650",
        ),
        (
            "get_cross_repo_patterns",
            json!({"min_repos": 0}),
            "Invalid parameter 'min_repos': must be between 1 and 10000",
        ),
        (
            "query_known_issues",
            json!({"status": "closed"}),
            "Invalid parameter 'status': must be one of: open, investigating, fixed, false_positive",
        ),
        (
            "query_patterns",
            json!({"keywords": "auth"}),
            "Invalid parameter 'keywords': expected array, got string",
        ),
        (
            "get_deployment_info",
            json!({"repository": "a/b", "include_lessons": 1}),
            "Invalid parameter 'include_lessons': expected boolean, got integer",
        ),
    ];
    for (skill, input, expected) in cases {
        let (status, body) = nexusd.exec(skill, input.clone()).await;
        assert_eq!(status, 200, "{skill} {input}: {body}");
        assert_eq!(body["success"], false, "{skill} {input}: {body}");
        assert_eq!(body["error"], expected, "{skill} {input}");
        assert_eq!(body["skill_id"], skill);
        assert_envelope(&body);
    }

    // Skill-level failures keep the shape clients read.
    let (_, none) = nexusd.exec("query_patterns", json!({})).await;
    assert_eq!(none["success"], false);
    assert!(
        none["error"]
            .as_str()
            .unwrap()
            .starts_with("Must provide either 'keywords' or 'patterns'")
    );
    assert_eq!(
        (none["matches"].clone(), none["total_matches"].clone()),
        (json!([]), json!(0))
    );
    let (_, missing) = nexusd
        .exec("query_patterns", json!({"repository": "no/such"}))
        .await;
    assert_eq!(
        missing["error"],
        "Repository 'no/such' not found in knowledge base"
    );
    assert_eq!(
        missing["available_repositories"].as_array().unwrap().len(),
        4
    );

    assert_eq!(
        before,
        table_digest(&pool).await,
        "a refused request changed the database"
    );
}

#[tokio::test]
async fn protocol_errors_are_json_4xx() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    let client = http();
    let post = |body: String| {
        client
            .post(format!("{}/a2a/execute", nexusd.api))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".into(), 400, "Invalid request body: "),
        (
            "[1, 2]".into(),
            400,
            "Invalid request body: expected a JSON object, got an array",
        ),
        (
            r#"{"skill_id": "get_repository_list", "input": [1]}"#.into(),
            400,
            "Invalid request body: 'input' must be an object",
        ),
        (
            r#"{"input": {}}"#.into(),
            400,
            "Missing required field: skill_id",
        ),
        (
            r#"{"skill_id": ""}"#.into(),
            400,
            "Missing required field: skill_id",
        ),
        (
            r#"{"skill_id": 5}"#.into(),
            400,
            "Invalid request body: 'skill_id' must be a string",
        ),
    ];
    for (body, status, error) in cases {
        let response = post(body.clone()).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["success"], false);
        assert!(
            json["error"].as_str().unwrap().starts_with(error),
            "{body}: {json}"
        );
    }

    // input null means {}.
    let response = post(r#"{"skill_id": "get_repository_list", "input": null}"#.into())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["repositories"], json!([]), "{body}");

    // Unknown skills keep HTTP 200 and now say success false.
    let (status, unknown) = nexusd.exec("no_such_skill", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(unknown["success"], false);
    assert_eq!(unknown["error"], "Unknown skill: no_such_skill");
    assert!(strings(&unknown["available_skills"]).contains(&"get_repository_list".to_string()));
    assert_envelope(&unknown);

    let huge = format!(
        r#"{{"skill_id": "add_repository", "input": {{"repository": "{}"}}}}"#,
        "a".repeat(1024 * 1024)
    );
    let response = post(huge).await.unwrap();
    assert_eq!(response.status(), 413);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["success"], false);

    let response = client
        .get(format!("{}/a2a/execute", nexusd.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.unwrap()["detail"],
        "Method Not Allowed"
    );
    let response = client
        .post(format!("{}/nowhere", nexusd.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["detail"],
        "Not Found"
    );

    // /a2a/cancel.
    let cancel = |body: &'static str| {
        client
            .post(format!("{}/a2a/cancel", nexusd.api))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = cancel(r#"{"task_id": "t-1"}"#).await.unwrap();
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.unwrap();
    assert_eq!(
        (json["task_id"].as_str(), json["status"].as_str()),
        (Some("t-1"), Some("cancelled"))
    );
    assert_eq!(cancel("{}").await.unwrap().status(), 400);
    assert_eq!(cancel("garbage").await.unwrap().status(), 400);
}

#[tokio::test]
async fn read_skills_write_nothing() {
    let (db, nexusd) = seeded().await;
    let pool = db.pool().await;
    let before = table_digest(&pool).await;
    let reads = [
        ("query_patterns", json!({"keywords": ["auth"]})),
        ("query_patterns", json!({"patterns": ["Idempotent jobs"]})),
        ("query_patterns", json!({"repository": "acme/api"})),
        ("get_cross_repo_patterns", json!({})),
        ("get_repository_list", json!({})),
        (
            "get_deployment_info",
            json!({"repository": "acme/api", "include_history": true}),
        ),
        (
            "get_pattern_health",
            json!({"pattern_name": "Retry with backoff"}),
        ),
        ("query_known_issues", json!({})),
        ("get_recent_actions", json!({})),
    ];
    for (skill, input) in reads {
        nexusd.ok(skill, input).await;
    }
    assert_eq!(before, table_digest(&pool).await);
}

#[tokio::test]
async fn twenty_concurrent_first_writers_create_one_repository() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    let writes = (0..20).map(|i| {
        nexusd.exec(
            "add_lesson_learned",
            json!({"repository": "race/repo", "category": "reliability", "lesson": format!("lesson {i}"), "context": "race"}),
        )
    });
    let results = futures_util::future::join_all(writes).await;
    for (status, body) in &results {
        assert_eq!(
            (*status, body["success"].clone()),
            (200, json!(true)),
            "{body}"
        );
    }
    let pool = db.pool().await;
    let (repos, lessons): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM repositories WHERE name = 'race/repo'),
                (SELECT count(*) FROM lessons_learned l JOIN repositories r ON r.id = l.repo_id WHERE r.name = 'race/repo')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((repos, lessons), (1, 20));
}

/// Calls of the statements in this database whose text starts with `prefix`
/// (pg_stat_statements, which the test cluster preloads).
async fn statement_calls(pool: &sqlx::PgPool, prefix: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query ILIKE $1 || '%'",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_lesson_or_issue_for_a_known_repository_is_one_statement() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    let pool = db.pool().await;
    let lesson = |i: usize| json!({"repository": "known/repo", "category": "cost", "lesson": format!("lesson {i}"), "context": "c"});
    // The first write creates the repository (a transaction); the next ones find it.
    nexusd.ok("add_lesson_learned", lesson(0)).await;
    let ensure_before = statement_calls(&pool, "INSERT INTO repositories").await;
    let begin_before = statement_calls(&pool, "BEGIN").await;
    for i in 1..=10 {
        nexusd.ok("add_lesson_learned", lesson(i)).await;
        nexusd
            .ok(
                "add_runtime_issue",
                json!({"repository": "known/repo", "service_type": "cloud_run", "issue_type": "timeout",
                       "severity": "low", "log_snippet": format!("slow {i}")}),
            )
            .await;
    }
    assert_eq!(
        statement_calls(&pool, "INSERT INTO repositories").await - ensure_before,
        0,
        "no ensure-repository round trip for a repository that exists"
    );
    assert_eq!(
        statement_calls(&pool, "BEGIN").await - begin_before,
        0,
        "no explicit transaction around a single insert"
    );
    let (lessons, issues): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM lessons_learned l JOIN repositories r ON r.id = l.repo_id WHERE r.name = 'known/repo'),
                (SELECT count(*) FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id WHERE r.name = 'known/repo')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((lessons, issues), (11, 10));
    // A new repository still works through the transaction.
    let created = nexusd
        .ok(
            "add_runtime_issue",
            json!({"repository": "fresh/repo", "service_type": "gke", "issue_type": "memory",
                   "severity": "high", "log_snippet": "killed"}),
        )
        .await;
    assert_eq!(created["message"], "Runtime issue recorded for fresh/repo");
}

#[tokio::test]
async fn agent_card_root_and_openapi_describe_what_is_enforced() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("HOST_OVERRIDE", "https://agent.example.com"),
            ("NEXUSD_API_TOKENS", "card-test-token-0123456789"),
        ],
    )
    .await;
    let expected_order = support::skill_ids::registration_order(&[]);

    let (status, card) = nexusd.get("/.well-known/agent.json").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(card["name"], "pattern_discovery_agent");
    assert_eq!(card["url"], "https://agent.example.com");
    assert_eq!(
        card["capabilities"],
        json!({"streaming": false, "multimodal": false, "authentication": "optional"})
    );
    assert_eq!(names(&card["skills"], "id"), expected_order);
    assert_eq!(card["metadata"]["skill_count"], expected_order.len());
    let mut validated = 0;
    let mut without_required = Vec::new();
    for entry in card["skills"].as_array().unwrap() {
        let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "description",
                "tags",
                "requires_authentication",
                "input_schema",
                "examples"
            ]
        );
        let protected = [
            "add_lesson_learned",
            "update_dependency_info",
            "add_deployment_info",
            "add_runtime_issue",
            "scan_repository_components",
            "analyze_repository_complexity",
            "discover_repository_dependencies",
            "update_dependency_verification",
            "trigger_full_analysis_workflow",
            "extract_repository_patterns",
            "record_analysis",
            "update_pattern",
            "deprecate_pattern",
            "archive_pattern",
            "create_pattern_from_component",
        ]
        .contains(&entry["id"].as_str().unwrap());
        assert_eq!(
            entry["requires_authentication"], protected,
            "{}",
            entry["id"]
        );
        // The card's schema is the one enforced: an empty input fails on its first required field.
        if let Some(first) = entry["input_schema"]["required"]
            .as_array()
            .and_then(|r| r.first())
        {
            // With a valid token, so that protected skills reach validation too.
            let (status, body) = nexusd
                .exec_with(
                    entry["id"].as_str().unwrap(),
                    json!({}),
                    Some("Bearer card-test-token-0123456789"),
                )
                .await;
            assert_eq!(status, 200, "{}: {body}", entry["id"]);
            assert_eq!(
                body["error"],
                format!("Missing required parameter: '{}'", first.as_str().unwrap())
            );
            validated += 1;
        } else {
            without_required.push(entry["id"].as_str().unwrap().to_string());
        }
        // Every example is valid input.
        for example in entry["examples"].as_array().unwrap() {
            let problem = nexusd::json_schema::validate(
                &entry["input_schema"],
                example["input"].as_object().unwrap(),
            );
            assert!(
                problem.is_ok(),
                "{} example {}: {problem:?}",
                entry["id"],
                example["input"]
            );
        }
    }
    // Every skill but those without a required field went through validation.
    assert_eq!(
        without_required,
        [
            "query_patterns",
            "get_cross_repo_patterns",
            "get_repository_list",
            "health_check_external",
            "query_known_issues",
            "get_recent_actions",
            "detect_misplaced_components",
            "get_workflow_metadata",
            "find_similar_patterns",
            "get_backup_status",
            "list_components",
            "get_dashboard_overview",
            "get_pattern_adoption_trends",
            "get_pattern_health_summary",
            "get_repository_activity_summary",
            "get_component_duplication_stats",
        ]
    );
    assert_eq!(validated + without_required.len(), expected_order.len());

    let (_, root) = nexusd.get("/").await.unwrap();
    assert_eq!(root["skills"], json!(expected_order.to_vec()));
    assert_eq!(
        root["agent_card"],
        "https://agent.example.com/.well-known/agent.json"
    );
    let (_, health) = nexusd.get("/health").await.unwrap();
    assert_eq!(health["skills_registered"], expected_order.len());

    let (status, openapi) = nexusd.get("/openapi.json").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(openapi["openapi"], "3.1.0");
    let schemas = openapi["components"]["schemas"].as_object().unwrap();
    for id in expected_order {
        let schema = &schemas[&format!("execute_{id}")];
        assert_eq!(schema["properties"]["skill_id"]["const"], id);
    }
    // Validated by an independent OpenAPI validator.
    let path = std::env::temp_dir().join(format!("nexusd-openapi-{}.json", std::process::id()));
    std::fs::write(&path, openapi.to_string()).unwrap();
    let venv = std::env::var("NEXUSD_TEST_VENV").unwrap_or_else(|_| "/opt/nexusd-test-venv".into());
    let output = std::process::Command::new(format!("{venv}/bin/python"))
        .args(["-c", "import sys; from openapi_spec_validator import validate; from openapi_spec_validator.readers import read_from_filename; validate(read_from_filename(sys.argv[1])[0]); print('valid')"])
        .arg(&path)
        .output()
        .expect("python with openapi-spec-validator (scripts/setup-debian --test)");
    std::fs::remove_file(&path).ok();
    assert!(
        output.status.success(),
        "openapi.json is not valid OpenAPI 3.1: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn database_down_answers_503_then_recovers_without_restart() {
    let mut cluster = support::TestCluster::start().await;
    let db = cluster.create_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    nexusd
        .ok("add_repository", json!({"repository": "up/before"}))
        .await;

    cluster.stop().await;
    for (skill, input) in [
        ("get_repository_list", json!({})),
        ("add_repository", json!({"repository": "during/outage"})),
    ] {
        let (status, body) = nexusd.exec(skill, input).await;
        assert_eq!(status, 503, "{skill}: {body}");
        assert_eq!(body["success"], false);
        assert_eq!(body["skill_id"], skill);
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with("Database unavailable: "), "{error}");
        assert!(
            !error.contains("pool timed out"),
            "the reason should be the server's, not the pool's: {error}"
        );
        assert_envelope(&body);
    }
    // Validation still answers without the database.
    let (status, body) = nexusd
        .exec("add_repository", json!({"repository": "bad"}))
        .await;
    assert_eq!((status, body["success"].clone()), (200, json!(false)));

    cluster.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = nexusd
            .exec("get_repository_list", json!({"include_metadata": false}))
            .await;
        if status == 200 {
            assert_eq!(
                body["repositories"],
                json!(["up/before"]),
                "the failed write must not have landed"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
