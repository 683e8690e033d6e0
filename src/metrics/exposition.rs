//! The Prometheus text exposition format, version 0.0.4, written by hand: the names nexusd must
//! reproduce (postgres_exporter's counters without `_total`, node_exporter's CamelCase meminfo
//! names, untyped families) are exactly what client libraries refuse or rewrite.
//!
//! The two rules that broke upstream exporters are enforced here, for every collector at once:
//! a family never carries two samples with one label set (the second is dropped and counted),
//! and a family without samples is not written at all.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::hash::{Hash, Hasher};

/// The `Content-Type` of the output.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Untyped,
    Histogram,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// One family: a name, its help and type, and its samples.
#[derive(Debug)]
pub(super) struct Family {
    name: String,
    help: String,
    kind: Kind,
    /// Hashes of each sample's `suffix{labels}`, for de-duplication without keeping copies.
    seen: HashSet<u64>,
    lines: String,
    samples: usize,
}

impl Family {
    /// Adds a sample; a repeated label set is dropped (returns false).
    pub(super) fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> bool {
        self.sample_with_suffix("", labels, value)
    }

    /// Adds one histogram: cumulative `buckets` as `(upper bound, count)`, then `+Inf`, sum, count.
    pub(super) fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        debug_assert_eq!(self.kind, Kind::Histogram);
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        let mut bounds = Vec::with_capacity(buckets.len());
        for (bound, _) in buckets {
            bounds.push(format_value(*bound));
        }
        for ((_, cumulative), bound) in buckets.iter().zip(&bounds) {
            with_le.push(("le", bound));
            self.sample_with_suffix("_bucket", &with_le, *cumulative as f64);
            with_le.pop();
        }
        with_le.push(("le", "+Inf"));
        self.sample_with_suffix("_bucket", &with_le, count as f64);
        self.sample_with_suffix("_sum", labels, sum);
        self.sample_with_suffix("_count", labels, count as f64);
    }

    /// Adds a sample of `name` + `suffix` (`_bucket`, `_sum`, `_count` of a histogram or summary
    /// read from elsewhere, e.g. a textfile); a repeated label set is dropped (returns false).
    pub(super) fn sample_with_suffix(
        &mut self,
        suffix: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> bool {
        // Written in place; taken back out if this label set was already written.
        let start = self.lines.len();
        self.lines.push_str(&self.name);
        let series = self.lines.len();
        self.lines.push_str(suffix);
        if !labels.is_empty() {
            self.lines.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.lines.push(',');
                }
                self.lines.push_str(name);
                self.lines.push_str("=\"");
                escape_label_value(value, &mut self.lines);
                self.lines.push('"');
            }
            self.lines.push('}');
        }
        let mut hasher = std::hash::DefaultHasher::new();
        self.lines[series..].hash(&mut hasher);
        if !self.seen.insert(hasher.finish()) {
            tracing::debug!(series = %&self.lines[start..], "duplicate sample dropped");
            self.lines.truncate(start);
            return false;
        }
        self.lines.push(' ');
        self.lines.push_str(&format_value(value));
        self.lines.push('\n');
        self.samples += 1;
        true
    }

    fn is_empty(&self) -> bool {
        self.samples == 0
    }
}

/// The families of one scrape, in the order they were first named.
#[derive(Debug, Default)]
pub(super) struct Exposition {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Exposition {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// The family `name`, created on first use. Asking again for the same name returns the same
    /// family (its help and type stay those given first).
    pub(super) fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Family {
        if let Some(&i) = self.index.get(name) {
            return &mut self.families[i];
        }
        let name = sanitize_name(name);
        let index = match self.index.get(&name) {
            Some(&i) => i,
            None => {
                self.index.insert(name.clone(), self.families.len());
                self.families.push(Family {
                    name,
                    help: help.to_string(),
                    kind,
                    seen: HashSet::new(),
                    lines: String::new(),
                    samples: 0,
                });
                self.families.len() - 1
            }
        };
        &mut self.families[index]
    }

    /// The family `name` if it holds samples (what a scrape would show of it).
    pub(super) fn existing(&mut self, name: &str) -> Option<&mut Family> {
        let &i = self.index.get(name)?;
        Some(&mut self.families[i]).filter(|f| !f.is_empty())
    }

    /// The family `name` with exactly this help and type: created, or an empty one taken over;
    /// `None` when a family of that name already holds samples under another help or type.
    pub(super) fn family_exactly(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
    ) -> Option<&mut Family> {
        let family = self.family(name, help, kind);
        if family.is_empty() {
            family.help.clear();
            family.help.push_str(help);
            family.kind = kind;
        }
        Some(family).filter(|f| f.help == help && f.kind == kind)
    }

    pub(super) fn gauge(&mut self, name: &str, help: &str) -> &mut Family {
        self.family(name, help, Kind::Gauge)
    }

    pub(super) fn counter(&mut self, name: &str, help: &str) -> &mut Family {
        self.family(name, help, Kind::Counter)
    }

    pub(super) fn untyped(&mut self, name: &str, help: &str) -> &mut Family {
        self.family(name, help, Kind::Untyped)
    }

