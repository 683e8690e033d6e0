//! `nexusd proxy` on loopback: proxy → nexusd → PostgreSQL end to end with auth passed through,
//! the headers the upstream sees, CORS answered at the edge, bounded bodies, and JSON 502/504 when
//! the upstream is down or slow.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{any, get};
use serde_json::{Value, json};
use support::{Nexusd, http, shared_db};

const TOKEN: &str = "proxy-test-token-0123456789";

/// Starts `nexusd proxy` in front of `upstream` and waits until it answers.
async fn proxy(upstream: &str, vars: &[(&str, &str)]) -> Nexusd {
    let mut all = vec![("NEXUSD_PROXY_UPSTREAM", upstream)];
    all.extend_from_slice(vars);
    let proxy = Nexusd::start("proxy", &all);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http()
        .get(format!("{}/not-forwarded", proxy.api))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "proxy did not start:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy
}

#[tokio::test]
async fn proxy_to_nexusd_to_postgres_with_auth_passed_through() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[("NEXUSD_API_TOKENS", TOKEN)]).await;
    let mut edge = proxy(&nexusd.api, &[]).await;

    let (status, health) = edge.get("/health").await.unwrap();
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    let (status, card) = edge.get("/.well-known/agent.json").await.unwrap();
    assert_eq!(status, 200);
    assert!(card["skills"].as_array().is_some_and(|s| !s.is_empty()));
    let (status, _) = edge.get("/openapi.json").await.unwrap();
    assert_eq!(status, 200);

    let (status, body) = edge.exec("get_repository_list", json!({})).await;
    assert_eq!((status, body["success"].clone()), (200, json!(true)));

    // The VM decides about credentials; the proxy passes Authorization through.
    let lesson = json!({"repository": "via/proxy", "category": "cost", "lesson": "Cache", "context": "slow"});
    let (status, body) = edge.exec("add_lesson_learned", lesson.clone()).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = edge
        .exec_with(
            "add_lesson_learned",
            lesson,
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
    assert_eq!(
        (status, body["success"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let info = edge
        .ok("get_deployment_info", json!({"repository": "via/proxy"}))
        .await;
    assert_eq!(info["lessons_learned"][0]["lesson"], "Cache");

    // Only the API is forwarded.
    let (status, _) = edge.get("/metrics").await.unwrap();
    assert_eq!(status, 404);

    let (status, took) = edge.terminate(Duration::from_secs(15));
    assert!(
        status.success() && took < Duration::from_secs(10),
        "{status} after {took:?}"
    );
}

/// A stand-in upstream that records what it receives.
struct Echo {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn echo() -> Echo {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new()
        .route(
            "/health",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/a2a/execute",
            any(move |headers: HeaderMap, body: String| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let seen: serde_json::Map<String, Value> = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                        .collect();
                    (
                        [
                            ("access-control-allow-origin", "https://upstream.example"),
                            ("x-upstream", "yes"),
                        ],
                        axum::Json(json!({"headers": seen, "body_len": body.len()})),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    Echo {
        url: format!("http://{addr}"),
        hits,
    }
}

#[tokio::test]
async fn headers_cors_limits_and_timeouts_at_the_edge() {
    let upstream = echo().await;
    let edge = proxy(&upstream.url, &[("NEXUSD_PROXY_TIMEOUT", "1")]).await;
    let client = http();

    let response = client
        .post(format!("{}/a2a/execute", edge.api))
        .header("Authorization", "Bearer caller-token")
        .header("X-Forwarded-Proto", "https")
        .header("Origin", "http://localhost:5173")
        .json(&json!({"skill_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-upstream"],
        "yes",
        "upstream headers are passed back"
    );
    let origins: Vec<_> = response
        .headers()
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(
        origins,
        ["http://localhost:5173"],
        "CORS comes from the edge only"
    );
    let seen: Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["authorization"], "Bearer caller-token");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(
        headers["x-forwarded-host"],
        edge.api.trim_start_matches("http://")
    );
    assert!(seen["body_len"].as_u64().unwrap() > 0);

    // Preflights never reach the upstream.
    let before = upstream.hits.load(Ordering::SeqCst);
    let response = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/a2a/execute", edge.api),
        )
        .header("Origin", "https://preview.vercel.app")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://preview.vercel.app"
    );

    // Over 1 MiB: refused at the edge.
    let huge = "x".repeat(1024 * 1024 + 1);
    let response = client
        .post(format!("{}/a2a/execute", edge.api))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["success"], false);
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        before,
        "the upstream was contacted"
    );

    // Slower than NEXUSD_PROXY_TIMEOUT: 504 JSON, promptly.
    let started = Instant::now();
    let (status, body) = edge.get("/health").await.unwrap();
    assert_eq!(status, 504);
    assert_eq!(body["error"], "Upstream timed out after 1 s");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_upstream_is_a_json_502() {
    // A port bound but not listening: connections are refused, and no server another test
    // starts meanwhile can take it (a port that was merely free once could be).
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = format!("http://127.0.0.1:{}", holder.local_addr().unwrap().port());
    let edge = proxy(&closed, &[]).await;
    let (status, body) = edge.get("/health").await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(body["success"], false);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Upstream unavailable: "),
        "{body}"
    );
    let (status, _) = edge.exec("get_repository_list", json!({})).await;
    assert_eq!(status, 502);

    let missing = support::nexusd_command(&["proxy"], &[]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NEXUSD_PROXY_UPSTREAM"));
}
