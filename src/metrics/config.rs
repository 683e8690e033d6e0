//! The `/metrics` listener and what it exports.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::env::{Env, Var};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_METRICS_ADDR",
        default: "0.0.0.0:9187",
        meaning: "/metrics listener; off disables it",
    },
    Var {
        name: "NEXUSD_METRICS_STATEMENTS_LIMIT",
        default: "100",
        meaning: "pg_stat_statements entries exported (top by total execution time); 0 turns them off",
    },
    Var {
        name: "NEXUSD_METRICS_STATEMENTS_QUERY_TEXT",
        default: "false",
        meaning: "also export pg_stat_statements_query_id{queryid,query} (text cut to 120 characters; texts can hold literals)",
    },
    Var {
        name: "NEXUSD_METRICS_COLLECTORS",
        default: "node_exporter's defaults",
        meaning: "host collectors to add or remove, e.g. +processes,-netstat (node_exporter's names; those it runs by default run unless removed)",
    },
    Var {
        name: "NEXUSD_METRICS_TEXTFILE_DIR",
        default: "(none)",
        meaning: "directory whose *.prom files (Prometheus text format) are merged into /metrics, as node_exporter's textfile collector does",
    },
];

pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9187";
/// postgres_exporter's default for its pg_stat_statements collector.
const DEFAULT_STATEMENTS_LIMIT: u32 = 100;
/// What the `query` label of `pg_stat_statements_query_id` is cut to (postgres_exporter's default).
pub(super) const STATEMENT_TEXT_LENGTH: usize = 120;

/// The `/metrics` listener and what it exports.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `NEXUSD_METRICS_ADDR` (default `0.0.0.0:9187`); `None` when set to `off`.
    pub addr: Option<SocketAddr>,
    /// `NEXUSD_METRICS_STATEMENTS_LIMIT`: how many pg_stat_statements entries (top by total
    /// execution time) are exported; 0 turns the collector off.
    pub statements_limit: u32,
    /// `NEXUSD_METRICS_STATEMENTS_QUERY_TEXT`: also export `pg_stat_statements_query_id` with
    /// the statement text (cut to 120 characters). Off by default: texts can hold literals.
    pub statements_query_text: bool,
    /// `NEXUSD_METRICS_COLLECTORS` applied to node_exporter's defaults: the host collectors that
    /// run, by node_exporter's names.
    pub host_collectors: Vec<&'static str>,
    /// `NEXUSD_METRICS_TEXTFILE_DIR`: where `*.prom` files are read from at each scrape.
    pub textfile_dir: Option<PathBuf>,
}

impl MetricsConfig {
    pub fn from_env(env: &mut Env<'_>) -> MetricsConfig {
        metrics_config(env)
    }
}

fn metrics_config(env: &mut Env<'_>) -> MetricsConfig {
    let addr = match env.get("NEXUSD_METRICS_ADDR") {
        Some(v) if v.eq_ignore_ascii_case("off") => None,
        _ => env.parse_or(
            "NEXUSD_METRICS_ADDR",
            DEFAULT_METRICS_ADDR,
            "a listen address host:port, e.g. 0.0.0.0:9187 or 127.0.0.1:9187, or off",
        ),
    };
    let statements_limit = env
        .parse_or(
            "NEXUSD_METRICS_STATEMENTS_LIMIT",
            &DEFAULT_STATEMENTS_LIMIT.to_string(),
            "a number of statements, 0 to turn the pg_stat_statements metrics off",
        )
        .unwrap_or(DEFAULT_STATEMENTS_LIMIT);
    let statements_query_text = env
        .bool("NEXUSD_METRICS_STATEMENTS_QUERY_TEXT")
        .unwrap_or(false);
    let host_collectors =
        match super::host::select_collectors(env.get("NEXUSD_METRICS_COLLECTORS").as_deref()) {
            Ok(collectors) => collectors,
            Err(message) => {
                env.error("NEXUSD_METRICS_COLLECTORS", message);
                Vec::new()
            }
        };
    let textfile_dir = env
        .get("NEXUSD_METRICS_TEXTFILE_DIR")
        .map(|d| crate::env::absolute(std::path::Path::new(&d)));
    MetricsConfig {
        addr,
        statements_limit,
        statements_query_text,
        host_collectors,
        textfile_dir,
    }
}
