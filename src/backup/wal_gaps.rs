//! The archive's continuity, as a pure function of what the store holds: the archived segments
//! (name and when each was stored), the timeline history files, the complete base backups and
//! the records of segments dropped at the pg_wal ceiling (`NEXUSD_WAL_MAX_PENDING`,
//! src/backup/wal.rs). It answers two questions (docs/pitr.md, "Checking the archive"):
//!
//! - **is there a gap?** Every segment from the start of the oldest base backup kept to the
//!   newest archived one must be there, on the timeline recovery would read it from. Timelines
//!   are followed as PostgreSQL's recovery follows them (`recovery_target_timeline = latest`):
//!   the newest timeline's `.history` file lists its ancestors and where each switched, and a
//!   segment may come from any timeline of that chain whose range holds it;
//! - **what is the recoverable window?** From the end of the oldest base backup whose WAL runs
//!   without a gap to the newest segment it can reach, up to when that segment was stored (every
//!   commit in it happened before; with `archive_timeout = 60s` at most a minute before).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::base::parse_lsn;

/// PostgreSQL's default WAL segment size, used when no base backup says otherwise.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// One archived segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub timeline: u32,
    pub number: u64,
    pub stored_at: DateTime<Utc>,
}

/// A complete base backup, as far as continuity goes.
#[derive(Debug, Clone)]
pub struct BaseStart {
    pub name: String,
    /// The first WAL file its replay needs.
    pub start_wal_file: String,
    pub finished_at: DateTime<Utc>,
}

/// A run of segments `wal-push` reported archived without storing them, because pg_wal had
/// outgrown `NEXUSD_WAL_MAX_PENDING` while the store could not be reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    pub first: String,
    pub last: String,
    pub count: u64,
    /// When the record reached the store (the drops themselves happened before).
    pub recorded_at: DateTime<Utc>,
    pub pg_wal_bytes: u64,
    pub ceiling_bytes: u64,
}

/// What the archive holds, for [`check`].
#[derive(Debug, Clone, Default)]
pub struct Archive {
    pub segments: Vec<Segment>,
    /// Timeline → its history: (parent timeline, switch point) for every ancestor, oldest first.
    pub histories: BTreeMap<u32, Vec<(u32, u64)>>,
    pub bases: Vec<BaseStart>,
    pub segment_bytes: u64,
}

/// The answer of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Continuity {
    /// The first segment missing between the oldest base backup's start and the newest archived
    /// segment, with the number missing in all.
    pub first_missing: Option<String>,
    pub missing_count: u64,
    /// The timeline history files the chain needs but the archive lacks.
    pub missing_histories: Vec<String>,
    /// The newest segment of the chain and when it was stored.
    pub newest_segment: Option<String>,
    pub newest_stored_at: Option<DateTime<Utc>>,
    /// The recoverable window (to any second between them).
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    /// The base backup the window starts from.
    pub window_base: Option<String>,
}

impl Continuity {
    /// The problem in one line, naming the first missing segment or history file.
    pub fn problem(&self, dropped: &[Dropped]) -> Option<String> {
        if let Some(h) = self.missing_histories.first() {
            return Some(format!(
                "the WAL archive lacks the timeline history file {h}: a restore cannot follow \
                 that timeline"
            ));
        }
        if let Some(first) = &self.first_missing {
            let why = dropped
                .iter()
                .find(|d| d.first[8..] <= first[8..] && first[8..] <= d.last[8..])
                .map(|d| {
                    format!(
                        " ({}–{} were dropped at the pg_wal ceiling NEXUSD_WAL_MAX_PENDING while \
                         the store was unreachable)",
                        d.first, d.last
                    )
                })
                .unwrap_or_default();
            return Some(format!(
                "the WAL archive has a gap: {first} is missing ({} segments missing in all){why}; \
                 no restore can cross it — take a base backup (`nexusd backup run --physical`) to \
                 start a new recoverable window",
                self.missing_count
            ));
        }
        None
    }

    pub fn window_seconds(&self) -> Option<f64> {
        let (start, end) = (self.window_start?, self.window_end?);
        Some(((end - start).num_milliseconds() as f64 / 1000.0).max(0.0))
    }
}

/// Segments per "log file" (the middle 8 hex digits of a name).
fn per_log(segment_bytes: u64) -> u64 {
    0x1_0000_0000 / segment_bytes.max(1)
}

