//! The skills that reach outside: the documentation, architecture and component-scan skills
//! against a local server speaking the GitHub REST API (a compliant repository, one without
//! README or licence, one whose docs fell behind its code, a 404 and a rate-limited one), and
//! `health_check_external` against agents that answer 200, 500, too late or not at all. Also the
//! agent card with and without `GITHUB_TOKEN`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Nexusd, free_port, shared_db, skill_ids, table_digest};

const GH_TOKEN: &str = "gh-test-token-5f1e9a";
const API_TOKEN: &str = "api-test-token-0123456789abcdef";
/// 2030-01-01T00:00:00Z, when the stand-in's rate limit resets.
const RESET_EPOCH: i64 = 1_893_456_000;

struct FakeCommit {
    sha: String,
    date: DateTime<Utc>,
    message: String,
    files: Vec<String>,
}

#[derive(Default)]
struct FakeRepo {
    files: BTreeMap<String, String>,
    commits: Vec<FakeCommit>,
}

fn repo(files: &[(&str, &str)], commits: Vec<FakeCommit>) -> FakeRepo {
    FakeRepo {
        files: files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect(),
        commits,
    }
}

fn commit(sha: &str, days_ago: i64, message: &str, files: &[&str]) -> FakeCommit {
    FakeCommit {
        sha: sha.to_string(),
        date: Utc::now() - chrono::Duration::days(days_ago),
        message: message.to_string(),
        files: files.iter().map(|f| f.to_string()).collect(),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn commit_json(c: &FakeCommit) -> Value {
    let date = c.date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "sha": c.sha,
        "commit": {"author": {"date": date}, "committer": {"date": date}, "message": c.message},
    })
}

/// The GitHub REST API as the skills use it, for the repositories given; `acme/limited`
/// answers every request with an exhausted rate limit.
async fn github(
    State(repos): State<Arc<BTreeMap<String, FakeRepo>>>,
    request: Request,
) -> Response {
    let headers = request.headers();
    let bearer = format!("Bearer {GH_TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        );
    }
    if headers.get("user-agent").is_none() {
        return json_response(
            StatusCode::FORBIDDEN,
            json!({"message": "User-Agent required"}),
        );
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let segments: Vec<&str> = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let ["repos", owner, name, rest @ ..] = segments.as_slice() else {
        return json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    let full = format!("{owner}/{name}");
    if full == "acme/limited" {
        return (
            StatusCode::FORBIDDEN,
            [
                ("x-ratelimit-limit", "5000".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", RESET_EPOCH.to_string()),
            ],
            axum::Json(json!({"message": "API rate limit exceeded for user ID 1."})),
        )
            .into_response();
    }
    let not_found = || json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    let Some(r) = repos.get(&full) else {
        return not_found();
    };
    match rest {
        [] => json_response(
            StatusCode::OK,
            json!({"full_name": full, "default_branch": "main", "private": false}),
        ),
        ["git", "trees", "main"] => {
            let recursive = query.get("recursive").is_some_and(|v| v == "1");
            let mut dirs = BTreeSet::new();
            let mut tree = Vec::new();
            for (path, text) in &r.files {
                if !recursive && path.contains('/') {
                    continue;
                }
                tree.push(json!({"path": path, "type": "blob", "size": text.len()}));
                let mut dir = path.as_str();
                while let Some((parent, _)) = dir.rsplit_once('/') {
                    dirs.insert(parent.to_string());
                    dir = parent;
                }
            }
            tree.extend(dirs.iter().map(|d| json!({"path": d, "type": "tree"})));
            json_response(
                StatusCode::OK,
                json!({"sha": "t1", "tree": tree, "truncated": false}),
            )
        }
        ["contents", path @ ..] => {
            if !accept.contains("raw") {
                return json_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    json!({"message": "ask for raw"}),
                );
            }
            if query.get("ref").map(String::as_str) != Some("main") {
                return not_found();
            }
            match r.files.get(&path.join("/")) {
                Some(text) => (StatusCode::OK, text.clone()).into_response(),
                None => not_found(),
            }
        }
        ["commits"] => {
            let since = query
                .get("since")
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc));
            let per_page: usize = query
                .get("per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(30);
            let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let list: Vec<Value> = r
                .commits
                .iter()
                .filter(|c| since.is_none_or(|s| c.date >= s))
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(commit_json)
                .collect();
            json_response(StatusCode::OK, Value::Array(list))
        }
        ["commits", sha] => match r.commits.iter().find(|c| c.sha.starts_with(sha)) {
            Some(c) => {
                let mut body = commit_json(c);
                body["files"] = c
                    .files
                    .iter()
                    .map(|f| json!({"filename": f, "status": "modified"}))
                    .collect();
                json_response(StatusCode::OK, body)
            }
            None => not_found(),
        },
        _ => not_found(),
    }
}

/// Serves the fixture repositories on 127.0.0.1; returns the API base URL. Lives as long as
/// the test's runtime.
async fn serve_github() -> String {
    serve(github_router()).await
}

/// The stand-in's routes over the fixture repositories.
fn github_router() -> Router {
    let mut repos = BTreeMap::new();
    repos.insert("acme/compliant".to_string(), compliant());
    repos.insert("acme/bare".to_string(), bare());
    repos.insert("acme/stale".to_string(), stale());
    Router::new().fallback(github).with_state(Arc::new(repos))
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}")
}