    /// A family with one unlabelled sample.
    pub(super) fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) {
        self.family(name, help, kind).sample(&[], value);
    }

    /// How many samples (series) the scrape holds.
    pub(super) fn series(&self) -> usize {
        self.families.iter().map(|f| f.samples).sum()
    }

    /// The text format; families without samples are left out.
    pub(super) fn render(&self) -> String {
        let size = self
            .families
            .iter()
            .map(|f| f.lines.len() + f.help.len() + 2 * f.name.len() + 24)
            .sum();
        let mut out = String::with_capacity(size);
        for family in self.families.iter().filter(|f| !f.is_empty()) {
            out.push_str("# HELP ");
            out.push_str(&family.name);
            out.push(' ');
            escape_help(&family.help, &mut out);
            out.push('\n');
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            out.push_str(&family.lines);
        }
        out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name` with every character a metric name cannot hold replaced by `_` (names built from
/// server data, e.g. `pg_settings_` + a GUC name, stay valid).
fn sanitize_name(name: &str) -> String {
    if valid_name(name) {
        return name.to_string();
    }
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// A value as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, otherwise the shortest decimal that
/// reads back to the same float.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        value.to_string()
    }
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_help_type_and_samples() {
        let mut e = Exposition::new();
        e.counter(
            "pg_stat_database_xact_commit",
            "Number of transactions committed",
        )
        .sample(&[("datid", "5"), ("datname", "postgres")], 42.0);
        e.single(
            "pg_up",
            "Whether the last scrape could reach PostgreSQL",
            Kind::Gauge,
            1.0,
        );
        assert_eq!(
            e.render(),
            "# HELP pg_stat_database_xact_commit Number of transactions committed\n\
             # TYPE pg_stat_database_xact_commit counter\n\
             pg_stat_database_xact_commit{datid=\"5\",datname=\"postgres\"} 42\n\
             # HELP pg_up Whether the last scrape could reach PostgreSQL\n\
             # TYPE pg_up gauge\n\
             pg_up 1\n"
        );
        assert_eq!(e.series(), 2);
    }

    #[test]
    fn drops_duplicate_label_sets_and_empty_families() {
        let mut e = Exposition::new();
        let f = e.counter("pg_stat_statements_calls_total", "calls");
        assert!(f.sample(&[("queryid", "1")], 1.0));
        assert!(!f.sample(&[("queryid", "1")], 2.0));
        assert!(f.sample(&[("queryid", "2")], 3.0));
        e.gauge("pg_replication_slots_active", "never filled");
        let text = e.render();
        assert_eq!(text.matches("queryid=\"1\"").count(), 1);
        assert!(text.contains("{queryid=\"1\"} 1\n"));
        assert!(!text.contains("pg_replication_slots_active"));
    }

    #[test]
    fn escapes_label_values_and_help() {
        let mut e = Exposition::new();
        e.untyped(
            "pg_static",
            "Version string as reported by\npostgres \\ server",
        )
        .sample(&[("version", "say \"hi\"\nback\\slash")], 1.0);
        let text = e.render();
        assert!(
            text.contains(
                "# HELP pg_static Version string as reported by\\npostgres \\\\ server\n"
            )
        );
        assert!(text.contains("pg_static{version=\"say \\\"hi\\\"\\nback\\\\slash\"} 1\n"));
        assert!(text.contains("# TYPE pg_static untyped\n"));
    }

    #[test]
    fn special_values_use_prometheus_spelling() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(-1.0), "-1");
    }

    #[test]
    fn histograms_have_cumulative_buckets_inf_sum_and_count() {
        let mut e = Exposition::new();
        e.family(
            "nexusd_skill_request_duration_seconds",
            "Duration",
            Kind::Histogram,
        )
        .histogram(&[("skill", "a")], &[(0.005, 1), (0.01, 3)], 0.02, 4);
        let text = e.render();
        assert!(text.contains(
            "nexusd_skill_request_duration_seconds_bucket{skill=\"a\",le=\"0.005\"} 1\n"
        ));
        assert!(
            text.contains(
                "nexusd_skill_request_duration_seconds_bucket{skill=\"a\",le=\"0.01\"} 3\n"
            )
        );
        assert!(
            text.contains(
                "nexusd_skill_request_duration_seconds_bucket{skill=\"a\",le=\"+Inf\"} 4\n"
            )
        );
        assert!(text.contains("nexusd_skill_request_duration_seconds_sum{skill=\"a\"} 0.02\n"));
        assert!(text.contains("nexusd_skill_request_duration_seconds_count{skill=\"a\"} 4\n"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("node_memory_Active_anon_bytes"));
        assert!(valid_name("a:b_c"));
        assert!(!valid_name("9lives"));
        assert!(!valid_name("pg_settings_foo.bar"));
        assert!(!valid_name(""));
        assert_eq!(
            sanitize_name("pg_settings_pg_stat_statements.max"),
            "pg_settings_pg_stat_statements_max"
        );
        assert_eq!(sanitize_name("9lives"), "_9lives");
    }
}
