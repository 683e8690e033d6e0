//! The custom-queries file (`NEXUSD_METRICS_QUERIES`) in postgres_exporter's `queries.yaml`
//! format, read and checked once at start: every problem names the file and the query, so a
//! mistake stops nexusd instead of silently exporting nothing. Running the queries is
//! `postgres/custom.rs`; the format is documented in `docs/metrics-custom-queries.md`.
//!
//! What postgres_exporter accepts and nexusd does not (`MAPPEDMETRIC`, `DURATION`, `HISTOGRAM`,
//! `runonserver`) is refused by name rather than ignored.

use std::path::Path;
use std::time::Duration;

use serde_norway::Value;

/// One query of the file: its metrics are `<prefix>_<column>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CustomQuery {
    /// The top-level key.
    pub prefix: String,
    pub sql: String,
    /// `master`: accepted for compatibility; nexusd runs every query on its own database.
    pub master: bool,
    /// `cache_seconds`: results are reused for this long (none: every scrape).
    pub cache: Option<Duration>,
    pub columns: Vec<QueryColumn>,
}

/// One entry of a query's `metrics` list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueryColumn {
    pub name: String,
    pub usage: Usage,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    Label,
    Counter,
    Gauge,
    Discard,
}

impl CustomQuery {
    /// The `collector` label of this query's `pg_scrape_collector_*` samples.
    pub(crate) fn collector(&self) -> String {
        format!("query:{}", self.prefix)
    }

    pub(crate) fn column(&self, name: &str) -> Option<&QueryColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Reads and checks `path`; the error names the file and, when it is about one, the query.
pub(crate) fn load(path: &Path) -> Result<Vec<CustomQuery>, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {file}: {e}"))?;
    parse(&text).map_err(|e| format!("{file}: {e}"))
}

/// Parses a whole file (the error does not name the file).
pub(crate) fn parse(text: &str) -> Result<Vec<CustomQuery>, String> {
    let value: Value = serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let Value::Mapping(top) = value else {
        if value.is_null() {
            return Ok(Vec::new());
        }
        return Err("expected a mapping of metric prefixes to queries at the top level".into());
    };
    let mut queries: Vec<CustomQuery> = Vec::with_capacity(top.len());
    for (key, body) in top {
        let Some(prefix) = key.as_str() else {
            return Err(format!(
                "top-level key {key:?} is not a metric prefix (a string)"
            ));
        };
        if !valid_name(prefix) {
            return Err(format!(
                "query {prefix:?}: the prefix must be a metric name ([a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        let query = parse_query(prefix, &body).map_err(|e| format!("query {prefix:?}: {e}"))?;
        queries.push(query);
    }
    Ok(queries)
}

fn parse_query(prefix: &str, body: &Value) -> Result<CustomQuery, String> {
    let Value::Mapping(fields) = body else {
        return Err("expected a mapping with query and metrics".into());
    };
    let mut sql = None;
    let mut master = false;
    let mut cache = None;
    let mut columns = None;
    for (key, value) in fields {
        match key.as_str().unwrap_or_default() {
            "query" => match value.as_str().map(str::trim) {
                Some(q) if !q.is_empty() => sql = Some(q.trim_end_matches(';').to_string()),
                _ => return Err("query must be a non-empty string of SQL".into()),
            },
            "master" => master = value.as_bool().ok_or("master must be true or false")?,
            "cache_seconds" => {
                let seconds = value
                    .as_u64()
                    .ok_or("cache_seconds must be a whole number of seconds (0 or more)")?;
                cache = (seconds > 0).then(|| Duration::from_secs(seconds));
            }
            "metrics" => columns = Some(parse_columns(value)?),
            "runonserver" => {
                return Err("runonserver is not supported by nexusd; remove it (one \
                            PostgreSQL server is scraped, write the query for its version)"
                    .into());
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} (expected query, metrics, master, cache_seconds)"
                ));
            }
        }
    }
    let sql = sql.ok_or("query is missing")?;
    let columns = columns.ok_or("metrics is missing")?;
    Ok(CustomQuery {
        prefix: prefix.to_string(),
        sql,
        master,
        cache,
        columns,
    })
}

fn parse_columns(value: &Value) -> Result<Vec<QueryColumn>, String> {
    let Value::Sequence(items) = value else {
        return Err("metrics must be a list of {column: {usage, description}}".into());
    };
    if items.is_empty() {
        return Err("metrics is empty".into());
    }
    let mut columns: Vec<QueryColumn> = Vec::with_capacity(items.len());
    for item in items {
        let entry = match item {
            Value::Mapping(m) if m.len() == 1 => m.iter().next(),
            _ => None,
        };
        let Some((name, spec)) = entry else {
            return Err("each entry of metrics must be one {column: {usage, description}}".into());
        };
        let Some(name) = name.as_str() else {
            return Err(format!(
                "metrics entry {name:?}: the column name must be a string"
            ));
        };
        let column = parse_column(name, spec).map_err(|e| format!("column {name:?}: {e}"))?;
        if columns.iter().any(|c| c.name == column.name) {
            return Err(format!("column {name:?} is listed twice"));
        }
        columns.push(column);
    }
    if !columns
        .iter()
        .any(|c| matches!(c.usage, Usage::Counter | Usage::Gauge))
    {
        return Err("metrics has no COUNTER or GAUGE column".into());
    }
    Ok(columns)
}

