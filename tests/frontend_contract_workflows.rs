//! The frontend's contract for the workflow, complexity and dependency skills: each skill id of
//! `a2aClient.ts` called through the real `nexusd serve` on a seeded database (GitHub played by a
//! local stand-in), and every field its TypeScript type declares — and its pages read — present
//! with the right JSON type. The expected fields are written here from the frontend's types
//! (`AsyncWorkflowResponse`, `TriggerFullAnalysisResponse`, `WorkflowStatusResponse`,
//! `ExtractPatternsResponse`, `DiscoverDependenciesResponse`,
//! `UpdateDependencyVerificationResponse`, `WorkflowMetadataResponse`,
//! `TriggerComplexityAnalysisResponse`, `GetComplexityAnalysisRawResponse` and what
//! `transformComponent` reads).

#[path = "support/github_stub.rs"]
mod github_stub;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use github_stub::{GH_TOKEN, Stub, service_files};
use serde_json::{Value, json};
use support::{Nexusd, shared_db};

/// A JSON type as the TypeScript declares it.
#[derive(Clone, Copy, Debug)]
enum T {
    Str,
    Num,
    Int,
    Bool,
    Arr,
    Obj,
    /// `string | null` (or absent).
    StrOrNull,
}

fn is(value: &Value, t: T) -> bool {
    match t {
        T::Str => value.is_string(),
        T::Num => value.is_number(),
        T::Int => value.is_u64() || value.is_i64(),
        T::Bool => value.is_boolean(),
        T::Arr => value.is_array(),
        T::Obj => value.is_object(),
        T::StrOrNull => value.is_string() || value.is_null(),
    }
}

/// `a.b[0].c` in `body`.
fn at<'a>(body: &'a Value, path: &str) -> &'a Value {
    let mut v = body;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !key.is_empty() {
            v = &v[key];
        }
        if let Some(i) = index {
            v = &v[i];
        }
    }
    v
}

/// Every field of `fields` present in `body` with its type.
fn check(skill: &str, body: &Value, fields: &[(&str, T)]) {
    for (path, t) in fields {
        let value = at(body, path);
        assert!(
            is(value, *t),
            "{skill}: '{path}' should be {t:?}, got {value}\nin {body}"
        );
    }
}

const STANDARD: &[(&str, T)] = &[
    ("success", T::Bool),
    ("timestamp", T::Str),
    ("execution_time_ms", T::Num),
];

const METRIC: &[&str] = &[
    "max",
    "total",
    "median",
    "average",
    "weighted_average",
    "distribution.LOW",
    "distribution.MEDIUM",
    "distribution.HIGH",
    "distribution.CRITICAL",
];

#[tokio::test]
async fn every_workflow_complexity_and_dependency_skill_answers_the_frontends_types() {
    let stub = Arc::new(Stub::default());
    stub.add("acme/svc", &service_files());
    stub.add("acme/lib", &[]);
    let url = github_stub::serve(stub.clone()).await;
    let db = shared_db().await;
    db.bootstrap().await;
    sqlx::raw_sql("INSERT INTO repositories (name) VALUES ('acme/svc'), ('acme/lib')")
        .execute(&db.pool().await)
        .await
        .unwrap();
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("REQUIRE_AUTH_FOR_WRITE", "false"),
            ("NEXUSD_EMBEDDING_BACKFILL", "false"),
            ("GITHUB_TOKEN", GH_TOKEN),
            ("NEXUSD_GITHUB_API_URL", url.as_str()),
        ],
    )
    .await;
    complexity(&nexusd).await;
    dependencies(&nexusd).await;
    let id = queued_workflows(&nexusd).await;
    workflow_status(&nexusd, &id).await;
}

/// Runs a skill that must succeed; its answer carries the standard keys.
async fn call(nexusd: &Nexusd, skill: &'static str, input: Value) -> Value {
    let body = nexusd.ok(skill, input).await;
    check(skill, &body, STANDARD);
    body
}

async fn complexity(nexusd: &Nexusd) {
    // analyzeRepositoryComplexity → TriggerComplexityAnalysisResponse.
    let body = call(
        nexusd,
        "analyze_repository_complexity",
        json!({"repository": "acme/svc"}),
    )
    .await;
    check(
        "analyze_repository_complexity",
        &body,
        &[("repository", T::Str), ("message", T::Str)],
    );

    // getComplexityAnalysis → GetComplexityAnalysisRawResponse, then transformComponent.
    let body = call(
        nexusd,
        "get_repository_complexity_details",
        json!({"repository": "acme/svc", "include_components": true}),
    )
    .await;
    let mut fields: Vec<(String, T)> = vec![
        ("repository".into(), T::Str),
        ("complexity_metrics.grade".into(), T::Str),
        ("complexity_metrics.primary".into(), T::Str),
        ("complexity_metrics.analyzed_at".into(), T::Str),
        ("complexity_metrics.component_count".into(), T::Num),
        ("complexity_metrics.staleness_days".into(), T::Num),
        ("top_complex_components".into(), T::Arr),
        ("top_complex_components[0].name".into(), T::Str),
        ("top_complex_components[0].location".into(), T::Str),
        ("top_complex_components[0].lines_of_code".into(), T::Num),
        ("top_complex_components[0].complexity_simple".into(), T::Num),
        ("top_complex_components[0].complexity_mccabe".into(), T::Num),
        (
            "top_complex_components[0].complexity_cognitive".into(),
            T::Num,
        ),
        ("top_complex_components[0].category_simple".into(), T::Str),
    ];
    for metric in ["mccabe", "simple", "cognitive"] {
        for key in METRIC {
            fields.push((format!("complexity_metrics.{metric}.{key}"), T::Num));
        }
    }
    let fields: Vec<(&str, T)> = fields.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    check("get_repository_complexity_details", &body, &fields);
}