fn compliant() -> FakeRepo {
    let recent = (Utc::now() - chrono::Duration::days(10)).format("%Y-%m-%d");
    let readme = format!(
        "# Compliant Service\n\n\
         Compliant Service stores invoices and renders monthly statements for the billing team. It runs on\n\
         Cloud Run, keeps its data in PostgreSQL 15 and is deployed by Cloud Build; this README explains how\n\
         to install, run and deploy it.\n\n\
         Last updated: {recent}\n\n\
         ## Installation\n\n```bash\ncargo build --release\n```\n\n\
         ## Usage\n\nRun the binary built from `src/main.rs`. The design is described in\n\
         [the architecture notes](docs/ARCHITECTURE.md).\n\n\
         ## Deployment\n\nSee [DEPLOYMENT.md](DEPLOYMENT.md) and the [recovery runbook](DISASTER_RECOVERY.md).\n\n\
         ## License\n\nLicensed under the Apache License 2.0; see [LICENSE](LICENSE).\n"
    );
    let files: Vec<(&str, &str)> = vec![
        ("README.md", &readme),
        (
            "LICENSE",
            "                                 Apache License\n                           Version 2.0, January 2004\n",
        ),
        (
            "CONTRIBUTING.md",
            "# Contributing\n\nThank you for helping. Every change needs a test and a short description of why it is\nneeded; run the whole suite before opening a pull request, and keep commits small so that\nreview stays quick and the history stays readable.\n\n```bash\ncargo test\n```\n",
        ),
        (
            "CHANGELOG.md",
            "# Changelog\n\n## 1.1.0\n\nMonthly statements are rendered as PDF and sent by email to every customer; invoices now carry\nthe customer's tax number; the retry policy for the payment gateway uses exponential backoff\nwith jitter, which removed the bursts of failed calls seen in October.\n",
        ),
        (
            "docs/ARCHITECTURE.md",
            "# Architecture\n\nThe service is one Rust binary with three modules: `src/billing/invoice.rs` computes invoices,\n`src/http/client.rs` talks to the payment gateway, and `src/lib.rs` wires them together. State\nlives in PostgreSQL; see [the README](../README.md) for the setup.\n",
        ),
        (
            "DEPLOYMENT.md",
            "# Deployment\n\nCloud Build builds the container from the `Dockerfile` and deploys it to Cloud Run; the\ninfrastructure is described in `terraform/main.tf` and applied per environment from\n`terraform/environments/prod/terraform.tfvars`. Run `scripts/deploy.sh` to deploy by hand.\n",
        ),
        (
            "DISASTER_RECOVERY.md",
            "# Disaster recovery\n\nThe database is dumped every night by `scripts/backup.sh` into a versioned bucket and kept for\nthirty days. To restore, stop the service, download the newest dump and load it with psql,\nthen start the service again and check its health endpoint.\n",
        ),
        ("src/main.rs", "fn main() {}\n"),
        (
            "src/lib.rs",
            "//! Compliant service library.\n\npub mod billing;\npub mod http;\n\npub fn version() -> &'static str {\n    \"1.1.0\"\n}\n",
        ),
        (
            "src/billing/invoice.rs",
            "//! Invoice totals.\n\npub struct Invoice {\n    pub lines: Vec<u64>,\n}\n\npub fn total(invoice: &Invoice) -> u64 {\n    invoice.lines.iter().sum()\n}\n",
        ),
        (
            "src/http/client.rs",
            "//! Client for the payment gateway.\n\nuse std::time::Duration;\n\npub struct Client;\n\nimpl Client {\n    pub fn get(&self, path: &str) -> Result<String, String> {\n        if path.is_empty() || path.len() > 100 {\n            return Err(\"bad path\".into());\n        }\n        Ok(String::new())\n    }\n}\n",
        ),
        (
            "Dockerfile",
            "FROM rust:1.88 AS build\nWORKDIR /src\nCOPY . .\nRUN cargo build --release\n\nFROM gcr.io/distroless/cc-debian12:nonroot\nCOPY --from=build /src/target/release/svc /svc\nUSER 65532:65532\nENTRYPOINT [\"/svc\"]\n",
        ),
        (".dockerignore", "target\n.env\n"),
        (
            "terraform/main.tf",
            "terraform {\n  required_version = \">= 1.5\"\n  required_providers {\n    google = {\n      source  = \"hashicorp/google\"\n      version = \"~> 5.0\"\n    }\n  }\n  backend \"gcs\" {\n    bucket = \"acme-tf-state\"\n  }\n}\n\nresource \"google_storage_bucket\" \"backups\" {\n  name     = \"acme-backups\"\n  location = \"EU\"\n  versioning {\n    enabled = true\n  }\n}\n",
        ),
        ("terraform/.terraform.lock.hcl", "# provider locks\n"),
        (
            "terraform/environments/dev/terraform.tfvars",
            "env = \"dev\"\n",
        ),
        (
            "terraform/environments/prod/terraform.tfvars",
            "env = \"prod\"\n",
        ),
        ("terraform/terraform.tfvars.example", "env = \"dev\"\n"),
        (
            ".gitignore",
            ".terraform/\n*.tfstate\n*.tfstate.backup\n.env\n",
        ),
        (
            ".github/workflows/ci.yml",
            "name: ci\non: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: cargo test --all\n",
        ),
        (
            "migrations/0001_init.sql",
            "CREATE TABLE invoices (id bigint PRIMARY KEY);\n",
        ),
        (
            "scripts/backup.sh",
            "#!/bin/sh\npg_dump billing | gzip > backup.sql.gz\n",
        ),
        ("scripts/deploy.sh", "#!/bin/sh\ngcloud builds submit\n"),
    ];
    repo(
        &files,
        vec![
            commit(
                "c0ffee01aa",
                1,
                "docs: architecture",
                &["docs/ARCHITECTURE.md"],
            ),
            commit(
                "c0ffee02bb",
                2,
                "feat: invoice totals\n\nWith tests.",
                &["src/billing/invoice.rs", "CHANGELOG.md"],
            ),
        ],
    )
}

