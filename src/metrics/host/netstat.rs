//! The kernel's network protocol tables under node_exporter's names: `node_netstat_*`
//! (`/proc/net/netstat`, `/proc/net/snmp`, `/proc/net/snmp6`, with node_exporter's default
//! field filter), `node_sockstat_*`, `node_softnet_*`, `node_udp_queues` and
//! `node_nf_conntrack_*`. Each parser takes the file's text, so the tests feed it fixtures.

use std::sync::LazyLock;

use anyhow::{Context, Result, anyhow};
use regex::Regex;

use super::read;
use crate::metrics::exposition::{Exposition, Kind};

/// node_exporter's `--collector.netstat.fields` default: the counters dashboards and alerts use
/// out of the few hundred the kernel keeps.
static NETSTAT_FIELDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$",
    )
    .expect("static regex")
});

/// `node_netstat_<Protocol>_<Field>` (untyped, as node_exporter exposes them).
pub(super) fn netstat(out: &mut Exposition) -> Result<()> {
    let netstat = read("/proc/net/netstat")?;
    let snmp = read("/proc/net/snmp")?;
    // Absent when IPv6 is disabled; the IPv4 counters are still worth having.
    let snmp6 = std::fs::read_to_string("/proc/net/snmp6").ok();
    write_netstat(out, &netstat, &snmp, snmp6.as_deref())
}

fn write_netstat(
    out: &mut Exposition,
    netstat: &str,
    snmp: &str,
    snmp6: Option<&str>,
) -> Result<()> {
    // One buffer for the `Protocol_Field` keys the filter is matched against.
    let mut key = String::with_capacity(64);
    for (file, text) in [("/proc/net/netstat", netstat), ("/proc/net/snmp", snmp)] {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        while let Some(names) = lines.next() {
            let values = lines
                .next()
                .ok_or_else(|| anyhow!("{file}: a header without values: {names:?}"))?;
            let (protocol, names) = names
                .split_once(':')
                .ok_or_else(|| anyhow!("{file}: unexpected line {names:?}"))?;
            let (again, values) = values
                .split_once(':')
                .ok_or_else(|| anyhow!("{file}: unexpected line {values:?}"))?;
            if protocol != again
                || names.split_whitespace().count() != values.split_whitespace().count()
            {
                return Err(anyhow!(
                    "{file}: the {protocol} header and values do not match"
                ));
            }
            for (field, value) in names.split_whitespace().zip(values.split_whitespace()) {
                netstat_field(out, &mut key, protocol, field, value)
                    .with_context(|| file.to_string())?;
            }
        }
    }
    for line in snmp6.unwrap_or_default().lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        // `Ip6InReceives`: the protocol is everything up to the `6`.
        let Some(six) = name.find('6') else { continue };
        let (protocol, field) = name.split_at(six + 1);
        netstat_field(out, &mut key, protocol, field, value).context("/proc/net/snmp6")?;
    }
    Ok(())
}

fn netstat_field(
    out: &mut Exposition,
    key: &mut String,
    protocol: &str,
    field: &str,
    value: &str,
) -> Result<()> {
    key.clear();
    key.push_str(protocol);
    key.push('_');
    key.push_str(field);
    if !NETSTAT_FIELDS.is_match(key) {
        return Ok(());
    }
    let value: f64 = value
        .parse()
        .map_err(|_| anyhow!("invalid value {value:?} for {protocol}{field}"))?;
    out.untyped(
        &format!("node_netstat_{key}"),
        &format!("Statistic {protocol}{field}."),
    )
    .sample(&[], value);
    Ok(())
}

/// `node_sockstat_*` from `/proc/net/sockstat` and, when IPv6 is on, `/proc/net/sockstat6`.
pub(super) fn sockstat(out: &mut Exposition) -> Result<()> {
    let page_size = procfs::page_size() as f64;
    write_sockstat(out, &read("/proc/net/sockstat")?, page_size)?;
    if let Ok(v6) = std::fs::read_to_string("/proc/net/sockstat6") {
        write_sockstat(out, &v6, page_size).context("/proc/net/sockstat6")?;
    }
    Ok(())
}

