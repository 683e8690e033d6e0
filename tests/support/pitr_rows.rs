//! The rows the point-in-time tests write and compare (`tests/pitr.rs`, `tests/pitr_faults.rs`):
//! a table `pitr_rows`, a digest of its content, and a `nexusd` run that must succeed.

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
