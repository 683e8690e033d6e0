//! Host metrics under node_exporter's names and semantics (dashboards and alerting rules match on
//! them; `README.md`'s Metrics section lists the families), read from `/proc`, `/sys` and
//! `adjtimex(2)`, one file per group of collectors: `cpu.rs` (CPU, `/proc/stat`, load,
//! pressure), `memory.rs` (meminfo, vmstat, file descriptors), `disk.rs` (diskstats,
//! filesystems), `network.rs` (devices, ARP), `netstat.rs` (protocol counters, sockets, softnet,
//! UDP queues, conntrack), `system.rs` (uname, os-release, time, timex, entropy),
//! `processes.rs` (off by default, as in node_exporter) and `textfile.rs` (`*.prom` files
//! merged into the scrape).
//!
//! [`COLLECTORS`] is the list `NEXUSD_METRICS_COLLECTORS` selects from. Each collector that runs
//! reports `node_scrape_collector_{duration_seconds,success}{collector}`; one that fails (a file
//! missing on this kernel) leaves the others unaffected. Each file is read once per scrape.

mod cpu;
mod disk;
mod memory;
mod netstat;
mod network;
mod processes;
mod system;
pub(super) mod textfile;
mod textparse;

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::config::MetricsConfig;
use super::exposition::Exposition;

/// How long the filesystem collector waits for `statfs` calls (a hung NFS mount blocks them).
const STATFS_TIMEOUT: Duration = Duration::from_secs(2);

/// Every host collector nexusd has, under node_exporter's name, and whether node_exporter runs
/// it by default (those that it does not stay off until `NEXUSD_METRICS_COLLECTORS` adds them).
pub(crate) const COLLECTORS: [(&str, bool); 24] = [
    ("arp", true),
    ("conntrack", true),
    ("cpu", true),
    ("diskstats", true),
    ("entropy", true),
    ("filefd", true),
    ("filesystem", true),
    ("loadavg", true),
    ("meminfo", true),
    ("netclass", true),
    ("netdev", true),
    ("netstat", true),
    ("os", true),
    ("pressure", true),
    ("processes", false),
    ("sockstat", true),
    ("softnet", true),
    ("stat", true),
    ("textfile", true),
    ("time", true),
    ("timex", true),
    ("udp_queues", true),
    ("uname", true),
    ("vmstat", true),
];

/// The collectors that run given `NEXUSD_METRICS_COLLECTORS`: node_exporter's defaults, then
/// each `+name` (or bare `name`) added and each `-name` removed, in order. An unknown name is
/// an error that lists the known ones.
pub(crate) fn select_collectors(value: Option<&str>) -> Result<Vec<&'static str>, String> {
    let mut on: Vec<bool> = COLLECTORS.iter().map(|(_, default)| *default).collect();
    for entry in crate::env::split_list(value.unwrap_or("")) {
        let (enable, name) = match entry.strip_prefix('-') {
            Some(name) => (false, name),
            None => (true, entry.strip_prefix('+').unwrap_or(&entry)),
        };
        let name = name.trim();
        let Some(i) = COLLECTORS.iter().position(|(n, _)| *n == name) else {
            let known: Vec<&str> = COLLECTORS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "{entry:?} is not a host collector: expected a comma-separated list of +name or -name, names among {}",
                known.join(", ")
            ));
        };
        on[i] = enable;
    }
    Ok(COLLECTORS
        .iter()
        .zip(on)
        .filter(|(_, on)| *on)
        .map(|((name, _), _)| *name)
        .collect())
}

/// One host collector: writes its families or says why it could not.
type Collect<'a> = dyn Fn(&mut Exposition) -> Result<()> + 'a;

/// The enabled collectors and the state kept between scrapes.
#[derive(Default)]
pub(super) struct HostCollector {
    /// Names from [`COLLECTORS`] that run.
    enabled: Vec<&'static str>,
    /// `NEXUSD_METRICS_TEXTFILE_DIR`.
    textfile_dir: Option<PathBuf>,
    /// Last reported seconds per CPU and mode, to keep `node_cpu_seconds_total` monotonic.
    cpu: Mutex<HashMap<String, [f64; 8]>>,
    /// Mount points whose `statfs` has not returned (reported with `device_error` 1).
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

impl HostCollector {
    pub(super) fn new(config: &MetricsConfig) -> Self {
        HostCollector {
            enabled: config.host_collectors.clone(),
            textfile_dir: config.textfile_dir.clone(),
            ..Self::default()
        }
    }

    fn on(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }

