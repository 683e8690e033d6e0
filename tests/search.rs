//! Search and ingestion over real HTTP against a real database, with the builtin embedder:
//! `record_analysis` writes what every reader then sees; `query_patterns`' `query` finds patterns
//! by what their descriptions say; `find_similar_patterns` by pattern and by text; the vector
//! query uses the HNSW index; `nexusd embed` and the serve backfill embed imported patterns.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Nexusd, TestDb, nexusd_command, shared_db};

const TOKEN: &str = "search-test-token-0123456789";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// A nexusd with an API token for the protected writes.
async fn nexusd(db: &TestDb, extra: &[(&str, &str)]) -> Nexusd {
    let mut vars = vec![("NEXUSD_API_TOKENS", TOKEN)];
    vars.extend_from_slice(extra);
    Nexusd::ready(&db.url(), &vars).await
}

async fn record(nexusd: &Nexusd, analysis: Value) -> Value {
    let (status, body) = nexusd
        .exec_with("record_analysis", analysis.clone(), Some(&bearer()))
        .await;
    assert!(
        status == 200 && body["success"] == true,
        "record_analysis {analysis} failed: {status} {body}"
    );
    body
}

fn failure(body: &Value) -> String {
    assert_eq!(body["success"], false, "expected a failure: {body}");
    body["error"].as_str().unwrap_or_default().to_string()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|p| p["pattern"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Six patterns of three services, each description in plain words.
fn catalogue() -> Vec<(&'static str, Value)> {
    vec![
        (
            "acme/gateway",
            json!([
                {"name": "Token bucket rate limiter",
                 "description": "Limits how many requests each client may send per second; excess requests are throttled with HTTP 429",
                 "context": "Edge proxy in front of the public API",
                 "keywords": ["rate-limiting", "http"]},
                {"name": "JWT bearer authentication",
                 "description": "Verifies signed JSON Web Tokens from the Authorization header before handlers run and rejects expired ones",
                 "keywords": ["auth", "jwt"]},
            ]),
        ),
        (
            "acme/orders",
            json!([
                {"name": "Transactional outbox",
                 "description": "Writes domain events to an outbox table in the same database transaction and publishes them to the message broker afterwards",
                 "keywords": ["events", "messaging"]},
                {"name": "Circuit breaker",
                 "description": "Stops calling a failing downstream service after repeated errors and tries again after a cool-down period",
                 "keywords": ["resilience"]},
            ]),
        ),
        (
            "acme/catalog",
            json!([
                {"name": "Read-through cache",
                 "description": "Serves repeated database reads from Redis with a time-to-live and invalidates entries on writes",
                 "keywords": ["caching", "redis"]},
                {"name": "Blue-green deployment",
                 "description": "Deploys the new version beside the old one and switches traffic once health checks pass",
                 "keywords": ["deployment"]},
            ]),
        ),
    ]
}

async fn record_catalogue(nexusd: &Nexusd) {
    for (repository, patterns) in catalogue() {
        record(
            nexusd,
            json!({"repository": repository, "problem_domain": format!("{repository} service"), "patterns": patterns}),
        )
        .await;
    }
}

async fn pattern_id(pool: &PgPool, repository: &str, name: &str) -> i32 {
    sqlx::query_scalar(
        "SELECT p.id FROM patterns p JOIN repositories r ON r.id = p.repo_id
          WHERE r.name = $1 AND p.name = $2",
    )
    .bind(repository)
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("pattern {repository} / {name}: {e}"))
}

/// (patterns, with an embedding, by the builtin model)
async fn embedding_counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(embedding),
                count(*) FILTER (WHERE embedding_model = 'builtin:hash-ngrams-v1') FROM patterns",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn record_analysis_is_one_write_that_every_reader_sees() {
    let db = shared_db().await;
    let nexusd = nexusd(&db, &[]).await;
    let analysis = json!({
        "repository": "acme/payments",
        "problem_domain": "Card payments for the web shop",
        "commit_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "patterns": [
            {"name": "Idempotency keys", "description": "Stores the first response per Idempotency-Key header and replays it to retries",
             "context": "POST /charges", "keywords": ["Idempotency", "retry", "payments", " retry "]},
            {"name": "Retry with backoff", "description": "Retries failed calls to the card processor with exponential backoff and jitter",
             "keywords": ["retry", "resilience"]},
            {"name": "Ledger in PostgreSQL", "keywords": ["postgres"]},
        ],
        "technical_decisions": [{"what": "PostgreSQL for the ledger", "why": "Transactions", "alternatives": ["DynamoDB", "MongoDB"]}],
        "reusable_components": [{"name": "RetryClient", "purpose": "HTTP client with backoff", "location": "src/retry.rs", "language": "rust"}],
    });

    // A protected write.
    let (status, body) = nexusd.exec("record_analysis", analysis.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("Authentication required"))
    );

    let written = record(&nexusd, analysis.clone()).await;
    assert_eq!(written["repository"], "acme/payments");
    assert!(written["repository_id"].as_i64().is_some());
    assert_eq!(written["patterns_written"], 3);
    assert_eq!(written["embeddings_computed"], 3);
    assert_eq!(written["embedding_model"], "builtin:hash-ngrams-v1");
    assert_eq!(written["decisions_written"], 1);
    assert_eq!(written["components_written"], 1);
    assert_eq!(written["keywords_linked"], 6);
    let first_analysis = written["analysis_id"].as_i64().expect("analysis_id");

    // Keyword search finds it through pattern_keywords (keywords stored lower-case, once).
    let q = nexusd
        .ok(
            "query_patterns",
            json!({"keywords": ["RETRY", "idempotency"]}),
        )
        .await;
    let m = &q["matches"][0];
    assert_eq!(m["repository"], "acme/payments");
    assert_eq!(m["matched_keywords"], json!(["idempotency", "retry"]));
    assert_eq!(
        m["all_keywords"],
        json!(["idempotency", "payments", "postgres", "resilience", "retry"])
    );
    let list = nexusd.ok("get_repository_list", json!({})).await;
    let repo = &list["repositories"][0];
    assert_eq!(
        (
            &repo["name"],
            &repo["pattern_count"],
            &repo["problem_domain"]
        ),
        (
            &json!("acme/payments"),
            &json!(3),
            &json!("Card payments for the web shop")
        )
    );
    let actions = nexusd
        .ok("get_recent_actions", json!({"action_types": ["analysis"]}))
        .await;
    assert_eq!(actions["actions"][0]["repository"], "acme/payments");
    assert_eq!(
        actions["actions"][0]["reference_id"],
        "9fceb02d0ae598e95dc970b74767f19372d61af8"
    );
    assert_eq!(actions["actions"][0]["metadata"]["patterns_count"], 3);
    let by_name = nexusd
        .ok("query_patterns", json!({"patterns": ["idempotency keys"]}))
        .await;
    let components = &by_name["matches"][0]["reusable_components"];
    assert_eq!(components[0]["name"], "RetryClient", "{by_name}");
    let pool = db.pool().await;
    let decision: (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT what, why, alternatives FROM technical_decisions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        decision,
        (
            "PostgreSQL for the ledger".to_string(),
            Some("Transactions".to_string()),
            Some("DynamoDB, MongoDB".to_string())
        )
    );

    // Another repository sharing a pattern: cross-repository patterns see both.
    record(
        &nexusd,
        json!({"repository": "acme/refunds", "patterns": [{"name": "Idempotency keys", "description": "Same as payments"}]}),
    )
    .await;
    let shared = nexusd
        .ok("get_cross_repo_patterns", json!({"min_repos": 2}))
        .await;
    assert_eq!(
        shared["cross_repo_patterns"],
        json!([{"pattern": "Idempotency keys", "repositories": ["acme/payments", "acme/refunds"], "repo_count": 2}])
    );

    // The same analysis again writes nothing but its history row.
    let again = record(&nexusd, analysis.clone()).await;
    assert_eq!(
        (
            &again["patterns_written"],
            &again["patterns_unchanged"],
            &again["embeddings_computed"],
            &again["keywords_linked"]
        ),
        (&json!(0), &json!(3), &json!(0), &json!(0))
    );
    assert!(again["analysis_id"].as_i64() > Some(first_analysis));

    // A changed description re-embeds that pattern only; a missing one keeps what is stored.
    let before: Option<String> = sqlx::query_scalar(
        "SELECT embedding::text FROM patterns WHERE name = 'Retry with backoff'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let changed = record(
        &nexusd,
        json!({"repository": "acme/payments", "patterns": [
            {"name": "Retry with backoff", "description": "Retries with exponential backoff, at most five times"},
            {"name": "Idempotency keys"},
        ]}),
    )
    .await;
    assert_eq!(
        (
            &changed["patterns_written"],
            &changed["embeddings_computed"]
        ),
        (&json!(1), &json!(1))
    );
    let after: Option<String> = sqlx::query_scalar(
        "SELECT embedding::text FROM patterns WHERE name = 'Retry with backoff'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(after.is_some() && after != before);
    assert_eq!(embedding_counts(&pool).await, (4, 4, 4));

    // replace: what is not listed goes, and keywords become exactly the listed ones.
    let replaced = record(
        &nexusd,
        json!({"repository": "acme/payments", "replace": true,
               "patterns": [{"name": "Idempotency keys", "keywords": ["idempotency"]}],
               "technical_decisions": [], "reusable_components": []}),
    )
    .await;
    assert_eq!(
        replaced["removed"],
        json!({"patterns": 2, "decisions": 1, "components": 1})
    );
    let q = nexusd
        .ok("query_patterns", json!({"keywords": ["retry"]}))
        .await;
    assert_eq!(q["matches"], json!([]), "{q}");
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM analysis_history h JOIN repositories r ON r.id = h.repo_id
          WHERE r.name = 'acme/payments'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(history, 4);

    // Bad input is refused with the field named, and nothing is written.
    let invalid = |input: Value| {
        let nexusd = &nexusd;
        async move {
            let (status, body) = nexusd
                .exec_with("record_analysis", input, Some(&bearer()))
                .await;
            assert_eq!(status, 200);
            failure(&body)
        }
    };
    assert_eq!(
        invalid(json!({"patterns": []})).await,
        "Missing required parameter: 'repository'"
    );
    assert_eq!(
        invalid(json!({"repository": "acme/x", "patterns": [{"description": "no name"}]})).await,
        "Invalid parameter 'patterns[0]': missing required field 'name'"
    );
    assert_eq!(
        invalid(json!({"repository": "acme/x", "patterns": [{"name": "A"}, {"name": " A "}]}))
            .await,
        "Invalid parameter 'patterns[1]': \"A\" is listed twice"
    );
    let repos: i64 = sqlx::query_scalar("SELECT count(*) FROM repositories WHERE name = 'acme/x'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(repos, 0);
}

#[tokio::test]
async fn free_text_query_finds_patterns_by_what_their_descriptions_say() {
    let db = shared_db().await;
    let nexusd = nexusd(&db, &[]).await;
    record_catalogue(&nexusd).await;

    // None of these queries shares a phrase with the pattern's name; the description carries
    // the words.
    for (query, expected) in [
        (
            "throttle clients that send too many requests",
            "Token bucket rate limiter",
        ),
        (
            "check signed tokens in the authorization header",
            "JWT bearer authentication",
        ),
        (
            "publish events to the broker within the database transaction",
            "Transactional outbox",
        ),
        (
            "stop calling a downstream service that keeps failing",
            "Circuit breaker",
        ),
        ("switch traffic to the new version", "Blue-green deployment"),
    ] {
        let q = nexusd
            .ok("query_patterns", json!({"query": query, "limit": 3}))
            .await;
        assert_eq!(q["search_mode"], "hybrid");
        assert_eq!(q["search_criteria"]["query"], query);
        assert_eq!(q["matches"], json!([]));
        let similar = &q["similar_patterns"];
        assert_eq!(names(similar)[0], expected, "query {query:?}: {similar}");
        let top = &similar[0];
        assert_eq!(top["rank"], 1);
        assert!(top["pattern_id"].as_i64().is_some());
        assert!(
            top["repository"]
                .as_str()
                .is_some_and(|r| r.starts_with("acme/"))
        );
        assert!(top["description"].as_str().is_some());
        assert!(
            top["similarity"]
                .as_f64()
                .is_some_and(|s| s > 0.0 && s <= 1.0),
            "{top}"
        );
        assert_eq!(top["matched_by"], json!(["vector", "full_text"]), "{top}");
        assert!(similar.as_array().unwrap().len() <= 3);
    }

    // Combined with keywords, both answers come back.
    let q = nexusd
        .ok(
            "query_patterns",
            json!({"keywords": ["redis"], "query": "cache database reads"}),
        )
        .await;
    assert_eq!(q["matches"][0]["repository"], "acme/catalog");
    assert_eq!(names(&q["similar_patterns"])[0], "Read-through cache");

    // A pattern that has no embedding yet is still found, by its words.
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO patterns (repo_id, name, description)
         SELECT id, 'Saga orchestration', 'Coordinates a distributed business transaction with compensating steps'
           FROM repositories WHERE name = 'acme/orders'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let q = nexusd
        .ok(
            "query_patterns",
            json!({"query": "compensating steps for a distributed transaction"}),
        )
        .await;
    let saga = q["similar_patterns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pattern"] == "Saga orchestration")
        .unwrap_or_else(|| panic!("the unembedded pattern was not found: {q}"));
    assert_eq!(saga["matched_by"], json!(["full_text"]));
    assert_eq!(saga["similarity"], Value::Null);

    // Nothing to search with is refused as before.
    let (_, body) = nexusd.exec("query_patterns", json!({})).await;
    assert!(failure(&body).starts_with("Must provide either 'keywords' or 'patterns'"));
    let (_, body) = nexusd.exec("query_patterns", json!({"query": ""})).await;
    assert_eq!(
        failure(&body),
        "Invalid parameter 'query': must not be empty"
    );
}

