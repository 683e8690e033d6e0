//! Several `nexusd serve` replicas against one PostgreSQL: one leader runs the scheduled jobs
//! (one backup per tick), another takes over within seconds when the leader is killed or its
//! lock session is cut, every replica keeps serving the API, and replicas starting together on
//! an empty database migrate it once. Real processes, a real cluster, a local backup store.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Nexusd, shared_db, temp_root};

/// Seconds between scheduled backups.
const TICK: i64 = 10;

fn schedule_vars<'a>(url: &'a str, store: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", url),
        ("NEXUSD_BACKUP_SCHEDULE", "*/10 * * * * *"),
        ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "off"),
        ("NEXUSD_BASEBACKUP_SCHEDULE", "off"),
        ("NEXUSD_BACKUP_DIR", store),
        ("NEXUSD_BACKUP_MIN_KEEP", "1000"),
        ("NEXUSD_EMBEDDING_PROVIDER", "none"),
    ]
}

/// Complete backups in `store` by the tick they were started in (seconds since the epoch,
/// rounded down to a tick).
fn backups_by_tick(store: &Path) -> BTreeMap<i64, Vec<String>> {
    let mut ticks: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(store) else {
        return ticks;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".manifest.json") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("reading a manifest");
        let manifest: serde_json::Value = serde_json::from_str(&text).expect("a JSON manifest");
        let started = manifest["started_at"].as_str().expect("started_at");
        let at = chrono::DateTime::parse_from_rfc3339(started).expect("an RFC 3339 time");
        ticks
            .entry(at.timestamp().div_euclid(TICK) * TICK)
            .or_default()
            .push(name);
    }
    ticks
}

/// Which of `replicas` (by index, `None` for a killed one) say they lead in `/health`.
async fn leaders(replicas: &[Option<Nexusd>]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        if let Some(r) = r
            && let Some((_, health)) = r.get("/health").await
            && health["leader"]["leader"] == true
        {
            out.push(i);
        }
    }
    out
}

