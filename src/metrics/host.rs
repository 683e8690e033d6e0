//! Host metrics under node_exporter's names and semantics (dashboards and alerting rules match on
//! them; `README.md`'s Metrics section lists the families), read from `/proc` and `/sys`: CPU
//! seconds per mode (kept monotonic, as node_exporter does), load, every `/proc/meminfo` field,
//! filesystems (with node_exporter's excludes and a stuck-mount guard), disk and network
//! counters, kernel counters, pressure, vmstat and file descriptors.
//!
//! Each collector reports `node_scrape_collector_{duration_seconds,success}{collector}`; one
//! that fails (a file missing on this kernel) leaves the others unaffected.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use regex::Regex;

use super::exposition::{Exposition, Kind};

/// How long the filesystem collector waits for `statfs` calls (a hung NFS mount blocks them).
const STATFS_TIMEOUT: Duration = Duration::from_secs(2);
/// node_exporter: an idle counter that goes back this far means the CPU was hot-plugged.
const CPU_JUMP_BACK_SECONDS: f64 = 3.0;

const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// node_exporter's `--collector.filesystem.mount-points-exclude` default.
static EXCLUDED_MOUNT_POINTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
    )
    .expect("static regex")
});
/// node_exporter's `--collector.filesystem.fs-types-exclude` default.
static EXCLUDED_FS_TYPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$",
    )
    .expect("static regex")
});
/// node_exporter's `--collector.diskstats.device-exclude` default: partitions and virtual disks.
static EXCLUDED_DISKS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$").expect("static regex")
});
/// node_exporter's default vmstat fields.
static VMSTAT_FIELDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(oom_kill|pgpg|pswp|pg.*fault).*").expect("static regex"));

/// One host collector: writes its families or says why it could not.
type Collect<'a> = dyn Fn(&mut Exposition) -> Result<()> + 'a;

/// State kept between scrapes.
#[derive(Default)]
pub(super) struct HostCollector {
    /// Last reported seconds per CPU and mode, to keep `node_cpu_seconds_total` monotonic.
    cpu: Mutex<HashMap<String, [f64; 8]>>,
    /// Mount points whose `statfs` has not returned (reported with `device_error` 1).
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

impl HostCollector {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Everything but the filesystems (plain file reads: fast, never blocking for long).
    pub(super) fn collect(&self, out: &mut Exposition) {
        // Read once for both collectors that parse it.
        let proc_stat = read("/proc/stat").map_err(|e| format!("{e:#}"));
        let proc_stat = || proc_stat.as_deref().map_err(|e| anyhow!("{e}"));
        let collectors: [(&str, &Collect); 12] = [
            ("cpu", &|out| self.cpu(out, proc_stat()?)),
            ("stat", &|out| stat(out, proc_stat()?)),
            ("loadavg", &loadavg),
            ("meminfo", &meminfo),
            ("diskstats", &diskstats),
            ("netdev", &netdev),
            ("netclass", &netclass),
            ("pressure", &pressure),
            ("vmstat", &vmstat),
            ("filefd", &filefd),
            ("uname", &uname),
            ("os", &os_release),
        ];
        for (name, collect) in collectors {
            let started = Instant::now();
            let result = collect(out);
            record(out, name, started, &result);
        }
        let started = Instant::now();
        time(out);
        record(out, "time", started, &Ok(()));
    }

