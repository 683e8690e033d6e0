//! Where backups go, when they run, how long they are kept, and how they are made.

use std::path::{Path, PathBuf};

use crate::env::{Env, Var, absolute};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_BACKUP_BUCKET",
        default: "unset: NEXUSD_BACKUP_DIR",
        meaning: "gs://bucket[/prefix]; credentials from Application Default Credentials (the VM's metadata server)",
    },
    Var {
        name: "NEXUSD_BACKUP_DIR",
        default: "$NEXUSD_STATE_DIR/backups",
        meaning: "the local store",
    },
    Var {
        name: "NEXUSD_GCS_ENDPOINT",
        default: "Google",
        meaning: "storage endpoint override (emulators; no credentials sent)",
    },
    Var {
        name: "GOOGLE_APPLICATION_CREDENTIALS",
        default: "unset",
        meaning: "a service account key file for the backup bucket; unset: the Application \
                  Default Credentials file in $HOME/.config/gcloud, then the metadata server (the \
                  VM's service account). nexusd check names each source it tried",
    },
    Var {
        name: "NEXUSD_BACKUP_SCHEDULE",
        default: "0 0 2 * * *",
        meaning: "seconds-first cron, UTC; off disables nightly backups",
    },
    Var {
        name: "NEXUSD_BACKUP_VERIFY_SCHEDULE",
        default: "0 0 4 * * Sun",
        meaning: "seconds-first cron, UTC, of the verified restore; off disables it",
    },
    Var {
        name: "NEXUSD_BASEBACKUP_SCHEDULE",
        default: "0 0 3 * * Sun",
        meaning: "seconds-first cron, UTC, of the physical base backup (pg_basebackup into the store's base/, for point-in-time restores with the archived WAL); off disables it",
    },
    Var {
        name: "NEXUSD_BACKUP_RETENTION_DAYS",
        default: "30",
        meaning: "age after which backups are pruned",
    },
    Var {
        name: "NEXUSD_BACKUP_MIN_KEEP",
        default: "3",
        meaning: "complete backups always kept, whatever their age",
    },
    Var {
        name: "NEXUSD_BACKUP_MAX_DELETIONS",
        default: "10",
        meaning: "most backups one prune deletes",
    },
    Var {
        name: "NEXUSD_BACKUP_FORMAT",
        default: "plain",
        meaning: "plain (restorable with gunzip | psql) or custom (pg_dump -Fc -Z0)",
    },
    Var {
        name: "NEXUSD_BACKUP_GZIP_LEVEL",
        default: "3",
        meaning: "1 (fastest) to 9 (smallest)",
    },
    Var {
        name: "NEXUSD_BACKUP_TIMEOUT",
        default: "7200",
        meaning: "seconds a backup may run before it is aborted",
    },
    Var {
        name: "NEXUSD_BACKUP_RETRY_SECONDS",
        default: "120",
        meaning: "how long storage requests are retried",
    },
    Var {
        name: "NEXUSD_BACKUP_REQUEST_TIMEOUT",
        default: "60",
        meaning: "seconds one storage request may take before it fails (a hung store never holds a backup)",
    },
    Var {
        name: "NEXUSD_BACKUP_STATUS_REFRESH",
        default: "30",
        meaning: "seconds between serve's looks at the store (one listing), so a backup or verification run by hand shows in /health, get_backup_status and the metrics",
    },
    Var {
        name: "NEXUSD_WAL_PUSH_TIMEOUT",
        default: "120",
        meaning: "seconds one WAL file may take to archive (nexusd wal-push, PostgreSQL's archive_command) or fetch (wal-fetch) before it fails and PostgreSQL retries",
    },
    Var {
        name: "NEXUSD_WAL_MAX_PENDING",
        default: "off",
        meaning: "ceiling on pg_wal while the store cannot be reached (e.g. 2GB): past it, wal-push drops the WAL file it cannot store (recorded, reported as a gap; the next base backup starts a new recoverable window) so the database keeps running; off: keep every file, and PostgreSQL stops when the disk is full (docs/pitr.md)",
    },
];

