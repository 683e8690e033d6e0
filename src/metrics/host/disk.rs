//! Block devices and filesystems: `/proc/diskstats` counters and the sizes of mounted
//! filesystems, with node_exporter's default excludes and a guard against stuck mounts.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use anyhow::{Context, Result};
use regex::Regex;

use crate::metrics::exposition::Exposition;

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

pub(super) fn diskstats(out: &mut Exposition) -> Result<()> {
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

/// One mounted filesystem as node_exporter labels it.
#[derive(Debug)]
pub(super) struct FsStat {
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

pub(super) fn filesystems(stuck: &Mutex<HashSet<PathBuf>>) -> Result<Vec<FsStat>> {
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

pub(super) fn write_filesystems(out: &mut Exposition, stats: &[FsStat]) {
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
    }
}