fn parse_column(name: &str, spec: &Value) -> Result<QueryColumn, String> {
    if !valid_name(name) || name.starts_with("__") {
        return Err("a column name must be [a-zA-Z_][a-zA-Z0-9_]* (alias it in the query)".into());
    }
    let Value::Mapping(fields) = spec else {
        return Err("expected {usage, description}".into());
    };
    let mut usage = None;
    let mut description = String::new();
    for (key, value) in fields {
        match key.as_str().unwrap_or_default() {
            "usage" => {
                let raw = value.as_str().ok_or("usage must be a string")?;
                usage = Some(parse_usage(raw)?);
            }
            "description" => {
                description = value
                    .as_str()
                    .ok_or("description must be a string")?
                    .to_string();
            }
            "metric_mapping" => {
                return Err("metric_mapping (MAPPEDMETRIC) is not supported by nexusd".into());
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} (expected usage, description)"
                ));
            }
        }
    }
    Ok(QueryColumn {
        name: name.to_string(),
        usage: usage.ok_or("usage is missing")?,
        description,
    })
}

fn parse_usage(raw: &str) -> Result<Usage, String> {
    match raw.trim().to_ascii_uppercase().as_str() {
        "LABEL" => Ok(Usage::Label),
        "COUNTER" => Ok(Usage::Counter),
        "GAUGE" => Ok(Usage::Gauge),
        "DISCARD" => Ok(Usage::Discard),
        "MAPPEDMETRIC" | "DURATION" | "HISTOGRAM" => Err(format!(
            "usage {raw} is not supported by nexusd (supported: LABEL, COUNTER, GAUGE, DISCARD); \
             compute a number in the query instead"
        )),
        _ => Err(format!(
            "usage {raw:?} is not one of LABEL, COUNTER, GAUGE, DISCARD"
        )),
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: a metric-name part and a label name at once.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
pg_replication:
  query: "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 ELSE 1 END AS lag"
  master: true
  metrics:
    - lag:
        usage: "GAUGE"
        description: "Replication lag behind master in seconds"
pg_database:
  query: "SELECT datname, pg_database_size(datname) AS size_bytes FROM pg_database;"
  cache_seconds: 30
  metrics:
    - datname:
        usage: "LABEL"
        description: "Name of the database"
    - size_bytes:
        usage: "GAUGE"
        description: "Disk space used by the database"
"#;

    #[test]
    fn reads_postgres_exporters_format() {
        let queries = parse(SAMPLE).unwrap();
        assert_eq!(queries.len(), 2);
        assert_eq!(queries[0].prefix, "pg_replication");
        assert!(queries[0].master);
        assert_eq!(queries[0].cache, None);
        assert_eq!(queries[1].cache, Some(Duration::from_secs(30)));
        assert_eq!(
            queries[1].sql,
            "SELECT datname, pg_database_size(datname) AS size_bytes FROM pg_database"
        );
        assert_eq!(queries[1].columns[0].usage, Usage::Label);
        assert_eq!(queries[1].columns[1].usage, Usage::Gauge);
        assert_eq!(
            queries[1].columns[1].description,
            "Disk space used by the database"
        );
        assert_eq!(queries[1].collector(), "query:pg_database");
        assert_eq!(parse("").unwrap(), Vec::new());
    }

    #[test]
    fn refuses_what_it_does_not_support_naming_the_query() {
        let cases = [
            (
                "x:\n  query: SELECT 1 AS a\n  metrics:\n    - a: {usage: MAPPEDMETRIC}\n",
                "query \"x\": column \"a\": usage MAPPEDMETRIC is not supported",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  metrics:\n    - a: {usage: DURATION}\n",
                "usage DURATION is not supported",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  metrics:\n    - a: {usage: GAUGES}\n",
                "query \"x\": column \"a\": usage \"GAUGES\" is not one of",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  runonserver: '>=9.6'\n  metrics:\n    - a: {usage: GAUGE}\n",
                "query \"x\": runonserver is not supported",
            ),
            (
                "x:\n  metrics:\n    - a: {usage: GAUGE}\n",
                "query \"x\": query is missing",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n",
                "query \"x\": metrics is missing",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  metrics:\n    - a: {usage: LABEL}\n",
                "no COUNTER or GAUGE",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  metrics:\n    - a: {usage: GAUGE}\n    - a: {usage: GAUGE}\n",
                "listed twice",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  cache_seconds: soon\n  metrics:\n    - a: {usage: GAUGE}\n",
                "cache_seconds must be",
            ),
            (
                "x-y:\n  query: SELECT 1 AS a\n  metrics:\n    - a: {usage: GAUGE}\n",
                "query \"x-y\": the prefix must be",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  metrics:\n    - \"a b\": {usage: GAUGE}\n",
                "column \"a b\": a column name",
            ),
            (
                "x:\n  query: SELECT 1 AS a\n  master: yes please\n  metrics:\n    - a: {usage: GAUGE}\n",
                "master must be",
            ),
            ("- a\n- b\n", "expected a mapping"),
            ("x: [unclosed\n", "not valid YAML"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
