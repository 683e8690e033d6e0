//! Retention of the physical side, as a pure function of the `base/` and `wal/` listings: base
//! backups follow the dumps' rules (older than the retention period go, the newest `min_keep`
//! complete ones always stay, at most `max_deletions` per run, incomplete uploads after a day),
//! and an archived WAL file goes only when it lies before the start of the oldest base backup
//! kept — so every WAL file a kept base backup needs stays. Timeline history files are always
//! kept (tiny, and a restore needs them to follow a timeline), as are the archive's marker and
//! conflict records. Without any complete base backup kept, no WAL is deleted.
//!
//! The cap on deletions applies to base backups; the WAL files a deleted base backup leaves
//! behind go with it (a week of archive is thousands of files).

use chrono::{DateTime, Utc};

use super::retention::{Deletion, Plan, Policy};
use super::store::ObjectInfo;
use super::wal::is_wal_name;

/// A base backup object, with its manifest object and the WAL file its replay starts in (from
/// the manifest; `None` when it has none or it is unreadable).
pub struct Base<'a> {
    pub object: &'a ObjectInfo,
    pub manifest: Option<&'a ObjectInfo>,
    pub start_wal_file: Option<&'a str>,
}

/// The segment number of a WAL file name (log and segment, the last 16 hex digits), for every
/// name PostgreSQL archives but timeline histories.
fn segment_number(name: &str) -> Option<u64> {
    if !is_wal_name(name) || name.ends_with(".history") {
        return None;
    }
    u64::from_str_radix(name.get(8..24)?, 16).ok()
}

