//! Table statistics (`pg_stat_user_tables_*`, `pg_statio_user_tables_*`) and the vector indexes
//! (`nexusd_pg_vector_index_size_bytes`). In nexusd's own database only the knowledge-base
//! tables are read (tables users add there cannot multiply the series); in the other databases
//! of `NEXUSD_METRICS_DATABASES` (`databases.rs`) every user table is, as postgres_exporter does.

use sqlx::PgConnection;

use super::{Column, col, emit};
use crate::bootstrap::KNOWLEDGE_BASE_TABLES;
use crate::metrics::exposition::Exposition;
use crate::metrics::exposition::Kind::{self, Counter, Gauge};

/// Which tables of a database are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tables {
    /// The knowledge-base tables (nexusd's own database).
    KnowledgeBase,
    /// Every user table (the other databases).
    All,
}

pub(super) async fn stat_user_tables(
    conn: &mut PgConnection,
    tables: Tables,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT current_database()::text, schemaname::text, relname::text, \
                seq_scan::float8, seq_tup_read::float8, COALESCE(idx_scan, 0)::float8, \
                COALESCE(idx_tup_fetch, 0)::float8, n_tup_ins::float8, n_tup_upd::float8, \
                n_tup_del::float8, n_tup_hot_upd::float8, n_live_tup::float8, \
                n_dead_tup::float8, n_mod_since_analyze::float8, \
                COALESCE(extract(epoch FROM last_vacuum), 0)::float8, \
                COALESCE(extract(epoch FROM last_autovacuum), 0)::float8, \
                COALESCE(extract(epoch FROM last_analyze), 0)::float8, \
                COALESCE(extract(epoch FROM last_autoanalyze), 0)::float8, \
                vacuum_count::float8, autovacuum_count::float8, analyze_count::float8, \
                autoanalyze_count::float8, pg_indexes_size(relid)::float8, \
                pg_table_size(relid)::float8 \
           FROM pg_stat_user_tables \
          WHERE $2 OR (schemaname = 'public' AND relname = ANY($1))",
    )
    .bind(KNOWLEDGE_BASE_TABLES)
    .bind(tables == Tables::All)
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_stat_user_tables",
        &["datname", "schemaname", "relname"],
        STAT_USER_TABLES,
        &rows,
    )
}

/// `pg_stat_user_tables_*{datname,schemaname,relname}`, in the query's order.
const STAT_USER_TABLES: &[Column] = &[
    col(
        "seq_scan",
        Counter,
        "Number of sequential scans initiated on this table",
    ),
    col(
        "seq_tup_read",
        Counter,
        "Number of live rows fetched by sequential scans",
    ),
    col(
        "idx_scan",
        Counter,
        "Number of index scans initiated on this table",
    ),
    col(
        "idx_tup_fetch",
        Counter,
        "Number of live rows fetched by index scans",
    ),
    col("n_tup_ins", Counter, "Number of rows inserted"),
    col("n_tup_upd", Counter, "Number of rows updated"),
    col("n_tup_del", Counter, "Number of rows deleted"),
    col(
        "n_tup_hot_upd",
        Counter,
        "Number of rows HOT updated (i.e., with no separate index update required)",
    ),
    col("n_live_tup", Gauge, "Estimated number of live rows"),
    col("n_dead_tup", Gauge, "Estimated number of dead rows"),
    col(
        "n_mod_since_analyze",
        Gauge,
        "Estimated number of rows changed since last analyze",
    ),
    col(
        "last_vacuum",
        Gauge,
        "Last time at which this table was manually vacuumed (not counting VACUUM FULL)",
    ),
    col(
        "last_autovacuum",
        Gauge,
        "Last time at which this table was vacuumed by the autovacuum daemon",
    ),
    col(
        "last_analyze",
        Gauge,
        "Last time at which this table was manually analyzed",
    ),
    col(
        "last_autoanalyze",
        Gauge,
        "Last time at which this table was analyzed by the autovacuum daemon",
    ),
    col(
        "vacuum_count",
        Counter,
        "Number of times this table has been manually vacuumed (not counting VACUUM FULL)",
    ),
    col(
        "autovacuum_count",
        Counter,
        "Number of times this table has been vacuumed by the autovacuum daemon",
    ),
    col(
        "analyze_count",
        Counter,
        "Number of times this table has been manually analyzed",
    ),
    col(
        "autoanalyze_count",
        Counter,
        "Number of times this table has been analyzed by the autovacuum daemon",
    ),
    col(
        "index_size_bytes",
        Gauge,
        "Total disk space used by indexes on this table, in bytes",
    ),
    col(
        "table_size_bytes",
        Gauge,
        "Total disk space used by this table, in bytes",
    ),
];

