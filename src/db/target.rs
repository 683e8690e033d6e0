//! Where the knowledge base is: the configured server, or the embedded cluster nexusd runs
//! under its state directory — resolved once, for `serve` and for the one-off commands alike —
//! and whether a `nexusd serve` holds that state directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::postgres::PgConnectOptions;

use super::cluster::{self, Cluster, ClusterSpec, Postmaster};
use super::config::{DatabaseConfig, DatabaseTarget};

/// How long the embedded PostgreSQL gets for a fast shutdown before [`Postmaster::stop`]
/// escalates (at most 2 s more).
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The database nexusd talks to: options for connections, a printable name, and the embedded
/// cluster when nexusd runs one.
pub struct Target {
    pub options: PgConnectOptions,
    /// The password inside `options` (sqlx does not expose it), for the client tools.
    pub password: Option<String>,
    /// A printable name: the URL without its password, or the embedded cluster's directory.
    pub display: String,
    pub cluster: Option<Arc<Cluster>>,
}

impl Target {
    /// The configured server, or the embedded cluster under `state_dir` (its binaries found,
    /// nothing started).
    pub fn resolve(config: &DatabaseConfig, state_dir: &Path) -> Result<Target> {
        Target::resolve_with(config, state_dir, Vec::new(), Vec::new())
    }

    /// [`Target::resolve`], the embedded cluster getting `settings` too and the directories
    /// `dirs` prepared for its user (WAL archiving: src/backup/wal.rs).
    pub fn resolve_with(
        config: &DatabaseConfig,
        state_dir: &Path,
        settings: Vec<(String, String)>,
        dirs: Vec<PathBuf>,
    ) -> Result<Target> {
        match &config.target {
            DatabaseTarget::External(url) => Ok(Target {
                options: url.options.clone(),
                password: url.password().map(str::to_string),
                display: url.redacted().to_string(),
                cluster: None,
            }),
            DatabaseTarget::Embedded => {
                let spec = ClusterSpec::embedded(state_dir);
                let cluster = Cluster::new(spec, config.pg_bindir.as_deref())
                    .context(
                        "preparing the embedded PostgreSQL cluster (no DATABASE_URL or POSTGRES_* set)",
                    )?
                    .with_settings(settings, dirs);
                Ok(Target {
                    options: cluster.connect_options(cluster::EMBEDDED_DATABASE),
                    password: None,
                    display: format!(
                        "embedded PostgreSQL {} ({}, database {})",
                        cluster.binaries().version,
                        state_dir.display(),
                        cluster::EMBEDDED_DATABASE
                    ),
                    cluster: Some(Arc::new(cluster)),
                })
            }
        }
    }
}

/// Whether the embedded cluster under `state_dir` has been created (by `serve` or `bootstrap`),
/// without looking for PostgreSQL's programs.
pub fn embedded_exists(state_dir: &Path) -> bool {
    ClusterSpec::embedded(state_dir)
        .data_dir
        .join("PG_VERSION")
        .is_file()
}

/// Starts the embedded cluster for a one-off command; with `create`, initialising it on first
/// use (only `bootstrap` may: other commands must not run against a new, empty cluster).
pub async fn start_embedded(cluster: &Cluster, create: bool) -> Result<Postmaster> {
    if create {
        cluster.init_if_needed().await?;
    } else if !cluster.is_initialised() {
        bail!("there is no embedded cluster yet: `nexusd bootstrap` or `nexusd serve` creates it");
    }
    let postmaster = cluster.start().await?;
    if let Err(e) = cluster.ensure_database(cluster::EMBEDDED_DATABASE).await {
        postmaster.stop(STOP_GRACE).await.ok();
        return Err(e);
    }
    Ok(postmaster)
}

/// The file [`super::cluster::StateLock`] locks (`nexusd.lock` in the state directory, as
/// `db/cluster.rs` names it).
fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("nexusd.lock")
}

/// A process holding the state directory's lock: a running `nexusd serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Its PID, when the kernel's lock table (`/proc/locks`) or the lock file says it.
    pub pid: Option<i32>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "a nexusd serve (pid {pid})"),
            None => f.write_str("a nexusd serve"),
        }
    }
}

/// Who holds the state directory's lock, without taking it or creating anything: `/proc/locks`
/// names the process holding a lock on the lock file's inode; where it cannot be read, a shared
/// lock is tried (and released at once).
pub fn state_lock_holder(state_dir: &Path) -> Option<Holder> {
    use std::os::unix::fs::MetadataExt;
    let path = lock_path(state_dir);
    let meta = std::fs::metadata(&path).ok()?;
    if let Ok(table) = std::fs::read_to_string("/proc/locks") {
        let pid = lock_table_holder(&table, meta.dev(), meta.ino());
        return pid.map(|pid| Holder {
            pid: Some(pid).filter(|&p| alive(p)).or_else(|| file_pid(&path)),
        });
    }
    let file = std::fs::File::open(&path).ok()?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => None,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Some(Holder {
            pid: file_pid(&path),
        }),
        Err(_) => None,
    }
}

/// A PID written into the lock file, if its holder writes one.
fn file_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&pid| alive(pid))
}

fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// The PID holding an exclusive `flock` on the file `(dev, ino)` in `/proc/locks`' text, whose
/// lines read `1: FLOCK  ADVISORY  WRITE 12345 fe:00:5898252 0 EOF` (major:minor in hex).
fn lock_table_holder(table: &str, dev: u64, ino: u64) -> Option<i32> {
    // glibc's encoding of dev_t.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, "WRITE", pid, file, ..] = fields.as_slice() else {
            return None;
        };
        let mut parts = file.split(':');
        let (maj, min, inode) = (parts.next()?, parts.next()?, parts.next()?);
        let same = u64::from_str_radix(maj, 16).ok()? == major
            && u64::from_str_radix(min, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == ino;
        same.then(|| pid.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_table_names_the_holder_of_this_file_only() {
        let table = "1: FLOCK  ADVISORY  WRITE 18992 fe:00:5898252 0 EOF\n\
                     2: FLOCK  ADVISORY  READ 18993 fe:00:777 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 18994 fe:00:778 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 4242 fe:00:779 0 EOF\n";
        let dev = (0xfe << 8) as u64;
        assert_eq!(lock_table_holder(table, dev, 779), Some(4242));
        assert_eq!(lock_table_holder(table, dev, 5898252), Some(18992));
        assert_eq!(lock_table_holder(table, dev, 777), None, "a shared lock");
        assert_eq!(lock_table_holder(table, dev, 778), None, "not a flock");
        assert_eq!(
            lock_table_holder(table, dev + 1, 779),
            None,
            "another device"
        );
    }

    #[test]
    fn a_held_state_directory_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(state_lock_holder(dir.path()), None, "no lock file");
        let lock = super::super::cluster::StateLock::try_acquire(dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(
            state_lock_holder(dir.path()),
            Some(Holder {
                pid: Some(std::process::id() as i32)
            })
        );
        drop(lock);
        assert_eq!(state_lock_holder(dir.path()), None);
    }
}