#[tokio::test]
async fn with_embeddings_off_free_text_search_is_full_text_only() {
    let db = shared_db().await;
    let nexusd = nexusd(&db, &[("NEXUSD_EMBEDDING_PROVIDER", "none")]).await;
    record_catalogue(&nexusd).await;
    let pool = db.pool().await;
    assert_eq!(embedding_counts(&pool).await, (6, 0, 0));

    let q = nexusd
        .ok(
            "query_patterns",
            json!({"query": "throttle clients sending too many requests"}),
        )
        .await;
    assert_eq!(q["search_mode"], "full_text");
    let top = &q["similar_patterns"][0];
    assert_eq!(top["pattern"], "Token bucket rate limiter");
    assert_eq!(top["similarity"], Value::Null);
    assert_eq!(top["matched_by"], json!(["full_text"]));

    let (_, body) = nexusd
        .exec("find_similar_patterns", json!({"text": "rate limits"}))
        .await;
    assert!(
        failure(&body).contains("embeddings, which are off (NEXUSD_EMBEDDING_PROVIDER=none)"),
        "{body}"
    );
    assert_eq!(body["similar_patterns"], json!([]));
}

#[tokio::test]
async fn concurrent_hybrid_searches_share_a_small_pool() {
    // A hybrid search runs its two sides on two connections when one is idle: with two
    // connections and many searches at once, none may wait for a second connection while
    // holding the first (which would stall them all until the pool's acquire timeout).
    let db = shared_db().await;
    let nexusd = nexusd(&db, &[("POSTGRES_MAX_CONNECTIONS", "2")]).await;
    record_catalogue(&nexusd).await;
    let input = json!({"query": "throttle clients that send too many requests", "limit": 3});
    let searches = (0..24).map(|_| nexusd.exec("query_patterns", input.clone()));
    for (status, body) in futures_util::future::join_all(searches).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true, "{body}");
        assert_eq!(
            names(&body["similar_patterns"])[0],
            "Token bucket rate limiter"
        );
    }
}