pub(super) async fn statio_user_tables(
    conn: &mut PgConnection,
    tables: Tables,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT current_database()::text, schemaname::text, relname::text, \
                COALESCE(heap_blks_read, 0)::float8, COALESCE(heap_blks_hit, 0)::float8, \
                COALESCE(idx_blks_read, 0)::float8, COALESCE(idx_blks_hit, 0)::float8, \
                COALESCE(toast_blks_read, 0)::float8, COALESCE(toast_blks_hit, 0)::float8, \
                COALESCE(tidx_blks_read, 0)::float8, COALESCE(tidx_blks_hit, 0)::float8 \
           FROM pg_statio_user_tables \
          WHERE $2 OR (schemaname = 'public' AND relname = ANY($1))",
    )
    .bind(KNOWLEDGE_BASE_TABLES)
    .bind(tables == Tables::All)
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "pg_statio_user_tables",
        &["datname", "schemaname", "relname"],
        STATIO_USER_TABLES,
        &rows,
    )
}

/// `pg_statio_user_tables_*{datname,schemaname,relname}`, in the query's order.
const STATIO_USER_TABLES: &[Column] = &[
    col(
        "heap_blocks_read",
        Counter,
        "Number of disk blocks read from this table",
    ),
    col(
        "heap_blocks_hit",
        Counter,
        "Number of buffer hits in this table",
    ),
    col(
        "idx_blocks_read",
        Counter,
        "Number of disk blocks read from all indexes on this table",
    ),
    col(
        "idx_blocks_hit",
        Counter,
        "Number of buffer hits in all indexes on this table",
    ),
    col(
        "toast_blocks_read",
        Counter,
        "Number of disk blocks read from this table's TOAST table (if any)",
    ),
    col(
        "toast_blocks_hit",
        Counter,
        "Number of buffer hits in this table's TOAST table (if any)",
    ),
    col(
        "tidx_blocks_read",
        Counter,
        "Number of disk blocks read from this table's TOAST table indexes (if any)",
    ),
    col(
        "tidx_blocks_hit",
        Counter,
        "Number of buffer hits in this table's TOAST table indexes (if any)",
    ),
];

/// nexusd's own: the size of each vector index (HNSW, IVFFlat) of the knowledge base, which is
/// what grows with embeddings and must fit in a 1 GB machine's cache.
pub(super) async fn vector_indexes(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT current_database()::text, n.nspname::text, t.relname::text, i.relname::text, \
                am.amname::text, pg_relation_size(i.oid)::float8 \
           FROM pg_index x \
           JOIN pg_class i ON i.oid = x.indexrelid \
           JOIN pg_class t ON t.oid = x.indrelid \
           JOIN pg_namespace n ON n.oid = i.relnamespace \
           JOIN pg_am am ON am.oid = i.relam \
          WHERE am.amname IN ('hnsw', 'ivfflat')",
    )
    .fetch_all(&mut *conn)
    .await?;
    emit(
        out,
        "nexusd_pg_vector_index",
        &["datname", "schemaname", "relname", "indexname", "method"],
        &[col(
            "size_bytes",
            Kind::Gauge,
            "Disk space used by a pgvector index (HNSW or IVFFlat), in bytes.",
        )],
        &rows,
    )
}
