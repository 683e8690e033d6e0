//! nexusd behind PgBouncer in transaction mode (≥ 1.21, `max_prepared_statements = 200`, four
//! server connections for many clients): the skills answer as they do straight to PostgreSQL,
//! concurrent first writers still make one repository, and what needs a session of its own —
//! the leader's lock, the workflow workers' sessions — goes direct
//! (`NEXUSD_DIRECT_DATABASE_URL`), for `serve` and the one-off commands alike. Real processes, a
//! real cluster (`docs/scaling.md`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::pgbouncer::{POOL_SIZE, PgBouncer};
use support::{Nexusd, shared_db};

/// Concurrent calls of each read: many more clients than PgBouncer has server connections.
const CLIENTS: usize = 12;

/// The read skills the cache holds (`src/skills/cache.rs`), with inputs that find seeded rows.
fn reads() -> Vec<(&'static str, Value)> {
    vec![
        (
            "query_patterns",
            json!({"keywords": ["auth", "jwt", "retry"]}),
        ),
        ("get_cross_repo_patterns", json!({})),
        ("get_repository_list", json!({})),
        (
            "get_deployment_info",
            json!({"repository": "acme/api", "include_history": true}),
        ),
        ("query_known_issues", json!({})),
        ("get_recent_actions", json!({"limit": 5})),
        ("list_components", json!({"limit": 100, "offset": 0})),
        (
            "get_pattern_history",
            json!({"pattern_name": "JWT authentication"}),
        ),
    ]
}

/// `nexusd serve` on `url` (with `direct` for sessions of their own), no cache: every call
/// reads the database.
async fn serve(url: &str, direct: Option<&str>) -> Nexusd {
    let mut vars = vec![
        ("REQUIRE_AUTH_FOR_WRITE", "false"),
        ("NEXUSD_BACKUP_SCHEDULE", "off"),
        ("NEXUSD_EMBEDDING_PROVIDER", "none"),
        ("NEXUSD_SKILL_CACHE", "off"),
    ];
    if let Some(direct) = direct {
        vars.push(("NEXUSD_DIRECT_DATABASE_URL", direct));
    }
    Nexusd::ready(url, &vars).await
}

/// A skill's answer without what differs from one call to the next by itself.
fn stable(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        for volatile in ["execution_time_ms", "timestamp", "served_from", "cached"] {
            map.remove(volatile);
        }
    }
    body
}