/// What to delete from `base/` (names prefixed `base/`) and `wal/` (prefixed `wal/`).
pub fn plan(bases: &[Base<'_>], wal: &[ObjectInfo], now: DateTime<Utc>, policy: &Policy) -> Plan {
    let mut plan = Plan::default();
    let future = bases
        .iter()
        .map(|b| b.object)
        .chain(wal)
        .find(|o| o.created > now + policy.skew_tolerance);
    if let Some(o) = future {
        plan.refused = Some(format!(
            "{} was created at {}, after now ({now}): the clock is off, nothing is pruned",
            o.name, o.created
        ));
        return plan;
    }
    let mut complete: Vec<&Base> = bases
        .iter()
        .filter(|b| b.manifest.is_some() && b.start_wal_file.is_some())
        .collect();
    complete.sort_by(|a, b| {
        (b.object.created, &b.object.name).cmp(&(a.object.created, &a.object.name))
    });
    let mut oldest_start: Option<u64> = None;
    let mut deleted = 0usize;
    for (i, base) in complete.iter().enumerate() {
        let name = &base.object.name;
        let age = now - base.object.created;
        let keep_reason = if i < policy.min_keep {
            Some("among the newest base backups")
        } else if age <= policy.retention {
            Some("within the retention period")
        } else if deleted >= policy.max_deletions {
            plan.deferred.push(format!("base/{name}"));
            Some("over this run's deletion cap")
        } else {
            None
        };
        match keep_reason {
            Some(reason) => {
                plan.keep.push(super::retention::Kept {
                    name: format!("base/{name}"),
                    reason: reason.into(),
                });
                let start = base.start_wal_file.and_then(segment_number);
                oldest_start = match (oldest_start, start) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            None => {
                deleted += 1;
                let reason = format!(
                    "base backup older than {} days",
                    policy.retention.num_days()
                );
                for o in base.manifest.into_iter().chain([base.object]) {
                    plan.delete.push(deletion(o, "base/", &reason));
                }
            }
        }
    }
    for base in bases.iter().filter(|b| b.manifest.is_none()) {
        if now - base.object.created > policy.orphan_age {
            plan.delete.push(deletion(
                base.object,
                "base/",
                "incomplete base backup (no manifest)",
            ));
        }
    }
    if let Some(oldest) = oldest_start {
        plan_wal(wal, oldest, &mut plan);
    }
    plan
}

/// Deletes the archived WAL files whose segment lies before segment number `oldest`.
fn plan_wal(wal: &[ObjectInfo], oldest: u64, plan: &mut Plan) {
    for o in wal {
        let Some(name) = o.name.strip_suffix(".gz") else {
            continue;
        };
        if segment_number(name).is_some_and(|n| n < oldest) {
            plan.delete.push(deletion(
                o,
                "wal/",
                "WAL before the oldest kept base backup's start",
            ));
        }
    }
}

fn deletion(o: &ObjectInfo, part: &str, reason: &str) -> Deletion {
    Deletion {
        name: format!("{part}{}", o.name),
        generation: o.generation,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn object(name: &str, days_old: i64) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size: 1,
            created: Utc::now() - Duration::days(days_old),
            generation: None,
            crc32c: None,
        }
    }

    #[test]
    fn wal_a_kept_base_backup_needs_is_never_deleted() {
        let policy = Policy::new(30, 2, 10);
        // Base backups 60, 40, 20 and 5 days old, starting in segments 0x10, 0x20, 0x30, 0x40.
        let objects: Vec<(ObjectInfo, ObjectInfo)> =
            [(60, 0x10), (40, 0x20), (20, 0x30), (5, 0x40)]
                .iter()
                .map(|(days, _)| {
                    let name = format!("base-{days}.tar.gz");
                    (
                        object(&name, *days),
                        object(&format!("{name}.manifest.json"), *days),
                    )
                })
                .collect();
        let starts: Vec<String> = [0x10u64, 0x20, 0x30, 0x40]
            .iter()
            .map(|s| format!("00000001{:08X}{:08X}", s >> 32, s & 0xffff_ffff))
            .collect();
        let bases: Vec<Base> = objects
            .iter()
            .zip(&starts)
            .map(|((o, m), s)| Base {
                object: o,
                manifest: Some(m),
                start_wal_file: Some(s),
            })
            .collect();
        let mut wal: Vec<ObjectInfo> = (0x08u64..0x48)
            .map(|s| {
                object(
                    &format!("00000001000000000000{s:04X}.gz"),
                    70 - s as i64 / 2,
                )
            })
            .collect();
        wal.push(object("00000002.history.gz", 65));
        wal.push(object("archive.json", 70));
        wal.push(object("000000010000000000000009.00000028.backup.gz", 65));
        wal.push(object("00000002000000000000001F.partial.gz", 60));
        let plan = plan(&bases, &wal, Utc::now(), &policy);
        assert_eq!(plan.refused, None);
        let deleted: Vec<&str> = plan.delete.iter().map(|d| d.name.as_str()).collect();
        // The two base backups older than 30 days go, manifest first; the 20- and 5-day-old stay.
        assert!(deleted.contains(&"base/base-60.tar.gz.manifest.json"));
        assert!(deleted.contains(&"base/base-40.tar.gz"));
        assert!(
            !deleted
                .iter()
                .any(|d| d.contains("base-20") || d.contains("base-5."))
        );
        // WAL before 0x30 (the oldest kept start) goes, from 0x30 on stays; histories, the
        // marker stay; .backup and .partial files follow their segment.
        for s in 0x08u64..0x48 {
            let name = format!("wal/00000001000000000000{s:04X}.gz");
            assert_eq!(deleted.contains(&name.as_str()), s < 0x30, "{name}");
        }
        assert!(!deleted.contains(&"wal/00000002.history.gz"));
        assert!(!deleted.contains(&"wal/archive.json"));
        assert!(deleted.contains(&"wal/000000010000000000000009.00000028.backup.gz"));
        assert!(deleted.contains(&"wal/00000002000000000000001F.partial.gz"));
    }

    #[test]
    fn without_a_kept_base_backup_no_wal_goes_and_the_cap_holds() {
        let policy = Policy::new(30, 1, 1);
        let wal = vec![object("000000010000000000000001.gz", 90)];
        assert!(plan(&[], &wal, Utc::now(), &policy).delete.is_empty());
        // Three old base backups, min_keep 1, cap 1: one goes, one is deferred (and kept, so
        // its WAL stays).
        let objects: Vec<(ObjectInfo, ObjectInfo)> = [50, 60, 70]
            .iter()
            .map(|d| {
                (
                    object(&format!("base-{d}.tar.gz"), *d),
                    object(&format!("base-{d}.tar.gz.manifest.json"), *d),
                )
            })
            .collect();
        let start = "000000010000000000000005".to_string();
        let bases: Vec<Base> = objects
            .iter()
            .map(|(o, m)| Base {
                object: o,
                manifest: Some(m),
                start_wal_file: Some(&start),
            })
            .collect();
        let plan = plan(&bases, &wal, Utc::now(), &policy);
        let gone: Vec<&str> = plan.delete.iter().map(|d| d.name.as_str()).collect();
        assert!(gone.contains(&"base/base-60.tar.gz"), "{gone:?}");
        assert_eq!(plan.deferred, ["base/base-70.tar.gz"]);
        assert!(gone.contains(&"wal/000000010000000000000001.gz"));
    }
}
