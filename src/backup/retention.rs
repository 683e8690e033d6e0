//! The retention policy, as a pure function of a store listing: delete complete backups older
//! than the retention period, but always keep the newest `min_keep` good ones (complete, and not
//! failed by a verification); remove incomplete uploads and stray files after a day; refuse to
//! prune at all when the clock disagrees with the store; never delete more than a cap per run.
//! Ages come from the store's creation times, never from object names.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};

use super::manifest::{MANIFEST_SUFFIX, VERIFY_SUFFIX, is_dump};
use super::store::{Listing, ObjectInfo};

#[derive(Debug, Clone)]
pub struct Policy {
    pub retention: Duration,
    pub min_keep: usize,
    pub max_deletions: usize,
    /// Incomplete uploads and stray files younger than this may still be in progress.
    pub orphan_age: Duration,
    /// How far in the future an object may seem to be created before the clock is distrusted.
    pub skew_tolerance: Duration,
}

impl Policy {
    pub fn new(retention_days: u32, min_keep: u32, max_deletions: u32) -> Self {
        Policy {
            retention: Duration::days(retention_days.into()),
            min_keep: min_keep as usize,
            max_deletions: max_deletions as usize,
            orphan_age: Duration::days(1),
            skew_tolerance: Duration::minutes(5),
        }
    }
}

/// One object to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub name: String,
    pub generation: Option<i64>,
    pub reason: String,
}

/// A backup kept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Objects to delete, in order (a backup's manifest before its dump, so it stops counting
    /// first).
    pub delete: Vec<Deletion>,
    pub keep: Vec<Kept>,
    /// Backups that should go but exceed this run's cap.
    pub deferred: Vec<String>,
    /// Why nothing may be pruned at all.
    pub refused: Option<String>,
}

impl Plan {
    fn keep(&mut self, name: &str, reason: impl Into<String>) {
        self.keep.push(Kept {
            name: name.to_string(),
            reason: reason.into(),
        });
    }
}

/// A dump and what accompanies it.
struct Backup<'a> {
    dump: &'a ObjectInfo,
    manifest: Option<&'a ObjectInfo>,
    verify: Option<&'a ObjectInfo>,
}

/// Objects that may go together (a backup's manifest, verification and dump), with their age.
struct Candidate<'a> {
    created: DateTime<Utc>,
    objects: Vec<&'a ObjectInfo>,
    reason: String,
}

/// Decides what to delete. `verified` maps a dump name to its verification outcome (absent:
/// never verified).
pub fn plan(
    listing: &Listing,
    verified: &HashMap<String, bool>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Plan {
    let mut plan = Plan::default();
    if let Some(why) = clock_skew(listing, now, policy) {
        plan.refused = Some(why);
        return plan;
    }
    let backups = backups(listing);
    let mut candidates = judge(&backups, verified, now, policy, &mut plan);
    candidates.extend(orphans(listing, &backups, now, policy));
    candidates.sort_by_key(|c| c.created);
    for (i, candidate) in candidates.into_iter().enumerate() {
        if i >= policy.max_deletions {
            plan.deferred
                .extend(candidate.objects.last().map(|o| o.name.clone()));
            continue;
        }
        for o in candidate.objects {
            plan.delete.push(Deletion {
                name: o.name.clone(),
                generation: o.generation,
                reason: candidate.reason.clone(),
            });
        }
    }
    plan
}

/// An object created after `now` (beyond the tolerance) means the clocks disagree: ages cannot
/// be trusted.
fn clock_skew(listing: &Listing, now: DateTime<Utc>, policy: &Policy) -> Option<String> {
    let future = listing
        .objects
        .iter()
        .chain(listing.partials.iter())
        .filter(|o| o.created > now + policy.skew_tolerance)
        .max_by_key(|o| o.created)?;
    Some(format!(
        "clock skew: {} was created at {}, after the current time {}; refusing to prune until the clocks agree",
        future.name, future.created, now
    ))
}

/// Every dump with its manifest and verification, newest first.
fn backups(listing: &Listing) -> Vec<Backup<'_>> {
    let by_name: HashMap<&str, &ObjectInfo> = listing
        .objects
        .iter()
        .map(|o| (o.name.as_str(), o))
        .collect();
    let mut backups: Vec<Backup<'_>> = listing
        .objects
        .iter()
        .filter(|o| is_dump(&o.name))
        .map(|dump| Backup {
            dump,
            manifest: by_name
                .get(format!("{}{MANIFEST_SUFFIX}", dump.name).as_str())
                .copied(),
            verify: by_name
                .get(format!("{}{VERIFY_SUFFIX}", dump.name).as_str())
                .copied(),
        })
        .collect();
    backups.sort_by(|a, b| {
        b.dump
            .created
            .cmp(&a.dump.created)
            .then_with(|| b.dump.name.cmp(&a.dump.name))
    });
    backups
}

