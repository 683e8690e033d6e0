//! Writing and shipping the WAL: checkpoints and the background writer (`pg_stat_bgwriter_*`),
//! archiving (`pg_stat_archiver_*`), the WAL directory (`pg_wal_*`) and replication
//! (`pg_replication_*`, `pg_replication_slots_*`, `pg_stat_replication_*`).

use sqlx::PgConnection;

use super::{Column, col, emit};
use crate::metrics::exposition::Exposition;
use crate::metrics::exposition::Kind::{self, Counter};

pub(super) async fn stat_bgwriter(
    conn: &mut PgConnection,
    version: i32,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    // PG17 moved the checkpoint columns to pg_stat_checkpointer.
    let sql = if version >= 170000 {
        "SELECT c.num_timed::float8, c.num_requested::float8, c.write_time::float8, \
                c.sync_time::float8, c.buffers_written::float8, b.buffers_clean::float8, \
                b.maxwritten_clean::float8, NULL::float8, NULL::float8, \
                b.buffers_alloc::float8, extract(epoch FROM b.stats_reset)::float8 \
           FROM pg_stat_bgwriter b, pg_stat_checkpointer c"
    } else {
        "SELECT checkpoints_timed::float8, checkpoints_req::float8, \
                checkpoint_write_time::float8, checkpoint_sync_time::float8, \
                buffers_checkpoint::float8, buffers_clean::float8, maxwritten_clean::float8, \
                buffers_backend::float8, buffers_backend_fsync::float8, buffers_alloc::float8, \
                extract(epoch FROM stats_reset)::float8 \
           FROM pg_stat_bgwriter"
    };
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
    emit(out, "pg_stat_bgwriter", &[], STAT_BGWRITER, &rows)
}

/// `pg_stat_bgwriter_*`, in the order of both queries.
const STAT_BGWRITER: &[Column] = &[
    col(
        "checkpoints_timed_total",
        Counter,
        "Number of scheduled checkpoints that have been performed",
    ),
    col(
        "checkpoints_req_total",
        Counter,
        "Number of requested checkpoints that have been performed",
    ),
    col(
        "checkpoint_write_time_total",
        Counter,
        "Total amount of time that has been spent in the portion of checkpoint processing where files are written to disk, in milliseconds",
    ),
    col(
        "checkpoint_sync_time_total",
        Counter,
        "Total amount of time that has been spent in the portion of checkpoint processing where files are synchronized to disk, in milliseconds",
    ),
    col(
        "buffers_checkpoint_total",
        Counter,
        "Number of buffers written during checkpoints",
    ),
    col(
        "buffers_clean_total",
        Counter,
        "Number of buffers written by the background writer",
    ),
    col(
        "maxwritten_clean_total",
        Counter,
        "Number of times the background writer stopped a cleaning scan because it had written too many buffers",
    ),
    col(
        "buffers_backend_total",
        Counter,
        "Number of buffers written directly by a backend",
    ),
    col(
        "buffers_backend_fsync_total",
        Counter,
        "Number of times a backend had to execute its own fsync call (normally the background writer handles those even when the backend does its own write)",
    ),
    col(
        "buffers_alloc_total",
        Counter,
        "Number of buffers allocated",
    ),
    col(
        "stats_reset_total",
        Counter,
        "Time at which these statistics were last reset",
    ),
];

pub(super) async fn stat_archiver(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT archived_count::float8, failed_count::float8, \
                COALESCE(extract(epoch FROM now() - last_archived_time), 'NaN')::float8 \
           FROM pg_stat_archiver",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_archiver",
        &[],
        &[
            col(
                "archived_count",
                Kind::Counter,
                "Number of WAL files that have been successfully archived",
            ),
            col(
                "failed_count",
                Kind::Counter,
                "Number of failed attempts for archiving WAL files",
            ),
            col(
                "last_archive_age",
                Kind::Gauge,
                "Time in seconds since last WAL segment was successfully archived (NaN when none was)",
            ),
        ],
        &rows,
    )
}

pub(super) async fn wal(conn: &mut PgConnection, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT count(*)::float8, COALESCE(sum(size), 0)::float8 FROM pg_ls_waldir() \
          WHERE name ~ '^[0-9A-F]{24}$'",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_wal",
        &[],
        &[
            col("segments", Kind::Gauge, "Number of WAL segments"),
            col("size_bytes", Kind::Gauge, "Total size of WAL segments"),
        ],
        &rows,
    )
}

pub(super) async fn replication(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 \
                     WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                     ELSE GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) \
                END::float8, \
                CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END::float8, \
                GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))::float8",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_replication",
        &[],
        &[
            col(
                "lag_seconds",
                Kind::Gauge,
                "Replication lag behind master in seconds",
            ),
            col(
                "is_replica",
                Kind::Gauge,
                "Indicates if the server is a replica",
            ),
            col(
                "last_replay_seconds",
                Kind::Gauge,
                "Age of last replay in seconds",
            ),
        ],
        &rows,
    )
}

pub(super) async fn replication_slots(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT slot_name::text, slot_type, \
                ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                       ELSE pg_current_wal_lsn() END) - '0/0')::float8, \
                (confirmed_flush_lsn - '0/0')::float8, \
                active::int::float8, safe_wal_size::float8 \
           FROM pg_replication_slots",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_replication_slots",
        &["slot_name", "slot_type"],
        &[
            col("slot_current_wal_lsn", Kind::Gauge, "current wal lsn value"),
            col(
                "slot_confirmed_flush_lsn",
                Kind::Gauge,
                "last lsn confirmed flushed to the replication slot",
            ),
            col(
                "slot_is_active",
                Kind::Gauge,
                "whether the replication slot is active or not",
            ),
            col(
                "safe_wal_size_bytes",
                Kind::Gauge,
                "number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost",
            ),
        ],
        &rows,
    )
}

pub(super) async fn stat_replication(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.pid::text, r.application_name, COALESCE(host(r.client_addr), ''), \
                COALESCE(r.state, ''), COALESCE(s.slot_name::text, ''), \
                (pg_current_wal_lsn() - '0/0')::float8, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::float8 \
           FROM pg_stat_replication r \
           LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid \
          WHERE NOT pg_is_in_recovery()",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_replication",
        &[
            "pid",
            "application_name",
            "client_addr",
            "state",
            "slot_name",
        ],
        &[
            col(
                "pg_current_wal_lsn_bytes",
                Kind::Gauge,
                "WAL position in bytes",
            ),
            col(
                "pg_wal_lsn_diff",
                Kind::Gauge,
                "Lag in bytes between master and slave",
            ),
        ],
        &rows,
    )
}
