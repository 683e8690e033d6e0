//! Network devices: `/proc/net/dev` counters, `/sys/class/net` properties (link state, MTU,
//! carrier, speed) and the ARP table.

use std::path::Path;

use anyhow::{Context, Result, anyhow};

use super::read;
use crate::metrics::exposition::Exposition;

/// `node_network_<stat>_total`: the name and help of each `/proc/net/dev` column.
const NETDEV_COUNTERS: [(&str, &str); 16] = [
    (
        "node_network_receive_bytes_total",
        "Network device statistic receive_bytes.",
    ),
    (
        "node_network_receive_packets_total",
        "Network device statistic receive_packets.",
    ),
    (
        "node_network_receive_errs_total",
        "Network device statistic receive_errs.",
    ),
    (
        "node_network_receive_drop_total",
        "Network device statistic receive_drop.",
    ),
    (
        "node_network_receive_fifo_total",
        "Network device statistic receive_fifo.",
    ),
    (
        "node_network_receive_frame_total",
        "Network device statistic receive_frame.",
    ),
    (
        "node_network_receive_compressed_total",
        "Network device statistic receive_compressed.",
    ),
    (
        "node_network_receive_multicast_total",
        "Network device statistic receive_multicast.",
    ),
    (
        "node_network_transmit_bytes_total",
        "Network device statistic transmit_bytes.",
    ),
    (
        "node_network_transmit_packets_total",
        "Network device statistic transmit_packets.",
    ),
    (
        "node_network_transmit_errs_total",
        "Network device statistic transmit_errs.",
    ),
    (
        "node_network_transmit_drop_total",
        "Network device statistic transmit_drop.",
    ),
    (
        "node_network_transmit_fifo_total",
        "Network device statistic transmit_fifo.",
    ),
    (
        "node_network_transmit_colls_total",
        "Network device statistic transmit_colls.",
    ),
    (
        "node_network_transmit_carrier_total",
        "Network device statistic transmit_carrier.",
    ),
    (
        "node_network_transmit_compressed_total",
        "Network device statistic transmit_compressed.",
    ),
];

/// `/proc/net/dev` counters, and the packets no protocol handler took (`rx_nohandler`, which
/// node_exporter reads over netlink; the same counter is in each device's sysfs statistics).
pub(super) fn netdev(out: &mut Exposition) -> Result<()> {
    let devices = procfs::net::dev_status().context("reading /proc/net/dev")?;
    let mut names: Vec<&String> = devices.keys().collect();
    names.sort();
    let sys = Path::new(SYS_CLASS_NET);
    for name in names {
        let d = &devices[name];
        let dev = [("device", name.as_str())];
        let values: [u64; 16] = [
            d.recv_bytes,
            d.recv_packets,
            d.recv_errs,
            d.recv_drop,
            d.recv_fifo,
            d.recv_frame,
            d.recv_compressed,
            d.recv_multicast,
            d.sent_bytes,
            d.sent_packets,
            d.sent_errs,
            d.sent_drop,
            d.sent_fifo,
            d.sent_colls,
            d.sent_carrier,
            d.sent_compressed,
        ];
        for ((metric, help), value) in NETDEV_COUNTERS.iter().zip(values) {
            out.counter(metric, help).sample(&dev, value as f64);
        }
        if let Some(v) = number(&sys.join(name).join("statistics/rx_nohandler")) {
            out.counter(
                "node_network_receive_nohandler_total",
                "Network device statistic receive_nohandler.",
            )
            .sample(&dev, v);
        }
    }
    Ok(())
}

const SYS_CLASS_NET: &str = "/sys/class/net";