fn bare() -> FakeRepo {
    repo(
        &[
            (
                "CONTRIBUTING.md",
                "# Contributing\n\nPlease read [the setup guide](docs/SETUP.md) before you start, open an issue first for\nanything larger than a typo, and keep pull requests focused on one change so that the\nmaintainers can review them quickly.\n\n```\nmake test\n",
            ),
            ("Dockerfile", "FROM ubuntu\nRUN make\n"),
            ("main.tf", "terraform {\n\tbackend \"local\" {}\n}\n"),
            ("terraform.tfstate", "{}\n"),
            ("src/app.py", "def run():\n    pass\n"),
        ],
        Vec::new(),
    )
}

fn stale() -> FakeRepo {
    repo(
        &[
            (
                "README.md",
                "# Stale Service\n\nStale Service answers questions about orders for the support team; it reads the order\ndatabase and the shipping provider's API and caches answers for an hour to keep the\nprovider's bill low.\n\nLast updated: 2024-01-15\n\n## Installation\n\n```bash\nmake install\n```\n\n## Usage\n\nStart it with `make run`.\n",
            ),
            (
                "LICENSE",
                "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\n",
            ),
            ("docs/NOTES.md", "# Notes\n"),
            ("src/server.rs", "pub fn serve() {}\n"),
            ("src/util.rs", "pub fn helper() {}\n"),
        ],
        vec![
            commit(
                "5a1e0005",
                1,
                "fix: util edge case\n\nDetails.",
                &["src/util.rs", "Cargo.toml"],
            ),
            commit("5a1e0004", 3, "feat: new endpoint", &["src/server.rs"]),
            commit("5a1e0003", 8, "docs: notes", &["docs/NOTES.md"]),
            commit("5a1e0002", 10, "feat: helper", &["src/util.rs"]),
            commit("5a1e0001", 30, "docs: readme", &["README.md"]),
        ],
    )
}

/// A nexusd with GITHUB_TOKEN pointed at `api`, letting anonymous callers read acme's
/// repositories.
async fn nexusd_with_github(api: &str, extra: &[(&str, &str)]) -> (support::TestDb, Nexusd) {
    let db = shared_db().await;
    let mut vars = vec![
        ("GITHUB_TOKEN", GH_TOKEN),
        ("NEXUSD_GITHUB_API_URL", api),
        ("NEXUSD_GITHUB_REPOSITORIES", "acme/*"),
    ];
    vars.extend_from_slice(extra);
    let nexusd = Nexusd::ready(&db.url(), &vars).await;
    (db, nexusd)
}

fn failure(body: &Value) -> &str {
    assert_eq!(body["success"], false, "{body}");
    body["error"].as_str().unwrap_or_default()
}

fn assert_token_not_logged(nexusd: &Nexusd, secrets: &[&str]) {
    let log = nexusd.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "a secret appears in the log");
    }
}

