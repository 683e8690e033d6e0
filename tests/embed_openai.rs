//! The `openai` embeddings provider against a small local HTTP server speaking OpenAI's
//! `/v1/embeddings` protocol (it embeds with the builtin hashing so results are meaningful):
//! batching, a 429 answered by a retry, a slow endpoint turned into a clear timeout error, a
//! wrong key named, `nexusd check` probing it, and embeddings of two providers never mixed.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Nexusd, TestDb, nexusd_command, shared_db};

const KEY: &str = "sk-test-0123456789abcdef";

/// What the stand-in does and saw.
#[derive(Default)]
struct Shared {
    /// Requests still to be turned away with 429.
    throttle: AtomicUsize,
    /// How long to wait before answering.
    delay: Duration,
    /// (Authorization header, request body) of every request.
    seen: Mutex<Vec<(Option<String>, Value)>>,
}

/// An OpenAI-compatible embeddings endpoint on 127.0.0.1, stopped when dropped.
struct StandIn {
    /// Base URL, as NEXUSD_EMBEDDING_URL takes it (`http://127.0.0.1:port/v1`).
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start(throttle: usize, delay: Duration) -> Self {
        let shared = Arc::new(Shared {
            throttle: AtomicUsize::new(throttle),
            delay,
            ..Shared::default()
        });
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        StandIn {
            url: format!("http://{addr}/v1"),
            shared,
            task,
        }
    }

    fn seen(&self) -> Vec<(Option<String>, Value)> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The environment of a nexusd using this endpoint.
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OPENAI_API_KEY", KEY.to_string()),
            ("NEXUSD_EMBEDDING_URL", self.url.clone()),
            ("REQUIRE_AUTH_FOR_WRITE", "false".to_string()),
        ]
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    shared
        .seen
        .lock()
        .unwrap()
        .push((authorization.clone(), body.clone()));
    tokio::time::sleep(shared.delay).await;
    if authorization.as_deref() != Some(&format!("Bearer {KEY}")) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})),
        )
            .into_response();
    }
    if shared
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            axum::Json(json!({"error": {"message": "Rate limit reached", "type": "requests"}})),
        )
            .into_response();
    }
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": nexusd::embed::builtin_embed(text)})
        })
        .collect();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()},
    }))
    .into_response()
}

async fn serve(db: &TestDb, vars: &[(&str, String)]) -> Nexusd {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Nexusd::ready(&db.url(), &vars).await
}