/// Lines such as `TCP: inuse 3 orphan 0 tw 20 alloc 3 mem 8`; `mem` is in pages and is also
/// given in bytes, as node_exporter does.
fn write_sockstat(out: &mut Exposition, text: &str, page_size: f64) -> Result<()> {
    for line in text.lines() {
        let Some((protocol, rest)) = line.split_once(':') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        while let (Some(state), Some(value)) = (fields.next(), fields.next()) {
            let value: f64 = value
                .parse()
                .map_err(|_| anyhow!("sockstat: invalid value in {line:?}"))?;
            if protocol == "sockets" && state == "used" {
                out.single(
                    "node_sockstat_sockets_used",
                    "Number of IPv4 sockets in use.",
                    Kind::Gauge,
                    value,
                );
                continue;
            }
            out.single(
                &format!("node_sockstat_{protocol}_{state}"),
                &format!("Number of {protocol} sockets in state {state}."),
                Kind::Gauge,
                value,
            );
            if state == "mem" {
                out.single(
                    &format!("node_sockstat_{protocol}_mem_bytes"),
                    &format!("Number of {protocol} sockets in state mem_bytes."),
                    Kind::Gauge,
                    value * page_size,
                );
            }
        }
    }
    Ok(())
}

/// `/proc/net/softnet_stat` columns node_exporter exports (by position), with their names and
/// help; the later ones exist only on newer kernels and are left out where missing.
const SOFTNET_COLUMNS: [(usize, &str, &str, Kind); 7] = [
    (
        0,
        "node_softnet_processed_total",
        "Number of processed packets",
        Kind::Counter,
    ),
    (
        1,
        "node_softnet_dropped_total",
        "Number of dropped packets",
        Kind::Counter,
    ),
    (
        2,
        "node_softnet_times_squeezed_total",
        "Number of times processing packets ran out of quota",
        Kind::Counter,
    ),
    (
        8,
        "node_softnet_cpu_collision_total",
        "Number of collision occur while obtaining device lock while transmitting",
        Kind::Counter,
    ),
    (
        9,
        "node_softnet_received_rps_total",
        "Number of times cpu woken up received_rps",
        Kind::Counter,
    ),
    (
        10,
        "node_softnet_flow_limit_count_total",
        "Number of times flow limit has been reached",
        Kind::Counter,
    ),
    (
        11,
        "node_softnet_backlog_len",
        "Softnet backlog status",
        Kind::Gauge,
    ),
];

/// `node_softnet_*{cpu}`: one line per online CPU, in hexadecimal.
pub(super) fn softnet(out: &mut Exposition) -> Result<()> {
    write_softnet(out, &read("/proc/net/softnet_stat")?)
}

fn write_softnet(out: &mut Exposition, text: &str) -> Result<()> {
    let mut values = Vec::with_capacity(16);
    for (line_number, line) in text.lines().enumerate() {
        values.clear();
        for column in line.split_whitespace() {
            values.push(
                u64::from_str_radix(column, 16)
                    .map_err(|_| anyhow!("softnet_stat: invalid column in {line:?}"))?,
            );
        }
        if values.len() < 3 {
            return Err(anyhow!("softnet_stat: too few columns in {line:?}"));
        }
        // The 13th column is the CPU's number (kernels since 5.10); before, offline CPUs have no
        // line and the line's position stands for it, as in node_exporter.
        let cpu = values
            .get(12)
            .copied()
            .unwrap_or(line_number as u64)
            .to_string();
        for (column, name, help, kind) in SOFTNET_COLUMNS {
            if let Some(value) = values.get(column) {
                out.family(name, help, kind)
                    .sample(&[("cpu", &cpu)], *value as f64);
            }
        }
    }
    Ok(())
}

/// `node_udp_queues{ip,queue}`: bytes queued in UDP sockets, summed over `/proc/net/udp(6)`.
pub(super) fn udp_queues(out: &mut Exposition) -> Result<()> {
    let v4 = read("/proc/net/udp")?;
    write_udp_queues(out, "v4", &v4)?;
    // Absent when IPv6 is disabled.
    if let Ok(v6) = std::fs::read_to_string("/proc/net/udp6") {
        write_udp_queues(out, "v6", &v6).context("/proc/net/udp6")?;
    }
    Ok(())
}

fn write_udp_queues(out: &mut Exposition, ip: &str, text: &str) -> Result<()> {
    let (mut tx, mut rx) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        // `sl local rem st tx_queue:rx_queue …`, the queues in hexadecimal.
        let Some(queues) = line.split_whitespace().nth(4) else {
            continue;
        };
        let parsed = queues.split_once(':').and_then(|(t, r)| {
            Some((
                u64::from_str_radix(t, 16).ok()?,
                u64::from_str_radix(r, 16).ok()?,
            ))
        });
        let Some((t, r)) = parsed else {
            return Err(anyhow!("unexpected UDP queue field {queues:?}"));
        };
        tx += t;
        rx += r;
    }
    let family = out.gauge(
        "node_udp_queues",
        "Number of allocated memory in the kernel for UDP datagrams in bytes.",
    );
    family.sample(&[("ip", ip), ("queue", "tx")], tx as f64);
    family.sample(&[("ip", ip), ("queue", "rx")], rx as f64);
    Ok(())
}