    /// Filesystem sizes; `statfs` runs on a blocking thread so a hung mount cannot stall a scrape.
    pub(super) async fn collect_filesystems(&self, out: &mut Exposition) {
        let started = Instant::now();
        let stuck = self.stuck.clone();
        let work = tokio::task::spawn_blocking(move || filesystems(&stuck));
        let result = match tokio::time::timeout(STATFS_TIMEOUT, work).await {
            Ok(Ok(Ok(stats))) => {
                write_filesystems(out, &stats);
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

    /// `node_cpu_*` from the text of `/proc/stat`.
    fn cpu(&self, out: &mut Exposition, text: &str) -> Result<()> {
        let ticks = procfs::ticks_per_second() as f64;
        let mut cache = self.cpu.lock().map_err(|_| anyhow!("CPU cache poisoned"))?;
        let seconds = out.counter(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
        );
        let mut guest = Vec::new();
        for line in text.lines() {
            // `cpuN …` lines; not the aggregate `cpu  …` line.
            let Some(rest) = line
                .strip_prefix("cpu")
                .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let Some(cpu) = fields.next() else {
                continue;
            };
            let values: Vec<f64> = fields
                .map(|v| v.parse::<u64>().map(|t| t as f64 / ticks))
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing {line:?}"))?;
            let mut now = [0.0; 8];
            for (slot, value) in now.iter_mut().zip(&values) {
                *slot = *value;
            }
            let previous = cache.entry(cpu.to_string()).or_insert([0.0; 8]);
            // A CPU brought back online starts from zero again (node_exporter's hotplug rule).
            if previous[3] - now[3] >= CPU_JUMP_BACK_SECONDS {
                *previous = [0.0; 8];
            }
            for (mode, (prev, new)) in CPU_MODES.iter().zip(previous.iter_mut().zip(now)) {
                // iowait in particular can go backwards; counters must not.
                if new > *prev {
                    *prev = new;
                }
                seconds.sample(&[("cpu", cpu), ("mode", mode)], *prev);
            }
            if let (Some(g), Some(gn)) = (values.get(8), values.get(9)) {
                guest.push((cpu.to_string(), *g, *gn));
            }
        }
        let family = out.counter(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
        );
        for (cpu, user, nice) in &guest {
            family.sample(&[("cpu", cpu), ("mode", "user")], *user);
            family.sample(&[("cpu", cpu), ("mode", "nice")], *nice);
        }
        Ok(())
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

/// Kernel counters from the text of `/proc/stat`.
fn stat(out: &mut Exposition, text: &str) -> Result<()> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, help, kind) = match key {
            "intr" => (
                "node_intr_total",
                "Total number of interrupts serviced.",
                Kind::Counter,
            ),
            "ctxt" => (
                "node_context_switches_total",
                "Total number of context switches.",
                Kind::Counter,
            ),
            "btime" => (
                "node_boot_time_seconds",
                "Node boot time, in unixtime.",
                Kind::Gauge,
            ),
            "processes" => ("node_forks_total", "Total number of forks.", Kind::Counter),
            "procs_running" => (
                "node_procs_running",
                "Number of processes in runnable state.",
                Kind::Gauge,
            ),
            "procs_blocked" => (
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                Kind::Gauge,
            ),
            _ => continue,
        };
        out.single(name, help, kind, value);
    }
    Ok(())
}

fn loadavg(out: &mut Exposition) -> Result<()> {
    let text = read("/proc/loadavg")?;
    let mut fields = text.split_whitespace();
    for (name, help) in [
        ("node_load1", "1m load average."),
        ("node_load5", "5m load average."),
        ("node_load15", "15m load average."),
    ] {
        let value: f64 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/loadavg: {text:?}"))?;
        out.single(name, help, Kind::Gauge, value);
    }
    Ok(())
}

/// Every `/proc/meminfo` line as `node_memory_<Field>_bytes` (or without `_bytes` for counts
/// such as `HugePages_Total`), with node_exporter's renaming of `Active(anon)` → `Active_anon`.
fn meminfo(out: &mut Exposition) -> Result<()> {
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

fn diskstats(out: &mut Exposition) -> Result<()> {
    let disks = procfs::diskstats().context("reading /proc/diskstats")?;
    for d in disks.iter().filter(|d| !EXCLUDED_DISKS.is_match(&d.name)) {
        let dev = [("device", d.name.as_str())];
        for (name, help, value) in DISK_COUNTERS {
            out.counter(name, help).sample(&dev, value(d));
        }
        out.gauge(
            "node_disk_io_now",
            "The number of I/Os currently in progress.",
        )
        .sample(&dev, d.in_progress as f64);
        for (name, help, value) in DISK_OPTIONAL_COUNTERS {
            if let Some(value) = value(d) {
                out.counter(name, help).sample(&dev, value);
            }
        }
    }
    Ok(())
}

/// One value of a `/proc/diskstats` line, in node_exporter's unit.
type DiskField<T> = fn(&procfs::DiskStat) -> T;

/// Milliseconds to seconds.
fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}

/// 512-byte sectors to bytes.
fn sectors(v: u64) -> f64 {
    v as f64 * 512.0
}

/// The counters every kernel reports, in node_exporter's order.
const DISK_COUNTERS: [(&str, &str, DiskField<f64>); 10] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        |d| d.reads as f64,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        |d| d.merged as f64,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        |d| sectors(d.sectors_read),
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        |d| ms(d.time_reading),
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        |d| d.writes as f64,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        |d| d.writes_merged as f64,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        |d| sectors(d.sectors_written),
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        |d| ms(d.time_writing),
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        |d| ms(d.time_in_progress),
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        |d| ms(d.weighted_time_in_progress),
    ),
];

/// The discard and flush counters, which older kernels do not report (left out then).
const DISK_OPTIONAL_COUNTERS: [(&str, &str, DiskField<Option<f64>>); 6] = [
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        |d| d.discards.map(|v| v as f64),
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        |d| d.discards_merged.map(|v| v as f64),
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        |d| d.sectors_discarded.map(|v| v as f64),
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        |d| d.time_discarding.map(ms),
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        |d| d.flushes.map(|v| v as f64),
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        |d| d.time_flushing.map(ms),
    ),
];

