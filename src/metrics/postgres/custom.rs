//! The custom queries of `NEXUSD_METRICS_QUERIES` (read and checked by `metrics/queries.rs`),
//! run as postgres_exporter runs them: `<prefix>_<column>` per COUNTER/GAUGE column, labelled
//! with the LABEL columns, a column the file does not list exported untyped (`Unknown metric
//! from <prefix>`), NULL as NaN.
//!
//! Each query runs on the monitoring session inside `BEGIN READ ONLY` with a
//! `statement_timeout` of at most 2 s and never past the scrape's budget, so a slow or broken
//! query costs its own collector (`pg_scrape_collector_success{collector="query:<prefix>"} 0`)
//! and nothing else. Results of a query with `cache_seconds` are reused that long.

use std::collections::HashMap;
use std::time::Instant;

use sqlx::postgres::{PgRow, PgValueFormat, PgValueRef};
use sqlx::{Column, PgConnection, Row, TypeInfo, ValueRef};

use super::{PgCollector, STATEMENT_TIMEOUT_MS};
use crate::metrics::exposition::{Exposition, Kind};
use crate::metrics::queries::{CustomQuery, Usage};

/// Kept back from the remaining budget so the query's own error arrives in time.
const BUDGET_MARGIN_MS: u64 = 100;
/// Less than this left: the query is not started.
const MIN_TIMEOUT_MS: u64 = 20;

/// One sample of a custom query, kept for `cache_seconds`.
#[derive(Debug, Clone)]
pub(super) struct CustomSample {
    name: String,
    help: String,
    kind: Kind,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A query's last result and when it was read.
pub(super) type CustomCache = HashMap<String, (Instant, Vec<CustomSample>)>;

impl PgCollector {
    /// Runs one custom query (or reuses its cached result) into `out`.
    pub(super) async fn custom_query(
        &self,
        query: &CustomQuery,
        conn: &mut PgConnection,
        out: &mut Exposition,
        deadline: Instant,
    ) -> Result<(), sqlx::Error> {
        if let Some(ttl) = query.cache
            && let Ok(cache) = self.cached.lock()
            && let Some((at, samples)) = cache.get(&query.prefix)
            && at.elapsed() < ttl
        {
            write(out, samples);
            return Ok(());
        }
        let samples = run(query, conn, deadline).await?;
        write(out, &samples);
        if query.cache.is_some()
            && let Ok(mut cache) = self.cached.lock()
        {
            cache.insert(query.prefix.clone(), (Instant::now(), samples));
        }
        Ok(())
    }
}

fn write(out: &mut Exposition, samples: &[CustomSample]) {
    for s in samples {
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.family(&s.name, &s.help, s.kind)
            .sample(&labels, s.value);
    }
}

/// The statement timeout for a query started now: 2 s at most, and within the budget.
fn timeout_ms(deadline: Instant) -> Option<u64> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    let ms = left
        .saturating_sub(BUDGET_MARGIN_MS)
        .min(STATEMENT_TIMEOUT_MS);
    (ms >= MIN_TIMEOUT_MS).then_some(ms)
}

async fn run(
    query: &CustomQuery,
    conn: &mut PgConnection,
    deadline: Instant,
) -> Result<Vec<CustomSample>, sqlx::Error> {
    let Some(ms) = timeout_ms(deadline) else {
        return Err(failure("no time left in the scrape's budget".into()));
    };
    sqlx::query("BEGIN READ ONLY").execute(&mut *conn).await?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(ms.to_string())
        .execute(&mut *conn)
        .await?;
    // Extended protocol: one statement only, so the query cannot end the read-only transaction.
    let rows = sqlx::query(query.sql.as_str()).fetch_all(&mut *conn).await;
    sqlx::query("ROLLBACK").execute(&mut *conn).await?;
    samples(query, &rows?)
}

/// What one result column becomes.
enum Plan<'q> {
    Label(&'q str),
    Value {
        name: String,
        help: String,
        kind: Kind,
    },
    /// Unlisted: untyped when it holds a number, left out otherwise.
    Unlisted {
        name: String,
        help: String,
    },
    Discard,
}

