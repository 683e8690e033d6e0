//! `get_deployment_info` against real PostgreSQL and a real `nexusd serve`: its answers, byte for
//! byte, for repositories with every part it reads and their corner cases (ties, NULLs, JSON null
//! in jsonb, unicode, nested jsonb, NaN coverage, microsecond timestamps), in every mode and for
//! a missing repository — held to a golden file written by the multi-statement version it
//! replaced — and the number of statements one request costs PostgreSQL.
//!
//! `NEXUSD_UPDATE_GOLDEN=1` rewrites `tests/fixtures/deployment_info_golden.json` from the running
//! code (only ever wanted when the answer is meant to change).

mod support;

use std::path::PathBuf;

use serde_json::{Value, json};
use support::{Nexusd, TestDb, http};

const GOLDEN: &str = "tests/fixtures/deployment_info_golden.json";

async fn seeded_db() -> TestDb {
    let db = support::shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    for fixture in [
        include_str!("fixtures/seed.sql"),
        include_str!("fixtures/deployment_info.sql"),
    ] {
        sqlx::raw_sql(fixture)
            .execute(&pool)
            .await
            .expect("seeding");
    }
    pool.close().await;
    db
}

/// nexusd without the response cache, so that every request reaches PostgreSQL.
async fn uncached(db: &TestDb) -> Nexusd {
    Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_SKILL_CACHE", "off"),
            ("NEXUSD_EMBEDDING_BACKFILL", "false"),
        ],
    )
    .await
}

/// Every mode of the skill for each repository, and a repository that does not exist.
fn inputs() -> Vec<Value> {
    let mut inputs = Vec::new();
    for repository in [
        "nexus/deploy",
        "nexus/bare",
        "nexus/odd",
        "acme/api",
        "acme/worker",
        "zeta/tools",
    ] {
        inputs.push(json!({"repository": repository}));
        inputs.push(json!({"repository": repository, "include_history": true}));
        inputs.push(json!({"repository": repository, "include_lessons": false}));
        inputs.push(
            json!({"repository": repository, "include_lessons": false, "include_history": true}),
        );
        inputs.push(
            json!({"repository": repository, "include_lessons": true, "include_history": false}),
        );
    }
    inputs.push(json!({"repository": "nexus/missing"}));
    inputs.push(json!({"repository": "nexus/missing", "include_history": true}));
    inputs
}

/// The HTTP status and the body as sent, without the two envelope fields that differ on every
/// call; the remaining keys keep their order (serde_json's `preserve_order`), so comparing the
/// serialised values compares the bytes.
async fn answer(nexusd: &Nexusd, input: &Value) -> (u16, Value) {
    let response = http()
        .post(format!("{}/a2a/execute", nexusd.api))
        .json(&json!({"skill_id": "get_deployment_info", "input": input}))
        .send()
        .await
        .expect("POST /a2a/execute");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let mut body: Value = serde_json::from_str(&text).expect("a JSON body");
    let map = body.as_object_mut().expect("an object");
    for volatile in ["timestamp", "execution_time_ms"] {
        assert!(map.shift_remove(volatile).is_some(), "{volatile} in {text}");
    }
    (status, body)
}

/// Fails on a different answer to any input than the golden file's. The golden file was written
/// by the version that read the parts in eleven statements inside a REPEATABLE READ transaction.
#[tokio::test]
async fn answers_are_byte_for_byte_the_golden_ones() {
    let db = seeded_db().await;
    let nexusd = uncached(&db).await;
    let mut got = Vec::new();
    for input in inputs() {
        let (status, body) = answer(&nexusd, &input).await;
        got.push(json!({"input": input, "status": status, "body": body}));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("NEXUSD_UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&got).expect("serialising") + "\n";
        std::fs::write(&path, text).expect("writing the golden file");
    }
    let golden: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the golden file"))
            .expect("the golden file is JSON");
    assert_eq!(
        golden.len(),
        got.len(),
        "inputs differ from the golden file's"
    );
    for (want, got) in golden.iter().zip(&got) {
        assert_eq!(want["input"], got["input"], "inputs in another order");
        assert_eq!(want["status"], got["status"], "status for {}", got["input"]);
        // As text: `Value`'s equality would ignore the order of keys.
        assert_eq!(
            want["body"].to_string(),
            got["body"].to_string(),
            "answer for {}",
            got["input"]
        );
    }
}

/// Top-level statements run in this database, from pg_stat_statements.
async fn statements(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT query, calls FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query NOT LIKE '%pg_stat_statements%'",
    )
    .fetch_all(pool)
    .await
    .expect("reading pg_stat_statements")
}

/// Fails on the multi-statement version: BEGIN, SET TRANSACTION, the repository, eight parts and
/// COMMIT — twelve statements per request. Counted with pg_stat_statements over a burst of
/// requests; the workflow worker and the cache's listener poll in the background every two
/// seconds, so a few of their statements (about ten in a burst of forty requests here) fall
/// inside the window: half a statement per request of slack, where the old version ran eleven
/// more.
#[tokio::test]
async fn one_request_is_one_statement() {
    const REQUESTS: i64 = 40;
    let db = seeded_db().await;
    let nexusd = uncached(&db).await;
    let pool = db.pool().await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .expect("pg_stat_statements");
    let input = json!({"repository": "nexus/deploy", "include_history": true});
    // Once before counting, so that the pool has connected and prepared.
    nexusd.ok("get_deployment_info", input.clone()).await;

    let before: std::collections::HashMap<String, i64> =
        statements(&pool).await.into_iter().collect();
    for _ in 0..REQUESTS {
        nexusd.ok("get_deployment_info", input.clone()).await;
    }
    let ran: Vec<(String, i64)> = statements(&pool)
        .await
        .into_iter()
        .map(|(query, calls)| {
            let new = calls - before.get(&query).copied().unwrap_or(0);
            (query, new)
        })
        .filter(|(_, new)| *new > 0)
        .collect();
    let total: i64 = ran.iter().map(|(_, n)| n).sum();
    assert!(
        total <= REQUESTS + REQUESTS / 2,
        "{total} statements for {REQUESTS} requests: {ran:#?}"
    );
    // The one statement reads every part.
    let whole = ran.iter().find(|(q, _)| {
        [
            "repositories",
            "deployment_scripts",
            "lessons_learned",
            "reusable_components",
            "dependencies",
            "test_frameworks",
            "security_patterns",
            "pattern_keywords",
            "analysis_history",
        ]
        .iter()
        .all(|table| q.contains(table))
    });
    assert_eq!(
        whole.map(|(_, n)| *n),
        Some(REQUESTS),
        "no statement reading every part ran once per request: {ran:#?}"
    );
}
