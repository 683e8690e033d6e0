//! The read skills' response cache against real PostgreSQL and real `nexusd serve` processes:
//! every write announces itself (one notification per transaction, SQL typed by hand included),
//! except `serve`'s own while no other replica listens; answers with the cache equal answers
//! without it before and after every kind of write; read-after-write through another replica,
//! and after plain SQL; the byte budget under 10,000 distinct inputs.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use support::scrape::{Scrape, fetch, read_until};
use support::{Nexusd, TestDb, assert_envelope, nexusd_command, sessions_settle};

const NO_BACKFILL: (&str, &str) = ("NEXUSD_EMBEDDING_BACKFILL", "false");
const OPEN: (&str, &str) = ("REQUIRE_AUTH_FOR_WRITE", "false");

async fn seeded_db() -> TestDb {
    let db = support::shared_db().await;
    db.bootstrap().await;
    sqlx::raw_sql(include_str!("fixtures/seed.sql"))
        .execute(&db.pool().await)
        .await
        .expect("seeding");
    db
}

async fn replica(db: &TestDb, extra: &[(&str, &str)]) -> Nexusd {
    let mut vars = vec![OPEN, NO_BACKFILL];
    vars.extend_from_slice(extra);
    Nexusd::ready(&db.url(), &vars).await
}

/// The answer without what differs on every call.
fn answer(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.remove("timestamp");
        map.remove("execution_time_ms");
    }
    body
}

/// Every cached read skill, with inputs covering each of its modes.
fn reads() -> Vec<(&'static str, Value)> {
    vec![
        ("get_repository_list", json!({})),
        ("get_repository_list", json!({"include_metadata": false})),
        ("query_patterns", json!({"keywords": ["jwt", "retry"]})),
        (
            "query_patterns",
            json!({"keywords": ["retry"], "min_matches": 0}),
        ),
        (
            "query_patterns",
            json!({"patterns": ["Retry with backoff"]}),
        ),
        ("query_patterns", json!({"repository": "acme/api"})),
        ("get_cross_repo_patterns", json!({})),
        (
            "get_cross_repo_patterns",
            json!({"min_repos": 1, "pattern_type": "retry"}),
        ),
        (
            "get_deployment_info",
            json!({"repository": "acme/api", "include_history": true}),
        ),
        ("query_known_issues", json!({})),
        (
            "query_known_issues",
            json!({"severity": "critical", "limit": 2}),
        ),
        ("get_recent_actions", json!({"limit": 20})),
        (
            "get_recent_actions",
            json!({"limit": 2, "offset": 1, "action_types": ["lesson", "runtime_issue"]}),
        ),
        ("get_recent_actions", json!({"limit": 5, "offset": 500})),
    ]
}

