//! `repository_keyword_uses`: how many of a repository's patterns use each keyword, as a ledger
//! the database's triggers append to whenever a statement links or unlinks keywords
//! (`migrations/0009_repository_keyword_uses.sql`). A count is the sum of its rows, as
//! `repositories::SUMMARIES_SQL` reads them; [`spawn_folder`] keeps the ledger short by folding
//! the rows of each changed count into one.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::Readiness;

/// How often `nexusd serve` looks for ledger rows to fold.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(10);

/// Replaces the rows of every count that changed since the last fold by one row holding their
/// sum (none when it is zero). Readers sum whatever is there, so their answers do not change.
/// Safe beside writers (they only insert) and beside another fold: each row is deleted by one of
/// them, and a fold's new rows are invisible to the other's statement.
const FOLD_SQL: &str =
    "WITH changed AS (SELECT DISTINCT repo_id, keyword_id FROM repository_keyword_uses WHERE NOT compacted),
      gone AS (DELETE FROM repository_keyword_uses u USING changed c
                WHERE u.repo_id = c.repo_id AND u.keyword_id = c.keyword_id
            RETURNING u.repo_id, u.keyword_id, u.uses),
      kept AS (INSERT INTO repository_keyword_uses (repo_id, keyword_id, uses, compacted)
               SELECT repo_id, keyword_id, sum(uses), TRUE FROM gone
                GROUP BY repo_id, keyword_id HAVING sum(uses) <> 0
               RETURNING 1)
 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM kept)";

/// Folds the ledger once; returns how many rows went and how many sums replaced them.
pub async fn fold(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(FOLD_SQL).fetch_one(pool).await
}

/// Folds the ledger every [`FOLD_INTERVAL`] while the database is ready, until `shutdown`.
/// Every replica may fold: two folds at once stay exact (see [`FOLD_SQL`]).
pub fn spawn_folder(
    pool: PgPool,
    mut readiness: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(FOLD_INTERVAL) => {}
                () = shutdown.cancelled() => return,
            }
            if !matches!(*readiness.borrow_and_update(), Readiness::Ready(_)) {
                continue;
            }
            match fold(&pool).await {
                Ok((gone, kept)) => {
                    if failing {
                        tracing::info!("keyword counts: folding works again");
                        failing = false;
                    }
                    if gone > 0 {
                        tracing::debug!(gone, kept, "keyword counts: folded the ledger");
                    }
                }
                // Once per failing streak: the database being away is reported elsewhere.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "keyword counts: cannot fold the ledger; reads stay exact, only slower");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}
