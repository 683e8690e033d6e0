//! `nexusd proxy`: what Cloud Run runs in front of the VM. A small reverse proxy that forwards the
//! skills API (`/a2a/*`, `/.well-known/agent.json`, `/health`, `/`, `/openapi.json`) to the VM's
//! nexusd through the VPC connector: the caller's `Authorization` passes through untouched (the
//! VM verifies it), `X-Forwarded-*` are added, CORS is answered at the edge, bodies are bounded
//! in size and time, connections get the `NEXUSD_HTTP_*` timeouts and cap (`http::server`), and
//! an unreachable or slow VM becomes a JSON 502 or 504 instead of a hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::Response;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::env::{ConfigErrors, Env, Var};
use crate::http::body::{BodyError, read_body};
use crate::http::cors::{self, CorsConfig};
use crate::http::{HttpConfig, MAX_BODY_BYTES, json_response};
use crate::telemetry::error_chain;
use crate::telemetry::trace::{TraceContext, request_span};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_PROXY_UPSTREAM",
        default: "required by proxy",
        meaning: "the nexusd that `nexusd proxy` forwards to, e.g. http://10.8.0.2:8080",
    },
    Var {
        name: "NEXUSD_PROXY_TIMEOUT",
        default: "60",
        meaning: "seconds the proxy waits for the upstream before answering 504",
    },
];

/// `nexusd proxy`: where to forward and how long to wait.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `NEXUSD_PROXY_UPSTREAM` (required): the VM's nexusd, e.g. `http://10.8.0.2:8080`.
    pub upstream: String,
    /// `NEXUSD_PROXY_TIMEOUT` seconds (default 60): a slower upstream answer becomes a 504.
    pub timeout: std::time::Duration,
    /// `NEXUSD_HTTP_*`: the edge's connection timeouts, cap and body deadline.
    pub http: HttpConfig,
}

impl ProxyConfig {
    /// The variables reading the proxy's configuration asks for, for tests.
    #[cfg(test)]
    pub fn variables_read() -> Vec<&'static str> {
        let lookup = |_: &str| None;
        let mut env = Env::new(&lookup);
        let _ = Self::read(&mut env);
        env.read()
    }

    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut env = Env::new(&lookup);
        let config = Self::read(&mut env);
        env.finish(config)
    }

    fn read(env: &mut Env<'_>) -> Option<Self> {
        let present = env.get("NEXUSD_PROXY_UPSTREAM").is_some();
        let upstream = env.url("NEXUSD_PROXY_UPSTREAM");
        if !present {
            env.error(
                "NEXUSD_PROXY_UPSTREAM",
                "is not set: `nexusd proxy` needs the URL of the nexusd it fronts, e.g. http://10.8.0.2:8080",
            );
        }
        let timeout: Option<u64> = env.parse_or(
            "NEXUSD_PROXY_TIMEOUT",
            "60",
            "a number of seconds, 1 to 3600",
        );
        if timeout.is_some_and(|t| !(1..=3600).contains(&t)) {
            env.error(
                "NEXUSD_PROXY_TIMEOUT",
                "expected a number of seconds, 1 to 3600",
            );
        }
        let http = HttpConfig::from_env(env);
        Some(ProxyConfig {
            upstream: upstream?,
            timeout: std::time::Duration::from_secs(timeout?),
            http,
        })
    }
}

/// Largest upstream response passed on (the agent card is the biggest, tens of kB).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled upstream connections are dropped after this much idleness: below the upstream's own
/// idle timeout (`NEXUSD_HTTP_IDLE_TIMEOUT`, 60 s by default), so the proxy does not pick a
/// connection the VM is closing at that very moment.
const UPSTREAM_IDLE: Duration = Duration::from_secs(30);

/// Paths forwarded to the VM; everything else is answered 404 at the edge.
fn forwarded(path: &str) -> bool {
    matches!(
        path,
        "/" | "/health" | "/.well-known/agent.json" | "/openapi.json"
    ) || path.starts_with("/a2a/")
}

/// Headers that describe one hop, not the message: never forwarded in either direction.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

struct Proxy {
    upstream: String,
    timeout: Duration,
    body_timeout: Duration,
    client: reqwest::Client,
}

/// The proxy's routes, CORS included.
pub fn router(config: &ProxyConfig, cors: CorsConfig) -> Result<Router> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(UPSTREAM_IDLE)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the proxy's HTTP client")?;
    let proxy = Arc::new(Proxy {
        upstream: config.upstream.clone(),
        timeout: config.timeout,
        body_timeout: config.http.body_timeout,
        client,
    });
    Ok(Router::new()
        .fallback(forward)
        .with_state(proxy)
        .layer(middleware::from_fn_with_state(Arc::new(cors), cors::layer)))
}

/// Serves the proxy on `addr` until `shutdown`.
pub async fn run(
    addr: SocketAddr,
    config: ProxyConfig,
    cors: CorsConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let app = router(&config, cors)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (NEXUSD_API_ADDR or PORT)"))?;
    tracing::info!(%addr, upstream = %config.upstream, timeout = ?config.timeout, "proxy listening");
    crate::systemd::notify_ready();
    crate::http::server::serve(listener, app, config.http, shutdown).await;
    tracing::info!("proxy stopped");
    Ok(())
}

fn error(status: StatusCode, message: String) -> Response {
    json_response(status, json!({"success": false, "error": message}))
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    use tracing::Instrument;
    // Cloud Run sets the trace headers: the proxy's lines join the request's trace (and the
    // headers go on upstream, so the VM's lines do too).
    let trace = trace_of(request.headers());
    forward_in_span(proxy, request)
        .instrument(request_span(trace.as_ref()))
        .await
}

