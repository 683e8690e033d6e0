//! pg_stat_statements: the top statements by total execution time, summed over `toplevel`, the
//! extension's own counters (`pg_stat_statements_info`) and, when asked for, the statement texts.

use sqlx::{PgConnection, Row};

use super::{Column, PgCollector, col};
use crate::metrics::config::STATEMENT_TEXT_LENGTH;
use crate::metrics::exposition::Exposition;
use crate::metrics::exposition::Kind::{self, Counter};

impl PgCollector {
    /// `pg_stat_statements_*_total{user,datname,queryid}` for the top `statements_limit`
    /// statements, then the extension's own counters and, when asked for, the texts.
    pub(super) async fn stat_statements(
        &self,
        conn: &mut PgConnection,
        version: i32,
        out: &mut Exposition,
    ) -> Result<(), sqlx::Error> {
        if self.statements_limit == 0 {
            return Ok(());
        }
        let rows = sqlx::query(&top_statements_sql(version))
            .bind(i64::from(self.statements_limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut keyed = Vec::with_capacity(rows.len());
        for row in &rows {
            let user: Option<String> = row.try_get(0)?;
            let datname: Option<String> = row.try_get(1)?;
            let queryid: i64 = row.try_get(2)?;
            ids.push(queryid);
            keyed.push((
                user.unwrap_or_else(|| "unknown".into()),
                datname.unwrap_or_else(|| "unknown".into()),
                queryid.to_string(),
            ));
        }
        for (i, column) in STATEMENT_COLUMNS.iter().enumerate() {
            let family = out.family(
                &format!("pg_stat_statements_{}", column.name),
                column.help,
                column.kind,
            );
            for (row, (user, datname, queryid)) in rows.iter().zip(&keyed) {
                if let Some(value) = row.try_get::<Option<f64>, _>(3 + i)? {
                    family.sample(
                        &[("user", user), ("datname", datname), ("queryid", queryid)],
                        value,
                    );
                }
            }
        }
        statements_info(conn, version, out).await?;
        if self.statements_query_text {
            self.statement_texts(conn, &ids, out).await?;
        }
        Ok(())
    }

    /// `pg_stat_statements_query_id{queryid,query}`: texts are read (which reads the whole
    /// query-text file) only for queryids not seen before, and forgotten once out of the top N.
    async fn statement_texts(
        &self,
        conn: &mut PgConnection,
        ids: &[i64],
        out: &mut Exposition,
    ) -> Result<(), sqlx::Error> {
        let missing: Vec<i64> = match self.texts.lock() {
            Ok(texts) => ids
                .iter()
                .filter(|id| !texts.contains_key(id))
                .copied()
                .collect(),
            Err(_) => return Ok(()),
        };
        let fetched: Vec<(i64, Option<String>)> = if missing.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT DISTINCT ON (queryid) queryid, left(query, $2) \
                   FROM pg_stat_statements(true) WHERE queryid = ANY($1)",
            )
            .bind(&missing)
            .bind(STATEMENT_TEXT_LENGTH as i32)
            .fetch_all(&mut *conn)
            .await?
        };
        let Ok(mut texts) = self.texts.lock() else {
            return Ok(());
        };
        for (id, text) in fetched {
            texts.insert(id, text.unwrap_or_default());
        }
        texts.retain(|id, _| ids.contains(id));
        let family = out.counter(
            "pg_stat_statements_query_id",
            "SQL Query to queryid mapping",
        );
        for id in ids {
            if let Some(text) = texts.get(id) {
                family.sample(&[("queryid", &id.to_string()), ("query", text)], 1.0);
            }
        }
        Ok(())
    }
}

/// The top `$1` statements: user, database, queryid, then the values of [`STATEMENT_COLUMNS`].
fn top_statements_sql(version: i32) -> String {
    // PG17 renamed the block timings.
    let (read, write) = if version >= 170000 {
        ("shared_blk_read_time", "shared_blk_write_time")
    } else {
        ("blk_read_time", "blk_write_time")
    };
    // Summed over `toplevel` (and only then limited): one row per label set, always. The
    // sums are float8 (sum(bigint) is numeric, several times slower over thousands of
    // entries), and names are looked up for the top rows only.
    format!(
        "WITH top AS ( \
            SELECT userid, dbid, queryid, sum(calls::float8) AS calls, \
                   sum(total_exec_time) AS exec_ms, sum(rows::float8) AS rows, \
                   sum({read}) AS read_ms, sum({write}) AS write_ms \
              FROM pg_stat_statements(false) \
             WHERE queryid IS NOT NULL AND dbid IN (SELECT oid FROM pg_database) \
             GROUP BY userid, dbid, queryid \
             ORDER BY exec_ms DESC \
             LIMIT $1) \
         SELECT pg_get_userbyid(t.userid) AS usename, d.datname::text, t.queryid, t.calls, \
                t.exec_ms / 1000, t.rows, t.read_ms / 1000, t.write_ms / 1000 \
           FROM top t JOIN pg_database d ON d.oid = t.dbid \
          ORDER BY t.exec_ms DESC"
    )
}

/// `pg_stat_statements_*{user,datname,queryid}`, in the query's order.
const STATEMENT_COLUMNS: [Column; 5] = [
    col("calls_total", Counter, "Number of times executed"),
    col(
        "seconds_total",
        Counter,
        "Total time spent in the statement, in seconds",
    ),
    col(
        "rows_total",
        Counter,
        "Total number of rows retrieved or affected by the statement",
    ),
    col(
        "block_read_seconds_total",
        Counter,
        "Total time the statement spent reading blocks, in seconds",
    ),
    col(
        "block_write_seconds_total",
        Counter,
        "Total time the statement spent writing blocks, in seconds",
    ),
];

/// The extension's own counters: evictions and the last reset.
async fn statements_info(
    conn: &mut PgConnection,
    version: i32,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    // pg_stat_statements_info came with PostgreSQL 14.
    let info: Option<(Option<f64>, Option<f64>)> = if version >= 140000 {
        sqlx::query_as(
            "SELECT dealloc::float8, extract(epoch FROM stats_reset)::float8 FROM pg_stat_statements_info",
        )
        .fetch_optional(&mut *conn)
        .await?
    } else {
        None
    };
    let Some((dealloc, reset)) = info else {
        return Ok(());
    };
    if let Some(dealloc) = dealloc {
        out.single(
            "pg_stat_statements_dealloc_total",
            "nexusd: times pg_stat_statements evicted its least-used entries because pg_stat_statements.max was reached.",
            Kind::Counter,
            dealloc,
        );
    }
    if let Some(reset) = reset {
        out.single(
            "pg_stat_statements_stats_reset_timestamp_seconds",
            "nexusd: when all pg_stat_statements statistics were last reset (Unix time).",
            Kind::Gauge,
            reset,
        );
    }
    Ok(())
}