/// Before the workflow worker's session was made direct, its job's `worker_pid` was one of
/// PgBouncer's server connections (shared with every other client) and no `nexusd-workflow`
/// session existed. Debian's PgBouncer 1.18 (`NEXUSD_TEST_PGBOUNCER=/usr/sbin/pgbouncer`)
/// refuses `max_prepared_statements` ("unknown parameter"); without that line the first read
/// fails with "prepared statement \"sqlx_s_1\" already exists".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_pgbouncer_in_transaction_mode_the_api_works_and_sessions_go_direct() {
    let db = shared_db().await;
    db.bootstrap().await;
    let admin = db.pool().await;
    sqlx::raw_sql(include_str!("fixtures/seed.sql"))
        .execute(&admin)
        .await
        .expect("seeding");
    let bouncer = PgBouncer::transaction(support::shared_port());
    let direct = db.url();
    let pooled = serve(&bouncer.url(&db.name), Some(&direct)).await;
    let reference = serve(&direct, None).await;

    // Every cached read, many clients at once, answers as it does straight to PostgreSQL.
    for (skill, input) in reads() {
        let want = stable(reference.ok(skill, input.clone()).await);
        let calls = (0..CLIENTS).map(|_| pooled.ok(skill, input.clone()));
        for got in futures_util::future::join_all(calls).await {
            assert_eq!(stable(got), want, "{skill} through PgBouncer");
        }
    }
    drop(reference);

    // Writes: 20 concurrent first writers of one repository make one row; each kind of write
    // lands once per call.
    let lessons = (0..20).map(|i| {
        pooled.ok(
            "add_lesson_learned",
            json!({"repository": "acme/race", "lesson": format!("lesson {i}"),
                   "context": "pgbouncer", "category": "reliability"}),
        )
    });
    let repositories = (0..10).map(|i| {
        pooled.ok(
            "add_repository",
            json!({"repository": format!("new/repo-{i}"), "problem_domain": "search"}),
        )
    });
    let issues = (0..10).map(|i| {
        pooled.ok(
            "add_runtime_issue",
            json!({"repository": "acme/web", "service_type": "cloud_run", "issue_type": "timeout",
                   "severity": "low", "log_snippet": format!("timeout {i}")}),
        )
    });
    futures_util::future::join3(
        futures_util::future::join_all(lessons),
        futures_util::future::join_all(repositories),
        futures_util::future::join_all(issues),
    )
    .await;
    let count = |sql: &'static str| {
        let admin = admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&admin)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM repositories WHERE name = 'acme/race'").await,
        1
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM lessons_learned l JOIN repositories r ON r.id = l.repo_id
              WHERE r.name = 'acme/race'"
        )
        .await,
        20
    );
    assert_eq!(
        count("SELECT count(*) FROM repositories WHERE name LIKE 'new/repo-%'").await,
        10
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id
              WHERE r.name = 'acme/web' AND i.log_snippet LIKE 'timeout %'"
        )
        .await,
        10
    );

    // A workflow job runs to completion.
    let queued = pooled
        .ok(
            "extract_repository_patterns",
            json!({"repository_name": "acme/api"}),
        )
        .await;
    let id = queued["workflow_id"].as_str().expect("a workflow id");
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (_, body) = pooled
            .get(&format!("/a2a/workflow/{id}"))
            .await
            .expect("GET /a2a/workflow answers");
        if body["status"] != "queued" && body["status"] != "running" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "workflow {id} not done: {body}\n{}",
            pooled.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");

    // PgBouncer really pooled: at most POOL_SIZE server connections served all of that.
    let servers = bouncer.server_pids();
    assert!(
        !servers.is_empty() && servers.len() <= POOL_SIZE as usize,
        "{servers:?}"
    );
    // Sessions of their own are not among them: PgBouncer would hand a session's pid (the
    // job's owner) or its advisory lock to whichever client comes next.
    let (_, health) = pooled.get("/health").await.unwrap();
    assert_eq!(health["leader"]["leader"], true, "{health}");
    let leader: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'nexusd-leader %'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(leader.len(), 1, "{leader:?}");
    assert!(
        !servers.contains(&leader[0]),
        "leader {leader:?} in {servers:?}"
    );
    let owner: i32 = sqlx::query_scalar("SELECT worker_pid FROM workflow_jobs WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(
        !servers.contains(&owner),
        "job owner {owner} in {servers:?}"
    );
    let workers: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'nexusd-workflow'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(
        workers.contains(&owner),
        "job owner {owner}, workers {workers:?}"
    );
    assert!(
        workers.iter().all(|pid| !servers.contains(pid)),
        "{workers:?} in {servers:?}"
    );
}

/// One-off commands go past the pooler as `serve` does: with `DATABASE_URL` at a pooler that is
/// down and `NEXUSD_DIRECT_DATABASE_URL` set, `nexusd bootstrap` migrates and `nexusd backup
/// run` takes a complete backup (migrations' advisory lock, the snapshot and pg_dump all need a
/// session of their own). Before, both failed connecting to `DATABASE_URL`.
#[tokio::test]
async fn one_off_commands_use_the_direct_url_for_their_sessions() {
    use support::backups::{Where, backup_name, nexusd, text};

    let db = shared_db().await;
    // Nothing listens there: a pooler that is down.
    let pooler = format!(
        "postgresql://postgres@127.0.0.1:{}/{}",
        support::free_port(),
        db.name
    );
    let direct = db.url();
    let store = Where::local();
    let vars = [
        ("DATABASE_URL", pooler.as_str()),
        ("NEXUSD_DIRECT_DATABASE_URL", direct.as_str()),
    ];
    let bootstrap = nexusd(&db, &store, &["bootstrap"], &vars);
    assert!(bootstrap.status.success(), "{}", text(&bootstrap));
    let run = nexusd(&db, &store, &["backup", "run"], &vars);
    assert!(run.status.success(), "{}", text(&run));
    let name = backup_name(&run);
    let listed = nexusd(&db, &store, &["backup", "list"], &vars);
    assert!(text(&listed).contains(&name), "{}", text(&listed));
}