fn plan<'q>(query: &'q CustomQuery, row: &PgRow) -> Result<Vec<Plan<'q>>, sqlx::Error> {
    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    if let Some(missing) = query
        .columns
        .iter()
        .find(|c| c.usage != Usage::Discard && !names.contains(&c.name.as_str()))
    {
        return Err(failure(format!(
            "column {:?} listed in metrics is not in the query's result (columns: {})",
            missing.name,
            names.join(", ")
        )));
    }
    Ok(names
        .iter()
        .map(|name| match query.column(name) {
            Some(c) => match c.usage {
                Usage::Label => Plan::Label(c.name.as_str()),
                Usage::Discard => Plan::Discard,
                Usage::Counter | Usage::Gauge => Plan::Value {
                    name: format!("{}_{}", query.prefix, c.name),
                    help: c.description.clone(),
                    kind: if c.usage == Usage::Counter {
                        Kind::Counter
                    } else {
                        Kind::Gauge
                    },
                },
            },
            None => Plan::Unlisted {
                name: format!("{}_{name}", query.prefix),
                help: format!("Unknown metric from {}", query.prefix),
            },
        })
        .collect())
}

fn samples(query: &CustomQuery, rows: &[PgRow]) -> Result<Vec<CustomSample>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let plan = plan(query, first)?;
    let mut samples = Vec::new();
    for row in rows {
        let mut labels = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            if let Plan::Label(name) = p {
                let value = label(row.try_get_raw(i)?)
                    .map_err(|e| failure(format!("label column {name:?}: {e}")))?;
                labels.push((name.to_string(), value));
            }
        }
        for (i, p) in plan.iter().enumerate() {
            let (name, help, kind) = match p {
                Plan::Value { name, help, kind } => (name, help, *kind),
                Plan::Unlisted { name, help } => (name, help, Kind::Untyped),
                Plan::Label(_) | Plan::Discard => continue,
            };
            let value = match (number(row.try_get_raw(i)?), p) {
                (Ok(v), _) => v,
                (Err(_), Plan::Unlisted { .. }) => continue,
                (Err(e), _) => {
                    let column = row.columns()[i].name();
                    return Err(failure(format!("column {column:?}: {e}")));
                }
            };
            samples.push(CustomSample {
                name: name.clone(),
                help: help.clone(),
                kind,
                labels: labels.clone(),
                value,
            });
        }
    }
    Ok(samples)
}

