//! Memory and kernel tables: every `/proc/meminfo` field, node_exporter's default
//! `/proc/vmstat` fields and the file descriptor table.

use std::sync::LazyLock;

use anyhow::{Context, Result, anyhow};
use regex::Regex;

use super::read;
use crate::metrics::exposition::{Exposition, Kind};

/// node_exporter's default vmstat fields.
static VMSTAT_FIELDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(oom_kill|pgpg|pswp|pg.*fault).*").expect("static regex"));

/// Every `/proc/meminfo` line as `node_memory_<Field>_bytes` (or without `_bytes` for counts
/// such as `HugePages_Total`), with node_exporter's renaming of `Active(anon)` → `Active_anon`.
pub(super) fn meminfo(out: &mut Exposition) -> Result<()> {
    let text = read("/proc/meminfo")?;
    for (field, value, bytes) in parse_meminfo(&text) {
        let (name, help) = if bytes {
            (
                format!("node_memory_{field}_bytes"),
                format!("Memory information field {field}_bytes."),
            )
        } else {
            (
                format!("node_memory_{field}"),
                format!("Memory information field {field}."),
            )
        };
        out.gauge(&name, &help).sample(&[], value);
    }
    Ok(())
}

/// `(field, value, in bytes?)` per meminfo line.
fn parse_meminfo(text: &str) -> Vec<(String, f64, bool)> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(value)) = parts.next().map(str::parse::<f64>) else {
            continue;
        };
        let key = key.trim().replace('(', "_").replace(')', "");
        match parts.next() {
            Some("kB") => fields.push((key, value * 1024.0, true)),
            _ => fields.push((key, value, false)),
        }
    }
    fields
}

pub(super) fn vmstat(out: &mut Exposition) -> Result<()> {
    let text = read("/proc/vmstat")?;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        if !VMSTAT_FIELDS.is_match(key) {
            continue;
        }
        if let Ok(value) = value.trim().parse::<f64>() {
            out.untyped(
                &format!("node_vmstat_{key}"),
                &format!("/proc/vmstat information field {key}."),
            )
            .sample(&[], value);
        }
    }
    Ok(())
}

pub(super) fn filefd(out: &mut Exposition) -> Result<()> {
    let text = read("/proc/sys/fs/file-nr")?;
    let fields: Vec<f64> = text
        .split_whitespace()
        .map(|v| v.parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected /proc/sys/fs/file-nr: {text:?}"))?;
    let [allocated, _, maximum] = fields[..] else {
        return Err(anyhow!("unexpected /proc/sys/fs/file-nr: {text:?}"));
    };
    out.single(
        "node_filefd_allocated",
        "File descriptor statistics: allocated.",
        Kind::Gauge,
        allocated,
    );
    out.single(
        "node_filefd_maximum",
        "File descriptor statistics: maximum.",
        Kind::Gauge,
        maximum,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_renamed_like_node_exporter() {
        let fields = parse_meminfo(
            "MemTotal:       24684096 kB\nActive(anon):     123 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n",
        );
        assert_eq!(
            fields,
            vec![
                ("MemTotal".to_string(), 24684096.0 * 1024.0, true),
                ("Active_anon".to_string(), 123.0 * 1024.0, true),
                ("HugePages_Total".to_string(), 0.0, false),
                ("Hugepagesize".to_string(), 2048.0 * 1024.0, true),
            ]
        );
    }

    #[test]
    fn vmstat_fields_are_node_exporters_defaults() {
        assert!(VMSTAT_FIELDS.is_match("pgmajfault"));
        assert!(VMSTAT_FIELDS.is_match("oom_kill"));
        assert!(!VMSTAT_FIELDS.is_match("nr_free_pages"));
    }
}
