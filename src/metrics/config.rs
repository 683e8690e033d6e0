//! The `/metrics` listener and what it exports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::queries::{self, CustomQuery};
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
        name: "NEXUSD_METRICS_QUERIES",
        default: "(none)",
        meaning: "custom queries file in postgres_exporter's queries.yaml format (docs/metrics-custom-queries.md); checked at start",
    },
    Var {
        name: "NEXUSD_METRICS_DATABASES",
        default: "auto",
        meaning: "databases whose table statistics are also exported (datname label): auto (every one that allows connections), a comma list, or none",
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
    /// `NEXUSD_METRICS_QUERIES`: the custom queries, read and checked at start.
    pub(crate) queries: Arc<Vec<CustomQuery>>,
    /// `NEXUSD_METRICS_DATABASES`: which other databases' table statistics are collected.
    pub(crate) databases: DatabaseSelection,
}

/// `NEXUSD_METRICS_DATABASES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSelection {
    /// Every database that allows connections and that the role may connect to.
    Auto,
    /// These databases (by name).
    List(Vec<String>),
    /// nexusd's own database only.
    None,
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
        queries: Arc::new(custom_queries(env)),
        databases: databases(env),
    }
}

/// The custom queries; a file that cannot be read or checked is a configuration error naming
/// the file and the query.
fn custom_queries(env: &mut Env<'_>) -> Vec<CustomQuery> {
    let Some(path) = env.get("NEXUSD_METRICS_QUERIES") else {
        return Vec::new();
    };
    match queries::load(&PathBuf::from(path)) {
        Ok(queries) => queries,
        Err(e) => {
            env.error("NEXUSD_METRICS_QUERIES", e);
            Vec::new()
        }
    }
}

fn databases(env: &mut Env<'_>) -> DatabaseSelection {
    let Some(list) = env.list("NEXUSD_METRICS_DATABASES") else {
        return DatabaseSelection::Auto;
    };
    match list.as_slice() {
        [one] if one.eq_ignore_ascii_case("auto") => DatabaseSelection::Auto,
        [one] if one.eq_ignore_ascii_case("none") => DatabaseSelection::None,
        [] => DatabaseSelection::Auto,
        _ => DatabaseSelection::List(list),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> (MetricsConfig, Vec<String>) {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut env = Env::new(&lookup);
        let config = metrics_config(&mut env);
        let errors = match env.finish(Some(())) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        };
        (config, errors)
    }

    #[test]
    fn databases_are_auto_a_list_or_none() {
        assert_eq!(read(&[]).0.databases, DatabaseSelection::Auto);
        let auto = read(&[("NEXUSD_METRICS_DATABASES", " AUTO ")]).0;
        assert_eq!(auto.databases, DatabaseSelection::Auto);
        let none = read(&[("NEXUSD_METRICS_DATABASES", "none")]).0;
        assert_eq!(none.databases, DatabaseSelection::None);
        let list = read(&[("NEXUSD_METRICS_DATABASES", "app, reports,")]).0;
        assert_eq!(
            list.databases,
            DatabaseSelection::List(vec!["app".into(), "reports".into()])
        );
    }

    #[test]
    fn a_queries_file_is_read_at_start_and_its_errors_name_it() {
        let (config, errors) = read(&[]);
        assert!(config.queries.is_empty() && errors.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("queries.yaml");
        std::fs::write(
            &file,
            "q:\n  query: SELECT 1 AS v\n  metrics:\n    - v: {usage: GAUGE}\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let (config, errors) = read(&[("NEXUSD_METRICS_QUERIES", path)]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.queries.len(), 1);
        std::fs::write(
            &file,
            "q:\n  query: SELECT 1 AS v\n  metrics:\n    - v: {usage: HISTOGRAM}\n",
        )
        .unwrap();
        let (_, errors) = read(&[("NEXUSD_METRICS_QUERIES", path)]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with(&format!("NEXUSD_METRICS_QUERIES: {path}: query \"q\"")),
            "{errors:?}"
        );
    }
}
