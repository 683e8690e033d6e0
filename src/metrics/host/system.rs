//! What the machine is and its clock: `uname`, os-release, the time, the kernel's clock
//! discipline (`adjtimex(2)`, node_exporter's timex collector) and the entropy pool.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};

use super::read;

use crate::metrics::exposition::{Exposition, Kind};

pub(super) fn uname(out: &mut Exposition) -> Result<()> {
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
pub(super) fn os_release(out: &mut Exposition) -> Result<()> {
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

pub(super) fn time(out: &mut Exposition) {
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

/// `node_entropy_available_bits` and `node_entropy_pool_size_bits`.
pub(super) fn entropy(out: &mut Exposition) -> Result<()> {
    for (path, name, help) in [
        (
            "/proc/sys/kernel/random/entropy_avail",
            "node_entropy_available_bits",
            "Bits of available entropy.",
        ),
        (
            "/proc/sys/kernel/random/poolsize",
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
        ),
    ] {
        let text = read(path)?;
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| anyhow!("unexpected {path}: {text:?}"))?;
        out.single(name, help, Kind::Gauge, value);
    }
    Ok(())
}

/// What `adjtimex(2)` reports, as plain numbers (the kernel's `struct timex` fields).
#[derive(Debug, Default, Clone, Copy)]
struct Timex {
    /// The clock state `adjtimex` returns (`TIME_ERROR` = 5: not synchronised).
    state: i32,
    status: f64,
    offset: f64,
    freq: f64,
    maxerror: f64,
    esterror: f64,
    constant: f64,
    tick: f64,
    ppsfreq: f64,
    jitter: f64,
    shift: f64,
    stabil: f64,
    jitcnt: f64,
    calcnt: f64,
    errcnt: f64,
    stbcnt: f64,
    tai: f64,
}

/// The kernel's clock discipline, read without changing it (`modes` 0 needs no privilege).
#[allow(unsafe_code)]
fn adjtimex() -> Result<Timex> {
    // SAFETY: `timex` holds only integers, so all-zero is a valid value; with `modes` 0 the
    // kernel only writes into the struct, which lives until the call returns.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return Err(std::io::Error::last_os_error()).context("adjtimex(2)");
    }
    Ok(Timex {
        state,
        status: t.status as f64,
        offset: t.offset as f64,
        freq: t.freq as f64,
        maxerror: t.maxerror as f64,
        esterror: t.esterror as f64,
        constant: t.constant as f64,
        tick: t.tick as f64,
        ppsfreq: t.ppsfreq as f64,
        jitter: t.jitter as f64,
        shift: t.shift as f64,
        stabil: t.stabil as f64,
        jitcnt: t.jitcnt as f64,
        calcnt: t.calcnt as f64,
        errcnt: t.errcnt as f64,
        stbcnt: t.stbcnt as f64,
        tai: t.tai as f64,
    })
}

/// `node_timex_*`, including `node_timex_sync_status` (what NodeClockNotSynchronising watches).
pub(super) fn timex(out: &mut Exposition) -> Result<()> {
    write_timex(out, &adjtimex()?);
    Ok(())
}

/// Frequencies in `timex` are in ppm with a 16-bit fraction (adjtimex(2)).
const PPM16: f64 = 1_000_000.0 * 65536.0;

/// One `node_timex_*` family: name, help, type, and its value from the `timex` answer and the
/// divisor of its offsets (ns when STA_NANO is set, else µs; error bounds and tick are in µs).
type TimexMetric = (&'static str, &'static str, Kind, fn(&Timex, f64) -> f64);

const TIMEX_METRICS: [TimexMetric; 17] = [
    (
        "node_timex_sync_status",
        "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
        Kind::Gauge,
        |t, _| f64::from(u8::from(t.state != TIME_ERROR)),
    ),
    (
        "node_timex_offset_seconds",
        "Time offset in between local system and reference clock.",
        Kind::Gauge,
        |t, d| t.offset / d,
    ),
    (
        "node_timex_frequency_adjustment_ratio",
        "Local clock frequency adjustment.",
        Kind::Gauge,
        |t, _| 1.0 + t.freq / PPM16,
    ),
    (
        "node_timex_maxerror_seconds",
        "Maximum error in seconds.",
        Kind::Gauge,
        |t, _| t.maxerror / 1e6,
    ),
    (
        "node_timex_estimated_error_seconds",
        "Estimated error in seconds.",
        Kind::Gauge,
        |t, _| t.esterror / 1e6,
    ),
    (
        "node_timex_status",
        "Value of the status array bits.",
        Kind::Gauge,
        |t, _| t.status,
    ),
    (
        "node_timex_loop_time_constant",
        "Phase-locked loop time constant.",
        Kind::Gauge,
        |t, _| t.constant,
    ),
    (
        "node_timex_tick_seconds",
        "Seconds between clock ticks.",
        Kind::Gauge,
        |t, _| t.tick / 1e6,
    ),
    (
        "node_timex_pps_frequency_hertz",
        "Pulse per second frequency.",
        Kind::Gauge,
        |t, _| t.ppsfreq / PPM16,
    ),
    (
        "node_timex_pps_jitter_seconds",
        "Pulse per second jitter.",
        Kind::Gauge,
        |t, d| t.jitter / d,
    ),
    (
        "node_timex_pps_shift_seconds",
        "Pulse per second interval duration.",
        Kind::Gauge,
        |t, _| t.shift,
    ),
    (
        "node_timex_pps_stability_hertz",
        "Pulse per second stability, average of recent frequency changes.",
        Kind::Gauge,
        |t, _| t.stabil / PPM16,
    ),
    (
        "node_timex_pps_jitter_total",
        "Pulse per second count of jitter limit exceeded events.",
        Kind::Counter,
        |t, _| t.jitcnt,
    ),
    (
        "node_timex_pps_calibration_total",
        "Pulse per second count of calibration intervals.",
        Kind::Counter,
        |t, _| t.calcnt,
    ),
    (
        "node_timex_pps_error_total",
        "Pulse per second count of calibration errors.",
        Kind::Counter,
        |t, _| t.errcnt,
    ),
    (
        "node_timex_pps_stability_exceeded_total",
        "Pulse per second count of stability limit exceeded events.",
        Kind::Counter,
        |t, _| t.stbcnt,
    ),
    (
        "node_timex_tai_offset_seconds",
        "International Atomic Time (TAI) offset.",
        Kind::Gauge,
        |t, _| t.tai,
    ),
];

/// `adjtimex`'s answer when the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// The status bit saying offsets are in nanoseconds.
const STA_NANO: i64 = 0x2000;

fn write_timex(out: &mut Exposition, t: &Timex) {
    let divisor = if (t.status as i64) & STA_NANO != 0 {
        1e9
    } else {
        1e6
    };
    for (name, help, kind, value) in TIMEX_METRICS {
        out.single(name, help, kind, value(t, divisor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn timex_units_follow_node_exporter() {
        // An unsynchronised clock in microsecond mode: status STA_UNSYNC (0x40) | STA_PLL (1).
        let t = Timex {
            state: 5,
            status: 65.0,
            offset: -1500.0,
            freq: 65536.0 * 2.0,
            maxerror: 16_000_000.0,
            esterror: 250.0,
            constant: 2.0,
            tick: 10_000.0,
            tai: 37.0,
            ..Timex::default()
        };
        let mut out = Exposition::new();
        write_timex(&mut out, &t);
        let text = out.render();
        for line in [
            "node_timex_sync_status 0\n",
            "node_timex_offset_seconds -0.0015\n",
            "node_timex_frequency_adjustment_ratio 1.000002\n",
            "node_timex_maxerror_seconds 16\n",
            "node_timex_estimated_error_seconds 0.00025\n",
            "node_timex_tick_seconds 0.01\n",
            "node_timex_tai_offset_seconds 37\n",
            "# TYPE node_timex_pps_calibration_total counter\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        // Nanosecond mode (STA_NANO) and a synchronised clock (TIME_OK).
        let t = Timex {
            state: 0,
            status: 8192.0,
            offset: -1500.0,
            ..Timex::default()
        };
        let mut out = Exposition::new();
        write_timex(&mut out, &t);
        let text = out.render();
        assert!(text.contains("node_timex_sync_status 1\n"));
        assert!(
            text.contains("node_timex_offset_seconds -0.0000015\n"),
            "{text}"
        );
    }

    #[test]
    fn the_kernel_answers_adjtimex_without_privilege() {
        let t = adjtimex().unwrap();
        assert!(t.tick > 0.0, "{t:?}");
        let mut out = Exposition::new();
        entropy(&mut out).unwrap();
        assert!(out.render().contains("node_entropy_pool_size_bits "));
    }
}
