//! The rows the point-in-time tests write and compare (`tests/pitr.rs`, `tests/pitr_faults.rs`):
//! a table `pitr_rows`, a digest of its content, and a `nexusd` run that must succeed.

use std::time::Duration;

use sqlx::PgConnection;

use super::backups::text;
use super::nexusd_command;

/// A digest of every row of `pitr_rows`: equal digests mean the same rows, not just as many.
pub async fn digest(conn: &mut PgConnection) -> String {
    sqlx::query_scalar(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(id::text || ':' || note, ',' ORDER BY id)), 'empty')
           FROM pitr_rows",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

pub async fn write_rows(conn: &mut PgConnection, from: i32, note: &str) -> String {
    sqlx::query("INSERT INTO pitr_rows SELECT g, $2 || g FROM generate_series($1, $1 + 2) g")
        .bind(from)
        .bind(note)
        .execute(&mut *conn)
        .await
        .unwrap();
    digest(conn).await
}

pub fn nexusd_ok(args: &[&str], vars: &[(&str, &str)]) -> String {
    let mut all = vec!["--env-file", "/dev/null"];
    all.extend_from_slice(args);
    let out = nexusd_command(&all, vars).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// Forces a switch to a new WAL file; returns the name of the one it ended (the file to archive).
pub async fn switch_wal(conn: &mut PgConnection) -> String {
    sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Rows committed at T1, T2 and T3, each a second or more apart: the digests after T2 and after T3,
/// and a target time `t2` that lies between them.
pub struct ThreeMoments {
    pub at_t2: String,
    pub t2: String,
    pub at_t3: String,
}

pub async fn rows_at_three_moments(conn: &mut PgConnection) -> ThreeMoments {
    write_rows(conn, 1, "t1-").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let at_t2 = write_rows(conn, 4, "t2-").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t2: String = sqlx::query_scalar(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let at_t3 = write_rows(conn, 7, "t3-").await;
    assert_ne!(at_t2, at_t3);
    ThreeMoments { at_t2, t2, at_t3 }
}
