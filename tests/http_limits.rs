//! Connection limits of every nexusd listener over raw sockets against the real binary: a client
//! that sends nothing or drips its headers is disconnected after `NEXUSD_HTTP_HEADER_TIMEOUT`, a
//! keep-alive connection survives pauses between requests and is closed after
//! `NEXUSD_HTTP_IDLE_TIMEOUT`, a stalled body is answered 408 after `NEXUSD_HTTP_BODY_TIMEOUT`,
//! a malformed body is a 400 (not "too large"), and connections over
//! `NEXUSD_HTTP_MAX_CONNECTIONS` are answered 503 at once while nexusd holds no more sockets than
//! the cap — the skills API, `/metrics` and `nexusd proxy` alike.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Nexusd, free_port, http, shared_db};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous upper bound for anything the server should do within a few seconds.
const BOUND: Duration = Duration::from_secs(20);

const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: nexusd\r\n\r\n";

/// `10000000000` bytes announced, `{"skill_id":` (12 bytes) sent.
const STALLED_BODY: &[u8] = b"POST /a2a/execute HTTP/1.1\r\nHost: nexusd\r\n\
Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{\"skill_id\":";

/// A chunked body whose first chunk size is not hexadecimal.
const BAD_CHUNK: &[u8] = b"POST /a2a/execute HTTP/1.1\r\nHost: nexusd\r\n\
Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";