/// Waits until exactly one replica leads and it is not `not`; returns it and how long it took.
async fn wait_for_leader(
    replicas: &[Option<Nexusd>],
    not: Option<usize>,
    limit: Duration,
) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        let now = leaders(replicas).await;
        if now.len() == 1 && Some(now[0]) != not {
            return (now[0], started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "no single new leader within {limit:?} (leading: {now:?})\n{}",
            logs(replicas)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn logs(replicas: &[Option<Nexusd>]) -> String {
    replicas
        .iter()
        .flatten()
        .map(|r| format!("--- {} ---\n{}", r.api, r.log_text()))
        .collect()
}

/// Every live replica answers a read skill and `/health` with 200.
async fn all_serve(replicas: &[Option<Nexusd>]) {
    for r in replicas.iter().flatten() {
        let body = r.ok("get_repository_list", json!({})).await;
        assert!(body["repositories"].is_array(), "{body}");
        let (status, _) = r.get("/health").await.expect("/health answers");
        assert_eq!(status, 200, "{}", r.log_text());
    }
}

/// Watches `store` while the API is called on every replica, until `ticks` whole ticks have
/// passed; each of them must hold exactly one backup.
async fn each_tick_one_backup(store: &Path, replicas: &[Option<Nexusd>], ticks: i64) {
    let now = || chrono::Utc::now().timestamp();
    // The first whole tick from now, and the tick after the last one watched.
    let first = (now() / TICK + 1) * TICK;
    let end = first + ticks * TICK;
    // A backup takes well under a tick; give the last one time to write its manifest.
    while now() < end + 3 {
        all_serve(replicas).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let found = backups_by_tick(store);
    for tick in (first..end).step_by(TICK as usize) {
        let names = found.get(&tick).cloned().unwrap_or_default();
        assert_eq!(
            names.len(),
            1,
            "tick {tick}: want exactly one backup, found {names:?} (all: {found:?})\n{}",
            logs(replicas)
        );
    }
}

/// The lock session of the leader, cut from outside as a network failure or an operator would.
async fn cut_leader_session(db: &support::TestDb) -> i64 {
    let admin = db.pool().await;
    let cut: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'nexusd-leader %'
            AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
    )
    .fetch_all(&admin)
    .await
    .expect("finding the leader's session");
    assert_eq!(cut.len(), 1, "one session holds the leader lock: {cut:?}");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(cut[0])
        .execute(&admin)
        .await
        .expect("pg_terminate_backend");
    i64::from(cut[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_take_one_backup_per_tick_and_fail_over_to_one_another() {
    let db = shared_db().await;
    db.bootstrap().await;
    let url = db.url();
    let store = temp_root("nexusd-replicas-").join("store");
    let store_text = store.display().to_string();
    let vars = schedule_vars(&url, &store_text);
    let mut replicas: Vec<Option<Nexusd>> = (0..3).map(|_| Some(Nexusd::serve(&vars))).collect();
    for r in replicas.iter().flatten() {
        r.wait_health(200, Duration::from_secs(60)).await;
    }
    let (first, _) = wait_for_leader(&replicas, None, Duration::from_secs(15)).await;
    // The gauge agrees with /health: 1 on the leader, 0 elsewhere.
    for (i, r) in replicas.iter().enumerate() {
        let r = r.as_ref().unwrap();
        let text = support::scrape::fetch(&r.metrics, None).await.text;
        let want = if i == first {
            "nexusd_leader 1"
        } else {
            "nexusd_leader 0"
        };
        assert!(text.lines().any(|l| l == want), "replica {i}: no {want:?}");
    }
    // `nexusd status` names the leading replica (host:pid), from the database's lock table.
    let status = support::nexusd_command(&["status"], &vars)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    let pid = replicas[first].as_ref().unwrap().child.id();
    assert!(
        said.lines()
            .any(|l| l.starts_with("leader") && l.ends_with(&format!(":{pid}"))),
        "{said}"
    );
    each_tick_one_backup(&store, &replicas, 2).await;

    // kill -9 of the leader: another replica leads within 10 s, one backup per tick goes on.
    let mut killed = replicas[first].take().unwrap();
    killed.child.kill().expect("kill -9 the leader");
    killed.child.wait().ok();
    let (second, took) = wait_for_leader(&replicas, Some(first), Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(10), "failover took {took:?}");
    each_tick_one_backup(&store, &replicas, 2).await;

    // The leader's lock session is cut: it stops leading at once, the other replica takes over.
    cut_leader_session(&db).await;
    let (third, _) = wait_for_leader(&replicas, Some(second), Duration::from_secs(10)).await;
    assert_ne!(third, first);
    let old = replicas[second].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !old.log_text().contains("lost leadership") {
        assert!(Instant::now() < deadline, "{}", old.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    each_tick_one_backup(&store, &replicas, 2).await;
    assert_eq!(leaders(&replicas).await, vec![third]);
    for r in replicas.iter_mut().flatten() {
        r.terminate(Duration::from_secs(15));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_on_an_empty_database_migrate_it_once() {
    let db = shared_db().await;
    let url = db.url();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("NEXUSD_BACKUP_SCHEDULE", "off"),
        ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "off"),
        ("NEXUSD_BASEBACKUP_SCHEDULE", "off"),
        ("NEXUSD_EMBEDDING_PROVIDER", "none"),
    ];
    let mut replicas: Vec<Nexusd> = (0..4).map(|_| Nexusd::serve(&vars)).collect();
    for r in &replicas {
        let health = r.wait_health(200, Duration::from_secs(90)).await;
        assert_eq!(health["migrations"]["status"], "current", "{health}");
    }
    let admin = db.pool().await;
    let (rows, versions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    let known = nexusd::bootstrap::MIGRATOR.iter().count() as i64;
    assert_eq!((rows, versions), (known, known));
    // Exactly one replica applied them; the others found the schema current.
    let applied = replicas
        .iter()
        .filter(|r| r.log_text().contains("migrations applied"))
        .count();
    assert_eq!(
        applied,
        1,
        "{}",
        replicas.iter().map(Nexusd::log_text).collect::<String>()
    );
    // They all serve, and one of them leads.
    let mut leading = 0;
    for r in &replicas {
        r.ok("get_repository_list", json!({})).await;
        let (_, health) = r.get("/health").await.unwrap();
        leading += usize::from(health["leader"]["leader"] == true);
    }
    assert_eq!(leading, 1);
    for r in &mut replicas {
        r.terminate(Duration::from_secs(15));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_managed_deployment_turns_backups_and_host_metrics_off_and_says_why() {
    let db = shared_db().await;
    db.bootstrap().await;
    let url = db.url();
    let store = temp_root("nexusd-replicas-").join("store");
    let store_text = store.display().to_string();
    let mut vars = schedule_vars(&url, &store_text);
    vars.extend([
        ("NEXUSD_BACKUPS", "off"),
        ("NEXUSD_HOST_METRICS", "off"),
        // /health shows the reason to everyone only on an open deployment.
        ("REQUIRE_AUTH_FOR_WRITE", "false"),
    ]);

    let check = support::nexusd_command(&["check"], &vars).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(said.contains("backups off: managed database"), "{said}");
    assert!(said.contains("host metrics off: managed machine"), "{said}");

    let mut serve = Nexusd::serve(&vars);
    let health = serve.wait_health(200, Duration::from_secs(60)).await;
    let why = health["backup"]["unavailable"].as_str().unwrap_or_default();
    assert!(why.contains("NEXUSD_BACKUPS=off"), "{health}");
    let status = support::nexusd_command(&["status"], &vars)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("backups off: managed database"), "{said}");
    // No host collectors, no backup available; PostgreSQL's and nexusd's own metrics stay.
    let text = support::scrape::fetch(&serve.metrics, None).await.text;
    assert!(
        !text.lines().any(|l| l.starts_with("node_cpu")),
        "host metrics still exported"
    );
    assert!(text.lines().any(|l| l == "nexusd_backup_available 0"));
    assert!(text.lines().any(|l| l.starts_with("pg_up")));
    // Ticks pass without a backup: the platform takes them.
    tokio::time::sleep(Duration::from_secs(TICK as u64 + 2)).await;
    assert!(backups_by_tick(&store).is_empty());
    serve.terminate(Duration::from_secs(15));

    // The defaults keep one machine's behaviour: both on.
    let defaults = schedule_vars(&url, &store_text);
    let check = support::nexusd_command(&["check"], &defaults)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("backups on"), "{said}");
    assert!(said.contains("host metrics on"), "{said}");
}

/// A hot standby of `primary`, made with `pg_basebackup -R` and run like the test clusters.
struct Standby {
    port: u16,
    postmaster: Option<nexusd::db::Postmaster>,
}

impl Standby {
    async fn of(primary: &support::TestCluster) -> Standby {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_root("nexusd-standby-");
        let data = root.join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let postgres = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("a postgres user");
        nix::unistd::chown(&data, Some(postgres.uid), Some(postgres.gid)).unwrap();
        let basebackup = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .flatten()
            .map(|d| d.path().join("bin/pg_basebackup"))
            .find(|p| p.exists())
            .expect("pg_basebackup (scripts/setup-debian)");
        let done = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(basebackup)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .args(["-p", &primary.port.to_string()])
            .arg("-D")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let port = support::free_port();
        let mut settings: Vec<(String, String)> = nexusd::db::small_vm_settings()
            .into_iter()
            .filter(|(k, _)| k != "max_connections" && k != "shared_buffers")
            .collect();
        // A hot standby needs at least the primary's max_connections.
        settings.push(("max_connections".into(), "300".into()));
        settings.push(("shared_buffers".into(), "64MB".into()));
        let spec = nexusd::db::ClusterSpec {
            data_dir: data.clone(),
            socket_dir: root.join("sock"),
            port,
            tcp: true,
            superuser: "postgres".into(),
            durable: false,
            settings,
        };
        support::spawn_guardian(&data, &root);
        let cluster = nexusd::db::Cluster::new(spec, None).unwrap();
        let postmaster = cluster.start().await.expect("starting the standby");
        Standby {
            port,
            postmaster: Some(postmaster),
        }
    }

    fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn pool(&self, database: &str) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url(database)).await.unwrap()
    }

    async fn stop(&mut self) {
        if let Some(pm) = self.postmaster.take() {
            pm.stop(Duration::from_secs(10)).await.unwrap();
        }
    }
}

async fn repository_names(serve: &Nexusd) -> Vec<String> {
    let list = serve.ok("get_repository_list", json!({})).await;
    list["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Polls `/health` until the first read replica's `usable` is `want`.
async fn replica_usable(serve: &Nexusd, want: bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, health) = serve.get("/health").await.unwrap();
        if health["read_replicas"][0]["usable"] == want {
            return health;
        }
        assert!(Instant::now() < deadline, "{health}\n{}", serve.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_skills_go_to_a_hot_standby_and_back_to_the_primary_when_it_lags_or_stops() {
    let primary = support::TestCluster::start().await;
    let db = primary.create_db().await;
    db.bootstrap().await;
    let mut standby = Standby::of(&primary).await;
    let read_url = standby.url(&db.name);
    let url = db.url();
    let serve = Nexusd::ready(
        &url,
        &[
            ("DATABASE_READ_URL", read_url.as_str()),
            ("NEXUSD_READ_MAX_LAG", "2"),
            ("REQUIRE_AUTH_FOR_WRITE", "false"),
            ("NEXUSD_BACKUP_SCHEDULE", "off"),
            ("NEXUSD_EMBEDDING_PROVIDER", "none"),
        ],
    )
    .await;
    replica_usable(&serve, true).await;

    // A write goes to the primary; once replayed, the reads are served by the standby.
    serve
        .ok("add_repository", json!({"repository": "acme/one"}))
        .await;
    let on_standby = standby.pool(&db.name).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM repositories")
        .fetch_one(&on_standby)
        .await
        .unwrap()
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the standby never replayed the write"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reads_on_standby = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements s
               JOIN pg_database d ON d.oid = s.dbid
              WHERE d.datname = current_database() AND s.query ILIKE '%repositories%'",
        )
        .fetch_one(&on_standby)
        .await
        .unwrap()
    };
    let before = reads_on_standby().await;
    for _ in 0..5 {
        assert_eq!(repository_names(&serve).await, ["acme/one"]);
    }
    let after = reads_on_standby().await;
    assert!(
        after >= before + 5,
        "the standby ran {} reads",
        after - before
    );

    // Replay paused: past NEXUSD_READ_MAX_LAG the standby is skipped and reads see the primary.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&on_standby)
        .await
        .unwrap();
    serve
        .ok("add_repository", json!({"repository": "acme/two"}))
        .await;
    let health = replica_usable(&serve, false).await;
    assert!(
        health["read_replicas"][0]["lag_seconds"].as_f64().unwrap() > 2.0,
        "{health}"
    );
    assert_eq!(repository_names(&serve).await, ["acme/one", "acme/two"]);
    let lag = support::scrape::fetch(&serve.metrics, None).await.text;
    assert!(
        lag.lines()
            .any(|l| l.starts_with("nexusd_read_replica_lag_seconds{")),
        "no lag metric"
    );
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&on_standby)
        .await
        .unwrap();
    replica_usable(&serve, true).await;
    on_standby.close().await;

    // The standby stops: every read still succeeds, from the primary.
    standby.stop().await;
    for _ in 0..5 {
        assert_eq!(repository_names(&serve).await, ["acme/one", "acme/two"]);
    }
    replica_usable(&serve, false).await;
    assert_eq!(repository_names(&serve).await, ["acme/one", "acme/two"]);
}

/// A leader that loses its lock session while its backup uploads stores no backup: the upload
/// is stopped (or the manifest refused by the fencing check right before it is written), the log
/// says this replica lost leadership, and the next leader's backup is complete. A throttled
/// uplink to the GCS emulator keeps the first backup's upload running when the session is cut;
/// it then runs at full speed, so the upload usually ends before the replica notices and the
/// fencing check (`Lease::confirm`) is what refuses the manifest. With that check removed this
/// fails (the interrupted backup's manifest lands); before this change, when the term's end
/// stopped the upload first, the log said only "the backup was cancelled".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_losing_its_lock_mid_backup_stores_no_manifest_and_the_next_leader_backs_up() {
    use nexusd::backup::MANIFEST_SUFFIX;
    use support::backups::Where;
    use support::throttle_proxy::ThrottleProxy;

    let db = shared_db().await;
    let admin = support::backups::seed(&db).await;
    // About 2.5 MB of random hex (half that gzipped): tens of seconds at the throttled rate.
    sqlx::query(
        "INSERT INTO lessons_learned (repo_id, title, description, category, impact)
         SELECT 1, 'bulk ' || g,
                (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 8) i),
                'reliability', 'info'
           FROM generate_series(1, 10000) g",
    )
    .execute(&admin)
    .await
    .unwrap();
    let gcs = support::shared_gcs();
    let direct = Where::gcs(gcs).await;
    let bucket = direct.bucket().to_string();
    let proxy = ThrottleProxy::start("127.0.9.34", &gcs.ip);
    let store = direct.through(proxy.endpoint());
    proxy.throttle(64 * 1024);
    let url = db.url();
    let owned = store.vars();
    let mut vars: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    vars.extend([
        ("NEXUSD_BACKUP_SCHEDULE", "*/10 * * * * *"),
        ("NEXUSD_BACKUP_VERIFY_SCHEDULE", "off"),
        ("NEXUSD_BASEBACKUP_SCHEDULE", "off"),
        ("NEXUSD_BACKUP_MIN_KEEP", "1000"),
        ("NEXUSD_EMBEDDING_PROVIDER", "none"),
    ]);
    let serve = Nexusd::ready(&url, &vars).await;
    let manifests = || async {
        gcs.objects(&bucket)
            .await
            .into_iter()
            .filter(|n| n.ends_with(MANIFEST_SUFFIX))
            .collect::<Vec<_>>()
    };

    // The first scheduled backup is uploading.
    let deadline = Instant::now() + Duration::from_secs(40);
    while proxy.sent() < 256 * 1024 {
        assert!(
            Instant::now() < deadline,
            "no upload under way\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_at = chrono::Utc::now();
    cut_leader_session(&db).await;
    // The uplink recovers at once: whatever of the first backup is left may reach the store
    // before the replica notices, and then only the fencing check stands in the way.
    proxy.throttle(0);

    // The next leader's backup completes; the interrupted one never counts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let complete = loop {
        let found = manifests().await;
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no complete backup after the cut\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Let an interrupted backup finish its cleanup, then look again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let complete: Vec<String> = manifests().await.into_iter().chain(complete).collect();
    for name in &complete {
        let manifest: serde_json::Value =
            serde_json::from_slice(&gcs.download(&bucket, name).await).expect("a JSON manifest");
        let started = chrono::DateTime::parse_from_rfc3339(
            manifest["started_at"].as_str().expect("started_at"),
        )
        .expect("an RFC 3339 time");
        assert!(
            started > cut_at,
            "{name} started at {started}, before the leader's session was cut at {cut_at}\n{}",
            serve.log_text()
        );
        let object = name.trim_end_matches(MANIFEST_SUFFIX);
        let stored = gcs.download(&bucket, object).await;
        assert_eq!(
            stored.len() as u64,
            manifest["compressed_bytes"].as_u64().unwrap(),
            "{object}"
        );
    }
    let log = serve.log_text();
    assert!(
        log.contains("lost leadership"),
        "the log does not say why the first backup does not count:\n{log}"
    );
}
