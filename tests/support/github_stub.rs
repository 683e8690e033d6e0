//! A small server speaking the part of GitHub's REST API nexusd reads (repository, recursive
//! tree, raw contents), on 127.0.0.1, for the workflow and complexity tests: repositories are
//! maps of path → text; every request is counted by repository and kind; a repository can be
//! held (its content reads wait until released), so a test catches a job mid-run.
//! Included by path (`#[path = "support/github_stub.rs"]`) by the tests that use it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const GH_TOKEN: &str = "gh-workflow-token-7d3c";

#[derive(Default)]
pub struct Stub {
    pub repos: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Repositories whose content reads wait while they are listed.
    pub held: Mutex<BTreeSet<String>>,
    /// (repository, "repo" | "tree" | "contents") → requests seen.
    pub counts: Mutex<BTreeMap<(String, String), u64>>,
    pub stopped: AtomicBool,
}

impl Stub {
    pub fn add(&self, repo: &str, files: &[(&str, &str)]) {
        let files = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        self.repos.lock().unwrap().insert(repo.to_string(), files);
    }

    pub fn hold(&self, repo: &str) {
        self.held.lock().unwrap().insert(repo.to_string());
    }

    pub fn release(&self, repo: &str) {
        self.held.lock().unwrap().remove(repo);
    }

    pub fn count(&self, repo: &str, kind: &str) -> u64 {
        let key = (repo.to_string(), kind.to_string());
        self.counts.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    fn bump(&self, repo: &str, kind: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry((repo.to_string(), kind.to_string()))
            .or_default() += 1;
    }

    fn is_held(&self, repo: &str) -> bool {
        self.held.lock().unwrap().contains(repo)
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(State(stub): State<Arc<Stub>>, request: Request) -> Response {
    let bearer = format!("Bearer {GH_TOKEN}");
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(bearer.as_str()) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        );
    }
    let path = request.uri().path().trim_start_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let not_found = || json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    let ["repos", owner, name, rest @ ..] = segments.as_slice() else {
        return not_found();
    };
    let full = format!("{owner}/{name}");
    let Some(files) = stub.repos.lock().unwrap().get(&full).cloned() else {
        return not_found();
    };
    match rest {
        [] => {
            stub.bump(&full, "repo");
            json_response(
                StatusCode::OK,
                json!({"full_name": full, "default_branch": "main"}),
            )
        }
        ["git", "trees", "main"] => {
            stub.bump(&full, "tree");
            let mut dirs = BTreeSet::new();
            let mut tree = Vec::new();
            for (path, text) in &files {
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
                json!({"sha": "t", "tree": tree, "truncated": false}),
            )
        }
        ["contents", path @ ..] => {
            stub.bump(&full, "contents");
            while stub.is_held(&full) && !stub.stopped.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match files.get(&path.join("/")) {
                Some(text) => (StatusCode::OK, text.clone()).into_response(),
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// Serves `stub` on 127.0.0.1; returns the API base URL. Lives as long as the test's runtime.
pub async fn serve(stub: Arc<Stub>) -> String {
    let app = Router::new().fallback(handle).with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}")
}

/// A small service repository: Rust and TypeScript sources, a Cargo manifest that depends on
/// `acme/lib` through its GitHub URL, a package.json and a requirements.txt.
pub fn service_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("README.md", "# Service\n"),
        (
            "Cargo.toml",
            "[package]\nname = \"svc\"\n\n[dependencies]\nserde = \"1\"\ntokio = { version = \"1\", features = [\"full\"] }\nlib = { git = \"https://github.com/acme/lib\" }\n\n[dev-dependencies]\ntempfile = \"3\"\n",
        ),
        (
            "web/package.json",
            r#"{"name": "web", "dependencies": {"react": "^18.2.0"}, "devDependencies": {"vite": "^5"}}"#,
        ),
        (
            "tools/requirements.txt",
            "requests==2.31\n# comment\nclick>=8\n",
        ),
        (
            "src/http/client.rs",
            "//! Client for the gateway.\n\npub struct Client;\n\nimpl Client {\n    pub fn get(&self, path: &str) -> Result<String, String> {\n        if path.is_empty() || path.len() > 100 {\n            return Err(\"bad\".into());\n        }\n        for _ in 0..3 {\n            if path.starts_with('/') {\n                return Ok(String::new());\n            }\n        }\n        Ok(String::new())\n    }\n}\n",
        ),
        (
            "src/models/invoice.rs",
            "//! Invoices.\n\npub struct Invoice {\n    pub lines: Vec<u64>,\n}\n\npub fn total(invoice: &Invoice) -> u64 {\n    invoice.lines.iter().sum()\n}\n",
        ),
        (
            "web/src/api.ts",
            "// API calls.\nexport function load(id: string) {\n  if (!id) { return null; }\n  return fetch('/x/' + id);\n}\n",
        ),
    ]
}
