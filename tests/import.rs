//! `nexusd import-json` against a real database: the example knowledge base lands where the
//! skills read it, a second run changes nothing, dry runs write nothing, URLs work, and bad input
//! is refused with a clear message.

mod support;

use std::path::PathBuf;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use support::{Nexusd, nexusd_command, shared_db, table_digest};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knowledge_base.json")
}

fn import(url: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["import-json"];
    all.extend_from_slice(args);
    let output = nexusd_command(&all, &[("DATABASE_URL", url)])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The counts line of one kind in the summary table.
fn row(summary: &str, kind: &str) -> Vec<u64> {
    let line = summary
        .lines()
        .find(|l| l.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind} line in:\n{summary}"));
    line[kind.len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_example_knowledge_base_lands_where_the_skills_read_it() {
    let db = shared_db().await;
    let path = fixture();
    let (ok, out, err) = import(&db.url(), &[path.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(row(&out, "repositories"), [3, 0, 1]);
    assert_eq!(row(&out, "patterns"), [5, 0, 0]);
    assert_eq!(row(&out, "keyword links"), [16, 0, 0]);
    assert_eq!(row(&out, "decisions"), [2, 0, 0]);
    assert_eq!(row(&out, "components"), [1, 0, 0]);
    assert_eq!(row(&out, "dependencies"), [4, 0, 0]);
    assert_eq!(row(&out, "deployments"), [1, 0, 0]);
    assert_eq!(row(&out, "lessons"), [2, 0, 0]);
    assert_eq!(row(&out, "history"), [2, 0, 0]);
    assert!(
        out.contains("not-a-repository: the repository name is not of the form owner/repo"),
        "{out}"
    );
    assert!(
        out.contains("acme/payments-api: pattern 3: no name"),
        "{out}"
    );
    assert!(
        out.contains("acme/empty: 1 keywords: the repository has no pattern to attach them to"),
        "{out}"
    );

    // The import folded the keyword counts it added: reads need no `serve` to have run.
    let pool = db.pool().await;
    let unfolded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM repository_keyword_uses WHERE NOT compacted")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unfolded, 0, "the import left its keyword counts unfolded");

    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    let list = nexusd
        .ok("get_repository_list", json!({"include_metadata": false}))
        .await;
    assert_eq!(
        list["repositories"],
        json!(["acme/empty", "acme/payments-api", "acme/web"])
    );
    let list = nexusd.ok("get_repository_list", json!({})).await;
    let payments = &list["repositories"][1];
    assert_eq!(payments["name"], "acme/payments-api");
    assert!(
        payments["keywords"]
            .as_array()
            .is_some_and(|k| k.contains(&json!("retry"))),
        "{payments}"
    );

    // Repository keywords became pattern keywords: keyword search finds them.
    let q = nexusd
        .ok("query_patterns", json!({"keywords": ["RETRY"]}))
        .await;
    assert_eq!(q["matches"][0]["repository"], "acme/payments-api");
    let auth = nexusd
        .ok("query_patterns", json!({"keywords": ["auth"]}))
        .await;
    assert_eq!(auth["total_matches"], 2);

    let cross = nexusd.ok("get_cross_repo_patterns", json!({})).await;
    assert_eq!(cross["total_patterns"], 2);

    let info = nexusd
        .ok(
            "get_deployment_info",
            json!({"repository": "acme/payments-api", "include_history": true}),
        )
        .await;
    assert_eq!(info["deployment"]["ci_cd_platform"], "cloud_build");
    assert_eq!(
        info["deployment"]["infrastructure"]["region"],
        "us-central1"
    );
    assert_eq!(
        info["deployment"]["reusable_components"][0]["api_contract"],
        "get(url) -> Response"
    );
    assert_eq!(info["lessons_learned"].as_array().unwrap().len(), 2);
    assert_eq!(info["lessons_learned"][0]["lesson"], "Batch inserts");
    assert_eq!(info["lessons_learned"][0]["recorded_by"], "ops-bot");
    assert_eq!(
        info["dependencies"]["consumers"][0]["repository"],
        "acme/web"
    );
    assert_eq!(
        info["dependencies"]["external_dependencies"],
        json!(["fastapi", "asyncpg", "pydantic"])
    );
    assert_eq!(info["latest_patterns"]["problem_domain"], "payments");
    assert_eq!(info["latest_patterns"]["commit_sha"], "a1b2c3d");
    assert_eq!(
        info["latest_patterns"]["analyzed_at"],
        "2026-01-10T08:00:00.000000+00:00"
    );
    assert_eq!(info["history"][0]["commit_sha"], "0ldc0de");
    assert_eq!(info["history"][0]["patterns_count"], 2);
    let decision: (String, String) = sqlx::query_as(
        "SELECT why, alternatives FROM technical_decisions WHERE what = 'Use PostgreSQL'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        decision,
        ("One store for everything".into(), "MySQL, MongoDB".into())
    );

    // A second run changes nothing.
    let before = table_digest(&pool).await;
    let (ok, out, _) = import(&db.url(), &[path.to_str().unwrap()]);
    assert!(ok);
    assert!(
        out.contains("0 repositories written, 3 unchanged, 1 skipped, 0 failed"),
        "{out}"
    );
    for kind in [
        "patterns",
        "decisions",
        "components",
        "dependencies",
        "deployments",
        "lessons",
        "history",
    ] {
        assert_eq!(row(&out, kind)[0], 0, "{kind} written again:\n{out}");
    }
    assert_eq!(
        before,
        table_digest(&pool).await,
        "the second import changed rows"
    );
}

#[tokio::test]
async fn dry_run_and_urls() {
    let db = shared_db().await;
    let path = fixture();
    let (ok, out, _) = import(&db.url(), &["--dry-run", path.to_str().unwrap()]);
    assert!(ok);
    assert!(out.starts_with("would import"), "{out}");
    assert_eq!(row(&out, "patterns"), [5, 0, 0]);
    let pool = db.pool().await;
    let repos: i64 = sqlx::query_scalar("SELECT count(*) FROM repositories")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(repos, 0, "a dry run wrote");

    // Served over HTTP, like the original's raw.githubusercontent.com URL.
    let body = std::fs::read_to_string(&path).unwrap();
    let app = Router::new().route("/kb.json", get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let url = format!("http://{addr}/kb.json");
    let db_url = db.url();
    let (ok, out, err) = tokio::task::spawn_blocking(move || import(&db_url, &[&url]))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(row(&out, "repositories"), [3, 0, 1]);

    let missing = format!("http://{addr}/nope.json");
    let db_url = db.url();
    let (ok, _, err) = tokio::task::spawn_blocking(move || import(&db_url, &[&missing]))
        .await
        .unwrap();
    assert!(!ok);
    assert!(err.contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() {
    let db = shared_db().await;
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("broken.json");
    std::fs::write(&not_json, "{ not json").unwrap();
    let (ok, _, err) = import(&db.url(), &[not_json.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is not valid JSON"), "{err}");

    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, r#"{"projects": {}}"#).unwrap();
    let (ok, _, err) = import(&db.url(), &[wrong.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not a Dev-Nexus knowledge base"), "{err}");

    let (ok, _, err) = import(&db.url(), &["/no/such/file.json"]);
    assert!(!ok);
    assert!(err.contains("reading /no/such/file.json"), "{err}");

    let pool = db.pool().await;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('repositories') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    if exists {
        let repos: i64 = sqlx::query_scalar("SELECT count(*) FROM repositories")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(repos, 0);
    }
}

/// Peak resident memory of a process, polled from /proc until it exits; with its exit status.
fn peak_rss_kb(mut child: std::process::Child) -> (std::process::ExitStatus, u64, String) {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let started = std::time::Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        {
            peak = peak.max(kb);
        }
        if peak > 1024 * 1024 {
            // Far past any limit: stop it before it takes the machine's memory.
            child.kill().ok();
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).ok();
            }
            return (status, peak, err);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "import-json still running after 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn an_endless_url_is_cut_off_while_reading_and_other_schemes_are_refused() {
    let db = shared_db().await;
    // A valid JSON prefix that never ends, without Content-Length.
    let endless = || {
        let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
        let head = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"repositories\": {"))
        });
        let tail = futures_util::stream::repeat_with(move || Ok(chunk.clone()));
        axum::body::Body::from_stream(futures_util::StreamExt::chain(head, tail))
    };
    let app = Router::new().route("/kb.json", get(move || async move { endless() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });

    let url = format!("http://{addr}/kb.json");
    let db_url = db.url();
    let (status, peak_kb, err) = tokio::task::spawn_blocking(move || {
        let child = nexusd_command(&["import-json", &url], &[("DATABASE_URL", &db_url)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        peak_rss_kb(child)
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(err.contains("is larger than 64 MiB"), "{err}");
    assert!(
        peak_kb < 200 * 1024,
        "import-json held {} MB of an endless download",
        peak_kb / 1024
    );

    let (ok, _, err) = import(&db.url(), &["ftp://example.org/kb.json"]);
    assert!(!ok);
    assert!(err.contains("ftp:// URLs are not supported"), "{err}");
}