/// Keeps the newest good backups and the young ones (noted in `plan`); the rest are candidates.
fn judge<'a>(
    backups: &[Backup<'a>],
    verified: &HashMap<String, bool>,
    now: DateTime<Utc>,
    policy: &Policy,
    plan: &mut Plan,
) -> Vec<Candidate<'a>> {
    let mut candidates = Vec::new();
    let mut good_kept = 0;
    let days = policy.retention.num_days();
    for b in backups {
        let age = now - b.dump.created;
        let name = &b.dump.name;
        let failed = verified.get(name) == Some(&false);
        let objects: Vec<&ObjectInfo> = b
            .manifest
            .into_iter()
            .chain(b.verify)
            .chain(std::iter::once(b.dump))
            .collect();
        let reason = if b.manifest.is_none() {
            if age <= policy.orphan_age {
                plan.keep(name, "incomplete, may still be finishing");
                continue;
            }
            "incomplete (no manifest) and older than a day".to_string()
        } else if !failed && good_kept < policy.min_keep {
            good_kept += 1;
            plan.keep(
                name,
                format!("one of the newest {} good backups", policy.min_keep),
            );
            continue;
        } else if age <= policy.retention {
            plan.keep(name, format!("younger than {days} days"));
            continue;
        } else if failed {
            format!("older than {days} days (and failed verification)")
        } else {
            format!("older than {days} days")
        };
        candidates.push(Candidate {
            created: b.dump.created,
            objects,
            reason,
        });
    }
    candidates
}