#[tokio::test]
async fn similar_patterns_by_pattern_and_by_text() {
    let db = shared_db().await;
    let nexusd = nexusd(&db, &[]).await;
    record_catalogue(&nexusd).await;
    // A second rate limiter elsewhere, in other words, and one pattern copied as it is.
    record(
        &nexusd,
        json!({"repository": "acme/search", "patterns": [
            {"name": "Per-client request quota",
             "description": "Counts the requests each client sends per second and answers HTTP 429 when the quota is exceeded"},
            {"name": "Read-through cache",
             "description": "Serves repeated database reads from Redis with a time-to-live and invalidates entries on writes"},
        ]}),
    )
    .await;
    let pool = db.pool().await;
    let limiter = pattern_id(&pool, "acme/gateway", "Token bucket rate limiter").await;

    let found = nexusd
        .ok(
            "find_similar_patterns",
            json!({"pattern_id": limiter, "min_similarity": 0.1}),
        )
        .await;
    let similar = &found["similar_patterns"];
    assert_eq!(names(similar)[0], "Per-client request quota", "{found}");
    assert_eq!(similar[0]["repository"], "acme/search");
    assert!(
        similar
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pattern_id"] != limiter),
        "a pattern is never similar to itself: {found}"
    );
    let scores: Vec<f64> = similar
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["similarity"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| *s >= 0.1));
    assert_eq!(found["count"], similar.as_array().unwrap().len());
    assert_eq!(
        found["query"],
        json!({"pattern_id": limiter, "limit": 10, "min_similarity": 0.1})
    );
    assert_eq!(
        found["source_pattern"]["pattern"],
        "Token bucket rate limiter"
    );
    assert_eq!(found["embedding_model"], "builtin:hash-ngrams-v1");

    // exclude_repository, limit, min_similarity.
    let other = nexusd
        .ok(
            "find_similar_patterns",
            json!({"pattern_id": limiter, "min_similarity": 0.0, "exclude_repository": "acme/search", "limit": 2}),
        )
        .await;
    assert!(
        other["similar_patterns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["repository"] != "acme/search")
    );
    // The filter runs in the index scan, not after its LIMIT: still two, the nearest two of the
    // other repositories.
    let all = nexusd
        .ok(
            "find_similar_patterns",
            json!({"pattern_id": limiter, "min_similarity": 0.0, "limit": 100}),
        )
        .await;
    let expected: Vec<String> = all["similar_patterns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["repository"] != "acme/search")
        .take(2)
        .map(|p| p["pattern"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 2, "{all}");
    assert_eq!(names(&other["similar_patterns"]), expected);
    let strict = nexusd
        .ok(
            "find_similar_patterns",
            json!({"pattern_id": limiter, "min_similarity": 0.99}),
        )
        .await;
    assert_eq!(strict["similar_patterns"], json!([]));

    // An identical pattern in another repository is the nearest, at similarity 1.
    let cache = pattern_id(&pool, "acme/catalog", "Read-through cache").await;
    let twin = nexusd
        .ok(
            "find_similar_patterns",
            json!({"pattern_id": cache, "limit": 1}),
        )
        .await;
    assert_eq!(twin["similar_patterns"][0]["repository"], "acme/search");
    assert_eq!(twin["similar_patterns"][0]["similarity"], 1.0);

    // By text.
    let by_text = nexusd
        .ok(
            "find_similar_patterns",
            json!({"text": "reject expired tokens from the Authorization header", "min_similarity": 0.2}),
        )
        .await;
    assert_eq!(
        names(&by_text["similar_patterns"])[0],
        "JWT bearer authentication"
    );
    assert_eq!(
        by_text["query"]["text"],
        "reject expired tokens from the Authorization header"
    );

    // Exactly one of pattern_id and text; unknown ids named.
    let (_, body) = nexusd
        .exec(
            "find_similar_patterns",
            json!({"pattern_id": 1, "text": "x"}),
        )
        .await;
    assert_eq!(
        failure(&body),
        "Invalid input: give exactly one of 'pattern_id' or 'text'"
    );
    let (_, body) = nexusd.exec("find_similar_patterns", json!({})).await;
    assert_eq!(
        failure(&body),
        "Missing required parameter: one of 'pattern_id' or 'text'"
    );
    let (_, body) = nexusd
        .exec("find_similar_patterns", json!({"pattern_id": 999999}))
        .await;
    assert_eq!(failure(&body), "Pattern 999999 not found");
    let (_, body) = nexusd
        .exec("find_similar_patterns", json!({"text": "x", "limit": 0}))
        .await;
    assert_eq!(
        failure(&body),
        "Invalid parameter 'limit': must be between 1 and 100"
    );

    // The SQL view keeps working for SQL users: the identical pair is there.
    let pairs: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT pattern1_name::text, pattern2_name::text, similarity_score FROM pattern_similarity_view",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert_eq!(
        (pairs[0].0.as_str(), pairs[0].1.as_str()),
        ("Read-through cache", "Read-through cache")
    );
    assert!(pairs[0].2 > 0.999);
}

/// The original Dev-Nexus called a component's purpose `description`: analyses written for it
/// keep what they say (query_patterns answers it as `description`, as the original did), and
/// `purpose` wins when both are given.
#[tokio::test]
async fn a_component_description_is_kept_as_its_purpose() {
    let db = shared_db().await;
    let nexusd = nexusd(&db, &[]).await;
    record(
        &nexusd,
        json!({"repository": "acme/legacy", "patterns": [{"name": "Legacy pattern"}],
        "reusable_components": [
            {"name": "OldClient", "description": "HTTP client from the Python analyses"},
            {"name": "Both", "purpose": "the purpose", "description": "the description"},
        ]}),
    )
    .await;
    let found = nexusd
        .ok("query_patterns", json!({"patterns": ["legacy pattern"]}))
        .await;
    let components = &found["matches"][0]["reusable_components"];
    let purpose = |name: &str| {
        components
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == name))
            .map(|c| c["description"].clone())
    };
    assert_eq!(
        purpose("OldClient"),
        Some(json!("HTTP client from the Python analyses")),
        "{found}"
    );
    assert_eq!(purpose("Both"), Some(json!("the purpose")), "{found}");
}

