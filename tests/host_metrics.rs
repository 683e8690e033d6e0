//! The host side of `/metrics` against this machine, through the real binary: the families
//! node_exporter's default collectors add that dashboard 1860 and the node mixin's alerts query
//! (netstat, sockstat, softnet, timex, entropy, ARP, conntrack, UDP queues, carrier and speed),
//! each collector's `node_scrape_collector_*`, the textfile collector merging a good file and
//! flagging a broken one, and `NEXUSD_METRICS_COLLECTORS` adding and removing collectors — or
//! refusing an unknown one at start.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::scrape::{Sample, Scrape, promtool_problems};
use support::{Nexusd, http, nexusd_command, shared_db, temp_root};

/// The samples of a scrape's text.
fn parse(text: &str) -> Vec<Sample> {
    Scrape::parse(text.to_string()).samples
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// Scrapes until PostgreSQL answered (so the whole scrape is there), failing after 30 s.
async fn full_scrape(nexusd: &Nexusd) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = http()
            .get(format!("{}/metrics", nexusd.metrics))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("a body");
        if text.contains("\npg_up 1\n") {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no pg_up 1 within 30 s\n{}",
            nexusd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Families present on every Linux host, as node_exporter's default collectors name them.
const ALWAYS: &[&str] = &[
    "node_netstat_Tcp_CurrEstab",
    "node_netstat_Tcp_InSegs",
    "node_netstat_Tcp_RetransSegs",
    "node_netstat_TcpExt_ListenDrops",
    "node_netstat_TcpExt_TCPSynRetrans",
    "node_netstat_Udp_InDatagrams",
    "node_netstat_UdpLite_InErrors",
    "node_netstat_Icmp_InMsgs",
    "node_netstat_IpExt_InOctets",
    "node_sockstat_sockets_used",
    "node_sockstat_TCP_inuse",
    "node_sockstat_TCP_tw",
    "node_sockstat_TCP_mem_bytes",
    "node_sockstat_UDP_inuse",
    "node_sockstat_UDPLITE_inuse",
    "node_sockstat_RAW_inuse",
    "node_sockstat_FRAG_inuse",
    "node_timex_sync_status",
    "node_timex_offset_seconds",
    "node_timex_maxerror_seconds",
    "node_timex_estimated_error_seconds",
    "node_timex_tick_seconds",
    "node_timex_tai_offset_seconds",
    "node_timex_frequency_adjustment_ratio",
    "node_timex_loop_time_constant",
    "node_timex_pps_jitter_total",
    "node_softnet_processed_total",
    "node_softnet_dropped_total",
    "node_softnet_times_squeezed_total",
    "node_entropy_available_bits",
    "node_entropy_pool_size_bits",
    "node_udp_queues",
    "node_network_carrier",
    "node_network_receive_nohandler_total",
    "node_textfile_scrape_error",
];

/// What this machine says a sysfs attribute is, for each network device that answers.
fn devices_answering(attribute: &str) -> Vec<String> {
    let mut devices = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let path = entry.path().join(attribute);
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim().parse::<f64>().is_ok()) {
            devices.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    devices
}

fn assert_host_families(text: &str, s: &[Sample]) {
    let missing: Vec<&&str> = ALWAYS
        .iter()
        .filter(|n| find(s, n, &[]).is_empty())
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    for device in devices_answering("speed") {
        assert_eq!(
            find(s, "node_network_speed_bytes", &[("device", &device)]).len(),
            1,
            "{device}"
        );
    }
    for device in devices_answering("carrier") {
        assert_eq!(
            find(s, "node_network_carrier", &[("device", &device)]).len(),
            1,
            "{device}"
        );
    }
    let cpus = std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap()
        .lines()
        .count();
    assert_eq!(find(s, "node_softnet_processed_total", &[]).len(), cpus);
    for (ip, queue) in [("v4", "tx"), ("v4", "rx")] {
        assert_eq!(
            find(s, "node_udp_queues", &[("ip", ip), ("queue", queue)]).len(),
            1
        );
    }
    assert!(
        find(s, "node_sockstat_sockets_used", &[])[0].value > 0.0,
        "nexusd itself holds sockets"
    );
    assert!(text.contains("# TYPE node_netstat_Tcp_CurrEstab untyped\n"));
    assert!(text.contains("# TYPE node_softnet_processed_total counter\n"));
    let arp = std::fs::read_to_string("/proc/net/arp").unwrap();
    if arp.lines().count() > 1 {
        assert!(!find(s, "node_arp_entries", &[]).is_empty(), "{arp}");
    }
    let conntrack = Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists();
    assert_eq!(
        !find(s, "node_nf_conntrack_entries_limit", &[]).is_empty(),
        conntrack
    );
    for collector in [
        "netstat",
        "sockstat",
        "softnet",
        "timex",
        "entropy",
        "udp_queues",
        "arp",
        "netclass",
        "netdev",
        "textfile",
        "cpu",
        "meminfo",
        "filesystem",
    ] {
        let success = find(
            s,
            "node_scrape_collector_success",
            &[("collector", collector)],
        );
        assert_eq!(success.len(), 1, "{collector}");
        assert_eq!(success[0].value, 1.0, "collector {collector} failed");
        let duration = find(
            s,
            "node_scrape_collector_duration_seconds",
            &[("collector", collector)],
        );
        assert_eq!(duration.len(), 1, "{collector}");
    }
    let conntrack_success = find(
        s,
        "node_scrape_collector_success",
        &[("collector", "conntrack")],
    );
    assert_eq!(conntrack_success[0].value, f64::from(u8::from(conntrack)));
}

#[tokio::test]
async fn node_exporters_default_collectors_and_a_textfile_directory() {
    let db = shared_db().await;
    let dir = temp_root("nexusd-textfiles-");
    std::fs::write(
        dir.join("backup_job.prom"),
        "# HELP cron_backup_last_success_seconds When the cron job last succeeded.\n\
         # TYPE cron_backup_last_success_seconds gauge\n\
         cron_backup_last_success_seconds{job=\"offsite\"} 1700000000\n\
         # TYPE cron_run_seconds histogram\n\
         cron_run_seconds_bucket{le=\"1\"} 2\n\
         cron_run_seconds_bucket{le=\"+Inf\"} 3\n\
         cron_run_seconds_sum 4.5\n\
         cron_run_seconds_count 3\n",
    )
    .unwrap();
    std::fs::write(dir.join("half_written.prom"), "cron_partial{job=\"x\" 1\n").unwrap();
    let nexusd = Nexusd::ready(
        &db.url(),
        &[("NEXUSD_METRICS_TEXTFILE_DIR", dir.to_str().unwrap())],
    )
    .await;
    let text = full_scrape(&nexusd).await;
    let s = parse(&text);

    let problems = promtool_problems(&text);
    assert!(problems.is_empty(), "promtool: {problems:#?}");
    assert_host_families(&text, &s);
    assert!(
        find(&s, "node_processes_pids", &[]).is_empty(),
        "processes is off by default"
    );

    // The good file is merged, the broken one skipped and flagged.
    let good = find(
        &s,
        "cron_backup_last_success_seconds",
        &[("job", "offsite")],
    );
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].value, 1_700_000_000.0);
    assert_eq!(
        find(&s, "cron_run_seconds_bucket", &[("le", "+Inf")])[0].value,
        3.0
    );
    assert_eq!(find(&s, "cron_run_seconds_count", &[])[0].value, 3.0);
    assert!(text.contains("# TYPE cron_run_seconds histogram\n"));
    assert!(find(&s, "cron_partial", &[]).is_empty());
    assert_eq!(find(&s, "node_textfile_scrape_error", &[])[0].value, 1.0);
    let good_file = dir.join("backup_job.prom").display().to_string();
    let mtime = find(&s, "node_textfile_mtime_seconds", &[("file", &good_file)]);
    assert_eq!(mtime.len(), 1, "{text}");
    assert!(mtime[0].value > 1.6e9);
    assert_eq!(
        find(&s, "node_textfile_mtime_seconds", &[]).len(),
        1,
        "only the good file"
    );
    assert!(
        nexusd.log_text().contains("half_written.prom"),
        "the skipped file is logged"
    );

    // Fixed by the cron job: the next scrape has no error.
    std::fs::remove_file(dir.join("half_written.prom")).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = parse(&full_scrape(&nexusd).await);
    assert_eq!(find(&s, "node_textfile_scrape_error", &[])[0].value, 0.0);
}