/// Manifests and verification files whose dump is gone, and abandoned partial uploads, once
/// they are older than a day.
fn orphans<'a>(
    listing: &'a Listing,
    backups: &[Backup<'_>],
    now: DateTime<Utc>,
    policy: &Policy,
) -> Vec<Candidate<'a>> {
    let dumps: HashSet<&str> = backups.iter().map(|b| b.dump.name.as_str()).collect();
    let old = |o: &ObjectInfo| now - o.created > policy.orphan_age;
    let stray = listing.objects.iter().filter(|o| {
        let parent = o
            .name
            .strip_suffix(MANIFEST_SUFFIX)
            .or_else(|| o.name.strip_suffix(VERIFY_SUFFIX));
        parent.is_some_and(|p| is_dump(p) && !dumps.contains(p)) && old(o)
    });
    let stray = stray.map(|o| Candidate {
        created: o.created,
        objects: vec![o],
        reason: "its dump no longer exists".into(),
    });
    let partials = listing
        .partials
        .iter()
        .filter(|o| old(o))
        .map(|o| Candidate {
            created: o.created,
            objects: vec![o],
            reason: "an upload abandoned more than a day ago".into(),
        });
    stray.chain(partials).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
    }

    fn object(name: &str, days_old: i64) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size: 100,
            created: now() - Duration::days(days_old) - Duration::minutes(1),
            generation: Some(days_old + 1000),
            crc32c: None,
        }
    }

    /// A complete backup (dump + manifest) `days_old` days old.
    fn backup(days_old: i64) -> Vec<ObjectInfo> {
        let name = format!("dev-nexus-day{days_old:04}.sql.gz");
        vec![
            object(&name, days_old),
            object(&format!("{name}{MANIFEST_SUFFIX}"), days_old),
        ]
    }

    fn listing(objects: Vec<Vec<ObjectInfo>>) -> Listing {
        Listing {
            objects: objects.into_iter().flatten().collect(),
            ..Default::default()
        }
    }

    fn deleted_dumps(plan: &Plan) -> Vec<String> {
        plan.delete
            .iter()
            .filter(|d| is_dump(&d.name))
            .map(|d| d.name.clone())
            .collect()
    }

    fn policy() -> Policy {
        Policy::new(30, 3, 10)
    }

    #[test]
    fn old_backups_go_young_ones_stay() {
        let l = listing(vec![
            backup(1),
            backup(10),
            backup(29),
            backup(31),
            backup(45),
        ]);
        let plan = plan(&l, &HashMap::new(), now(), &policy());
        assert_eq!(
            deleted_dumps(&plan),
            ["dev-nexus-day0045.sql.gz", "dev-nexus-day0031.sql.gz"]
        );
        // The manifest goes first, so the backup stops counting before its dump disappears.
        assert!(plan.delete[0].name.ends_with(MANIFEST_SUFFIX));
        assert_eq!(plan.delete[0].generation, Some(1045));
        assert_eq!(plan.keep.len(), 3);
    }

    #[test]
    fn all_old_keeps_the_newest_three() {
        let l = listing(vec![
            backup(40),
            backup(50),
            backup(60),
            backup(70),
            backup(80),
        ]);
        let plan = plan(&l, &HashMap::new(), now(), &policy());
        assert_eq!(
            deleted_dumps(&plan),
            ["dev-nexus-day0080.sql.gz", "dev-nexus-day0070.sql.gz"]
        );
        let kept: Vec<_> = plan.keep.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(
            kept,
            [
                "dev-nexus-day0040.sql.gz",
                "dev-nexus-day0050.sql.gz",
                "dev-nexus-day0060.sql.gz"
            ]
        );
    }

    #[test]
    fn backups_stopped_for_months_are_never_all_deleted() {
        // The nightly job broke 100 days ago: the last good backups are all far too old.
        let l = listing(vec![backup(100), backup(101)]);
        let plan = plan(&l, &HashMap::new(), now(), &policy());
        assert!(plan.delete.is_empty(), "{plan:?}");
    }

    #[test]
    fn failed_verifications_do_not_count_as_the_kept_ones() {
        let l = listing(vec![backup(40), backup(50), backup(60), backup(70)]);
        let verified = HashMap::from([("dev-nexus-day0040.sql.gz".to_string(), false)]);
        let plan = plan(&l, &verified, now(), &policy());
        // 40 failed verification: 50, 60, 70 are the three good ones; 40 is old and goes.
        assert_eq!(deleted_dumps(&plan), ["dev-nexus-day0040.sql.gz"]);
        assert!(
            plan.delete
                .iter()
                .any(|d| d.reason.contains("failed verification"))
        );
    }

    #[test]
    fn all_failed_means_nothing_good_to_keep_but_young_ones_stay() {
        let l = listing(vec![backup(2), backup(40)]);
        let verified = HashMap::from([
            ("dev-nexus-day0002.sql.gz".to_string(), false),
            ("dev-nexus-day0040.sql.gz".to_string(), false),
        ]);
        let plan = plan(&l, &verified, now(), &policy());
        assert_eq!(deleted_dumps(&plan), ["dev-nexus-day0040.sql.gz"]);
    }

    #[test]
    fn incomplete_uploads_and_strays_are_removed_after_a_day() {
        let mut l = listing(vec![backup(5)]);
        l.objects.push(object("dev-nexus-orphan-new.sql.gz", 0));
        l.objects.push(object("dev-nexus-orphan-old.sql.gz", 2));
        l.objects.push(object(
            &format!("dev-nexus-gone.sql.gz{MANIFEST_SUFFIX}"),
            3,
        ));
        l.objects.push(object("somebody-elses-file.txt", 400));
        l.partials.push(object("dev-nexus-x.sql.gz.123.partial", 2));
        l.partials.push(object("dev-nexus-y.sql.gz.456.partial", 0));
        let plan = plan(&l, &HashMap::new(), now(), &policy());
        let names: Vec<_> = plan.delete.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                format!("dev-nexus-gone.sql.gz{MANIFEST_SUFFIX}").as_str(),
                "dev-nexus-orphan-old.sql.gz",
                "dev-nexus-x.sql.gz.123.partial"
            ]
        );
        assert!(
            plan.keep
                .iter()
                .any(|k| k.name == "dev-nexus-orphan-new.sql.gz" && k.reason.contains("finishing"))
        );
    }

    #[test]
    fn a_clock_behind_the_store_refuses_to_prune() {
        let mut l = listing(vec![backup(40), backup(50), backup(60), backup(70)]);
        l.objects.push(object("dev-nexus-future.sql.gz", -3));
        let plan = plan(&l, &HashMap::new(), now(), &policy());
        assert!(plan.delete.is_empty());
        assert!(
            plan.refused
                .as_deref()
                .is_some_and(|r| r.contains("clock skew"))
        );
        // A few seconds of difference is normal.
        let mut l = listing(vec![backup(1)]);
        l.objects[0].created = now() + Duration::seconds(30);
        assert!(plan_ok(&l));
    }

    fn plan_ok(l: &Listing) -> bool {
        plan(l, &HashMap::new(), now(), &policy()).refused.is_none()
    }

    #[test]
    fn deletions_are_capped_oldest_first() {
        let l = listing((31..=50).map(backup).collect());
        let plan = plan(&l, &HashMap::new(), now(), &Policy::new(30, 3, 4));
        assert_eq!(
            deleted_dumps(&plan),
            [
                "dev-nexus-day0050.sql.gz",
                "dev-nexus-day0049.sql.gz",
                "dev-nexus-day0048.sql.gz",
                "dev-nexus-day0047.sql.gz"
            ]
        );
        assert_eq!(plan.deferred.len(), 13);
    }

    #[test]
    fn gaps_in_the_schedule_change_nothing() {
        // Weeks without backups between young and old ones: ages alone decide.
        let l = listing(vec![
            backup(0),
            backup(1),
            backup(35),
            backup(36),
            backup(90),
        ]);
        let plan = plan(&l, &HashMap::new(), now(), &policy());
        assert_eq!(
            deleted_dumps(&plan),
            ["dev-nexus-day0090.sql.gz", "dev-nexus-day0036.sql.gz"]
        );
    }
}