/// With the builtin embedder the default threshold is the builtin one (0.1), so a short query
/// finds the pattern it is about; an empty answer says how near the nearest pattern came.
#[tokio::test]
async fn the_default_threshold_fits_the_embedder_and_an_empty_answer_gives_the_best_score() {
    let db = shared_db().await;
    let nexusd = nexusd(&db, &[]).await;
    record_catalogue(&nexusd).await;

    let found = nexusd
        .ok("find_similar_patterns", json!({"text": "rate limiting"}))
        .await;
    assert_eq!(
        names(&found["similar_patterns"])[0],
        "Token bucket rate limiter",
        "{found}"
    );
    assert_eq!(found["query"]["min_similarity"], 0.1, "{found}");
    assert!(found.get("best_similarity").is_none(), "{found}");

    let (_, card) = nexusd.get("/.well-known/agent.json").await.unwrap();
    let entry = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "find_similar_patterns")
        .unwrap()
        .clone();
    assert_eq!(
        entry["input_schema"]["properties"]["min_similarity"]["default"],
        0.1
    );

    let strict = nexusd
        .ok(
            "find_similar_patterns",
            json!({"text": "rate limiting", "min_similarity": 0.95}),
        )
        .await;
    assert_eq!(strict["similar_patterns"], json!([]), "{strict}");
    let best = strict["best_similarity"].as_f64().unwrap_or(-1.0);
    assert!(best > 0.1 && best < 0.95, "{strict}");
    let message = strict["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"Token bucket rate limiter\"")
            && message.contains("min_similarity 0.95"),
        "{message}"
    );
}

