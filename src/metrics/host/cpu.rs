//! CPU and kernel activity: `node_cpu_*` (kept monotonic, as node_exporter does), the
//! `/proc/stat` counters, load averages and pressure stall information.

use anyhow::{Context, Result, anyhow};

use super::{HostCollector, read};
use crate::metrics::exposition::{Exposition, Kind};

/// node_exporter: an idle counter that goes back this far means the CPU was hot-plugged.
const CPU_JUMP_BACK_SECONDS: f64 = 3.0;

const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

impl HostCollector {
    /// `node_cpu_*` from the text of `/proc/stat`.
    pub(super) fn cpu(&self, out: &mut Exposition, text: &str) -> Result<()> {
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

/// Kernel counters from the text of `/proc/stat`.
pub(super) fn stat(out: &mut Exposition, text: &str) -> Result<()> {
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

pub(super) fn loadavg(out: &mut Exposition) -> Result<()> {
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

/// Pressure stall information; absent on kernels without PSI (the collector then fails).
pub(super) fn pressure(out: &mut Exposition) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_never_go_backwards() {
        let host = HostCollector::default();
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