/// A failure of the query's own (not of the connection: `Protocol` would count as one).
fn failure(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

/// A value as a number: integers, floats, numeric, booleans (1/0), times (Unix seconds) and
/// text holding a number; NULL is NaN, as in postgres_exporter.
fn number(value: PgValueRef<'_>) -> Result<f64, String> {
    if value.is_null() {
        return Ok(f64::NAN);
    }
    let ty = value.type_info().name().to_string();
    if value.format() == PgValueFormat::Text {
        let text = value.as_str().map_err(|e| e.to_string())?;
        return text_number(text).ok_or_else(|| format!("{text:?} is not a number"));
    }
    let bytes = value.as_bytes().map_err(|e| e.to_string())?;
    let n = match (ty.as_str(), bytes.len()) {
        ("INT2", 2) => f64::from(i16::from_be_bytes([bytes[0], bytes[1]])),
        ("INT4", 4) => f64::from(i32::from_be_bytes(be4(bytes))),
        ("OID", 4) => f64::from(u32::from_be_bytes(be4(bytes))),
        ("INT8", 8) => i64::from_be_bytes(be8(bytes)) as f64,
        ("FLOAT4", 4) => f64::from(f32::from_be_bytes(be4(bytes))),
        ("FLOAT8", 8) => f64::from_be_bytes(be8(bytes)),
        ("BOOL", 1) => f64::from(bytes[0]),
        ("NUMERIC", _) => numeric(bytes).ok_or("malformed numeric")?,
        // Microseconds since 2000-01-01 (946684800 in Unix time).
        ("TIMESTAMPTZ" | "TIMESTAMP", 8) => {
            i64::from_be_bytes(be8(bytes)) as f64 / 1e6 + 946_684_800.0
        }
        ("DATE", 4) => f64::from(i32::from_be_bytes(be4(bytes))) * 86_400.0 + 946_684_800.0,
        ("TEXT" | "VARCHAR" | "NAME" | "BPCHAR" | "CHAR", _) => {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            text_number(text).ok_or_else(|| format!("{text:?} is not a number"))?
        }
        _ => {
            return Err(format!(
                "type {ty} is not a number: cast it in the query (e.g. ::float8)"
            ));
        }
    };
    Ok(n)
}

/// A value as a label: text as it is, numbers and booleans written out, NULL empty.
fn label(value: PgValueRef<'_>) -> Result<String, String> {
    if value.is_null() {
        return Ok(String::new());
    }
    let ty = value.type_info().name().to_string();
    if value.format() == PgValueFormat::Text {
        return value
            .as_str()
            .map(str::to_string)
            .map_err(|e| e.to_string());
    }
    match ty.as_str() {
        "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" | "CHAR" | "\"CHAR\"" | "UNKNOWN" => {
            let bytes = value.as_bytes().map_err(|e| e.to_string())?;
            String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
        }
        "BOOL" => Ok(if number(value)? != 0.0 {
            "true"
        } else {
            "false"
        }
        .to_string()),
        "INT2" | "INT4" | "INT8" | "OID" | "FLOAT4" | "FLOAT8" | "NUMERIC" => {
            Ok(number(value)?.to_string())
        }
        _ => Err(format!(
            "type {ty} cannot be a label: cast it in the query (e.g. ::text)"
        )),
    }
}

fn text_number(text: &str) -> Option<f64> {
    match text.trim() {
        "t" | "true" => Some(1.0),
        "f" | "false" => Some(0.0),
        t => t.parse().ok(),
    }
}

fn be4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

fn be8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// PostgreSQL's binary numeric: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric(bytes: &[u8]) -> Option<f64> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([
            *bytes.get(2 * i)?,
            *bytes.get(2 * i + 1)?,
        ]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = word(1)? as i16;
    match word(2)? {
        0xC000 => return Some(f64::NAN),
        0xD000 => return Some(f64::INFINITY),
        0xF000 => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let negative = word(2)? == 0x4000;
    let mut value = 0.0;
    for i in 0..ndigits {
        let digit = f64::from(word(4 + i)?);
        value += digit * 10_000f64.powi(i32::from(weight) - i as i32);
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn numeric_bytes(ndigits: u16, weight: i16, sign: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, 0] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_is_read_from_its_binary_form() {
        // 12345.678 = 1 2345 . 6780
        assert_eq!(
            numeric(&numeric_bytes(3, 1, 0, &[1, 2345, 6780])),
            Some(12345.678)
        );
        assert_eq!(numeric(&numeric_bytes(1, 0, 0x4000, &[7])), Some(-7.0));
        assert_eq!(numeric(&numeric_bytes(0, 0, 0, &[])), Some(0.0));
        assert!(numeric(&numeric_bytes(0, 0, 0xC000, &[])).unwrap().is_nan());
        assert_eq!(numeric(&[0, 1]), None);
    }

    #[test]
    fn text_numbers_and_the_budget() {
        assert_eq!(text_number(" 42 "), Some(42.0));
        assert_eq!(text_number("t"), Some(1.0));
        assert_eq!(text_number("abc"), None);
        assert_eq!(
            timeout_ms(Instant::now() + Duration::from_secs(60)),
            Some(2000)
        );
        assert!(timeout_ms(Instant::now() + Duration::from_millis(500)).unwrap() <= 400);
        assert_eq!(timeout_ms(Instant::now()), None);
    }
}