/// A sysfs attribute holding one number; `None` when it cannot be read (a link that is down
/// answers `EINVAL` for `carrier` and `speed`, and node_exporter then leaves the metric out).
fn number(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Link state, MTU, carrier and speed from `/sys/class/net`.
pub(super) fn netclass(out: &mut Exposition) -> Result<()> {
    netclass_at(out, Path::new(SYS_CLASS_NET))
}

fn netclass_at(out: &mut Exposition, base: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(base)
        .with_context(|| format!("reading {}", base.display()))?
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
        link_properties(out, &base.join(&name), &dev);
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

/// The carrier and speed properties node_exporter's netclass collector reads, each left out
/// when the kernel does not answer for this device.
fn link_properties(out: &mut Exposition, dir: &Path, dev: &[(&str, &str)]) {
    if let Some(v) = number(&dir.join("carrier")) {
        out.gauge("node_network_carrier", "Network device property: carrier")
            .sample(dev, v);
    }
    for (file, metric, help) in [
        (
            "carrier_changes",
            "node_network_carrier_changes_total",
            "Network device property: carrier_changes_total",
        ),
        (
            "carrier_up_count",
            "node_network_carrier_up_changes_total",
            "Network device property: carrier_up_changes_total",
        ),
        (
            "carrier_down_count",
            "node_network_carrier_down_changes_total",
            "Network device property: carrier_down_changes_total",
        ),
    ] {
        if let Some(v) = number(&dir.join(file)) {
            out.counter(metric, help).sample(dev, v);
        }
    }
    // Mbit/s to bytes/s; an unknown speed (-1) stays negative, as node_exporter reports it.
    if let Some(mbits) = number(&dir.join("speed")) {
        out.gauge(
            "node_network_speed_bytes",
            "Network device property: speed_bytes",
        )
        .sample(dev, mbits * 1000.0 * 1000.0 / 8.0);
    }
}

/// `node_arp_entries{device}`: the neighbour entries of `/proc/net/arp`, counted per device.
pub(super) fn arp(out: &mut Exposition) -> Result<()> {
    write_arp(out, &read("/proc/net/arp")?)
}

fn write_arp(out: &mut Exposition, text: &str) -> Result<()> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if !header.starts_with("IP address") {
        return Err(anyhow!("unexpected /proc/net/arp header: {header:?}"));
    }
    // Few devices: a short list keeps their first-seen order without hashing.
    let mut counts: Vec<(&str, u32)> = Vec::new();
    for line in lines {
        let Some(device) = line.split_whitespace().nth(5) else {
            continue;
        };
        match counts.iter_mut().find(|(d, _)| *d == device) {
            Some((_, n)) => *n += 1,
            None => counts.push((device, 1)),
        }
    }
    let family = out.gauge("node_arp_entries", "ARP entries by device");
    for (device, n) in counts {
        family.sample(&[("device", device)], f64::from(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_entries_are_counted_per_device() {
        let mut out = Exposition::new();
        write_arp(
            &mut out,
            include_str!("../../../tests/fixtures/proc/net/arp"),
        )
        .unwrap();
        let text = out.render();
        assert!(text.contains("# TYPE node_arp_entries gauge\n"), "{text}");
        assert!(
            text.contains("node_arp_entries{device=\"eth0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("node_arp_entries{device=\"docker0\"} 1\n"),
            "{text}"
        );
        // A table without entries gives no series, not an error.
        let mut out = Exposition::new();
        write_arp(
            &mut out,
            "IP address       HW type     Flags       HW address            Mask     Device\n",
        )
        .unwrap();
        assert!(!out.render().contains("node_arp_entries"));
        assert!(write_arp(&mut Exposition::new(), "garbage").is_err());
    }

    #[test]
    fn carrier_and_speed_follow_node_exporters_units() {
        let dir = tempfile::tempdir().unwrap();
        let eth0 = dir.path().join("eth0");
        let down = dir.path().join("ifb0");
        for d in [&eth0, &down] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("operstate"), "up\n").unwrap();
            std::fs::write(d.join("carrier_changes"), "2\n").unwrap();
        }
        std::fs::write(eth0.join("carrier"), "1\n").unwrap();
        std::fs::write(eth0.join("speed"), "1000\n").unwrap();
        std::fs::write(down.join("speed"), "-1\n").unwrap();
        let mut out = Exposition::new();
        netclass_at(&mut out, dir.path()).unwrap();
        let text = out.render();
        assert!(
            text.contains("node_network_carrier{device=\"eth0\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("node_network_carrier{device=\"ifb0\"}"),
            "{text}"
        );
        assert!(
            text.contains("node_network_speed_bytes{device=\"eth0\"} 125000000\n"),
            "{text}"
        );
        assert!(
            text.contains("node_network_speed_bytes{device=\"ifb0\"} -125000\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE node_network_carrier_changes_total counter\n"));
        assert!(text.contains("node_network_carrier_changes_total{device=\"ifb0\"} 2\n"));
    }
}