fn host_port(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// What became of a connection the test stopped writing to.
struct Outcome {
    bytes: Vec<u8>,
    closed: bool,
    after: Duration,
}

/// Reads until the server closes the connection (end of stream or reset) or `limit` passes.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Outcome {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let read = tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await;
        match read {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    Outcome {
        bytes,
        closed,
        after: started.elapsed(),
    }
}

/// Status and JSON body of one complete response in `bytes`, if there is one.
fn parse_response(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if body.len() < length {
        return None;
    }
    Some((
        status,
        serde_json::from_str(&body[..length]).unwrap_or(Value::Null),
    ))
}

/// Reads one response from a connection that stays open (keep-alive).
async fn read_response(stream: &mut TcpStream) -> (u16, Value) {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(response) = parse_response(&bytes) {
            return response;
        }
        let read = tokio::time::timeout_at((started + BOUND).into(), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            other => panic!(
                "no complete response within {BOUND:?} ({other:?}); got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
}

/// Sends `request` on a new connection and reads the one answer.
async fn exchange(addr: &str, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    stream.write_all(request).await.expect("sending");
    read_response(&mut stream).await
}

/// Sockets (TCP connections and listeners) the process holds.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("reading /proc/<pid>/fd")
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// A connection that never sends anything is closed, with no answer, on `addr`.
async fn assert_silent_connection_closed(addr: &str, what: &str) {
    let mut silent = TcpStream::connect(addr).await.expect("connecting");
    let outcome = read_until_closed(&mut silent, BOUND).await;
    assert!(
        outcome.closed && outcome.bytes.is_empty(),
        "{what}: a connection that sent nothing was still open after {:?}",
        outcome.after
    );
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_keep_alive_outlasts_the_header_timeout() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_HTTP_HEADER_TIMEOUT", "1"),
            ("NEXUSD_HTTP_IDLE_TIMEOUT", "5"),
        ],
    )
    .await;
    let api = host_port(&nexusd.api);
    assert_silent_connection_closed(&api, "skills API").await;
    assert_silent_connection_closed(&host_port(&nexusd.metrics), "metrics").await;

    // Headers dripped a byte at a time never finish: the client is cut off.
    let mut slow = TcpStream::connect(&api).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: nexusd\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let cut_off = loop {
        assert!(
            started.elapsed() < BOUND,
            "a client dripping its headers was never disconnected"
        );
        if slow.write_all(b"X").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => panic!(
                "answered an unfinished request: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    };
    assert!(
        cut_off < Duration::from_secs(10),
        "cut off after {cut_off:?}"
    );

    // A keep-alive connection may pause longer than the header timeout between requests...
    let mut keep = TcpStream::connect(&api).await.unwrap();
    keep.write_all(GET_HEALTH).await.unwrap();
    assert_eq!(read_response(&mut keep).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    keep.write_all(GET_HEALTH).await.unwrap();
    assert_eq!(
        read_response(&mut keep).await.0,
        200,
        "a pause between requests cut the connection"
    );
    // ...and is closed once idle for longer than the idle timeout.
    let idle = read_until_closed(&mut keep, BOUND).await;
    assert!(
        idle.closed && idle.bytes.is_empty(),
        "an idle keep-alive connection was still open after {:?}",
        idle.after
    );
    assert!(
        idle.after >= Duration::from_secs(4),
        "closed after {:?}, before the idle timeout",
        idle.after
    );
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_the_server_stays_healthy() {
    let db = shared_db().await;
    let vars = [("NEXUSD_HTTP_BODY_TIMEOUT", "2")];
    let nexusd = Nexusd::ready(&db.url(), &vars).await;
    let edge = proxy(&nexusd.api, &vars).await;

    for (what, base) in [("skills API", &nexusd.api), ("proxy", &edge.api)] {
        let started = Instant::now();
        let (status, body) = exchange(&host_port(base), STALLED_BODY).await;
        assert_eq!(status, 408, "{what}: {body}");
        assert_eq!(body["success"], false, "{what}: {body}");
        assert_eq!(
            body["error"], "Request body timed out: not received within 2 s",
            "{what}"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{what}: answered before the body timeout"
        );
    }
    let (status, health) = nexusd.get("/health").await.expect("/health answers");
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
}

#[tokio::test]
async fn a_malformed_body_is_a_400_not_a_413() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    let edge = proxy(&nexusd.api, &[]).await;

    for (what, base) in [("skills API", &nexusd.api), ("proxy", &edge.api)] {
        let (status, body) = exchange(&host_port(base), BAD_CHUNK).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["success"], false, "{what}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Invalid request body: ") && error.contains("chunk"),
            "{what}: {body}"
        );
    }
    // Too large is still a 413.
    let client = http();
    let response = client
        .post(format!("{}/a2a/execute", nexusd.api))
        .body("x".repeat(1024 * 1024 + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once_and_sockets_stay_bounded() {
    const CAP: usize = 20;
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_HTTP_MAX_CONNECTIONS", "20"),
            ("NEXUSD_HTTP_HEADER_TIMEOUT", "6"),
        ],
    )
    .await;
    let api = host_port(&nexusd.api);
    let pid = nexusd.child.id();
    // Let the readiness probe's connection close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sockets(pid);

    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(TcpStream::connect(&api).await.expect("connecting"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak = sockets(pid);
    // The cap, plus refused connections being answered and a little slack for the pool.
    assert!(
        peak <= before + CAP + 4 + 4,
        "60 idle sockets made nexusd hold {} sockets (before: {before})",
        peak
    );

    // Over the cap: a 503 or a close at once, long before the header timeout.
    let outcomes = futures_util::future::join_all(
        idle.iter_mut()
            .map(|s| read_until_closed(s, Duration::from_secs(3))),
    )
    .await;
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.closed).collect();
    assert!(
        refused.len() >= 60 - CAP - 1 && refused.len() <= 60 - CAP,
        "{} of 60 connections refused at once with a cap of {CAP}",
        refused.len()
    );
    for outcome in refused.iter().filter(|o| !o.bytes.is_empty()) {
        let (status, body) = parse_response(&outcome.bytes).expect("a complete answer");
        assert_eq!((status, body["success"].as_bool()), (503, Some(false)));
    }
    assert!(sockets(pid) <= before + CAP + 4);

    // A client arriving now is told at once, not left hanging. Raw TCP rather than an HTTP
    // client: on a loaded machine the request can reach the server after its wait for it, and
    // then the 503 comes first, which an HTTP client reports as a broken connection.
    let mut late = TcpStream::connect(host_port(&nexusd.api))
        .await
        .expect("connecting at the cap");
    late.write_all(b"GET /health HTTP/1.1\r\nHost: nexusd\r\n\r\n")
        .await
        .expect("sending at the cap");
    let outcome = read_until_closed(&mut late, Duration::from_secs(3)).await;
    assert!(outcome.closed, "a client at the cap was left hanging");
    let (status, body) = parse_response(&outcome.bytes).expect("an answer at the cap");
    assert_eq!((status, body["success"].as_bool()), (503, Some(false)));

    // The held connections are closed by the header timeout; then /health answers again.
    for stream in idle.iter_mut() {
        let outcome = read_until_closed(stream, BOUND).await;
        assert!(outcome.closed, "a held connection was never closed");
    }
    drop(idle);
    nexusd.wait_health(200, BOUND).await;
}

#[tokio::test]
async fn the_proxy_closes_silent_connections_too() {
    let upstream = format!("http://127.0.0.1:{}", free_port());
    let edge = proxy(&upstream, &[("NEXUSD_HTTP_HEADER_TIMEOUT", "1")]).await;
    assert_silent_connection_closed(&host_port(&edge.api), "proxy").await;
}

/// Starts `nexusd proxy` in front of `upstream` and waits until it answers.
async fn proxy(upstream: &str, vars: &[(&str, &str)]) -> Nexusd {
    let mut all = vec![("NEXUSD_PROXY_UPSTREAM", upstream)];
    all.extend_from_slice(vars);
    let proxy = Nexusd::start("proxy", &all);
    let deadline = Instant::now() + BOUND;
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