/// Loads `n` patterns with random unit vectors straight into the table.
async fn random_patterns(pool: &PgPool, n: i32) {
    sqlx::raw_sql(&format!(
        "INSERT INTO repositories (name) SELECT 'bulk/r' || i FROM generate_series(1, 20) i;
         INSERT INTO patterns (repo_id, name, description, embedding, embedding_model)
         SELECT r.id, 'pattern ' || i, 'description ' || i,
                (SELECT array_agg(random() - 0.5)::vector(1536) FROM generate_series(1, 1536) WHERE i > 0),
                'builtin:hash-ngrams-v1'
           FROM generate_series(1, {n}) i
           JOIN repositories r ON r.name = 'bulk/r' || (1 + i % 20);
         ANALYZE patterns, repositories;"
    ))
    .execute(pool)
    .await
    .expect("loading patterns");
}

#[tokio::test]
async fn the_vector_query_runs_on_the_hnsw_index() {
    use nexusd::kb::{NEAREST_SQL, set_search_width};

    let db = shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    // The planner's own choice, no enable_* switches. With a few hundred patterns it rightly
    // prefers computing every distance; pgvector's cost estimate grows with hnsw.ef_search,
    // and with nexusd's default the index wins from about 1,500 patterns on.
    random_patterns(&pool, 2000).await;
    let query = pgvector::Vector::from(nexusd::embed::builtin_embed("rate limiting"));
    let ef_search = nexusd::config::Config::from_lookup(|_| None)
        .unwrap()
        .embedding
        .ef_search;

    for exclude in [None, Some("bulk/r3")] {
        let mut tx = nexusd::db::begin(&pool).await.unwrap();
        set_search_width(&mut tx, ef_search, exclude.is_some())
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {NEAREST_SQL}"))
            .bind(&query)
            .bind(10_i64)
            .bind(exclude)
            .bind(-1.0_f64)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using idx_patterns_embedding_hnsw on patterns"),
            "exclude {exclude:?}: not on the HNSW index:\n{plan}"
        );
        // And it answers: ten rows, nearest first, none from the excluded repository.
        let rows: Vec<(i32, f64)> = sqlx::query_as(&format!(
            "SELECT n.pattern_id, n.similarity FROM ({NEAREST_SQL}) n"
        ))
        .bind(&query)
        .bind(10_i64)
        .bind(exclude)
        .bind(-1.0_f64)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(rows.len(), 10);
        assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1));
        if let Some(repo) = exclude {
            let ids: Vec<i32> = rows.iter().map(|r| r.0).collect();
            let excluded: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM patterns p JOIN repositories r ON r.id = p.repo_id
                  WHERE p.id = ANY($1) AND r.name = $2",
            )
            .bind(&ids)
            .bind(repo)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(excluded, 0);
        }
        tx.commit().await.unwrap();
    }
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knowledge_base.json")
}

