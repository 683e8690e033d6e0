//! Async workflows through the real `nexusd serve` on a real database, against a local stand-in
//! for GitHub: a full analysis queued and done with its result readable through
//! `GET /a2a/workflow/{id}`, and a read cached while it ran seeing what it wrote; a job whose
//! server is killed with SIGKILL finished by the next server; a running job cancelled for real;
//! two servers on one database running each job exactly once; bad ids answered 400/404; and the
//! GitHub skills without a token answering `not_configured`.

#[path = "support/github_stub.rs"]
mod github_stub;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use github_stub::{GH_TOKEN, Stub, service_files};
use serde_json::{Value, json};
use support::scrape::{Scrape, fetch, read_until};
use support::{Nexusd, TestDb, eventually, http, shared_db};

const API_TOKEN: &str = "api-token-workflows-0123456789";

/// A bootstrapped database holding `repos`.
async fn database(repos: &[&str]) -> TestDb {
    let db = shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    for repo in repos {
        sqlx::query("INSERT INTO repositories (name) VALUES ($1)")
            .bind(repo)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    db
}

/// `nexusd serve` on `db`, writes open, GitHub at `github` (with a token when given).
async fn serve(db: &TestDb, github: Option<&str>, extra: &[(&str, &str)]) -> Nexusd {
    let mut vars = vec![
        ("REQUIRE_AUTH_FOR_WRITE", "false"),
        ("NEXUSD_EMBEDDING_BACKFILL", "false"),
    ];
    if let Some(url) = github {
        vars.extend([("GITHUB_TOKEN", GH_TOKEN), ("NEXUSD_GITHUB_API_URL", url)]);
    }
    vars.extend_from_slice(extra);
    Nexusd::ready(&db.url(), &vars).await
}

async fn stub_with(repos: &[(&str, Vec<(&'static str, &'static str)>)]) -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub::default());
    for (name, files) in repos {
        stub.add(name, files);
    }
    let url = github_stub::serve(stub.clone()).await;
    (stub, url)
}

async fn workflow(nexusd: &Nexusd, id: &str) -> (u16, Value) {
    nexusd
        .get(&format!("/a2a/workflow/{id}"))
        .await
        .expect("GET /a2a/workflow answers")
}

/// Polls the workflow until `done(body)` holds, failing with the last answer after `limit`.
async fn wait_for(
    nexusd: &Nexusd,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let (status, body) = workflow(nexusd, id).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "workflow {id} did not get there within {limit:?}; last answer {last}\n--- log ---\n{}",
        nexusd.log_text()
    );
}

fn ended(body: &Value) -> bool {
    matches!(
        body["status"].as_str(),
        Some("completed" | "failed" | "partial_success" | "cancelled")
    )
}

async fn trigger(nexusd: &Nexusd, repos: &[&str], phases: Value) -> String {
    let body = nexusd
        .ok(
            "trigger_full_analysis_workflow",
            json!({"repositories": repos, "phases": phases}),
        )
        .await;
    assert_eq!(body["state"], "async_queued", "{body}");
    body["workflow_id"]
        .as_str()
        .expect("a workflow id")
        .to_string()
}