/// The timeline and segment number of a segment's name (24 hex digits).
pub fn parse_segment(name: &str, segment_bytes: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let timeline = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some((timeline, log * per_log(segment_bytes) + seg))
}

pub fn segment_name(timeline: u32, number: u64, segment_bytes: u64) -> String {
    let per = per_log(segment_bytes);
    format!("{timeline:08X}{:08X}{:08X}", number / per, number % per)
}

/// The entries of a timeline history file: `parent<TAB>switch LSN<TAB>reason` per line.
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let parent = words.next()?.parse().ok()?;
            let switch = parse_lsn(words.next()?)?;
            Some((parent, switch))
        })
        .collect()
}

/// A timeline of the chain recovery follows and the segments it covers (inclusive).
#[derive(Debug, Clone, Copy)]
struct Range {
    timeline: u32,
    first: u64,
    last: u64,
}

/// The chain of the newest timeline, oldest first, and the history files it lacks.
fn chain(archive: &Archive) -> (Vec<Range>, Vec<String>) {
    let newest = archive
        .segments
        .iter()
        .map(|s| s.timeline)
        .chain(archive.histories.keys().copied())
        .max()
        .unwrap_or(1);
    let mut missing = Vec::new();
    let history = match archive.histories.get(&newest) {
        Some(h) => h.clone(),
        None => {
            if newest > 1 {
                missing.push(format!("{newest:08X}.history"));
            }
            Vec::new()
        }
    };
    let mut ranges = Vec::new();
    let mut first = 0;
    for (parent, switch) in history {
        let last = switch / archive.segment_bytes.max(1);
        ranges.push(Range {
            timeline: parent,
            first,
            last,
        });
        first = last;
    }
    ranges.push(Range {
        timeline: newest,
        first,
        last: u64::MAX,
    });
    (ranges, missing)
}