    /// Everything but the filesystems (plain file reads: fast, never blocking for long). Returns
    /// the families read from textfiles, merged by [`textfile::merge`] once the rest of the
    /// scrape is known.
    pub(super) fn collect(&self, out: &mut Exposition) -> Vec<textparse::TextFamily> {
        // Read once for both collectors that parse it, and only if one of them runs.
        let proc_stat = OnceCell::new();
        let proc_stat = || {
            proc_stat
                .get_or_init(|| read("/proc/stat").map_err(|e| format!("{e:#}")))
                .as_deref()
                .map_err(|e| anyhow!("{e}"))
        };
        let collectors: [(&str, &Collect); 21] = [
            ("cpu", &|out| self.cpu(out, proc_stat()?)),
            ("stat", &|out| cpu::stat(out, proc_stat()?)),
            ("loadavg", &cpu::loadavg),
            ("meminfo", &memory::meminfo),
            ("diskstats", &disk::diskstats),
            ("netdev", &network::netdev),
            ("netclass", &network::netclass),
            ("arp", &network::arp),
            ("netstat", &netstat::netstat),
            ("sockstat", &netstat::sockstat),
            ("softnet", &netstat::softnet),
            ("udp_queues", &netstat::udp_queues),
            ("conntrack", &netstat::conntrack),
            ("pressure", &cpu::pressure),
            ("vmstat", &memory::vmstat),
            ("filefd", &memory::filefd),
            ("entropy", &system::entropy),
            ("timex", &system::timex),
            ("processes", &processes::processes),
            ("uname", &system::uname),
            ("os", &system::os_release),
        ];
        for (name, collect) in collectors {
            if !self.on(name) {
                continue;
            }
            let started = Instant::now();
            let result = collect(out);
            record(out, name, started, &result);
        }
        if self.on("time") {
            let started = Instant::now();
            system::time(out);
            record(out, "time", started, &Ok(()));
        }
        if !self.on("textfile") {
            return Vec::new();
        }
        let started = Instant::now();
        let families = textfile::collect(self.textfile_dir.as_deref(), out);
        record(out, "textfile", started, &Ok(()));
        families
    }

    /// Filesystem sizes; `statfs` runs on a blocking thread so a hung mount cannot stall a scrape.
    pub(super) async fn collect_filesystems(&self, out: &mut Exposition) {
        if !self.on("filesystem") {
            return;
        }
        let started = Instant::now();
        let stuck = self.stuck.clone();
        let work = tokio::task::spawn_blocking(move || disk::filesystems(&stuck));
        let result = match tokio::time::timeout(STATFS_TIMEOUT, work).await {
            Ok(Ok(Ok(stats))) => {
                disk::write_filesystems(out, &stats);
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(anyhow!("the filesystem collector panicked: {e}")),
            Err(_) => Err(anyhow!(
                "statfs did not return within {STATFS_TIMEOUT:?} (a hung mount); it is skipped until it does"
            )),
        };
        record(out, "filesystem", started, &result);
    }
}

/// `node_scrape_collector_*` for one collector; a failure is logged at debug (it repeats).
fn record(out: &mut Exposition, collector: &str, started: Instant, result: &Result<()>) {
    out.gauge(
        "node_scrape_collector_duration_seconds",
        "node_exporter: Duration of a collector scrape.",
    )
    .sample(&[("collector", collector)], started.elapsed().as_secs_f64());
    out.gauge(
        "node_scrape_collector_success",
        "node_exporter: Whether a collector succeeded.",
    )
    .sample(
        &[("collector", collector)],
        f64::from(u8::from(result.is_ok())),
    );
    if let Err(e) = result {
        tracing::debug!(collector, error = %format!("{e:#}"), "host collector failed");
    }
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectors_follow_node_exporters_defaults_and_the_variable() {
        let defaults = select_collectors(None).unwrap();
        assert!(defaults.contains(&"netstat") && defaults.contains(&"textfile"));
        assert!(
            !defaults.contains(&"processes"),
            "off by default in node_exporter"
        );
        let chosen = select_collectors(Some("+processes, -netstat,-timex")).unwrap();
        assert!(chosen.contains(&"processes"));
        assert!(!chosen.contains(&"netstat") && !chosen.contains(&"timex"));
        assert_eq!(chosen.len(), defaults.len() - 1);
        assert_eq!(
            select_collectors(Some("processes")).unwrap().len(),
            defaults.len() + 1
        );
        let e = select_collectors(Some("+processes,-hwmonn")).unwrap_err();
        assert!(e.contains("\"-hwmonn\"") && e.contains("netstat"), "{e}");
    }
}