/// Nightly backups: where they go, when, how long they are kept.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub destination: BackupDestination,
    /// `NEXUSD_GCS_ENDPOINT`: a storage endpoint to use instead of Google's (emulators); requests
    /// are then sent without credentials.
    pub gcs_endpoint: Option<String>,
    /// `NEXUSD_BACKUP_SCHEDULE` (seconds-first cron, UTC; default `0 0 2 * * *`); `off`: none.
    pub schedule: Option<String>,
    /// `NEXUSD_BACKUP_VERIFY_SCHEDULE` (default `0 0 4 * * Sun`: weekly); `off`: none.
    pub verify_schedule: Option<String>,
    /// `NEXUSD_BASEBACKUP_SCHEDULE` (default `0 0 3 * * Sun`: weekly); `off`: none.
    pub base_schedule: Option<String>,
    /// `NEXUSD_BACKUP_RETENTION_DAYS` (30).
    pub retention_days: u32,
    /// `NEXUSD_BACKUP_MIN_KEEP` (3): complete backups kept whatever their age.
    pub min_keep: u32,
    /// `NEXUSD_BACKUP_MAX_DELETIONS` (10): more in one prune means something is off.
    pub max_deletions: u32,
    /// `NEXUSD_BACKUP_FORMAT`: `plain` (default, restorable with gunzip | psql) or `custom`.
    pub format: DumpFormat,
    /// `NEXUSD_BACKUP_GZIP_LEVEL` (3; 1-9).
    pub gzip_level: u32,
    /// `NEXUSD_BACKUP_TIMEOUT` seconds (7200): a backup running longer is aborted.
    pub timeout: std::time::Duration,
    /// `NEXUSD_BACKUP_RETRY_SECONDS` (120): how long storage requests are retried.
    pub retry_time_limit: std::time::Duration,
    /// `NEXUSD_BACKUP_REQUEST_TIMEOUT` (60): the deadline of one storage request.
    pub request_timeout: std::time::Duration,
    /// `NEXUSD_BACKUP_STATUS_REFRESH` (30): how often `serve` re-reads the store's newest backup
    /// and verification.
    pub status_refresh: std::time::Duration,
    /// `NEXUSD_WAL_PUSH_TIMEOUT` (120): the deadline of one `wal-push` or `wal-fetch`.
    pub wal_push_timeout: std::time::Duration,
    /// `NEXUSD_WAL_MAX_PENDING` (off): bytes of pg_wal past which a WAL file that cannot be
    /// stored is dropped instead of kept (src/backup/wal.rs).
    pub wal_max_pending: Option<u64>,
}

/// Where backups are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupDestination {
    /// `NEXUSD_BACKUP_BUCKET=gs://bucket[/prefix]`.
    Gcs { bucket: String, prefix: String },
    /// `NEXUSD_BACKUP_DIR` (default `$NEXUSD_STATE_DIR/backups`).
    Local { dir: PathBuf },
}

