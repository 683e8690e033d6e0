//! Helpers for the backup tests: where a test keeps its backups (a local directory or a bucket
//! of the GCS emulator), running `nexusd` against a database and a store, and a seeded knowledge
//! base.

use std::path::PathBuf;
use std::process::Output;

use sqlx::{Executor, PgPool};

use super::{FakeGcs, TestDb, nexusd_command, temp_root};

/// Where a test keeps its backups.
pub enum Where {
    Local(PathBuf),
    Gcs { endpoint: String, bucket: String },
}

impl Where {
    pub fn local() -> Self {
        Where::Local(temp_root("nexusd-backups-").join("store"))
    }

    pub async fn gcs(gcs: &FakeGcs) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let bucket = format!(
            "b{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        gcs.bucket(&bucket).await;
        Where::Gcs {
            endpoint: gcs.endpoint(),
            bucket,
        }
    }

    /// The same bucket reached at `endpoint` (a proxy in front of the emulator).
    pub fn through(&self, endpoint: String) -> Self {
        Where::Gcs {
            endpoint,
            bucket: self.bucket().to_string(),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        match self {
            Where::Gcs { bucket, .. } => bucket,
            Where::Local(dir) => panic!("{} is a directory, not a bucket", dir.display()),
        }
    }

    pub fn vars(&self) -> Vec<(String, String)> {
        match self {
            Where::Local(dir) => vec![("NEXUSD_BACKUP_DIR".into(), dir.display().to_string())],
            Where::Gcs { endpoint, bucket } => vec![
                (
                    "NEXUSD_BACKUP_BUCKET".into(),
                    format!("gs://{bucket}/nexusd"),
                ),
                ("NEXUSD_GCS_ENDPOINT".into(), endpoint.clone()),
                ("NEXUSD_BACKUP_RETRY_SECONDS".into(), "3".into()),
            ],
        }
    }

    /// Object names, relative to the store.
    pub async fn objects(&self, gcs: &FakeGcs) -> Vec<String> {
        match self {
            Where::Local(dir) => {
                let mut names: Vec<String> = std::fs::read_dir(dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                names
            }
            Where::Gcs { bucket, .. } => gcs
                .objects(bucket)
                .await
                .into_iter()
                .filter_map(|n| n.strip_prefix("nexusd/").map(str::to_string))
                .collect(),
        }
    }

    pub async fn read(&self, gcs: &FakeGcs, name: &str) -> Vec<u8> {
        match self {
            Where::Local(dir) => std::fs::read(dir.join(name)).expect("reading a backup file"),
            Where::Gcs { bucket, .. } => gcs.download(bucket, &format!("nexusd/{name}")).await,
        }
    }
}

/// Runs `nexusd` with `args` against `db` and the store.
pub fn nexusd(db: &TestDb, store: &Where, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let url = db.url();
    let owned = store.vars();
    let mut vars: Vec<(&str, &str)> = vec![("DATABASE_URL", url.as_str())];
    vars.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vars.extend_from_slice(extra);
    nexusd_command(args, &vars)
        .output()
        .expect("running nexusd")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A knowledge base with embeddings, lessons, issues and a bit of everything.
pub async fn seed(db: &TestDb) -> PgPool {
    db.bootstrap().await;
    let pool = db.pool().await;
    pool.execute(
        "INSERT INTO repositories (name, problem_domain) SELECT 'seed/r' || g, 'domain ' || g FROM generate_series(1, 20) g;
         INSERT INTO patterns (repo_id, name, description, embedding)
              SELECT (g % 20) + 1, 'pattern ' || g, 'about ''quotes'' and ünïcode ' || g,
                     (SELECT array_agg(((g * 7 + i) % 101) / 101.0 - 0.5)::vector(1536) FROM generate_series(1, 1536) i)
                FROM generate_series(1, 150) g;
         INSERT INTO keywords (keyword) SELECT 'k' || g FROM generate_series(1, 30) g;
         INSERT INTO pattern_keywords SELECT p.id, k.id FROM patterns p JOIN keywords k ON k.id = (p.id % 30) + 1;
         INSERT INTO lessons_learned (repo_id, title, description, category, impact)
              SELECT (g % 20) + 1, 'lesson ' || g, E'multi\\nline\\ttext', 'reliability', 'warning' FROM generate_series(1, 40) g;
         INSERT INTO runtime_issues (repo_id, issue_id, detected_at, issue_type, severity, service_type, metrics)
              SELECT 1, 'i' || g, now(), 'timeout', 'high', 'gke', '{\"p95\": 1.5}' FROM generate_series(1, 10) g;",
    )
    .await
    .expect("seeding");
    pool
}

/// The backup name printed by `nexusd backup run`.
pub fn backup_name(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    out.split_whitespace()
        .find(|w| w.starts_with("dev-nexus-") && w.ends_with(".sql.gz:"))
        .map(|w| w.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("no backup name in: {out}"))
}
