//! node_exporter's `processes` collector (off by default there and here: it reads a file per
//! process and per thread): `node_processes_*` from `/proc/<pid>/stat` and
//! `/proc/<pid>/task/<tid>/stat`, and the kernel's limits.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Result, anyhow};

use super::read;
use crate::metrics::exposition::{Exposition, Kind};

/// `(state, num_threads)` from the text of a `stat` file; the command name may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // num_threads is the 20th field of the line, the 18th after the name.
    let threads = fields.nth(16)?.parse().ok()?;
    Some((state, threads))
}

/// Reads `path` into `buf` (one buffer for every file of the scan); false when it is gone.
fn read_into(path: &Path, buf: &mut String) -> bool {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .is_ok()
}

pub(super) fn processes(out: &mut Exposition) -> Result<()> {
    let limit = |path: &str| -> Result<f64> {
        let text = read(path)?;
        text.trim()
            .parse()
            .map_err(|_| anyhow!("unexpected {path}: {text:?}"))
    };
    let max_threads = limit("/proc/sys/kernel/threads-max")?;
    let max_processes = limit("/proc/sys/kernel/pid_max")?;
    let mut states: BTreeMap<char, u64> = BTreeMap::new();
    let mut thread_states: BTreeMap<char, u64> = BTreeMap::new();
    let (mut pids, mut threads) = (0u64, 0u64);
    let mut buf = String::with_capacity(512);
    for entry in std::fs::read_dir("/proc")?.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        // A process that exits during the scan is simply not counted.
        let dir = entry.path();
        if !read_into(&dir.join("stat"), &mut buf) {
            continue;
        }
        let Some((state, num_threads)) = parse_stat(&buf) else {
            continue;
        };
        pids += 1;
        threads += num_threads;
        *states.entry(state).or_default() += 1;
        let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
            continue;
        };
        for task in tasks.filter_map(|t| t.ok()) {
            if read_into(&task.path().join("stat"), &mut buf)
                && let Some((state, _)) = parse_stat(&buf)
            {
                *thread_states.entry(state).or_default() += 1;
            }
        }
    }
    let gauges = [
        (
            "node_processes_threads",
            "Allocated threads in system",
            threads as f64,
        ),
        (
            "node_processes_max_threads",
            "Limit of threads in the system",
            max_threads,
        ),
        (
            "node_processes_max_processes",
            "Number of max PIDs limit",
            max_processes,
        ),
        ("node_processes_pids", "Number of PIDs", pids as f64),
    ];
    for (name, help, value) in gauges {
        out.single(name, help, Kind::Gauge, value);
    }
    let family = out.gauge("node_processes_state", "Number of processes in each state.");
    for (state, n) in &states {
        family.sample(&[("state", &state.to_string())], *n as f64);
    }
    let family = out.gauge(
        "node_processes_threads_state",
        "Number of threads in each state.",
    );
    for (state, n) in &thread_states {
        family.sample(&[("thread_state", &state.to_string())], *n as f64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 12345 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_stat(line), Some(('S', 7)));
        assert_eq!(parse_stat("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some_and(|(_, threads)| threads >= 1));
    }
}
