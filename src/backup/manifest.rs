//! The manifest written beside each dump, last: what makes a dump a backup. It records how the
//! object was made and what it must contain — sizes, SHA-256 and CRC32C of the object, server and
//! pg_dump versions, timings, and per-table row counts taken in the dump's own snapshot — so a
//! verification can prove a restore complete. Verification results go to a separate
//! `<name>.verify.json`, so the manifest is never rewritten.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::DumpFormat;

pub const MANIFEST_SUFFIX: &str = ".manifest.json";
pub const VERIFY_SUFFIX: &str = ".verify.json";
/// Backups are named `dev-nexus-YYYYmmdd_HHMMSS` plus this, as the original's cron job did.
const NAME_PREFIX: &str = "dev-nexus-";
/// The name `restore` and `backup verify` take for the newest complete backup.
pub const LATEST: &str = "latest";

/// The object name for a dump taken at `at`.
pub fn dump_name(at: DateTime<Utc>, format: DumpFormat) -> String {
    format!(
        "{NAME_PREFIX}{}{}",
        at.format("%Y%m%d_%H%M%S"),
        extension(format)
    )
}

/// The name for a dump taken at `at` that is not `taken` yet: [`dump_name`], or when two backups
/// start within one second, the same with `-2`, `-3`, … before the extension (still a dump name
/// to [`is_dump`], so retention, `backup list` and `restore` treat it like any other).
pub fn unique_dump_name(
    at: DateTime<Utc>,
    format: DumpFormat,
    taken: impl Fn(&str) -> bool,
) -> String {
    let name = dump_name(at, format);
    if !taken(&name) {
        return name;
    }
    let base = format!("{NAME_PREFIX}{}", at.format("%Y%m%d_%H%M%S"));
    (2u32..)
        .map(|n| format!("{base}-{n}{}", extension(format)))
        .find(|name| !taken(name))
        .unwrap_or(name)
}

/// Orders dump names by when they were taken: the time stamp, then the `-N` suffix (none
/// counts as 1), so `…_020005-2` comes after `…_020005` although `-` sorts before `.`.
pub fn name_order(name: &str) -> (&str, u32) {
    let stem = name
        .strip_prefix(NAME_PREFIX)
        .and_then(|n| {
            n.strip_suffix(".sql.gz")
                .or_else(|| n.strip_suffix(".dump.gz"))
        })
        .unwrap_or(name);
    match stem.rsplit_once('-') {
        Some((stamp, n)) => match n.parse() {
            Ok(n) => (stamp, n),
            Err(_) => (stem, 1),
        },
        None => (stem, 1),
    }
}

pub fn extension(format: DumpFormat) -> &'static str {
    match format {
        DumpFormat::Plain => ".sql.gz",
        DumpFormat::Custom => ".dump.gz",
    }
}

/// Whether `name` is a dump object (not a manifest, verification or foreign file).
pub fn is_dump(name: &str) -> bool {
    name.starts_with(NAME_PREFIX) && (name.ends_with(".sql.gz") || name.ends_with(".dump.gz"))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub manifest_version: u32,
    /// The dump object's name.
    pub name: String,
    /// `plain` or `custom`.
    pub format: String,
    pub compression: Compression,
    /// Bytes pg_dump wrote.
    pub raw_bytes: u64,
    /// Bytes of the stored object.
    pub compressed_bytes: u64,
    /// SHA-256 of the stored object, hex.
    pub sha256: String,
    /// CRC32C of the stored object (Castagnoli), as a number.
    pub crc32c: u32,
    pub database: String,
    pub server_version: String,
    pub pg_dump_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// The snapshot pg_dump read, shared with the row counts.
    pub snapshot: String,
    /// `schema.table` → rows, counted in the dump's snapshot.
    pub tables: BTreeMap<String, i64>,
    /// `local` or `gcs`, and the object's generation there.
    pub store: String,
    pub generation: Option<i64>,
    pub nexusd_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Compression {
    pub codec: String,
    pub level: u32,
    /// Independent gzip members of this many raw bytes (compressed in parallel); any gunzip
    /// reads the concatenation.
    pub block_bytes: u64,
}

/// The outcome of `nexusd backup verify` for one backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    pub name: String,
    pub verified_at: DateTime<Utc>,
    pub ok: bool,
    pub sha256_ok: bool,
    pub crc32c_ok: bool,
    /// Row counts of the scratch restore equal the manifest's.
    pub rows_ok: bool,
    /// `schema.table: expected N, restored M` for each difference.
    pub mismatches: Vec<String>,
    /// Errors the restore reported (e.g. a statement the scratch database refused).
    pub restore_errors: Vec<String>,
    /// The scratch database the backup was restored into (dropped afterwards).
    pub scratch_database: String,
    pub duration_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_follow_the_originals_layout() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 5).unwrap();
        assert_eq!(
            dump_name(at, DumpFormat::Plain),
            "dev-nexus-20261124_020005.sql.gz"
        );
        assert_eq!(
            dump_name(at, DumpFormat::Custom),
            "dev-nexus-20261124_020005.dump.gz"
        );
        assert!(is_dump("dev-nexus-20261124_020005.sql.gz"));
        assert!(!is_dump("dev-nexus-20261124_020005.sql.gz.manifest.json"));
        assert!(!is_dump("notes.txt"));
    }

    #[test]
    fn two_backups_in_one_second_get_distinct_names_that_still_count() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 5).unwrap();
        let taken = [
            "dev-nexus-20261124_020005.sql.gz",
            "dev-nexus-20261124_020005-2.sql.gz",
        ];
        let name = unique_dump_name(at, DumpFormat::Plain, |n| taken.contains(&n));
        assert_eq!(name, "dev-nexus-20261124_020005-3.sql.gz");
        assert!(is_dump(&name));
        assert_eq!(
            unique_dump_name(at, DumpFormat::Custom, |n| taken.contains(&n)),
            "dev-nexus-20261124_020005.dump.gz"
        );
        let mut names = vec![
            "dev-nexus-20261124_020005-2.sql.gz",
            "dev-nexus-20261124_020006.sql.gz",
            "dev-nexus-20261124_020005-10.sql.gz",
            "dev-nexus-20261124_020005.sql.gz",
        ];
        names.sort_by_key(|n| name_order(n));
        assert_eq!(
            names,
            [
                "dev-nexus-20261124_020005.sql.gz",
                "dev-nexus-20261124_020005-2.sql.gz",
                "dev-nexus-20261124_020005-10.sql.gz",
                "dev-nexus-20261124_020006.sql.gz",
            ]
        );
    }
}