async fn forward_in_span(proxy: Arc<Proxy>, request: Request) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    if !forwarded(&path) {
        return json_response(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = request.into_parts();
    let body = match read_request_body(body, proxy.body_timeout).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{}{path}{query}", proxy.upstream);
    let method = match reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed".into()),
    };
    let headers = upstream_headers(&parts.headers, peer);
    let call = proxy
        .client
        .request(method, &url)
        .headers(headers)
        .body(body)
        .timeout(proxy.timeout)
        .send();
    let response = match call.await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            tracing::warn!(%path, timeout = ?proxy.timeout, "upstream timed out");
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("Upstream timed out after {} s", proxy.timeout.as_secs()),
            );
        }
        Err(e) => {
            tracing::warn!(%path, error = %error_chain(&e), "upstream unreachable");
            return error(
                StatusCode::BAD_GATEWAY,
                format!("Upstream unavailable: {}", error_chain(&e)),
            );
        }
    };
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let out_headers = response_headers(response.headers());
    let bytes = match read_limited(response, proxy.timeout.saturating_sub(started.elapsed())).await
    {
        Ok(bytes) => bytes,
        Err(message) => return error(StatusCode::BAD_GATEWAY, message),
    };
    tracing::info!(%path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "proxied");
    let mut reply = Response::new(Body::from(bytes));
    *reply.status_mut() = status;
    *reply.headers_mut() = out_headers;
    reply
}

/// The caller's body, bounded in size and time; a refusal is the JSON answer to send instead.
async fn read_request_body(body: Body, deadline: Duration) -> Result<bytes::Bytes, Response> {
    read_body(body, MAX_BODY_BYTES, deadline)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large: the limit is 1 MiB".into(),
            ),
            BodyError::Malformed(why) => error(
                StatusCode::BAD_REQUEST,
                format!("Invalid request body: {why}"),
            ),
            BodyError::TimedOut(after) => error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "Request body timed out: not received within {} s",
                    after.as_secs()
                ),
            ),
        })
}

/// The upstream response's headers passed back: hop-by-hop ones, the VM's CORS headers (CORS is
/// the edge's business, answered by our layer) and its length (the body is re-framed) dropped.
fn response_headers(upstream: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in upstream {
        let name = name.as_str();
        if HOP_BY_HOP.contains(&name)
            || name.starts_with("access-control-")
            || name == "vary"
            || name == "content-length"
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    headers
}

/// The upstream request's headers: the caller's (Authorization included) minus hop-by-hop ones,
/// plus `X-Forwarded-For/-Proto/-Host`.
fn upstream_headers(
    incoming: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in incoming {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || n == "host"
            || n == "content-length"
            || n.starts_with("x-forwarded-")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(n.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    let get = |name: &str| {
        incoming
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Cloud Run's front end already set X-Forwarded-For/-Proto for the original caller; extend them.
    let forwarded_for = match (get("x-forwarded-for"), peer) {
        (Some(chain), Some(ip)) => format!("{chain}, {ip}"),
        (Some(chain), None) => chain,
        (None, Some(ip)) => ip.to_string(),
        (None, None) => String::new(),
    };
    let mut set = |name: &'static str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && let Ok(v) = reqwest::header::HeaderValue::from_str(&v)
        {
            headers.insert(name, v);
        }
    };
    set("x-forwarded-for", Some(forwarded_for));
    set(
        "x-forwarded-proto",
        get("x-forwarded-proto").or_else(|| Some("http".into())),
    );
    set("x-forwarded-host", get(header::HOST.as_str()));
    headers
}

/// Reads the upstream body, bounded in size and in time.
async fn read_limited(
    mut response: reqwest::Response,
    time_left: Duration,
) -> Result<Vec<u8>, String> {
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("Upstream broke off: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("Upstream response too large".to_string());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(time_left, read)
        .await
        .unwrap_or_else(|_| Err("Upstream timed out while sending its response".into()))
}

/// The request's trace, from the headers Cloud Run sets.
fn trace_of(headers: &HeaderMap) -> Option<TraceContext> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    TraceContext::from_headers(header("traceparent"), header("x-cloud-trace-context"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_is_forwarded() {
        for path in [
            "/",
            "/health",
            "/.well-known/agent.json",
            "/openapi.json",
            "/a2a/execute",
            "/a2a/cancel",
        ] {
            assert!(forwarded(path), "{path}");
        }
        for path in ["/metrics", "/admin", "/a2a", "/healthz"] {
            assert!(!forwarded(path), "{path}");
        }
    }

    #[test]
    fn forwarded_headers_extend_the_chain_and_drop_hop_by_hop() {
        let mut incoming = HeaderMap::new();
        incoming.insert("authorization", HeaderValue::from_static("Bearer abc"));
        incoming.insert("connection", HeaderValue::from_static("keep-alive"));
        incoming.insert("host", HeaderValue::from_static("proxy.run.app"));
        incoming.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        incoming.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let out = upstream_headers(&incoming, Some("10.8.1.3".parse().unwrap()));
        assert_eq!(out["authorization"], "Bearer abc");
        assert!(out.get("connection").is_none());
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 10.8.1.3");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-host"], "proxy.run.app");
        assert!(
            out.get("host").is_none(),
            "reqwest sets the upstream's own Host"
        );
    }
}