async fn dependencies(nexusd: &Nexusd) {
    // discoverRepositoryDependencies → DiscoverDependenciesResponse.
    let body = call(
        nexusd,
        "discover_repository_dependencies",
        json!({"repository_name": "acme/svc"}),
    )
    .await;
    check(
        "discover_repository_dependencies",
        &body,
        &[
            ("repository", T::Str),
            ("dependencies_discovered", T::Num),
            ("message", T::Str),
        ],
    );

    // updateDependencyVerification → UpdateDependencyVerificationResponse.
    let body = call(
        nexusd,
        "update_dependency_verification",
        json!({"dependencies": [{"source_repository": "acme/svc", "target_repository": "acme/lib",
                                  "dependency_type": "runtime", "confidence": 80}]}),
    )
    .await;
    check(
        "update_dependency_verification",
        &body,
        &[("updated_count", T::Num), ("message", T::Str)],
    );

    // getWorkflowMetadata → WorkflowMetadataResponse (ResultsMetadataView sums the counts).
    let body = call(nexusd, "get_workflow_metadata", json!({})).await;
    check(
        "get_workflow_metadata",
        &body,
        &[
            ("metadata", T::Arr),
            ("metadata[0].repository", T::Str),
            ("metadata[0].patterns_count", T::Num),
            ("metadata[0].dependencies_count", T::Num),
            ("metadata[0].components_count", T::Num),
            ("metadata[0].last_updated", T::Str),
        ],
    );
}

/// The two queued skills; returns the full analysis's workflow id.
async fn queued_workflows(nexusd: &Nexusd) -> String {
    // extractRepositoryPatterns → ExtractPatternsResponse, queued (AsyncWorkflowResponse).
    let body = call(
        nexusd,
        "extract_repository_patterns",
        json!({"repository_name": "acme/svc"}),
    )
    .await;
    let queued: &[(&str, T)] = &[
        ("state", T::Str),
        ("workflow_id", T::Str),
        ("polling_interval_ms", T::Num),
    ];
    check("extract_repository_patterns", &body, queued);
    check(
        "extract_repository_patterns",
        &body,
        &[
            ("repository", T::Str),
            ("patterns_extracted", T::Num),
            ("message", T::Str),
        ],
    );

    // triggerFullAnalysisWorkflow (the input the page sends) → TriggerFullAnalysisResponse,
    // queued; useTriggerWorkflow also logs repositories_count.
    let body = call(
        nexusd,
        "trigger_full_analysis_workflow",
        json!({"repositories": ["acme/svc", "acme/lib"],
               "phases": {"pattern_extraction": true, "dependency_discovery": true}}),
    )
    .await;
    check("trigger_full_analysis_workflow", &body, queued);
    check(
        "trigger_full_analysis_workflow",
        &body,
        &[
            ("repositories_count", T::Num),
            ("repositories_processed", T::Num),
            ("phases.pattern_extraction.status", T::Str),
            ("phases.dependency_discovery.status", T::Str),
            ("phases.component_analysis.status", T::Str),
            ("workflow_steps", T::Arr),
            ("phase_results", T::Obj),
        ],
    );
    assert_eq!(body["state"], "async_queued");
    body["workflow_id"].as_str().unwrap().to_string()
}

/// getWorkflowStatus → WorkflowStatusResponse, as transformWorkflowResponse and the workflow
/// pages read it; useAsyncWorkflow reads metadata.state.
async fn workflow_status(nexusd: &Nexusd, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (code, status) = nexusd.get(&format!("/a2a/workflow/{id}")).await.unwrap();
        assert_eq!(code, 200, "{status}");
        if ["completed", "partial_success", "failed"]
            .contains(&status["status"].as_str().unwrap_or(""))
        {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    check(
        "GET /a2a/workflow",
        &status,
        &[
            ("workflow_id", T::Str),
            ("status", T::Str),
            ("repositories_count", T::Int),
            ("repositories_completed", T::Int),
            ("progress_percent", T::Int),
            ("results", T::Arr),
            ("error", T::StrOrNull),
            ("metadata", T::Obj),
            ("metadata.state", T::Str),
            ("metadata.progress_percent", T::Num),
            ("metadata.current_step", T::Str),
            ("timestamp", T::Str),
            ("execution_time_ms", T::Num),
            ("success", T::Bool),
        ],
    );
    for i in 0..2 {
        let r = |k: &str| format!("results[{i}].{k}");
        let fields = [
            (r("repository"), T::Str),
            (r("status"), T::Str),
            (r("patterns_extracted"), T::Num),
            (r("dependencies_discovered"), T::Num),
            (r("phases"), T::Arr),
            (r("phases[0].name"), T::Str),
            (r("phases[0].status"), T::Str),
            (r("error"), T::StrOrNull),
        ];
        let fields: Vec<(&str, T)> = fields.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        check("GET /a2a/workflow", &status, &fields);
    }
    assert_eq!(status["status"], "completed", "{status}");
}