fn netdev(out: &mut Exposition) -> Result<()> {
    let devices = procfs::net::dev_status().context("reading /proc/net/dev")?;
    let mut names: Vec<&String> = devices.keys().collect();
    names.sort();
    for name in names {
        let d = &devices[name];
        let dev = [("device", name.as_str())];
        let counters: [(&str, u64); 16] = [
            ("receive_bytes", d.recv_bytes),
            ("receive_packets", d.recv_packets),
            ("receive_errs", d.recv_errs),
            ("receive_drop", d.recv_drop),
            ("receive_fifo", d.recv_fifo),
            ("receive_frame", d.recv_frame),
            ("receive_compressed", d.recv_compressed),
            ("receive_multicast", d.recv_multicast),
            ("transmit_bytes", d.sent_bytes),
            ("transmit_packets", d.sent_packets),
            ("transmit_errs", d.sent_errs),
            ("transmit_drop", d.sent_drop),
            ("transmit_fifo", d.sent_fifo),
            ("transmit_colls", d.sent_colls),
            ("transmit_carrier", d.sent_carrier),
            ("transmit_compressed", d.sent_compressed),
        ];
        for (stat, value) in counters {
            out.counter(
                &format!("node_network_{stat}_total"),
                &format!("Network device statistic {stat}."),
            )
            .sample(&dev, value as f64);
        }
    }
    Ok(())
}

/// Link state and MTU from `/sys/class/net`.
fn netclass(out: &mut Exposition) -> Result<()> {
    let base = Path::new("/sys/class/net");
    let mut names: Vec<String> = std::fs::read_dir(base)
        .context("reading /sys/class/net")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let attr = |a: &str| {
            std::fs::read_to_string(base.join(&name).join(a))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let operstate = attr("operstate");
        let dev = [("device", name.as_str())];
        out.gauge(
            "node_network_up",
            "Value is 1 if operstate is 'up', 0 otherwise.",
        )
        .sample(&dev, f64::from(u8::from(operstate == "up")));
        if let Ok(mtu) = attr("mtu").parse::<f64>() {
            out.gauge(
                "node_network_mtu_bytes",
                "Network device property: mtu_bytes",
            )
            .sample(&dev, mtu);
        }
        let (address, broadcast, duplex, ifalias) = (
            attr("address"),
            attr("broadcast"),
            attr("duplex"),
            attr("ifalias"),
        );
        out.gauge(
            "node_network_info",
            "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
        )
        .sample(
            &[
                ("address", &address),
                ("broadcast", &broadcast),
                ("device", &name),
                ("duplex", &duplex),
                ("ifalias", &ifalias),
                ("operstate", &operstate),
            ],
            1.0,
        );
    }
    Ok(())
}