impl BackupDestination {
    /// `gs://bucket/prefix/` or the directory, for messages.
    pub fn describe(&self) -> String {
        match self {
            BackupDestination::Gcs { bucket, prefix } => format!("gs://{bucket}/{prefix}"),
            BackupDestination::Local { dir } => dir.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// `pg_dump -Fp`: plain SQL.
    Plain,
    /// `pg_dump -Fc -Z0`: the custom archive, compressed by nexusd.
    Custom,
}

pub const DEFAULT_BACKUP_SCHEDULE: &str = "0 0 2 * * *";
const DEFAULT_VERIFY_SCHEDULE: &str = "0 0 4 * * Sun";
const DEFAULT_BASE_SCHEDULE: &str = "0 0 3 * * Sun";

/// Parses `gs://bucket[/prefix]`; the prefix gets a trailing slash.
fn parse_bucket(value: &str) -> Result<(String, String), String> {
    let rest = value
        .strip_prefix("gs://")
        .ok_or_else(|| "expected gs://bucket or gs://bucket/prefix".to_string())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "{bucket:?} is not a bucket name: 3-63 lowercase letters, digits, '-', '_' or '.'"
        ));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// Validates a seconds-first cron expression the way the scheduler will parse it.
fn valid_cron(expression: &str) -> bool {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .is_ok()
}

impl BackupConfig {
    /// Local backups default to `state_dir/backups`.
    pub fn from_env(env: &mut Env<'_>, state_dir: &Path) -> BackupConfig {
        let seconds = |v: u32| std::time::Duration::from_secs(v.into());
        BackupConfig {
            destination: destination(env, state_dir),
            gcs_endpoint: env.url("NEXUSD_GCS_ENDPOINT"),
            schedule: schedule(env, "NEXUSD_BACKUP_SCHEDULE", DEFAULT_BACKUP_SCHEDULE),
            verify_schedule: schedule(
                env,
                "NEXUSD_BACKUP_VERIFY_SCHEDULE",
                DEFAULT_VERIFY_SCHEDULE,
            ),
            base_schedule: schedule(env, "NEXUSD_BASEBACKUP_SCHEDULE", DEFAULT_BASE_SCHEDULE),
            retention_days: env.bounded(
                "NEXUSD_BACKUP_RETENTION_DAYS",
                30,
                1,
                36500,
                "a number of days, 1 or more",
            ),
            min_keep: env.bounded("NEXUSD_BACKUP_MIN_KEEP", 3, 1, 1000, "a count, 1 or more"),
            max_deletions: env.bounded(
                "NEXUSD_BACKUP_MAX_DELETIONS",
                10,
                1,
                10000,
                "a count, 1 or more",
            ),
            format: dump_format(env),
            gzip_level: env.bounded(
                "NEXUSD_BACKUP_GZIP_LEVEL",
                3,
                1,
                9,
                "1 (fastest) to 9 (smallest)",
            ),
            timeout: seconds(env.bounded(
                "NEXUSD_BACKUP_TIMEOUT",
                7200,
                10,
                7 * 86400,
                "a number of seconds, 10 or more",
            )),
            retry_time_limit: seconds(env.bounded(
                "NEXUSD_BACKUP_RETRY_SECONDS",
                120,
                1,
                3600,
                "a number of seconds, 1 to 3600",
            )),
            request_timeout: seconds(env.bounded(
                "NEXUSD_BACKUP_REQUEST_TIMEOUT",
                60,
                1,
                3600,
                "a number of seconds, 1 to 3600",
            )),
            status_refresh: seconds(env.bounded(
                "NEXUSD_BACKUP_STATUS_REFRESH",
                30,
                1,
                3600,
                "a number of seconds, 1 to 3600",
            )),
            wal_push_timeout: seconds(env.bounded(
                "NEXUSD_WAL_PUSH_TIMEOUT",
                120,
                1,
                3600,
                "a number of seconds, 1 to 3600",
            )),
            wal_max_pending: max_pending(env),
        }
    }
}

/// `NEXUSD_WAL_MAX_PENDING`: `off` (the default) or a size.
fn max_pending(env: &mut Env<'_>) -> Option<u64> {
    let value = env.get("NEXUSD_WAL_MAX_PENDING")?;
    if value.trim().eq_ignore_ascii_case("off") {
        return None;
    }
    match parse_size(&value) {
        Some(bytes) if bytes > 0 => Some(bytes),
        _ => {
            env.error(
                "NEXUSD_WAL_MAX_PENDING",
                format!(
                    "{value:?} is not valid: expected a size such as 2GB, 512MB or 1048576 \
                     (bytes), or off"
                ),
            );
            None
        }
    }
}

/// `2GB`, `512MB`, `64kB`, `1GiB`, `1048576`: a size in bytes (decimal and binary units).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `NEXUSD_BACKUP_BUCKET`, else `NEXUSD_BACKUP_DIR`, else `state_dir/backups`.
fn destination(env: &mut Env<'_>, state_dir: &Path) -> BackupDestination {
    let Some(bucket) = env.get("NEXUSD_BACKUP_BUCKET") else {
        return BackupDestination::Local {
            dir: env
                .get("NEXUSD_BACKUP_DIR")
                .map(|d| absolute(Path::new(&d)))
                .unwrap_or_else(|| state_dir.join("backups")),
        };
    };
    match parse_bucket(&bucket) {
        Ok((bucket, prefix)) => BackupDestination::Gcs { bucket, prefix },
        Err(why) => {
            env.error(
                "NEXUSD_BACKUP_BUCKET",
                format!("{bucket:?} is not valid: {why}"),
            );
            BackupDestination::Local {
                dir: state_dir.join("backups"),
            }
        }
    }
}

/// A seconds-first cron expression, or `None` for `off` (or a bad value, reported).
fn schedule(env: &mut Env<'_>, var: &'static str, default: &str) -> Option<String> {
    let value = env.get(var).unwrap_or_else(|| default.to_string());
    if value.eq_ignore_ascii_case("off") {
        return None;
    }
    if !valid_cron(&value) {
        env.error(
            var,
            format!(
                "{value:?} is not a valid schedule: expected a cron expression with seconds first \
                 (sec min hour day-of-month month day-of-week), e.g. \"0 0 2 * * *\" for 02:00 UTC daily, or off"
            ),
        );
        return None;
    }
    Some(value)
}

fn dump_format(env: &mut Env<'_>) -> DumpFormat {
    match env
        .get("NEXUSD_BACKUP_FORMAT")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => DumpFormat::Plain,
        Some(f) if f == "plain" => DumpFormat::Plain,
        Some(f) if f == "custom" => DumpFormat::Custom,
        Some(other) => {
            env.error(
                "NEXUSD_BACKUP_FORMAT",
                format!("{other:?} is not valid: expected plain or custom"),
            );
            DumpFormat::Plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_are_read_in_decimal_and_binary_units() {
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("512 MB"), Some(512_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("1.5gb"), Some(1_500_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("2PB"), None);
    }
}