#[tokio::test]
async fn collectors_are_added_and_removed_by_name() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[("NEXUSD_METRICS_COLLECTORS", "-netstat,+processes")],
    )
    .await;
    let text = full_scrape(&nexusd).await;
    let s = parse(&text);
    assert!(!text.contains("node_netstat_"), "netstat was removed");
    assert!(
        find(
            &s,
            "node_scrape_collector_success",
            &[("collector", "netstat")]
        )
        .is_empty()
    );
    assert_eq!(
        find(
            &s,
            "node_scrape_collector_success",
            &[("collector", "processes")]
        )[0]
        .value,
        1.0
    );
    assert!(find(&s, "node_processes_pids", &[])[0].value >= 1.0);
    assert!(find(&s, "node_processes_max_processes", &[])[0].value >= 1.0);
    assert!(!find(&s, "node_processes_state", &[]).is_empty());
    // The other default collectors still run.
    assert!(!find(&s, "node_sockstat_sockets_used", &[]).is_empty());
    let problems = promtool_problems(&text);
    assert!(problems.is_empty(), "promtool: {problems:#?}");
}

#[test]
fn an_unknown_collector_is_refused_at_start() {
    let mut child = nexusd_command(
        &["serve"],
        &[("NEXUSD_METRICS_COLLECTORS", "+processes,-netstatt")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // A daemon that accepted the value would serve on: give it a generous bound, then stop it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains("NEXUSD_METRICS_COLLECTORS"), "{stderr}");
    assert!(stderr.contains("netstatt"), "{stderr}");
}