/// Pressure stall information; absent on kernels without PSI (the collector then fails).
fn pressure(out: &mut Exposition) -> Result<()> {
    use procfs::Current;
    let cpu = procfs::CpuPressure::current().context("reading /proc/pressure/cpu")?;
    let memory = procfs::MemoryPressure::current().context("reading /proc/pressure/memory")?;
    let io = procfs::IoPressure::current().context("reading /proc/pressure/io")?;
    let micros = |v: u64| v as f64 / 1e6;
    for (name, help, value) in [
        (
            "node_pressure_cpu_waiting_seconds_total",
            "Total time in seconds that processes have waited for CPU time",
            cpu.some.total,
        ),
        (
            "node_pressure_memory_waiting_seconds_total",
            "Total time in seconds that processes have waited for memory",
            memory.some.total,
        ),
        (
            "node_pressure_memory_stalled_seconds_total",
            "Total time in seconds no process could make progress due to memory congestion",
            memory.full.total,
        ),
        (
            "node_pressure_io_waiting_seconds_total",
            "Total time in seconds that processes have waited due to IO congestion",
            io.some.total,
        ),
        (
            "node_pressure_io_stalled_seconds_total",
            "Total time in seconds no process could make progress due to IO congestion",
            io.full.total,
        ),
    ] {
        out.single(name, help, Kind::Counter, micros(value));
    }
    Ok(())
}

fn vmstat(out: &mut Exposition) -> Result<()> {
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

fn filefd(out: &mut Exposition) -> Result<()> {
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

fn uname(out: &mut Exposition) -> Result<()> {
    let u = nix::sys::utsname::uname().context("uname(2)")?;
    let s = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
    let domainname = std::fs::read_to_string("/proc/sys/kernel/domainname")
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|_| "(none)".to_string());
    out.gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
    )
    .sample(
        &[
            ("domainname", &domainname),
            ("machine", &s(u.machine())),
            ("nodename", &s(u.nodename())),
            ("release", &s(u.release())),
            ("sysname", &s(u.sysname())),
            ("version", &s(u.version())),
        ],
        1.0,
    );
    Ok(())
}

/// `node_os_info` and `node_os_version` from os-release.
fn os_release(out: &mut Exposition) -> Result<()> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .context("reading /etc/os-release")?;
    let fields = parse_os_release(&text);
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let names = [
        "build_id",
        "id",
        "id_like",
        "image_id",
        "image_version",
        "name",
        "pretty_name",
        "variant",
        "variant_id",
        "version",
        "version_codename",
        "version_id",
    ];
    let labels: Vec<(&str, &str)> = names.iter().map(|n| (*n, get(n))).collect();
    out.gauge(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
    )
    .sample(&labels, 1.0);
    if let Ok(version) = get("version_id").parse::<f64>() {
        out.gauge(
            "node_os_version",
            "Metric containing the major.minor part of the OS version.",
        )
        .sample(
            &[
                ("id", get("id")),
                ("id_like", get("id_like")),
                ("name", get("name")),
            ],
            version,
        );
    }
    Ok(())
}

fn parse_os_release(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_ascii_lowercase(), v.to_string())
        })
        .collect()
}

fn time(out: &mut Exposition) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    out.single(
        "node_time_seconds",
        "System time in seconds since epoch (1970).",
        Kind::Gauge,
        now,
    );
}

/// One mounted filesystem as node_exporter labels it.
#[derive(Debug)]
struct FsStat {
    device: String,
    mountpoint: String,
    fstype: String,
    readonly: bool,
    /// `None` when `statfs` failed or the mount is stuck.
    sizes: Option<[f64; 5]>,
}

/// The mount table node_exporter reads (PID 1's, so a hardened service's read-only view of `/`
/// does not make every filesystem look read-only), falling back to nexusd's own.
fn mounts() -> Result<procfs::process::MountInfos> {
    let pid1 = procfs::process::Process::new(1).and_then(|p| p.mountinfo());
    match pid1 {
        Ok(m) => Ok(m),
        Err(_) => procfs::process::Process::myself()
            .and_then(|p| p.mountinfo())
            .context("reading /proc/self/mountinfo"),
    }
}