/// Checks the archive's continuity and finds the recoverable window.
pub fn check(archive: &Archive) -> Continuity {
    let bytes = archive.segment_bytes.max(1);
    let (ranges, missing_histories) = chain(archive);
    let on_chain = |s: &Segment| {
        ranges
            .iter()
            .any(|r| r.timeline == s.timeline && r.first <= s.number && s.number <= r.last)
    };
    let held: HashSet<(u32, u64)> = archive
        .segments
        .iter()
        .filter(|s| on_chain(s))
        .map(|s| (s.timeline, s.number))
        .collect();
    let have = |n: u64| {
        ranges
            .iter()
            .any(|r| r.first <= n && n <= r.last && held.contains(&(r.timeline, n)))
    };
    let newest = archive
        .segments
        .iter()
        .filter(|s| on_chain(s))
        .max_by_key(|s| (s.number, s.timeline));
    let mut out = Continuity {
        missing_histories,
        newest_segment: newest.map(|s| segment_name(s.timeline, s.number, bytes)),
        newest_stored_at: newest.map(|s| s.stored_at),
        ..Continuity::default()
    };
    let Some(newest) = newest else {
        return out;
    };
    let starts: Vec<(u64, &BaseStart)> = archive
        .bases
        .iter()
        .filter_map(|b| Some((parse_segment(&b.start_wal_file, bytes)?.1, b)))
        .filter(|(n, _)| *n <= newest.number)
        .collect();
    let Some(oldest) = starts.iter().map(|(n, _)| *n).min() else {
        return out;
    };
    let missing: Vec<u64> = (oldest..=newest.number).filter(|n| !have(*n)).collect();
    out.missing_count = missing.len() as u64;
    out.first_missing = missing.first().map(|n| {
        let timeline = ranges
            .iter()
            .rev()
            .find(|r| r.first <= *n)
            .map_or(newest.timeline, |r| r.timeline);
        segment_name(timeline, *n, bytes)
    });
    // Each base backup reaches the segment before the first gap after its start.
    let reach = |start: u64| {
        missing
            .iter()
            .find(|m| **m >= start)
            .map_or(Some(newest.number), |m| m.checked_sub(1))
            .filter(|r| *r >= start)
    };
    let best = starts.iter().filter_map(|(n, _)| reach(*n)).max();
    if let Some(best) = best {
        let base = starts
            .iter()
            .filter(|(n, _)| reach(*n) == Some(best))
            .map(|(_, b)| *b)
            .min_by_key(|b| b.finished_at);
        let end = archive
            .segments
            .iter()
            .filter(|s| s.number == best && on_chain(s))
            .map(|s| s.stored_at)
            .max();
        out.window_start = base.map(|b| b.finished_at);
        out.window_end = end.max(out.window_start);
        out.window_base = base.map(|b| b.name.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SEG: u64 = 16 << 20;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 10, minute, 0).unwrap()
    }

    fn archive(segments: &[(u32, u64)], bases: &[(u64, u32)]) -> Archive {
        Archive {
            segments: segments
                .iter()
                .map(|&(timeline, number)| Segment {
                    timeline,
                    number,
                    stored_at: at(number as u32),
                })
                .collect(),
            histories: BTreeMap::new(),
            bases: bases
                .iter()
                .map(|&(start, minute)| BaseStart {
                    name: format!("base-{minute}"),
                    start_wal_file: segment_name(1, start, SEG),
                    finished_at: at(minute),
                })
                .collect(),
            segment_bytes: SEG,
        }
    }

    #[test]
    fn names_and_numbers_follow_postgresql() {
        assert_eq!(
            parse_segment("0000000200000001000000FF", SEG),
            Some((2, 256 + 255))
        );
        assert_eq!(segment_name(2, 256 + 255, SEG), "0000000200000001000000FF");
        assert_eq!(segment_name(1, 256, SEG), "000000010000000100000000");
        assert_eq!(
            parse_history(
                "1\t0/3000158\tno recovery target specified\n\n# x\n2\t0/5000000\tat restore point\n"
            ),
            vec![(1, 0x0300_0158), (2, 0x0500_0000)]
        );
    }

    #[test]
    fn a_whole_archive_has_no_gap_and_a_window_from_the_oldest_base_backup() {
        let a = archive(&[(1, 2), (1, 3), (1, 4), (1, 5)], &[(2, 3), (4, 5)]);
        let c = check(&a);
        assert_eq!(c.first_missing, None);
        assert_eq!(c.problem(&[]), None);
        assert_eq!(c.window_start, Some(at(3)));
        assert_eq!(c.window_end, Some(at(5)));
        assert_eq!(
            c.newest_segment.as_deref(),
            Some("000000010000000000000005")
        );
    }

    #[test]
    fn a_gap_names_the_first_missing_segment_and_a_later_base_backup_starts_a_new_window() {
        let a = archive(
            &[(1, 2), (1, 3), (1, 6), (1, 7), (1, 8)],
            &[(2, 3), (7, 30)],
        );
        let c = check(&a);
        assert_eq!(c.first_missing.as_deref(), Some("000000010000000000000004"));
        assert_eq!(c.missing_count, 2);
        assert_eq!(c.window_start, Some(at(30)));
        assert_eq!(c.window_base.as_deref(), Some("base-30"));
        let dropped = Dropped {
            first: "000000010000000000000004".into(),
            last: "000000010000000000000005".into(),
            count: 2,
            recorded_at: at(9),
            pg_wal_bytes: 1,
            ceiling_bytes: 1,
        };
        let said = c.problem(&[dropped]).unwrap();
        assert!(
            said.contains("000000010000000000000004 is missing"),
            "{said}"
        );
        assert!(said.contains("NEXUSD_WAL_MAX_PENDING"), "{said}");
        // Without a base backup after the gap, the window ends before it.
        let a = archive(&[(1, 2), (1, 3), (1, 6)], &[(2, 3)]);
        let c = check(&a);
        assert_eq!(c.window_start, Some(at(3)));
        assert_eq!(c.window_end, Some(at(3)));
    }

    #[test]
    fn timelines_are_followed_through_their_history_files() {
        // Timeline 2 branched off in segment 4: segments 4.. come from timeline 2; timeline 1's
        // later segments (abandoned) do not count, nor fill a hole of timeline 2.
        let mut a = archive(
            &[(1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (2, 4), (2, 6)],
            &[(2, 3)],
        );
        a.histories.insert(2, vec![(1, 4 * SEG + 0x158)]);
        let c = check(&a);
        assert_eq!(c.first_missing.as_deref(), Some("000000020000000000000005"));
        assert_eq!(
            c.newest_segment.as_deref(),
            Some("000000020000000000000006")
        );
        // Without timeline 2's history file, that is what is reported.
        a.histories.clear();
        a.segments.push(Segment {
            timeline: 2,
            number: 5,
            stored_at: at(5),
        });
        let c = check(&a);
        assert_eq!(c.missing_histories, vec!["00000002.history".to_string()]);
        assert!(c.problem(&[]).unwrap().contains("00000002.history"));
    }
}