/// `/proc/net/stat/nf_conntrack` columns node_exporter exports, summed over the CPUs.
const CONNTRACK_STATS: [(&str, &str); 8] = [
    ("found", "Number of searched entries which were successful."),
    (
        "invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        "ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    ("insert", "Number of entries inserted into the list."),
    (
        "insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        "drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        "early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        "search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

/// `node_nf_conntrack_entries(_limit)` and the table's statistics. Without the conntrack module
/// the files are absent: no metric, and the collector says it failed (as node_exporter does).
pub(super) fn conntrack(out: &mut Exposition) -> Result<()> {
    let number = |path: &str| -> Result<f64> {
        let text = read(path)?;
        text.trim()
            .parse()
            .map_err(|_| anyhow!("unexpected {path}: {text:?}"))
    };
    let entries = number("/proc/sys/net/netfilter/nf_conntrack_count")?;
    let limit = number("/proc/sys/net/netfilter/nf_conntrack_max")?;
    out.single(
        "node_nf_conntrack_entries",
        "Number of currently allocated flow entries for connection tracking.",
        Kind::Gauge,
        entries,
    );
    out.single(
        "node_nf_conntrack_entries_limit",
        "Maximum size of connection tracking table.",
        Kind::Gauge,
        limit,
    );
    if let Ok(text) = std::fs::read_to_string("/proc/net/stat/nf_conntrack") {
        write_conntrack_stats(out, &text)?;
    }
    Ok(())
}

fn write_conntrack_stats(out: &mut Exposition, text: &str) -> Result<()> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let mut sums = [0u64; CONNTRACK_STATS.len()];
    let columns: Vec<Option<usize>> = CONNTRACK_STATS
        .iter()
        .map(|(name, _)| header.iter().position(|h| h == name))
        .collect();
    for line in lines {
        let values: Vec<&str> = line.split_whitespace().collect();
        for (sum, column) in sums.iter_mut().zip(&columns) {
            let Some(raw) = column.and_then(|c| values.get(c)) else {
                continue;
            };
            *sum += u64::from_str_radix(raw, 16)
                .map_err(|_| anyhow!("nf_conntrack stat: invalid value {raw:?}"))?;
        }
    }
    for (((name, help), sum), column) in CONNTRACK_STATS.iter().zip(sums).zip(&columns) {
        if column.is_some() {
            out.single(
                &format!("node_nf_conntrack_stat_{name}"),
                help,
                Kind::Gauge,
                sum as f64,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/proc/net/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn netstat_keeps_node_exporters_default_fields() {
        let mut out = Exposition::new();
        let (netstat, snmp, snmp6) = (fixture("netstat"), fixture("snmp"), fixture("snmp6"));
        write_netstat(&mut out, &netstat, &snmp, Some(&snmp6)).unwrap();
        let text = out.render();
        for name in [
            "node_netstat_Tcp_CurrEstab",
            "node_netstat_Tcp_InErrs",
            "node_netstat_Tcp_RetransSegs",
            "node_netstat_TcpExt_ListenOverflows",
            "node_netstat_TcpExt_TCPSynRetrans",
            "node_netstat_TcpExt_TCPOFOQueue",
            "node_netstat_Udp_InDatagrams",
            "node_netstat_UdpLite_InErrors",
            "node_netstat_Icmp_InMsgs",
            "node_netstat_IpExt_InOctets",
            "node_netstat_Ip_Forwarding",
            "node_netstat_Ip6_InOctets",
            "node_netstat_Icmp6_OutMsgs",
            "node_netstat_Udp6_NoPorts",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} untyped\n")),
                "{name}\n{text}"
            );
        }
        let protocol = "Statistic TcpExtListenOverflows.";
        assert!(text.contains(&format!(
            "# HELP node_netstat_TcpExt_ListenOverflows {protocol}\n"
        )));
        // Fields outside the filter are left out.
        for name in [
            "node_netstat_Tcp_MaxConn",
            "node_netstat_TcpExt_TW ",
            "node_netstat_Ip_DefaultTTL",
        ] {
            assert!(!text.contains(name), "{name}");
        }
        // The value is the one under the field's name in the header.
        assert_eq!(value(&text, "node_netstat_Ip_Forwarding"), Some(2.0));
        // A header without its value line is an error, not a silent half.
        let broken = "Tcp: RtoAlgorithm RtoMin\n";
        assert!(write_netstat(&mut Exposition::new(), broken, "", None).is_err());
        assert!(write_netstat(&mut Exposition::new(), "Tcp: A B\nTcp: 1\n", "", None).is_err());
    }

    #[test]
    fn sockstat_counts_and_memory_in_bytes() {
        let mut out = Exposition::new();
        write_sockstat(&mut out, &fixture("sockstat"), 4096.0).unwrap();
        write_sockstat(&mut out, &fixture("sockstat6"), 4096.0).unwrap();
        let text = out.render();
        assert_eq!(value(&text, "node_sockstat_sockets_used"), Some(30.0));
        assert_eq!(value(&text, "node_sockstat_TCP_tw"), Some(20.0));
        assert_eq!(value(&text, "node_sockstat_TCP_mem"), Some(8.0));
        assert_eq!(
            value(&text, "node_sockstat_TCP_mem_bytes"),
            Some(8.0 * 4096.0)
        );
        assert_eq!(value(&text, "node_sockstat_FRAG_memory"), Some(0.0));
        assert_eq!(value(&text, "node_sockstat_TCP6_inuse"), Some(0.0));
        assert_eq!(value(&text, "node_sockstat_FRAG6_inuse"), Some(0.0));
        assert!(
            text.contains("# HELP node_sockstat_TCP_alloc Number of TCP sockets in state alloc.\n")
        );
        assert!(text.contains("# TYPE node_sockstat_UDPLITE_inuse gauge\n"));
        assert!(write_sockstat(&mut Exposition::new(), "TCP: inuse x\n", 4096.0).is_err());
    }

    #[test]
    fn softnet_per_cpu_from_hex_columns() {
        let mut out = Exposition::new();
        write_softnet(&mut out, &fixture("softnet_stat")).unwrap();
        let text = out.render();
        let first = fixture("softnet_stat");
        let processed = u64::from_str_radix(first.split_whitespace().next().unwrap(), 16).unwrap();
        assert_eq!(
            value(&text, "node_softnet_processed_total{cpu=\"0\"}"),
            Some(processed as f64)
        );
        assert!(value(&text, "node_softnet_times_squeezed_total{cpu=\"1\"}").is_some());
        assert!(value(&text, "node_softnet_received_rps_total{cpu=\"1\"}").is_some());
        assert!(text.contains("# TYPE node_softnet_dropped_total counter\n"));
        // An old kernel: 10 columns, no CPU number (the line's position stands for it).
        let mut out = Exposition::new();
        write_softnet(
            &mut out,
            "0000000a 00000001 00000002 0 0 0 0 0 0 00000003\n00000010 0 0 0 0 0 0 0 0 0\n",
        )
        .unwrap();
        let text = out.render();
        assert_eq!(
            value(&text, "node_softnet_processed_total{cpu=\"1\"}"),
            Some(16.0)
        );
        assert_eq!(
            value(&text, "node_softnet_received_rps_total{cpu=\"0\"}"),
            Some(3.0)
        );
        assert!(!text.contains("node_softnet_flow_limit_count_total"));
        assert!(write_softnet(&mut Exposition::new(), "zz 0 0\n").is_err());
    }

    #[test]
    fn udp_queues_sum_every_socket() {
        let mut out = Exposition::new();
        write_udp_queues(&mut out, "v4", &fixture("udp")).unwrap();
        write_udp_queues(&mut out, "v6", &fixture("udp6")).unwrap();
        let text = out.render();
        assert_eq!(
            value(&text, "node_udp_queues{ip=\"v4\",queue=\"tx\"}"),
            Some(16.0)
        );
        assert_eq!(
            value(&text, "node_udp_queues{ip=\"v4\",queue=\"rx\"}"),
            Some(2561.0)
        );
        assert_eq!(
            value(&text, "node_udp_queues{ip=\"v6\",queue=\"rx\"}"),
            Some(0.0)
        );
        let broken = "header\n 1: a b c notqueues\n";
        assert!(write_udp_queues(&mut Exposition::new(), "v4", broken).is_err());
    }

    #[test]
    fn conntrack_stats_sum_over_cpus() {
        let mut out = Exposition::new();
        write_conntrack_stats(&mut out, &fixture("stat/nf_conntrack")).unwrap();
        assert_eq!(
            value(&out.render(), "node_nf_conntrack_stat_found"),
            Some(0.0)
        );
        let text =
            "entries found invalid\n00000001 0000000a 00000001\n00000001 00000006 00000000\n";
        let mut out = Exposition::new();
        write_conntrack_stats(&mut out, text).unwrap();
        let text = out.render();
        assert_eq!(value(&text, "node_nf_conntrack_stat_found"), Some(16.0));
        assert_eq!(value(&text, "node_nf_conntrack_stat_invalid"), Some(1.0));
        assert!(!text.contains("node_nf_conntrack_stat_drop"));
    }
}