/// Runs `nexusd <args>` against `db`: (success, stdout, stderr). Asynchronously: the stand-in
/// it talks to runs on this test's runtime.
async fn run(db: &TestDb, args: &[&str], vars: &[(&str, String)]) -> (bool, String, String) {
    let url = db.url();
    let mut all = vec![("DATABASE_URL", url.as_str())];
    all.extend(vars.iter().map(|(k, v)| (*k, v.as_str())));
    let output = tokio::process::Command::from(nexusd_command(args, &all))
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn analysis(repository: &str) -> Value {
    json!({"repository": repository, "patterns": [
        {"name": "Token bucket rate limiter", "description": "Limits how many requests each client may send per second", "keywords": ["rate-limiting"]},
        {"name": "JWT bearer authentication", "description": "Verifies signed tokens from the Authorization header"},
        {"name": "Read-through cache", "description": "Serves repeated database reads from Redis"},
    ]})
}

fn failure(body: &Value) -> String {
    assert_eq!(body["success"], false, "expected a failure: {body}");
    body["error"].as_str().unwrap_or_default().to_string()
}

async fn models(pool: &PgPool) -> Vec<(Option<String>, i64)> {
    sqlx::query_as(
        "SELECT embedding_model, count(*) FROM patterns GROUP BY 1 ORDER BY 1 NULLS FIRST",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn openai_provider_batches_retries_a_429_and_records_its_model() {
    let endpoint = StandIn::start(1, Duration::ZERO).await;
    let db = shared_db().await;
    let mut vars = endpoint.vars();
    vars.push(("NEXUSD_EMBEDDING_BACKFILL", "false".into()));
    // OPENAI_API_KEY alone selects the openai provider.
    let nexusd = serve(&db, &vars).await;

    let written = nexusd.ok("record_analysis", analysis("acme/gateway")).await;
    assert_eq!(written["embeddings_computed"], 3, "{written}");
    assert_eq!(written["embedding_model"], "openai:text-embedding-3-small");
    let seen = endpoint.seen();
    assert_eq!(seen.len(), 2, "one 429, then the retry: {seen:?}");
    for (authorization, body) in &seen {
        assert_eq!(
            authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(body["model"], "text-embedding-3-small");
        assert_eq!(body["dimensions"], 1536);
        assert_eq!(body["input"].as_array().unwrap().len(), 3);
    }
    assert_eq!(
        seen[0].1["input"][0],
        "Token bucket rate limiter\n\nLimits how many requests each client may send per second"
    );
    let log = nexusd.log_text();
    assert!(log.contains("retrying"), "{log}");
    assert!(!log.contains(KEY), "the key was logged");
    let pool = db.pool().await;
    assert_eq!(
        models(&pool).await,
        [(Some("openai:text-embedding-3-small".to_string()), 3)]
    );

    // Queries are embedded by the same endpoint.
    let q = nexusd
        .ok(
            "query_patterns",
            json!({"query": "throttle clients sending requests"}),
        )
        .await;
    assert_eq!(q["search_mode"], "hybrid");
    assert_eq!(
        q["similar_patterns"][0]["pattern"],
        "Token bucket rate limiter"
    );
    // Found by its vector too, not by the full-text side alone.
    assert!(
        q["similar_patterns"][0]["matched_by"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("vector"))),
        "{q}"
    );
    assert!(q["similar_patterns"][0]["similarity"].is_f64(), "{q}");
    assert_eq!(endpoint.seen().len(), 3);

    // nexusd embed: 250 patterns in requests of at most 100 inputs.
    sqlx::query(
        "INSERT INTO patterns (repo_id, name, description)
         SELECT r.id, 'bulk ' || i, 'imported pattern ' || i
           FROM generate_series(1, 250) i, repositories r WHERE r.name = 'acme/gateway'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (ok, out, err) = run(&db, &["embed", "--batch-size", "250"], &vars).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("embedded 250 patterns with openai:text-embedding-3-small"),
        "{out}"
    );
    let sizes: Vec<usize> = endpoint.seen()[3..]
        .iter()
        .map(|(_, b)| b["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);

    // nexusd check asks the endpoint and compares what is stored.
    let (ok, out, err) = run(&db, &["check"], &vars).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "ok    embeddings by openai:text-embedding-3-small: {}/embeddings answered",
            endpoint.url
        )),
        "{out}"
    );
    assert!(
        out.contains("ok    253 patterns embedded by openai:text-embedding-3-small"),
        "{out}"
    );
}

#[tokio::test]
async fn a_slow_endpoint_or_a_wrong_key_is_a_clear_error() {
    let slow = StandIn::start(0, Duration::from_secs(5)).await;
    let db = shared_db().await;
    let mut vars = slow.vars();
    vars.push(("NEXUSD_EMBEDDING_TIMEOUT", "1".into()));
    vars.push(("NEXUSD_EMBEDDING_BACKFILL", "false".into()));
    let nexusd = serve(&db, &vars).await;

    let started = Instant::now();
    let (status, body) = nexusd
        .exec("query_patterns", json!({"query": "rate limits"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        failure(&body),
        format!(
            "Cannot embed the query: the embeddings endpoint {}/embeddings \
             did not answer within 1 s (NEXUSD_EMBEDDING_TIMEOUT)",
            slow.url
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a timeout is not retried"
    );
    assert_eq!(slow.seen().len(), 1);

    // A write does not wait for embeddings: it is stored without, and says why.
    let written = nexusd.ok("record_analysis", analysis("acme/slow")).await;
    assert_eq!(written["patterns_written"], 3);
    assert_eq!(written["embeddings_computed"], 0);
    assert!(
        written["embedding_warning"]
            .as_str()
            .is_some_and(|w| w.contains("did not answer within 1 s")),
        "{written}"
    );
    let found = nexusd
        .ok("query_patterns", json!({"keywords": ["rate-limiting"]}))
        .await;
    assert_eq!(found["matches"][0]["repository"], "acme/slow");

    let (ok, out, _) = run(&db, &["check"], &vars).await;
    assert!(!ok);
    assert!(
        out.contains("FAIL  embeddings by openai:text-embedding-3-small: the embeddings endpoint")
            && out.contains("did not answer within 1 s"),
        "{out}"
    );
    drop(nexusd);

    // A key the endpoint refuses: the status, the endpoint's words, what to check; never the key.
    let endpoint = StandIn::start(0, Duration::ZERO).await;
    let wrong = serve(
        &db,
        &[
            ("OPENAI_API_KEY", "sk-wrong-key-0000".into()),
            ("NEXUSD_EMBEDDING_URL", endpoint.url.clone()),
        ],
    )
    .await;
    let (_, body) = wrong
        .exec("find_similar_patterns", json!({"text": "rate limits"}))
        .await;
    let error = failure(&body);
    assert!(
        error.contains("answered HTTP 401 Unauthorized")
            && error.contains("Incorrect API key provided")
            && error.contains("(check OPENAI_API_KEY)")
            && !error.contains("sk-wrong"),
        "{error}"
    );

    // openai against OpenAI itself needs a key: refused at start, naming the variable.
    let output = nexusd_command(
        &["serve"],
        &[
            ("DATABASE_URL", &db.url()),
            ("NEXUSD_EMBEDDING_PROVIDER", "openai"),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OPENAI_API_KEY: is not set"), "{stderr}");
}

#[tokio::test]
async fn embeddings_of_two_providers_are_never_mixed() {
    let endpoint = StandIn::start(0, Duration::ZERO).await;
    let db = shared_db().await;
    let pool = db.pool().await;

    // Embedded by builtin first.
    let builtin = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    builtin
        .ok("record_analysis", analysis("acme/gateway"))
        .await;
    drop(builtin);

    // Then served with openai: queries that would compare the two are refused.
    let vars = endpoint.vars();
    let openai = serve(&db, &vars).await;
    let refusal = |body: &Value| {
        let error = failure(body);
        assert!(
            error.contains("embeddings made by builtin:hash-ngrams-v1 (3 patterns)")
                && error.contains("configured for openai:text-embedding-3-small")
                && error.contains("Run `nexusd embed --reembed`"),
            "{error}"
        );
    };
    let (_, body) = openai
        .exec("query_patterns", json!({"query": "rate limits"}))
        .await;
    refusal(&body);
    let (_, body) = openai
        .exec("find_similar_patterns", json!({"text": "rate limits"}))
        .await;
    refusal(&body);
    // Stored vectors compared with each other are still one model's: allowed.
    let id: i32 = sqlx::query_scalar("SELECT min(id) FROM patterns")
        .fetch_one(&pool)
        .await
        .unwrap();
    let by_id = openai
        .ok(
            "find_similar_patterns",
            json!({"pattern_id": id, "min_similarity": 0}),
        )
        .await;
    assert_eq!(by_id["embedding_model"], "builtin:hash-ngrams-v1");

    // Writes go in without embeddings rather than mix, and say so; the backfill does not mix
    // either.
    let written = openai
        .ok(
            "record_analysis",
            json!({"repository": "acme/orders", "patterns": [{"name": "Outbox", "description": "Events in the same transaction"}]}),
        )
        .await;
    assert_eq!(written["embeddings_computed"], 0);
    assert!(
        written["embedding_warning"]
            .as_str()
            .is_some_and(|w| w.contains("nexusd embed --reembed")),
        "{written}"
    );
    assert_eq!(
        models(&pool).await,
        [(None, 1), (Some("builtin:hash-ngrams-v1".to_string()), 3)]
    );
    assert!(
        openai
            .log_text()
            .contains("Searches by meaning are refused until then")
    );

    // nexusd embed refuses to add a second model; --reembed replaces the first.
    let (ok, _, err) = run(&db, &["embed"], &vars).await;
    assert!(!ok);
    assert!(
        err.contains("builtin:hash-ngrams-v1 (3 patterns)") && err.contains("--reembed"),
        "{err}"
    );
    let (ok, out, err) = run(&db, &["embed", "--reembed"], &vars).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("embedded 4 patterns with openai:text-embedding-3-small"),
        "{out}"
    );
    assert_eq!(
        models(&pool).await,
        [(Some("openai:text-embedding-3-small".to_string()), 4)]
    );
    let q = openai
        .ok(
            "query_patterns",
            json!({"query": "throttle client requests"}),
        )
        .await;
    assert_eq!(
        q["similar_patterns"][0]["pattern"],
        "Token bucket rate limiter"
    );
    drop(openai);

    // And back: builtin now refuses, naming openai.
    let builtin = Nexusd::ready(&db.url(), &[]).await;
    let (_, body) = builtin
        .exec("find_similar_patterns", json!({"text": "rate limits"}))
        .await;
    assert!(
        failure(&body).contains("openai:text-embedding-3-small (4 patterns)"),
        "{body}"
    );
}
