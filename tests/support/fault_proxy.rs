//! A small fault-injecting HTTP proxy in front of the GCS emulator: it forwards every request to
//! fake-gcs-server (rewriting the resumable-upload `Location` so later chunks come back through
//! it) and, for requests matching a rule, answers with an error status or never answers at all —
//! how a real store fails in production. It runs on its own thread and runtime, so a test may
//! block on a child process while it serves.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// What a matching request gets.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// An error status with a JSON body, as GCS sends them.
    Status(u16),
    /// No answer, ever: the connection stays open.
    Hang,
    /// `200 OK` with an empty object's metadata, as if the upload were complete: a store that
    /// claims success it did not have.
    FakeSuccess,
}

/// Which requests fail, and how often.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `GET`, `POST`, `PUT`, `DELETE`, or `""` for any.
    pub method: &'static str,
    /// A substring of the path and query.
    pub path: &'static str,
    /// Matching requests let through before the fault applies.
    pub skip: usize,
    /// How many matching requests fail (then they pass again); `None`: all of them.
    pub times: Option<usize>,
    pub fault: Fault,
}

impl Rule {
    pub fn always(method: &'static str, path: &'static str, fault: Fault) -> Self {
        Rule {
            method,
            path,
            skip: 0,
            times: None,
            fault,
        }
    }

    pub fn once(method: &'static str, path: &'static str, fault: Fault) -> Self {
        Rule {
            times: Some(1),
            ..Rule::always(method, path, fault)
        }
    }
}

#[derive(Default)]
struct Rules {
    rules: Vec<(Rule, usize)>,
    /// Every request seen, as `METHOD path?query`.
    seen: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    rules: Arc<Mutex<Rules>>,
    upstream: String,
    own: String,
    client: reqwest::Client,
}

pub struct FaultProxy {
    pub ip: String,
    rules: Arc<Mutex<Rules>>,
}

impl FaultProxy {
    /// Listens on `ip:80` (google-cloud-storage drops the port from its requests) and forwards
    /// to the emulator on `upstream_ip:80`.
    pub fn start(ip: &str, upstream_ip: &str) -> Self {
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shared = Shared {
            rules: rules.clone(),
            upstream: format!("http://{upstream_ip}"),
            own: format!("http://{ip}"),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
        };
        let listener = std::net::TcpListener::bind((ip, 80))
            .unwrap_or_else(|e| panic!("the fault proxy cannot listen on {ip}:80: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(handle).with_state(shared);
                let _ = axum::serve(listener, app).await;
            });
        });
        FaultProxy {
            ip: ip.to_string(),
            rules,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.ip)
    }

    pub fn add(&self, rule: Rule) {
        self.rules.lock().unwrap().rules.push((rule, 0));
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().rules.clear();
    }

    /// Requests seen whose `METHOD path?query` contains `part`.
    pub fn seen(&self, part: &str) -> usize {
        self.rules
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.contains(part))
            .count()
    }
}

/// The fault for this request, if a rule says so (and counts it).
fn fault_for(shared: &Shared, method: &str, path: &str) -> Option<Fault> {
    let mut rules = shared.rules.lock().unwrap();
    rules.seen.push(format!("{method} {path}"));
    for (rule, matched) in rules.rules.iter_mut() {
        if (!rule.method.is_empty() && rule.method != method) || !path.contains(rule.path) {
            continue;
        }
        *matched += 1;
        let n = *matched - 1;
        if n < rule.skip {
            return None;
        }
        if rule.times.is_none_or(|t| n - rule.skip < t) {
            return Some(rule.fault);
        }
    }
    None
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let method = request.method().as_str().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    match fault_for(&shared, &method, &path) {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let body = serde_json::json!({"error": {"code": code, "message": "injected by the test's fault proxy"}});
            return (status, axum::Json(body)).into_response();
        }
        Some(Fault::Hang) => return std::future::pending::<Response>().await,
        Some(Fault::FakeSuccess) => {
            let body = serde_json::json!({
                "kind": "storage#object",
                "name": "claimed",
                "bucket": "claimed",
                "size": "0",
                "generation": "1",
                "metageneration": "1",
                "timeCreated": chrono::Utc::now().to_rfc3339(),
            });
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
        None => {}
    }
    forward(&shared, request, &path).await
}

async fn forward(shared: &Shared, request: Request, path: &str) -> Response {
    let (parts, body) = request.into_parts();
    let mut upstream = shared
        .client
        .request(parts.method.clone(), format!("{}{path}", shared.upstream))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in &parts.headers {
        if name != "host" {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name == "location"
            && let Ok(text) = value.to_str()
            && let Ok(rewritten) =
                HeaderValue::from_str(&text.replace(&shared.upstream, &shared.own))
        {
            response = response.header(name, rewritten);
        } else if name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}