fn filesystems(stuck: &Mutex<HashSet<PathBuf>>) -> Result<Vec<FsStat>> {
    let mut stats = Vec::new();
    for m in mounts()? {
        let mountpoint = m.mount_point.to_string_lossy().into_owned();
        if EXCLUDED_MOUNT_POINTS.is_match(&mountpoint) || EXCLUDED_FS_TYPES.is_match(&m.fs_type) {
            continue;
        }
        let readonly = m.mount_options.contains_key("ro");
        let mut fs = FsStat {
            device: m.mount_source.clone().unwrap_or_else(|| "none".to_string()),
            mountpoint,
            fstype: m.fs_type.clone(),
            readonly,
            sizes: None,
        };
        let already_stuck = stuck
            .lock()
            .map(|s| s.contains(&m.mount_point))
            .unwrap_or(false);
        if !already_stuck {
            if let Ok(mut s) = stuck.lock() {
                s.insert(m.mount_point.clone());
            }
            fs.sizes = nix::sys::statfs::statfs(&m.mount_point).ok().map(|s| {
                let bsize = s.block_size() as f64;
                [
                    s.blocks() as f64 * bsize,
                    s.blocks_free() as f64 * bsize,
                    s.blocks_available() as f64 * bsize,
                    s.files() as f64,
                    s.files_free() as f64,
                ]
            });
            if let Ok(mut s) = stuck.lock() {
                s.remove(&m.mount_point);
            }
        }
        stats.push(fs);
    }
    Ok(stats)
}

fn write_filesystems(out: &mut Exposition, stats: &[FsStat]) {
    for fs in stats {
        let labels = [
            ("device", fs.device.as_str()),
            ("fstype", fs.fstype.as_str()),
            ("mountpoint", fs.mountpoint.as_str()),
        ];
        out.gauge(
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
        )
        .sample(&labels, f64::from(u8::from(fs.sizes.is_none())));
        out.gauge("node_filesystem_readonly", "Filesystem read-only status.")
            .sample(&labels, f64::from(u8::from(fs.readonly)));
        let Some(sizes) = fs.sizes else { continue };
        for ((name, help), value) in [
            ("node_filesystem_size_bytes", "Filesystem size in bytes."),
            (
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
            ),
            (
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
            ),
            ("node_filesystem_files", "Filesystem total file nodes."),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
            ),
        ]
        .into_iter()
        .zip(sizes)
        {
            out.gauge(name, help).sample(&labels, value);
        }
    }
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
    fn excludes_match_node_exporter_defaults() {
        for m in [
            "/dev",
            "/dev/shm",
            "/proc",
            "/sys/fs/cgroup",
            "/run/credentials/x.service",
            "/var/lib/docker/overlay2/abc",
        ] {
            assert!(EXCLUDED_MOUNT_POINTS.is_match(m), "{m}");
        }
        for m in ["/", "/mnt/pgdata", "/run", "/devices", "/var/lib/docker"] {
            assert!(!EXCLUDED_MOUNT_POINTS.is_match(m), "{m}");
        }
        assert!(EXCLUDED_FS_TYPES.is_match("overlay"));
        assert!(EXCLUDED_FS_TYPES.is_match("cgroup2"));
        assert!(!EXCLUDED_FS_TYPES.is_match("ext4"));
        assert!(EXCLUDED_DISKS.is_match("sda1"));
        assert!(EXCLUDED_DISKS.is_match("nvme0n1p2"));
        assert!(EXCLUDED_DISKS.is_match("loop3"));
        assert!(!EXCLUDED_DISKS.is_match("sda"));
        assert!(!EXCLUDED_DISKS.is_match("nvme0n1"));
        assert!(VMSTAT_FIELDS.is_match("pgmajfault"));
        assert!(VMSTAT_FIELDS.is_match("oom_kill"));
        assert!(!VMSTAT_FIELDS.is_match("nr_free_pages"));
    }

    #[test]
    fn os_release_values_are_unquoted() {
        let f = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\n",
        );
        assert_eq!(f["pretty_name"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f["id"], "debian");
        assert_eq!(f["version_id"], "12");
    }

    #[test]
    fn cpu_seconds_never_go_backwards() {
        let host = HostCollector::new();
        let mut first = Exposition::new();
        host.cpu(&mut first, &read("/proc/stat").unwrap()).unwrap();
        // Pretend an earlier scrape saw more iowait than the kernel reports now.
        {
            let mut cache = host.cpu.lock().unwrap();
            let cpu0 = cache.get_mut("0").unwrap();
            cpu0[4] += 1.0;
        }
        let held = host.cpu.lock().unwrap()["0"][4];
        let mut second = Exposition::new();
        host.cpu(&mut second, &read("/proc/stat").unwrap()).unwrap();
        let text = second.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("node_cpu_seconds_total{cpu=\"0\",mode=\"iowait\"}"))
            .unwrap();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= held, "{value} < {held}");
    }
}