/// Runs `nexusd <args>` against `db`: (success, stdout, stderr).
fn run(db: &TestDb, args: &[&str], vars: &[(&str, &str)]) -> (bool, String, String) {
    let url = db.url();
    let mut all = vec![("DATABASE_URL", url.as_str())];
    all.extend_from_slice(vars);
    let output = nexusd_command(args, &all).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn nexusd_embed_computes_what_is_missing_and_resumes() {
    let db = shared_db().await;
    let (ok, out, err) = run(&db, &["import-json", fixture().to_str().unwrap()], &[]);
    assert!(ok, "{out}{err}");
    let pool = db.pool().await;
    assert_eq!(embedding_counts(&pool).await, (5, 0, 0));

    let (ok, out, err) = run(&db, &["embed", "--batch-size", "2"], &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("embedded 5 patterns with builtin:hash-ngrams-v1"),
        "{out}"
    );
    assert!(
        out.contains("stored embeddings: 5 by builtin:hash-ngrams-v1; patterns without one: 0"),
        "{out}"
    );
    // Not a terminal: progress as log lines.
    assert!(err.contains("embedding patterns"), "{err}");
    assert_eq!(embedding_counts(&pool).await, (5, 5, 5));

    // Nothing left: nothing done. An edited pattern loses its embedding and only it is redone.
    let (_, out, _) = run(&db, &["embed"], &[]);
    assert!(out.starts_with("embedded 0 patterns"), "{out}");
    // Even an UPDATE by hand: the stale vector goes with the old text (a trigger sees to it).
    sqlx::query(
        "UPDATE patterns SET description = 'edited by hand' WHERE id = (SELECT min(id) FROM patterns)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(embedding_counts(&pool).await, (5, 4, 4));
    let (_, out, _) = run(&db, &["embed"], &[]);
    assert!(out.starts_with("embedded 1 patterns"), "{out}");

    let (ok, _, err) = run(&db, &["embed"], &[("NEXUSD_EMBEDDING_PROVIDER", "none")]);
    assert!(!ok);
    assert!(
        err.contains("embeddings are off (NEXUSD_EMBEDDING_PROVIDER=none)"),
        "{err}"
    );
    let (ok, _, err) = run(&db, &["embed", "--batch-size", "0"], &[]);
    assert!(!ok && err.contains("--batch-size"), "{err}");
}

#[tokio::test]
async fn serve_embeds_imported_patterns_in_the_background() {
    let db = shared_db().await;
    let (ok, out, err) = run(&db, &["import-json", fixture().to_str().unwrap()], &[]);
    assert!(ok, "{out}{err}");
    let pool = db.pool().await;
    let nexusd = nexusd(&db, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while embedding_counts(&pool).await != (5, 5, 5) {
        assert!(
            Instant::now() < deadline,
            "not embedded in time\n{}",
            nexusd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id: i32 = sqlx::query_scalar("SELECT min(id) FROM patterns")
        .fetch_one(&pool)
        .await
        .unwrap();
    let found = nexusd
        .ok(
            "find_similar_patterns",
            json!({"pattern_id": id, "min_similarity": 0}),
        )
        .await;
    let others = found["similar_patterns"].as_array().unwrap();
    assert!(
        !others.is_empty() && others.iter().all(|p| p["pattern_id"] != id),
        "{found}"
    );

    // Off when asked.
    drop(nexusd);
    sqlx::query("UPDATE patterns SET embedding = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let quiet = Nexusd::ready(&db.url(), &[("NEXUSD_EMBEDDING_BACKFILL", "false")]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(embedding_counts(&pool).await, (5, 0, 0));
    drop(quiet);
}

#[tokio::test]
async fn words_most_patterns_contain_do_not_drown_the_rare_ones() {
    let db = shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    // 800 patterns say "widget"; one also says "zanzibar". PostgreSQL's statistics know it.
    sqlx::raw_sql(
        "INSERT INTO repositories (name) VALUES ('acme/widgets');
         INSERT INTO patterns (repo_id, name, description)
         SELECT r.id, 'Widget pattern ' || g, 'A widget that does thing ' || g FROM repositories r, generate_series(1, 800) g;
         UPDATE patterns SET description = description || ' in zanzibar' WHERE name = 'Widget pattern 77';
         ANALYZE patterns;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let nexusd = Nexusd::ready(&db.url(), &[("NEXUSD_EMBEDDING_PROVIDER", "none")]).await;

    // "widget" would match all 800 patterns: it is left out, and the rare word decides.
    let q = nexusd
        .ok("query_patterns", json!({"query": "widget in zanzibar"}))
        .await;
    assert_eq!(names(&q["similar_patterns"]), ["Widget pattern 77"], "{q}");
    // A query of common words only requires them all (and ranks what has them).
    let q = nexusd
        .ok(
            "query_patterns",
            json!({"query": "widget thing", "limit": 3}),
        )
        .await;
    let found = names(&q["similar_patterns"]);
    assert_eq!(found.len(), 3, "{q}");
    assert!(found.iter().all(|n| n.starts_with("Widget pattern")));
}