/// nexusd's GITHUB_TOKEN may see private repositories: a caller without credentials gets only
/// the knowledge base's repositories (and the configured open ones) read through it.
#[tokio::test]
async fn anonymous_callers_read_only_known_repositories_through_nexusds_token() {
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    let app = github_router().layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            next.run(request)
        },
    ));
    let api = serve(app).await;
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("GITHUB_TOKEN", GH_TOKEN),
            ("NEXUSD_GITHUB_API_URL", api.as_str()),
            ("NEXUSD_API_TOKENS", API_TOKEN),
        ],
    )
    .await;
    let check = |repository: &'static str| json!({"repository": repository});
    let token = format!("Bearer {API_TOKEN}");
    for skill in [
        "check_documentation_standards",
        "validate_documentation_update",
        "validate_repository_architecture",
    ] {
        let (_, body) = nexusd.exec(skill, check("acme/compliant")).await;
        assert!(
            failure(&body).contains("not in the knowledge base"),
            "{skill}: {body}"
        );
        assert_eq!(body["error_type"], "not_allowed");
    }
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "GitHub was asked about a repository the caller may not read"
    );

    // With credentials, any repository; without, once it is in the knowledge base.
    let (_, body) = nexusd
        .exec_with(
            "check_documentation_standards",
            check("acme/compliant"),
            Some(&token),
        )
        .await;
    assert_eq!(body["success"], true, "{body}");
    let (_, body) = nexusd
        .exec("add_repository", json!({"repository": "acme/compliant"}))
        .await;
    assert_eq!(body["success"], true, "{body}");
    let (_, body) = nexusd
        .exec("check_documentation_standards", check("acme/compliant"))
        .await;
    assert_eq!(body["success"], true, "{body}");
}

