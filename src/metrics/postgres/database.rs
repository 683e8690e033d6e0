//! The databases: their sizes and connection limits (`pg_database_*`), their statistics
//! (`pg_stat_database_*`), connections by state (`pg_stat_activity_*`) and locks by mode
//! (`pg_locks_count`).

use sqlx::PgConnection;

use super::{Column, col, emit};
use crate::metrics::exposition::Exposition;
use crate::metrics::exposition::Kind::{self, Counter, Gauge};

pub(super) async fn database(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT datname::text, datconnlimit::float8, \
                CASE WHEN has_database_privilege(oid, 'CONNECT') \
                     THEN pg_database_size(oid)::float8 END \
           FROM pg_database",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_database",
        &["datname"],
        &[
            col(
                "connection_limit",
                Kind::Gauge,
                "Connection limit set for the database",
            ),
            col("size_bytes", Kind::Gauge, "Disk space used by the database"),
        ],
        &rows,
    )
}

pub(super) async fn stat_database(
    conn: &mut PgConnection,
    version: i32,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    // active_time came with PostgreSQL 14; before, the family is left out (NULL is skipped).
    let active = if version >= 140000 {
        "(active_time / 1000)::float8"
    } else {
        "NULL::float8"
    };
    let rows = sqlx::query(&format!(
        "SELECT datid::text, datname::text, numbackends::float8, xact_commit::float8, \
                xact_rollback::float8, blks_read::float8, blks_hit::float8, \
                tup_returned::float8, tup_fetched::float8, tup_inserted::float8, \
                tup_updated::float8, tup_deleted::float8, conflicts::float8, \
                temp_files::float8, temp_bytes::float8, deadlocks::float8, \
                blk_read_time::float8, blk_write_time::float8, \
                COALESCE(extract(epoch FROM stats_reset), 0)::float8, {active} \
           FROM pg_stat_database WHERE datname IS NOT NULL"
    ))
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_database",
        &["datid", "datname"],
        STAT_DATABASE,
        &rows,
    )
}

/// `pg_stat_database_*{datid,datname}`, in the query's order.
const STAT_DATABASE: &[Column] = &[
    col(
        "numbackends",
        Gauge,
        "Number of backends currently connected to this database. This is the only column in this view that returns a value reflecting current state; all other columns return the accumulated values since the last reset.",
    ),
    col(
        "xact_commit",
        Counter,
        "Number of transactions in this database that have been committed",
    ),
    col(
        "xact_rollback",
        Counter,
        "Number of transactions in this database that have been rolled back",
    ),
    col(
        "blks_read",
        Counter,
        "Number of disk blocks read in this database",
    ),
    col(
        "blks_hit",
        Counter,
        "Number of times disk blocks were found already in the buffer cache, so that a read was not necessary (this only includes hits in the PostgreSQL buffer cache, not the operating system's file system cache)",
    ),
    col(
        "tup_returned",
        Counter,
        "Number of rows returned by queries in this database",
    ),
    col(
        "tup_fetched",
        Counter,
        "Number of rows fetched by queries in this database",
    ),
    col(
        "tup_inserted",
        Counter,
        "Number of rows inserted by queries in this database",
    ),
    col(
        "tup_updated",
        Counter,
        "Number of rows updated by queries in this database",
    ),
    col(
        "tup_deleted",
        Counter,
        "Number of rows deleted by queries in this database",
    ),
    col(
        "conflicts",
        Counter,
        "Number of queries canceled due to conflicts with recovery in this database. (Conflicts occur only on standby servers; see pg_stat_database_conflicts for details.)",
    ),
    col(
        "temp_files",
        Counter,
        "Number of temporary files created by queries in this database. All temporary files are counted, regardless of why the temporary file was created (e.g., sorting or hashing), and regardless of the log_temp_files setting.",
    ),
    col(
        "temp_bytes",
        Counter,
        "Total amount of data written to temporary files by queries in this database. All temporary files are counted, regardless of why the temporary file was created, and regardless of the log_temp_files setting.",
    ),
    col(
        "deadlocks",
        Counter,
        "Number of deadlocks detected in this database",
    ),
    col(
        "blk_read_time",
        Counter,
        "Time spent reading data file blocks by backends in this database, in milliseconds",
    ),
    col(
        "blk_write_time",
        Counter,
        "Time spent writing data file blocks by backends in this database, in milliseconds",
    ),
    col(
        "stats_reset",
        Counter,
        "Time at which these statistics were last reset",
    ),
    col(
        "active_time_seconds_total",
        Counter,
        "Time spent executing SQL statements in this database, in seconds",
    ),
];

pub(super) async fn stat_activity(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    // Every database × state, zero when empty; the monitoring session itself left out.
    let rows = sqlx::query(
        "SELECT d.datname::text, s.state, COALESCE(a.count, 0)::float8, \
                COALESCE(a.max_tx_duration, 0)::float8 \
           FROM (VALUES ('active'), ('idle'), ('idle in transaction'), \
                        ('idle in transaction (aborted)'), ('fastpath function call'), \
                        ('disabled')) AS s(state) \
          CROSS JOIN pg_database d \
           LEFT JOIN (SELECT datname, state, count(*) AS count, \
                             max(extract(epoch FROM now() - xact_start)) AS max_tx_duration \
                        FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                       GROUP BY datname, state) a \
             ON a.state = s.state AND a.datname = d.datname",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_activity",
        &["datname", "state"],
        &[
            col("count", Kind::Gauge, "number of connections in this state"),
            col(
                "max_tx_duration",
                Kind::Gauge,
                "max duration in seconds any active transaction has been running",
            ),
        ],
        &rows,
    )
}

pub(super) async fn locks(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.datname::text, m.mode, COALESCE(l.count, 0)::float8 \
           FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), \
                        ('shareupdateexclusivelock'), ('sharelock'), \
                        ('sharerowexclusivelock'), ('exclusivelock'), \
                        ('accessexclusivelock'), ('sireadlock')) AS m(mode) \
          CROSS JOIN pg_database d \
           LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count FROM pg_locks \
                       WHERE database IS NOT NULL GROUP BY database, lower(mode)) l \
             ON l.mode = m.mode AND l.database = d.oid",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_locks",
        &["datname", "mode"],
        &[col("count", Kind::Gauge, "Number of locks")],
        &rows,
    )
}