/// Waits until the replica's `/metrics` (cached for a second) shows `want` of `name`.
async fn metric_reaches(nexusd: &Nexusd, name: &str, want: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = fetch(&nexusd.metrics, None).await.value(name, &[]);
        if let Some(v) = value.filter(|v| want(*v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} is {value:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Reads `get_repository_list` through `nexusd` until its `/metrics` show `name` above zero
/// (failing with `what` after 20 s); returns them.
async fn list_until(nexusd: &Nexusd, name: &str, what: &str) -> Scrape {
    let above_zero = |m: &Scrape| m.value(name, &[]).is_some_and(|v| v > 0.0);
    let list = json!({});
    read_until(
        nexusd,
        "get_repository_list",
        &list,
        what,
        |_| {},
        above_zero,
    )
    .await
}

/// Reads until the cache stores answers: a replica starts caching only a little after its
/// listener registers (`listen` in src/skills/cache.rs). Returns the hits so far.
async fn until_caching(nexusd: &Nexusd) -> f64 {
    let what = "the cache never stored an answer";
    list_until(nexusd, "nexusd_skill_cache_entries", what)
        .await
        .value("nexusd_skill_cache_hits_total", &[])
        .unwrap_or(0.0)
}

/// Reads until one read is served from memory. Caching starts again only once the listener's
/// wait is over, which a loaded machine may stretch past a fixed number of reads.
async fn until_hit(nexusd: &Nexusd) {
    let what = "no read was served from memory";
    list_until(nexusd, "nexusd_skill_cache_hits_total", what).await;
}

/// Every read skill answers the same with and without the cache (twice with it, the second
/// from memory), on the seeded knowledge base and after each kind of write.
/// Each cached call's `timestamp` is its own, later than the previous call's even when the answer
/// comes from memory, and it carries an `execution_time_ms`.
async fn assert_alike(cached: &Nexusd, uncached: &Nexusd, after: &str) {
    let mut last = chrono::DateTime::<chrono::FixedOffset>::MIN_UTC.fixed_offset();
    for (skill, input) in reads() {
        let want = answer(uncached.ok(skill, input.clone()).await);
        for round in 0..2 {
            let body = cached.ok(skill, input.clone()).await;
            let stamp = assert_envelope(&body);
            assert!(
                stamp > last,
                "{skill} (call {round}): a stale timestamp: {body}"
            );
            last = stamp;
            let got = answer(body);
            assert_eq!(got, want, "{skill} {input} after {after} (call {round})");
        }
    }
}

/// Fails before the cache: without it there are no `nexusd_skill_cache_*` metrics (and the
/// writes below announce nothing).
#[tokio::test]
async fn the_cache_answers_as_the_database_does_before_and_after_every_kind_of_write() {
    let db = seeded_db().await;
    let cached = replica(&db, &[]).await;
    let uncached = replica(&db, &[("NEXUSD_SKILL_CACHE", "off")]).await;
    let before = until_caching(&cached).await;
    assert_alike(&cached, &uncached, "seeding").await;

    // A write skill through the other replica, then through this one.
    uncached
        .ok("add_lesson_learned", json!({"repository": "acme/api", "category": "performance",
            "lesson": "Batch inserts", "context": "Row by row took minutes", "severity": "critical"}))
        .await;
    assert_alike(&cached, &uncached, "a write through the other replica").await;
    cached
        .ok(
            "add_runtime_issue",
            json!({"repository": "acme/web", "issue_type": "error",
            "severity": "critical", "service_type": "cloud_run", "log_snippet": "boom",
            "pattern_reference": "Retry with backoff"}),
        )
        .await;
    assert_alike(&cached, &uncached, "a write through this replica").await;

    // import-json, another process.
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knowledge_base.json");
    let url = db.url();
    let status = nexusd_command(
        &["import-json", fixture.to_str().unwrap()],
        &[("DATABASE_URL", &url)],
    )
    .output()
    .expect("running import-json");
    assert!(status.status.success(), "{status:?}");
    assert_alike(&cached, &uncached, "import-json").await;

    // Plain SQL, as an operator in psql.
    let pool = db.pool().await;
    sqlx::raw_sql(
        "UPDATE repositories SET problem_domain = 'ledgers' WHERE name = 'acme/api';
         DELETE FROM patterns WHERE name = 'Idempotent jobs';",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_alike(&cached, &uncached, "plain SQL").await;

    let want = before + (5 * reads().len()) as f64;
    // Each round of reads: the first call of an input is computed, the second served from memory.
    metric_reaches(&cached, "nexusd_skill_cache_hits_total", |v| v >= want).await;
    let off = fetch(&uncached.metrics, None).await;
    assert_eq!(off.value("nexusd_skill_cache_hits_total", &[]), Some(0.0));
}

/// One notification per writing transaction, whoever writes: here SQL, as typed in psql.
/// Fails before the migration: nothing is ever notified.
#[tokio::test]
async fn every_write_transaction_notifies_the_knowledge_base_channel_once() {
    let db = seeded_db().await;
    let pool = db.pool().await;
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("nexusd_kb").await.unwrap();

    sqlx::raw_sql(
        "BEGIN;
         INSERT INTO repositories (name) VALUES ('by/hand');
         INSERT INTO lessons_learned (repo_id, title) SELECT id, 'typed' FROM repositories WHERE name = 'by/hand';
         UPDATE repositories SET problem_domain = 'manual' WHERE name = 'by/hand';
         COMMIT;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let first: i64 = next(&mut listener)
        .await
        .expect("a notification")
        .parse()
        .unwrap();
    sqlx::query("TRUNCATE technical_decisions")
        .execute(&pool)
        .await
        .unwrap();
    let second: i64 = next(&mut listener)
        .await
        .expect("a notification")
        .parse()
        .unwrap();
    assert!(second > first, "{first} then {second}");
    // A rolled-back write announces nothing, and the three-statement transaction sent one.
    sqlx::raw_sql("BEGIN; DELETE FROM lessons_learned; ROLLBACK;")
        .execute(&pool)
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(quiet.is_err(), "an unexpected notification");
}

async fn next(listener: &mut PgListener) -> Result<String, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .map(|n| n.unwrap().payload().to_string())
}

fn repository_names(body: &Value) -> Vec<String> {
    body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A write through replica A is seen by the next read through replica B, 200 times over, though
/// B serves the same read from memory between writes; a row changed by plain SQL is seen by the
/// next read. Fails before the cache: B never serves from memory (no hits to count).
#[tokio::test]
async fn a_read_after_a_write_sees_it_on_every_replica() {
    let db = seeded_db().await;
    let a = replica(&db, &[]).await;
    let b = replica(&db, &[]).await;
    let before = until_caching(&b).await;
    let list = json!({});
    let feed = json!({"limit": 1, "action_types": ["lesson"]});
    for i in 0..200 {
        let repository = format!("loop/r{i}");
        a.ok("add_repository", json!({"repository": repository}))
            .await;
        for _ in 0..2 {
            let names = repository_names(&b.ok("get_repository_list", list.clone()).await);
            assert!(
                names.contains(&repository),
                "round {i}: {repository} missing"
            );
        }
        let title = format!("lesson {i}");
        a.ok(
            "add_lesson_learned",
            json!({"repository": repository, "lesson": title,
            "context": "loop", "category": "reliability"}),
        )
        .await;
        let newest = b.ok("get_recent_actions", feed.clone()).await;
        assert_eq!(
            newest["actions"][0]["reference_id"],
            json!(title),
            "round {i}"
        );
    }
    metric_reaches(&b, "nexusd_skill_cache_hits_total", |v| v >= before + 200.0).await;

    let pool = db.pool().await;
    for i in 0..50 {
        let domain = format!("domain {i}");
        sqlx::query("UPDATE repositories SET problem_domain = $1 WHERE name = 'acme/web'")
            .bind(&domain)
            .execute(&pool)
            .await
            .unwrap();
        let body = b.ok("get_repository_list", list.clone()).await;
        let web = body["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "acme/web")
            .cloned()
            .unwrap();
        assert_eq!(web["problem_domain"], json!(domain), "round {i}");
    }
}

/// Notifications observed on `nexusd_kb` by a session that is not a replica's listener (it does
/// not count as one for the trigger), within `wait`.
async fn notifications(listener: &mut PgListener, wait: Duration) -> usize {
    let mut seen = 0;
    while tokio::time::timeout(wait, listener.recv()).await.is_ok() {
        seen += 1;
    }
    seen
}

/// A lone replica's writes commit without a notification (which would serialise concurrent
/// commits on the notification queue's lock) and its next reads still see them; SQL typed by
/// hand still notifies and is seen; once a second replica listens, the first one's writes
/// notify again and the second reads them; once it is killed, they stop again. Fails before
/// migration 0007: every write notified.
#[tokio::test]
async fn a_lone_replica_writes_without_notifying_and_others_are_told_once_they_listen() {
    let db = seeded_db().await;
    let pool = db.pool().await;
    let mut observer = PgListener::connect_with(&pool).await.unwrap();
    observer.listen("nexusd_kb").await.unwrap();
    let list = json!({});

    let a = replica(&db, &[]).await;
    for round in 0..3 {
        a.ok("get_repository_list", list.clone()).await;
        let repository = format!("alone/r{round}");
        a.ok("add_repository", json!({"repository": repository}))
            .await;
        a.ok(
            "add_lesson_learned",
            json!({"repository": repository, "lesson": "alone", "context": "c",
                   "category": "reliability"}),
        )
        .await;
        assert!(
            repository_names(&a.ok("get_repository_list", list.clone()).await)
                .contains(&repository),
            "round {round}: the replica's own write is not in its next read"
        );
    }
    assert_eq!(
        notifications(&mut observer, Duration::from_millis(500)).await,
        0,
        "a lone replica's writes notified"
    );

    sqlx::query("UPDATE repositories SET problem_domain = 'typed' WHERE name = 'alone/r0'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        notifications(&mut observer, Duration::from_millis(500)).await,
        1,
        "plain SQL must notify"
    );
    let web = a.ok("get_repository_list", list.clone()).await;
    let r0 = web["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "alone/r0")
        .cloned()
        .unwrap();
    assert_eq!(r0["problem_domain"], json!("typed"));

    let b = replica(&db, &[]).await;
    b.ok("get_repository_list", list.clone()).await;
    a.ok("add_repository", json!({"repository": "shared/r"}))
        .await;
    assert_eq!(
        notifications(&mut observer, Duration::from_millis(500)).await,
        1,
        "with another replica listening, a write must notify"
    );
    assert!(
        repository_names(&b.ok("get_repository_list", list.clone()).await)
            .contains(&"shared/r".to_string())
    );

    // B killed: its registration stays behind, but its lock went with its session, so A's
    // writes go back to not notifying.
    drop(b);
    let listeners = sessions_settle(&pool, "nexusd listen %", 1, Duration::from_secs(10)).await;
    assert_eq!(listeners, 1, "the killed replica's listener stays");
    a.ok("add_repository", json!({"repository": "alone/again"}))
        .await;
    assert_eq!(
        notifications(&mut observer, Duration::from_millis(500)).await,
        0,
        "a dead replica's registration made a write notify"
    );
}

/// A session named as another replica's skills' pool ("ghost"), whose writes the trigger treats
/// as that replica's (migrations 0007 and 0008).
async fn ghost_writer(db: &TestDb) -> sqlx::PgConnection {
    use sqlx::Connection;
    let options: sqlx::postgres::PgConnectOptions = db.url().parse().unwrap();
    sqlx::PgConnection::connect_with(&options.application_name("nexusd serve ghost:1/0"))
        .await
        .unwrap()
}

/// A replica whose listener connects while another replica's write is in flight — one that looked
/// for listeners before there were any, so it will not notify — does not cache until that write
/// has ended: its reads after the commit see it. Fails without the wait in `listen`: the replica
/// caches the list at once and keeps serving it without the row.
#[tokio::test]
async fn a_new_listener_waits_out_writes_that_could_not_see_it() {
    let db = seeded_db().await;
    // A write of a replica that is alone on the database, left open.
    let mut writer = ghost_writer(&db).await;
    sqlx::raw_sql("BEGIN; INSERT INTO repositories (name) VALUES ('ghost/in-flight');")
        .execute(&mut writer)
        .await
        .unwrap();
    let a = replica(&db, &[]).await;
    let list = json!({});
    // Time for the listener to connect, then reads that would be cached.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..3 {
        let names = repository_names(&a.ok("get_repository_list", list.clone()).await);
        assert!(!names.contains(&"ghost/in-flight".to_string()));
    }
    let hits = fetch(&a.metrics, None)
        .await
        .value("nexusd_skill_cache_hits_total", &[]);
    assert_eq!(
        hits,
        Some(0.0),
        "served from memory while the write was in flight"
    );
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    for round in 0..3 {
        let names = repository_names(&a.ok("get_repository_list", list.clone()).await);
        assert!(
            names.contains(&"ghost/in-flight".to_string()),
            "round {round}: a write committed before this read is missing\n{}",
            a.log_text()
        );
    }
    // And once it has ended, the replica caches again.
    until_hit(&a).await;
}

/// A `nexusd serve` session that looked for listeners just before this replica's listener
/// registered, found none, and trusts that look for a second (migration 0008) — its writes in
/// that second do not notify. The replica does not cache until that second is over, so each of
/// its reads after such a write sees it. The listener is made to register again on a running
/// replica (its session killed), so the reads start within the second. Fails without the wait in
/// `listen`: the replica caches the list at once and serves it without the rows.
#[tokio::test]
async fn a_new_listener_outwaits_sessions_that_trust_an_older_look() {
    let db = seeded_db().await;
    let pool = db.pool().await;
    let a = replica(&db, &[]).await;
    let list = json!({});
    let registered = || async {
        sqlx::query_scalar::<_, f64>("SELECT date_part('epoch', since) FROM kb_listeners")
            .fetch_optional(&pool)
            .await
            .unwrap()
    };
    let first = registered().await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'nexusd listen %'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "no listener session to kill");
    let deadline = Instant::now() + Duration::from_secs(15);
    let since = loop {
        match registered().await {
            Some(since) if Some(since) != first => break since,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the listener never registered again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    // Another replica's session whose last look began just before the registration.
    let mut writer = ghost_writer(&db).await;
    sqlx::query("SELECT set_config('nexusd.kb_alone_at', $1::text, false)")
        .bind(since - 0.001)
        .execute(&mut writer)
        .await
        .unwrap();
    let mut round = 0;
    while Instant::now() < deadline {
        let repository = format!("ghost/w{round}");
        sqlx::query("INSERT INTO repositories (name) VALUES ($1)")
            .bind(&repository)
            .execute(&mut writer)
            .await
            .unwrap();
        let names = repository_names(&a.ok("get_repository_list", list.clone()).await);
        assert!(
            names.contains(&repository),
            "round {round}: a write committed before this read is missing\n{}",
            a.log_text()
        );
        let now: f64 = sqlx::query_scalar("SELECT date_part('epoch', clock_timestamp())")
            .fetch_one(&mut writer)
            .await
            .unwrap();
        if now > since + 2.0 {
            break;
        }
        round += 1;
    }
    assert!(round > 10, "only {round} rounds in the two seconds");
    // And the replica caches again.
    until_hit(&a).await;
}

/// 10,000 distinct inputs through a 64 KiB cache: it never holds more, and evicts.
/// Fails before the cache: there is no `nexusd_skill_cache_bytes`.
#[tokio::test]
async fn the_cache_stays_within_its_budget() {
    let db = seeded_db().await;
    let budget = 65_536.0;
    let nexusd = replica(&db, &[("NEXUSD_SKILL_CACHE_BYTES", "65536")]).await;
    let nexusd = &nexusd;
    let mut peak: f64 = 0.0;
    for batch in 0..10 {
        use futures_util::StreamExt;
        futures_util::stream::iter(0..1000)
            .map(|i| async move {
                let offset = batch * 1000 + i;
                nexusd
                    .ok("get_recent_actions", json!({"limit": 1, "offset": offset}))
                    .await
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let scrape = fetch(&nexusd.metrics, None).await;
        let bytes = scrape
            .value("nexusd_skill_cache_bytes", &[])
            .expect("the gauge");
        assert!(bytes <= budget, "{bytes} bytes held");
        peak = peak.max(bytes);
    }
    let evicted =
        metric_reaches(nexusd, "nexusd_skill_cache_evictions_total", |v| v > 5000.0).await;
    assert!(evicted <= 10_000.0);
    assert!(peak > budget / 2.0, "the cache held at most {peak} bytes");
    let rss = fetch(&nexusd.metrics, None)
        .await
        .value("process_resident_memory_bytes", &[])
        .unwrap();
    assert!(rss < 100.0 * 1024.0 * 1024.0, "RSS {rss}");
}