#[tokio::test]
async fn documentation_standards_over_the_github_api() {
    let api = serve_github().await;
    let (_db, nexusd) = nexusd_with_github(&api, &[]).await;

    let good = nexusd
        .ok(
            "check_documentation_standards",
            json!({"repository": "acme/compliant"}),
        )
        .await;
    assert_eq!(good["status"], "compliant", "{good}");
    assert_eq!(good["status_emoji"], "✅");
    assert_eq!(good["compliance_score"], 1.0);
    assert_eq!(good["summary"]["total_violations"], 0);
    let files: Vec<&str> = good["file_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "LICENSE",
            "README.md",
            "CHANGELOG.md",
            "CONTRIBUTING.md",
            "DEPLOYMENT.md",
            "docs/ARCHITECTURE.md"
        ]
    );
    assert_eq!(good["file_results"][0]["licence"], "Apache-2.0");
    assert_eq!(good["file_results"][1]["checks_performed"], 5);
    assert_eq!(good["summary"]["total_checks"], 26);
    let all = nexusd
        .ok(
            "check_documentation_standards",
            json!({"repository": "acme/compliant", "check_all_docs": true}),
        )
        .await;
    assert_eq!(all["summary"]["total_files_checked"], 7);
    assert_eq!(all["status"], "compliant", "{all}");

    // No README, no licence, no changelog; a broken link and an unclosed, untagged code block.
    let bare = nexusd
        .ok(
            "check_documentation_standards",
            json!({"repository": "acme/bare"}),
        )
        .await;
    assert_eq!(bare["status"], "non_compliant");
    assert_eq!(bare["status_emoji"], "❌");
    assert_eq!(bare["compliance_score"], 0.38);
    assert_eq!(
        bare["summary"],
        json!({"total_files_checked": 4, "total_checks": 8, "total_violations": 5,
               "critical_violations": 2, "high_violations": 3, "medium_violations": 0, "low_violations": 0})
    );
    let critical: Vec<&str> = bare["critical_violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["file"].as_str().unwrap())
        .collect();
    assert_eq!(critical, ["LICENSE", "README.md"]);
    let contributing = bare["file_results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "CONTRIBUTING.md")
        .unwrap();
    let checks: Vec<&str> = contributing["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["internal_links", "code_examples"]);
    assert!(
        contributing["violations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("docs/SETUP.md (line 3)"),
        "{contributing}"
    );
    assert!(!bare["recommendations"].as_array().unwrap().is_empty());

    // A stale update stamp in the README.
    let stale = nexusd
        .ok(
            "check_documentation_standards",
            json!({"repository": "acme/stale"}),
        )
        .await;
    let readme = stale["file_results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "README.md")
        .unwrap();
    assert_eq!(readme["violation_count"], 1);
    assert_eq!(readme["violations"][0]["check"], "update_stamps");
    assert!(
        readme["violations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("2024-01-15")
    );

    // Errors.
    let (status, body) = nexusd
        .exec(
            "check_documentation_standards",
            json!({"repository": "acme/gone"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        failure(&body),
        "Repository not found: acme/gone (404). Verify repository name and token permissions."
    );
    let (_, body) = nexusd
        .exec(
            "check_documentation_standards",
            json!({"repository": "acme/limited"}),
        )
        .await;
    assert_eq!(
        failure(&body),
        "GitHub API error when accessing repository: GitHub API rate limit exceeded (HTTP 403); \
         the limit resets at 2030-01-01T00:00:00Z. Retry later or use a token with a higher limit."
    );
    assert_eq!(body["error_type"], "rate_limited");
    assert_eq!(body["rate_limit_reset"], "2030-01-01T00:00:00Z");
    for bad in ["not-a-repo", "a/b/c", " "] {
        let (_, body) = nexusd
            .exec("check_documentation_standards", json!({"repository": bad}))
            .await;
        assert_eq!(
            failure(&body),
            "Invalid repository format. Expected 'owner/repo'"
        );
    }
    assert_token_not_logged(&nexusd, &[GH_TOKEN]);
}

#[tokio::test]
async fn documentation_updates_follow_the_commits() {
    let api = serve_github().await;
    let (_db, nexusd) = nexusd_with_github(&api, &[]).await;

    let good = nexusd
        .ok(
            "validate_documentation_update",
            json!({"repository": "acme/compliant"}),
        )
        .await;
    assert_eq!(good["validation"]["status"], "compliant", "{good}");
    assert_eq!(good["changes"]["code_files"], 1);
    assert_eq!(good["changes"]["doc_files"], 2);
    assert_eq!(good["warnings"], json!([]));
    assert_eq!(good["timeframe"]["since_commit"], Value::Null);

    // The last 7 days of acme/stale: code only, one of them a core file.
    let stale = nexusd
        .ok(
            "validate_documentation_update",
            json!({"repository": "acme/stale", "days": 7}),
        )
        .await;
    assert_eq!(stale["validation"]["status"], "non_compliant", "{stale}");
    assert_eq!(
        stale["validation"]["message"],
        "2 code file(s) changed but no documentation was updated"
    );
    assert_eq!(stale["changes"]["code_files"], 2);
    assert_eq!(stale["changes"]["doc_files"], 0);
    assert_eq!(
        stale["changes"]["code_changes"],
        json!([
            {"file": "src/util.rs", "commit": "5a1e000", "date": stale["changes"]["code_changes"][0]["date"], "message": "fix: util edge case"},
            {"file": "src/server.rs", "commit": "5a1e000", "date": stale["changes"]["code_changes"][1]["date"], "message": "feat: new endpoint"},
        ])
    );
    assert_eq!(stale["warnings"][0]["severity"], "high");
    assert!(
        stale["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("src/server.rs")
    );
    assert_eq!(stale["commits_examined"], 2);
    let since =
        DateTime::parse_from_rfc3339(stale["timeframe"]["since_date"].as_str().unwrap()).unwrap();
    let age = Utc::now() - since.with_timezone(&Utc);
    assert!((age.num_hours() - 7 * 24).abs() <= 1, "{age}");

    // Since a commit 10 days ago: docs changed too, but before the latest code change.
    let since = nexusd
        .ok(
            "validate_documentation_update",
            json!({"repository": "acme/stale", "since_commit": "5a1e0002"}),
        )
        .await;
    assert_eq!(since["validation"]["status"], "compliant", "{since}");
    assert_eq!(since["timeframe"]["since_commit"], "5a1e0002");
    assert_eq!(since["changes"]["doc_changes"][0]["file"], "docs/NOTES.md");
    assert_eq!(
        since["commits_examined"], 3,
        "the since commit itself is not counted"
    );
    assert_eq!(since["warnings"][0]["severity"], "low");

    let quiet = nexusd
        .ok(
            "validate_documentation_update",
            json!({"repository": "acme/bare"}),
        )
        .await;
    assert_eq!(quiet["validation"]["status"], "no_changes");

    let (_, body) = nexusd
        .exec(
            "validate_documentation_update",
            json!({"repository": "acme/stale", "since_commit": "deadbeef"}),
        )
        .await;
    assert_eq!(
        failure(&body),
        "Commit not found: deadbeef (404) in acme/stale"
    );
    let (_, body) = nexusd
        .exec(
            "validate_documentation_update",
            json!({"repository": "acme/gone"}),
        )
        .await;
    assert!(failure(&body).starts_with("Repository not found: acme/gone (404)"));
    let (_, body) = nexusd
        .exec(
            "validate_documentation_update",
            json!({"repository": "acme/limited"}),
        )
        .await;
    assert!(
        failure(&body)
            .contains("rate limit exceeded (HTTP 403); the limit resets at 2030-01-01T00:00:00Z")
    );
    let (_, body) = nexusd
        .exec(
            "validate_documentation_update",
            json!({"repository": "acme/stale", "days": 0}),
        )
        .await;
    assert_eq!(
        failure(&body),
        "Invalid parameter 'days': must be between 1 and 365"
    );
}

#[tokio::test]
async fn architecture_skills_grade_repositories() {
    let api = serve_github().await;
    let (_db, nexusd) = nexusd_with_github(&api, &[]).await;

    let good = nexusd
        .ok(
            "validate_repository_architecture",
            json!({"repository": "acme/compliant"}),
        )
        .await;
    assert_eq!(good["overall_compliance_score"], 1.0, "{good}");
    assert_eq!(good["compliance_grade"], "A");
    assert_eq!(good["summary"]["total_checks"], 32);
    assert_eq!(good["summary"]["failed_checks"], 0);
    let categories: Vec<&String> = good["categories"].as_object().unwrap().keys().collect();
    assert_eq!(
        categories,
        [
            "documentation",
            "license",
            "terraform_init",
            "multi_env",
            "terraform_state",
            "disaster_recovery",
            "deployment",
            "postgresql",
            "ci_cd",
            "containerization"
        ]
    );
    assert_eq!(good["recommendations"], json!([]));
    assert_eq!(
        good["a2a_integration"]["orchestrator"],
        json!({"status": "skipped", "reason": "agent_not_configured"})
    );

    let bare = nexusd
        .ok(
            "validate_repository_architecture",
            json!({"repository": "acme/bare"}),
        )
        .await;
    assert_eq!(bare["compliance_grade"], "F");
    assert_eq!(
        bare["summary"],
        json!({"total_checks": 23, "passed_checks": 3, "failed_checks": 20, "critical_violations": 4,
               "high_violations": 6, "medium_violations": 8, "low_violations": 2})
    );
    assert_eq!(bare["overall_compliance_score"], 0.13);
    let critical: Vec<&str> = bare["critical_violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(critical, ["DOC-001", "LIC-001", "TFS-001", "TFS-002"]);
    assert_eq!(
        bare["critical_violations"][2]["file_path"],
        "terraform.tfstate"
    );
    assert_eq!(bare["recommendations"][0]["priority"], "CRITICAL");

    let scoped = nexusd
        .ok(
            "validate_repository_architecture",
            json!({"repository": "acme/bare", "validation_scope": ["containerization", "license"],
                   "include_recommendations": false, "notify_agents": false}),
        )
        .await;
    let categories: Vec<&String> = scoped["categories"].as_object().unwrap().keys().collect();
    assert_eq!(categories, ["license", "containerization"]);
    assert!(scoped.get("recommendations").is_none() && scoped.get("a2a_integration").is_none());

    let docker = nexusd
        .ok(
            "check_specific_standard",
            json!({"repository": "acme/bare", "standard_category": "containerization"}),
        )
        .await;
    assert_eq!(docker["passed"], false);
    assert_eq!(docker["compliance_score"], 0.25);
    assert_eq!(docker["checks_performed"], 4);
    let rules: Vec<&str> = docker["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["CTR-002", "CTR-003", "CTR-004"]);
    let ok = nexusd
        .ok(
            "check_specific_standard",
            json!({"repository": "acme/compliant", "standard_category": "terraform_state"}),
        )
        .await;
    assert_eq!(
        (ok["passed"].clone(), ok["compliance_score"].clone()),
        (json!(true), json!(1.0))
    );

    let suggestions = nexusd
        .ok(
            "suggest_improvements",
            json!({"repository": "acme/bare", "max_recommendations": 3}),
        )
        .await;
    assert_eq!(suggestions["total_violations"], 20);
    assert_eq!(suggestions["critical_violations_count"], 4);
    assert_eq!(suggestions["recommendations_count"], 3);
    let by_priority = suggestions["recommendations_by_priority"]
        .as_object()
        .unwrap();
    assert_eq!(by_priority.keys().collect::<Vec<_>>(), ["CRITICAL"]);
    let rules: Vec<&str> = by_priority["CRITICAL"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["DOC-001", "LIC-001", "TFS-001"]);
    assert_eq!(
        suggestions["summary"]["critical_actions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let (_, body) = nexusd
        .exec(
            "check_specific_standard",
            json!({"repository": "acme/bare", "standard_category": "security"}),
        )
        .await;
    assert!(
        failure(&body)
            .starts_with("Invalid parameter 'standard_category': must be one of: documentation")
    );
    let (_, body) = nexusd
        .exec("suggest_improvements", json!({"repository": "acme/gone"}))
        .await;
    assert_eq!(
        failure(&body),
        "Repository not found: acme/gone (404). Verify repository name and token permissions."
    );
    assert_eq!(body["error_type"], "not_found");
    let (_, body) = nexusd
        .exec(
            "validate_repository_architecture",
            json!({"repository": "acme/limited"}),
        )
        .await;
    assert!(failure(&body).contains("rate limit exceeded"));
    assert_eq!(body["error_type"], "rate_limited");
    assert_token_not_logged(&nexusd, &[GH_TOKEN]);
}

async fn components_of(pool: &PgPool, repository: &str) -> Vec<(Option<String>, i32, i32, Value)> {
    sqlx::query_as(
        "SELECT c.component_id, c.id, c.lines_of_code, c.public_methods FROM reusable_components c
           JOIN repositories r ON r.id = c.repo_id WHERE r.name = $1 ORDER BY c.component_id",
    )
    .bind(repository)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn scan_replaces_a_repositorys_components_in_one_transaction() {
    let api = serve_github().await;
    let (db, nexusd) = nexusd_with_github(&api, &[("NEXUSD_API_TOKENS", API_TOKEN)]).await;
    let pool = db.pool().await;
    sqlx::raw_sql(
        "INSERT INTO repositories (name) VALUES ('acme/compliant'), ('acme/other'), ('acme/limited');
         INSERT INTO reusable_components (repo_id, component_id, name, purpose, location)
         SELECT r.id, x.cid, x.name, x.purpose, x.location
           FROM (VALUES ('acme/compliant', 'acme/compliant:invoice', 'invoice', 'Curated', 'src/invoice.rs'),
                        ('acme/compliant', 'acme/compliant:old-thing', 'old-thing', NULL, 'src/old.rs'),
                        ('acme/compliant', NULL, 'legacy', NULL, NULL),
                        ('acme/other', 'acme/other:x', 'x', NULL, NULL),
                        ('acme/limited', 'acme/limited:keep', 'keep', NULL, NULL))
                AS x(repo, cid, name, purpose, location)
           JOIN repositories r ON r.name = x.repo;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let invoice_id: i32 = sqlx::query_scalar(
        "SELECT id FROM reusable_components WHERE component_id = 'acme/compliant:invoice'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let auth = format!("Bearer {API_TOKEN}");
    let scan = |repository: &str| {
        nexusd.exec_with(
            "scan_repository_components",
            json!({"repository": repository}),
            Some(auth.as_str()),
        )
    };

    // Protected.
    let (status, _) = nexusd
        .exec(
            "scan_repository_components",
            json!({"repository": "acme/compliant"}),
        )
        .await;
    assert_eq!(status, 401);

    // GitHub failing (rate limit) and the database refusing one row both leave everything as it was.
    let before = table_digest(&pool).await;
    let (_, body) = scan("acme/limited").await;
    assert!(failure(&body).contains("rate limit exceeded"), "{body}");
    assert_eq!(table_digest(&pool).await, before);
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_lib() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.name = 'lib' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_lib BEFORE INSERT OR UPDATE ON reusable_components
             FOR EACH ROW EXECUTE FUNCTION refuse_lib();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (_, body) = scan("acme/compliant").await;
    assert!(failure(&body).contains("refused by the test"), "{body}");
    assert_eq!(
        table_digest(&pool).await,
        before,
        "a failed scan changes nothing"
    );
    sqlx::raw_sql("DROP TRIGGER refuse_lib ON reusable_components; DROP FUNCTION refuse_lib();")
        .execute(&pool)
        .await
        .unwrap();

    let (status, body) = scan("acme/compliant").await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
    assert_eq!(body["components_found"], 3);
    assert_eq!(body["pattern_extraction"], "disabled");
    assert_eq!(body["vectors_generated"], 0);
    assert_eq!(body["files_scanned"], 3, "src/main.rs is an entry point");
    assert_eq!(
        (
            body["components_inserted"].clone(),
            body["components_updated"].clone(),
            body["components_removed"].clone()
        ),
        (json!(2), json!(1), json!(2))
    );
    let client = body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "client")
        .unwrap();
    assert_eq!(client["type"], "api_client");
    assert_eq!(client["files"], json!(["src/http/client.rs"]));
    assert_eq!(client["methods"], json!(["Client", "get"]));
    assert_eq!(client["description"], "Client for the payment gateway.");

    let rows = components_of(&pool, "acme/compliant").await;
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r.0.as_deref().unwrap_or("NULL"))
        .collect();
    assert_eq!(
        ids,
        [
            "acme/compliant:client",
            "acme/compliant:invoice",
            "acme/compliant:lib"
        ]
    );
    assert_eq!(
        rows[1].1, invoice_id,
        "the existing row is updated in place"
    );
    assert!(rows.iter().all(|r| r.2 > 0));
    assert_eq!(rows[1].3, json!(["Invoice", "total"]));
    assert_eq!(components_of(&pool, "acme/other").await.len(), 1);
    assert_eq!(components_of(&pool, "acme/limited").await.len(), 1);

    // A second scan of the same tree changes nothing.
    let after = table_digest(&pool).await;
    let (_, body) = scan("acme/compliant").await;
    assert_eq!(body["components_unchanged"], 3, "{body}");
    assert_eq!(body["components_removed"], 0);
    assert_eq!(table_digest(&pool).await, after);

    let (_, body) = scan("  ").await;
    assert_eq!(
        failure(&body),
        "Repository name is required (format: 'owner/repo')"
    );
    let (_, body) = scan("acme/unknown").await;
    assert_eq!(
        failure(&body),
        "Repository 'acme/unknown' not found in knowledge base"
    );
    assert_token_not_logged(&nexusd, &[GH_TOKEN]);
}

/// Agents' `/health`: `/ok` (200, only with the right token), `/fail` (500), `/slow` (answers
/// after 6 s).
async fn serve_agents() -> String {
    let app = Router::new()
        .route(
            "/ok/health",
            get(|headers: HeaderMap| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                if auth == Some("Bearer orch-token-secret") {
                    (StatusCode::OK, "{\"status\":\"healthy\"}")
                } else {
                    (StatusCode::UNAUTHORIZED, "{}")
                }
            }),
        )
        .route(
            "/fail/health",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow/health",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(6)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}")
}

#[tokio::test]
async fn external_agents_are_probed_concurrently_with_a_timeout() {
    let agents = serve_agents().await;
    let ok = format!("{agents}/ok");
    let fail = format!("{agents}/fail");
    let slow = format!("{agents}/slow");
    let refused = format!("http://127.0.0.1:{}", free_port());

    let db = shared_db().await;
    let mixed = Nexusd::ready(
        &db.url(),
        &[
            ("ORCHESTRATOR_URL", &ok),
            ("ORCHESTRATOR_TOKEN", "orch-token-secret"),
            ("PATTERN_MINER_URL", &fail),
        ],
    )
    .await;
    let db2 = shared_db().await;
    let slow_ones = Nexusd::ready(
        &db2.url(),
        &[("ORCHESTRATOR_URL", &slow), ("PATTERN_MINER_URL", &slow)],
    )
    .await;
    let db3 = shared_db().await;
    let down = Nexusd::ready(&db3.url(), &[("ORCHESTRATOR_URL", &refused)]).await;

    let (a, b, c) = tokio::join!(
        mixed.ok("health_check_external", json!({})),
        slow_ones.ok("health_check_external", json!({})),
        down.ok("health_check_external", json!({})),
    );

    assert_eq!(
        a["agents"],
        json!({"dependency-orchestrator": true, "pattern-miner": false})
    );
    assert_eq!(a["all_healthy"], false);
    assert_eq!(a["details"]["dependency-orchestrator"]["status_code"], 200);
    assert_eq!(a["details"]["pattern-miner"]["status_code"], 500);
    assert_eq!(
        a["details"]["pattern-miner"]["error"],
        "/health answered HTTP 500"
    );

    // Two agents that answer after 6 s: both time out at 5 s, probed at the same time.
    assert_eq!(
        b["agents"],
        json!({"dependency-orchestrator": false, "pattern-miner": false})
    );
    assert_eq!(
        b["details"]["pattern-miner"]["error"],
        "no answer within 5 s"
    );
    let ms = b["execution_time_ms"].as_f64().unwrap();
    assert!((4900.0..8000.0).contains(&ms), "took {ms} ms");

    assert_eq!(c["agents"], json!({"dependency-orchestrator": false}));
    assert_eq!(c["all_healthy"], false);
    assert_eq!(
        c["details"]["dependency-orchestrator"]["error"],
        "connection failed (refused or unreachable)"
    );
    assert_eq!(
        c["details"]["dependency-orchestrator"]["status_code"],
        Value::Null
    );
    assert_token_not_logged(&mixed, &["orch-token-secret"]);
}

fn card_ids(card: &Value) -> Vec<String> {
    card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn agent_card_lists_the_reference_order_with_and_without_github_token() {
    let api = serve_github().await;
    let (_db, with) = nexusd_with_github(&api, &[]).await;
    let db = shared_db().await;
    let without = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;

    let (_, card) = with.get("/.well-known/agent.json").await.unwrap();
    assert_eq!(card_ids(&card), skill_ids::registration_order(&[]));
    assert_eq!(
        card["metadata"]["skill_count"],
        skill_ids::REFERENCE_ORDER.len()
            + skill_ids::FRONTEND_WORKFLOWS.len()
            + skill_ids::NEXUSD_OWN.len()
            + skill_ids::FRONTEND.len()
    );
    let protected: Vec<&str> = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["requires_authentication"] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        protected,
        [
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
            "create_pattern_from_component"
        ]
    );
    // Every example is valid input.
    for entry in card["skills"].as_array().unwrap() {
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

    // Without a token the GitHub architecture skills are registered all the same and answer
    // `not_configured` (issue 17: the original's "Unknown skill" broke the Compliance page).
    let (_, card) = without.get("/.well-known/agent.json").await.unwrap();
    let expected = skill_ids::registration_order(&[]);
    assert_eq!(card_ids(&card), expected);
    assert_eq!(
        expected.len(),
        skill_ids::REFERENCE_ORDER.len()
            + skill_ids::FRONTEND_WORKFLOWS.len()
            + skill_ids::NEXUSD_OWN.len()
            + skill_ids::FRONTEND.len()
    );
    let (_, root) = without.get("/").await.unwrap();
    assert_eq!(root["skills_registered"], expected.len());

    // Without a token or agents: what the original answered.
    let health = without.ok("health_check_external", json!({})).await;
    assert_eq!(health["agents"], json!({}));
    assert_eq!(health["all_healthy"], true);
    for skill in [
        "check_documentation_standards",
        "validate_documentation_update",
    ] {
        let (status, body) = without
            .exec(skill, json!({"repository": "acme/compliant"}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(failure(&body), "GITHUB_TOKEN not configured", "{skill}");
    }
    without
        .ok("add_repository", json!({"repository": "acme/compliant"}))
        .await;
    // As the original: the stored components, pattern extraction disabled.
    let scan = without
        .ok(
            "scan_repository_components",
            json!({"repository": "acme/compliant"}),
        )
        .await;
    assert_eq!(scan["pattern_extraction"], "disabled");
    assert_eq!(scan["components"], json!([]));
    for skill in [
        "validate_repository_architecture",
        "check_specific_standard",
        "suggest_improvements",
    ] {
        let body = without
            .ok(
                skill,
                json!({"repository": "acme/compliant", "standard_category": "documentation"}),
            )
            .await;
        assert_eq!(body["status"], "not_configured", "{skill}");
        assert!(
            body["recommendations"][0]["description"]
                .as_str()
                .unwrap()
                .starts_with("GITHUB_TOKEN is not configured"),
            "{body}"
        );
    }
}