async fn cancel(nexusd: &Nexusd, id: &str) -> (u16, Value) {
    let response = http()
        .post(format!("{}/a2a/cancel", nexusd.api))
        .json(&json!({"task_id": id}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_full_analysis_is_queued_then_done_with_its_result() {
    let (stub, url) = stub_with(&[("acme/svc", service_files()), ("acme/lib", vec![])]).await;
    let db = database(&["acme/svc", "acme/lib"]).await;
    let nexusd = serve(&db, Some(&url), &[]).await;
    // The job waits in its first phase, on GitHub's answer, until the cache holds a read made
    // after the trigger (the trigger call empties the cache itself). This replica is alone, so
    // its writes notify nobody: only the job's own emptying after each phase lets the read see
    // what the job wrote.
    stub.hold("acme/svc");
    let components = json!({"limit": 100, "offset": 0});

    let queued = nexusd
        .ok(
            "trigger_full_analysis_workflow",
            json!({"repositories": ["acme/svc"], "phases": {"pattern_extraction": true, "dependency_discovery": true}}),
        )
        .await;
    assert_eq!(queued["state"], "async_queued");
    assert_eq!(queued["repositories_count"], 1);
    assert!(queued["polling_interval_ms"].as_u64().unwrap() > 0);
    let id = queued["workflow_id"].as_str().unwrap();
    eventually(Duration::from_secs(20), || async {
        if stub.count("acme/svc", "contents") > 0 {
            Ok(())
        } else {
            Err("the job never read the repository".to_string())
        }
    })
    .await;
    // Read until one is served from memory: a replica caches only a little after its listener
    // starts.
    let hits = |m: &Scrape| m.value("nexusd_skill_cache_hits_total", &[]);
    let before = hits(&fetch(&nexusd.metrics, None).await).unwrap_or(0.0);
    let what = "list_components was never served from memory";
    let empty = |answer: &Value| assert_eq!(answer["components"], json!([]), "{answer}");
    read_until(&nexusd, "list_components", &components, what, empty, |m| {
        hits(m).is_some_and(|v| v > before)
    })
    .await;
    stub.release("acme/svc");

    let done = wait_for(&nexusd, id, Duration::from_secs(60), ended).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress_percent"], 100);
    assert_eq!(done["repositories_completed"], 1);
    assert_eq!(done["metadata"]["state"], "completed");
    let result = &done["results"][0];
    assert_eq!(result["repository"], "acme/svc");
    assert_eq!(result["status"], "completed");
    let phases: Vec<(&str, &str)> = result["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("component_scan", "completed"),
            ("pattern_extraction", "completed"),
            ("dependency_discovery", "completed"),
            ("complexity_analysis", "completed")
        ]
    );
    assert!(
        result["components_found"].as_u64().unwrap() >= 2,
        "{result}"
    );
    assert!(
        result["patterns_extracted"].as_u64().unwrap() >= 1,
        "{result}"
    );
    // serde, tokio, lib, tempfile, react, vite, requests, click
    assert_eq!(result["dependencies_discovered"], 8, "{result}");
    assert_eq!(result["dependency_edges"], 1, "{result}");
    assert!(result["complexity_score"].as_f64().unwrap() > 0.0);

    // What the job wrote is what the read skills read, the cached one included.
    let after = nexusd.ok("list_components", components).await;
    assert!(
        after["components"].as_array().unwrap().len() >= 2,
        "{after}"
    );
    let details = nexusd
        .ok(
            "get_repository_complexity_details",
            json!({"repository": "acme/svc"}),
        )
        .await;
    assert_eq!(details["complexity_metrics"]["component_count"], 3);
    assert_eq!(details["dependencies"]["declared"], 8);
    let meta = nexusd.ok("get_workflow_metadata", json!({})).await;
    let svc = meta["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["repository"] == "acme/svc")
        .unwrap()
        .clone();
    assert_eq!(svc["dependencies_count"], 8);
    assert!(svc["patterns_count"].as_i64().unwrap() >= 1);
    assert_eq!(stub.count("acme/svc", "tree"), 1, "one open per job");
    extraction_and_metrics(&nexusd).await;
}

/// extract_repository_patterns queued and done; the workflow metrics count both jobs.
async fn extraction_and_metrics(nexusd: &Nexusd) {
    // extract_repository_patterns: queued, then done without GitHub.
    let queued = nexusd
        .ok(
            "extract_repository_patterns",
            json!({"repository_name": "acme/svc"}),
        )
        .await;
    assert_eq!(queued["state"], "async_queued");
    let id = queued["workflow_id"].as_str().unwrap();
    let done = wait_for(nexusd, id, Duration::from_secs(30), ended).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["results"][0]["patterns_extracted"].as_u64().unwrap() >= 1);

    // `/metrics` is cached for a second, and the queue gauge is what the workers last saw.
    eventually(Duration::from_secs(10), || async {
        let metrics = fetch(&nexusd.metrics, None).await.text;
        let counted = metrics
            .contains(r#"nexusd_workflow_jobs_total{kind="full_analysis",status="completed"} 1"#);
        if counted && metrics.contains("nexusd_workflow_jobs_queued 0") {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
}

#[tokio::test]
async fn without_a_token_the_github_parts_say_not_configured() {
    let db = database(&["acme/svc"]).await;
    let nexusd = serve(&db, None, &[]).await;
    for (skill, input) in [
        (
            "analyze_repository_complexity",
            json!({"repository": "acme/svc"}),
        ),
        (
            "discover_repository_dependencies",
            json!({"repository_name": "acme/svc"}),
        ),
    ] {
        let (status, body) = nexusd.exec(skill, input).await;
        assert_eq!(status, 200);
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["error_type"], "not_configured", "{body}");
        assert!(body["error"].as_str().unwrap().contains("GITHUB_TOKEN"));
    }
    let id = trigger(&nexusd, &["acme/svc"], json!({})).await;
    let done = wait_for(&nexusd, &id, Duration::from_secs(30), ended).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .starts_with("GITHUB_TOKEN not configured"),
        "{done}"
    );
    // Pattern extraction needs no token.
    let queued = nexusd
        .ok(
            "extract_repository_patterns",
            json!({"repository": "acme/svc"}),
        )
        .await;
    let id = queued["workflow_id"].as_str().unwrap();
    let done = wait_for(&nexusd, id, Duration::from_secs(30), ended).await;
    assert_eq!(done["status"], "completed", "{done}");
}

#[tokio::test]
async fn a_job_whose_server_was_killed_is_finished_by_the_next_one() {
    let (stub, url) = stub_with(&[("acme/svc", service_files())]).await;
    stub.hold("acme/svc");
    let db = database(&["acme/svc"]).await;
    let mut first = serve(&db, Some(&url), &[]).await;
    let id = trigger(
        &first,
        &["acme/svc"],
        json!({"dependency_discovery": false, "metadata_analysis": false}),
    )
    .await;
    // Running, and stuck inside GitHub reads.
    wait_for(&first, &id, Duration::from_secs(30), |b| {
        b["status"] == "running"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stub.count("acme/svc", "contents") == 0 {
        assert!(Instant::now() < deadline, "the job never read a file");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.child.kill().expect("SIGKILL");
    first.child.wait().unwrap();
    stub.release("acme/svc");

    let second = serve(&db, Some(&url), &[]).await;
    let done = wait_for(&second, &id, Duration::from_secs(60), ended).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["metadata"]["attempt"], 2, "claimed again once");
    assert_eq!(stub.count("acme/svc", "tree"), 2);
    assert!(done["results"][0]["components_found"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn cancel_stops_running_and_queued_jobs() {
    let (stub, url) = stub_with(&[("acme/svc", service_files())]).await;
    stub.hold("acme/svc");
    let db = database(&["acme/svc"]).await;
    let nexusd = serve(&db, Some(&url), &[]).await;
    let id = trigger(&nexusd, &["acme/svc"], json!({})).await;
    wait_for(&nexusd, &id, Duration::from_secs(30), |b| {
        b["status"] == "running" && b["current_step"] == "acme/svc: component_scan"
    })
    .await;
    let (status, body) = cancel(&nexusd, &id).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelling")),
        "{body}"
    );
    // Still held: only the cancellation can end it.
    let done = wait_for(&nexusd, &id, Duration::from_secs(20), ended).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["results"][0]["status"], "cancelled");
    assert_eq!(done["results"][0]["phases"][0]["status"], "pending");
    let (status, _) = cancel(&nexusd, &id).await;
    assert_eq!(status, 409, "an ended job cannot be cancelled again");
    stub.stopped
        .store(true, std::sync::atomic::Ordering::Relaxed);

    // A replica without workers (and no other left) leaves the job queued; cancelling it ends it
    // at once.
    drop(nexusd);
    let idle = serve(&db, Some(&url), &[("NEXUSD_WORKFLOW_CONCURRENCY", "0")]).await;
    let id = trigger(&idle, &["acme/svc"], json!({})).await;
    let (status, body) = cancel(&idle, &id).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let (_, body) = workflow(&idle, &id).await;
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["metadata"]["attempt"], 0, "it never ran");
}

#[tokio::test]
async fn two_servers_on_one_database_run_each_job_exactly_once() {
    let names: Vec<String> = (0..6).map(|i| format!("acme/r{i}")).collect();
    let repos: Vec<(&str, Vec<(&str, &str)>)> = names
        .iter()
        .map(|n| (n.as_str(), service_files()))
        .collect();
    let (stub, url) = stub_with(&repos).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let db = database(&refs).await;
    let two = [("NEXUSD_WORKFLOW_CONCURRENCY", "2")];
    let a = serve(&db, Some(&url), &two).await;
    let b = serve(&db, Some(&url), &two).await;
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let via = if i % 2 == 0 { &a } else { &b };
        ids.push(
            trigger(
                via,
                &[name],
                json!({"pattern_extraction": false, "metadata_analysis": false}),
            )
            .await,
        );
    }
    for id in &ids {
        let done = wait_for(&a, id, Duration::from_secs(90), ended).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["metadata"]["attempt"], 1, "{done}");
    }
    for name in &names {
        assert_eq!(
            stub.count(name, "tree"),
            1,
            "{name} read by exactly one job run"
        );
    }
    let pool = db.pool().await;
    let workers: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT split_part(worker, '/', 2)) FROM workflow_jobs")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(workers >= 1);
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_jobs WHERE status = 'completed'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(total, 6);
}

#[tokio::test]
async fn bad_workflow_ids_are_clear_4xx_and_workflows_need_credentials() {
    let db = database(&["acme/svc"]).await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_API_TOKENS", API_TOKEN),
            ("NEXUSD_EMBEDDING_BACKFILL", "false"),
        ],
    )
    .await;
    let bearer = format!("Bearer {API_TOKEN}");
    let (status, body) = nexusd
        .get_with("/a2a/workflow/not-a-uuid", Some(&bearer))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["success"], false);
    assert!(
        body["error"].as_str().unwrap().contains("expected a UUID"),
        "{body}"
    );
    let unknown = "0b7c9a6e-8f3d-4c1a-9e2b-5d4f6a7b8c9d";
    let (status, body) = nexusd
        .get_with(&format!("/a2a/workflow/{unknown}"), Some(&bearer))
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["error"], format!("Workflow not found: {unknown}"));
    let response = http()
        .post(format!("{}/a2a/cancel", nexusd.api))
        .header("Authorization", &bearer)
        .json(&json!({"task_id": unknown}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Without credentials: refused like the skill that queues workflows.
    let (status, _) = nexusd
        .get(&format!("/a2a/workflow/{unknown}"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = nexusd
        .exec(
            "trigger_full_analysis_workflow",
            json!({"repositories": ["acme/svc"]}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = nexusd
        .exec_with(
            "trigger_full_analysis_workflow",
            json!({"repositories": ["acme/nowhere"]}),
            Some(&bearer),
        )
        .await;
    assert_eq!((status, body["success"].as_bool()), (200, Some(false)));
    assert_eq!(
        body["error"],
        "Repositories not found in knowledge base: acme/nowhere"
    );
}

#[tokio::test]
async fn complexity_is_measured_stored_and_read_back() {
    let (_stub, url) = stub_with(&[("acme/svc", service_files())]).await;
    let db = database(&["acme/svc"]).await;
    let nexusd = serve(&db, Some(&url), &[]).await;
    let (_, before) = nexusd
        .exec(
            "get_repository_complexity_details",
            json!({"repository": "acme/svc"}),
        )
        .await;
    assert_eq!(before["success"], false);
    assert_eq!(before["error_type"], "not_analyzed", "{before}");

    let measured = nexusd
        .ok(
            "analyze_repository_complexity",
            json!({"repository": "acme/svc"}),
        )
        .await;
    assert_eq!(measured["files"], 7);
    assert_eq!(measured["files_measured"], 3);
    let languages = measured["languages"].as_object().unwrap();
    assert_eq!(
        languages.keys().collect::<Vec<_>>(),
        ["rust", "typescript"],
        "{measured}"
    );
    assert_eq!(measured["dependencies"]["runtime"], 6);
    let parts = &measured["score_parts"];
    let sum: f64 = ["size", "branching", "languages", "dependencies"]
        .iter()
        .map(|k| parts[k].as_f64().unwrap())
        .sum();
    let score = measured["score"].as_f64().unwrap();
    assert!((score - sum).abs() < 0.051, "{measured}");
    // languages = 2.5 × (2 − 1); dependencies = 6 / 5
    assert_eq!(parts["languages"], 2.5);
    assert_eq!(parts["dependencies"], 1.2);

    let details = nexusd
        .ok(
            "get_repository_complexity_details",
            json!({"repository": "acme/svc", "include_components": true}),
        )
        .await;
    assert_eq!(details["score"].as_f64(), Some(score));
    assert_eq!(details["complexity_metrics"]["staleness_days"], 0);
    assert_eq!(details["complexity_metrics"]["grade"], measured["grade"]);
    let top = details["top_complex_components"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["location"], "src/http/client.rs", "{details}");
    assert_eq!(details["largest_files"], measured["largest_files"]);
}

#[tokio::test]
async fn manifests_are_parsed_hostile_ones_reported_and_verifications_kept() {
    let mut files = service_files();
    files.push(("broken/Cargo.toml", "[dependencies\nserde = "));
    let deep = format!(
        "{{\"dependencies\": {}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let deep: &'static str = Box::leak(deep.into_boxed_str());
    files.push(("deep/package.json", deep));
    files.push((
        "go/go.mod",
        "module github.com/acme/svc\nrequire (\n\tgithub.com/acme/lib v1.0.0\n)\n",
    ));
    let (_stub, url) = stub_with(&[("acme/svc", files), ("acme/lib", vec![])]).await;
    let db = database(&["acme/svc", "acme/lib"]).await;
    let nexusd = serve(&db, Some(&url), &[]).await;

    let found = nexusd
        .ok(
            "discover_repository_dependencies",
            json!({"repository_name": "acme/svc"}),
        )
        .await;
    assert_eq!(found["dependencies_discovered"], 9, "{found}");
    let errors: Vec<&str> = found["manifest_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manifest"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        ["broken/Cargo.toml", "deep/package.json"],
        "{found}"
    );
    assert!(
        found["manifest_errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("broken/Cargo.toml: invalid TOML")
    );
    let edges = found["repository_dependencies"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{found}");
    assert_eq!(edges[0]["target_repository"], "acme/lib");
    assert_eq!(edges[0]["confidence"], 95);

    // A person's verdict is stored, and survives the next discovery.
    let verified = nexusd
        .ok(
            "update_dependency_verification",
            json!({"dependencies": [{"source_repository": "acme/svc", "target_repository": "acme/lib",
                                      "dependency_type": "runtime", "confidence": 40}]}),
        )
        .await;
    assert_eq!(verified["updated_count"], 1);
    let (_, refused) = nexusd
        .exec(
            "update_dependency_verification",
            json!({"dependencies": [
                {"source_repository": "acme/lib", "target_repository": "acme/svc", "dependency_type": "dev", "confidence": 10},
                {"source_repository": "acme/svc", "target_repository": "acme/nowhere", "dependency_type": "runtime", "confidence": 10}]}),
        )
        .await;
    assert_eq!(refused["success"], false);
    assert!(
        refused["error"].as_str().unwrap().contains("acme/nowhere"),
        "{refused}"
    );
    let pool = db.pool().await;
    let edges_from_lib: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dependency_edges e JOIN repositories r ON r.id = e.source_repo_id
          WHERE r.name = 'acme/lib'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(edges_from_lib, 0, "the refused call wrote nothing");
    let found = nexusd
        .ok(
            "discover_repository_dependencies",
            json!({"repository_name": "acme/svc"}),
        )
        .await;
    let edges = found["repository_dependencies"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{found}");
    assert_eq!(
        (
            edges[0]["confidence"].as_i64(),
            edges[0]["verified"].as_bool()
        ),
        (Some(40), Some(true))
    );
}

#[tokio::test]
async fn a_live_workers_job_is_left_alone_until_its_lease_runs_out() {
    use sqlx::Connection;
    let (stub, url) = stub_with(&[("acme/svc", service_files())]).await;
    let db = database(&["acme/svc"]).await;
    // Another worker's session, alive, holding a running job with a valid lease.
    let mut other = sqlx::PgConnection::connect_with(&db.options())
        .await
        .unwrap();
    let id: String = sqlx::query_scalar(
        "INSERT INTO workflow_jobs (kind, input, repositories, status, attempt, worker, worker_pid,
                                    lease_until, started_at)
         VALUES ('full_analysis', '{\"phases\": {\"pattern_extraction\": false, \"metadata_analysis\": false}}',
                 '{acme/svc}', 'running', 1, 'elsewhere', pg_backend_pid(), now() + interval '1 hour', now())
         RETURNING id::text",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    let nexusd = serve(&db, Some(&url), &[]).await;
    // Several polls of the worker go by: the job is not taken from its live worker.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, body) = workflow(&nexusd, &id).await;
    assert_eq!(
        (
            body["status"].as_str(),
            body["metadata"]["attempt"].as_i64()
        ),
        (Some("running"), Some(1)),
        "{body}"
    );
    assert_eq!(stub.count("acme/svc", "tree"), 0);
    // Its lease runs out while its session lives on (a hung worker): it is claimed again.
    sqlx::query("UPDATE workflow_jobs SET lease_until = now() - interval '1 second'")
        .execute(&mut other)
        .await
        .unwrap();
    let done = wait_for(&nexusd, &id, Duration::from_secs(30), ended).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["metadata"]["attempt"], 2);
    assert_eq!(done["results"][0]["dependencies_discovered"], 8);
}
