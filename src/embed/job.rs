//! The embedding job: computes pattern embeddings batch by batch, each batch embedded outside
//! any transaction and stored in its own short one, so an interrupted run keeps what it did and
//! the next run continues with what is left. `nexusd embed` runs it with a progress display;
//! `nexusd serve` runs it in the background for patterns that have no embedding yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgvector::Vector;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Embedder, Search, mixed_models_message, pattern_text};
use crate::bootstrap::Readiness;
use crate::db::Database;
use crate::kb::search as store;
use crate::telemetry::progress::Progress as Display;

/// Which patterns a run embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only patterns without an embedding; refused while other models' embeddings are stored.
    Missing,
    /// Every pattern whose embedding was not made by the configured model (`--reembed`).
    NotCurrent,
}

/// Where a run stands, after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub model: String,
    /// Embeddings stored.
    pub embedded: u64,
    /// Patterns edited while their batch was being embedded; left for the next run.
    pub changed: u64,
    pub elapsed: Duration,
    /// Whether the run stopped early because it was cancelled.
    pub cancelled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Stored embeddings come from other models and the scope does not replace them.
    #[error("{0}")]
    MixedModels(String),
    #[error("{error}; {done} embeddings were stored before it, run again to continue")]
    Embed { error: super::EmbedError, done: u64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Embeds what `scope` selects, `batch_size` patterns per transaction; `progress` is called
/// before the first batch and after each. Stops between batches when `cancel` fires.
pub async fn run(
    pool: &PgPool,
    embedder: &Embedder,
    scope: Scope,
    batch_size: usize,
    cancel: &CancellationToken,
    mut progress: impl FnMut(Progress),
) -> Result<Summary, JobError> {
    let started = Instant::now();
    let model = embedder.model_id();
    let redo_others = scope == Scope::NotCurrent;
    let mut conn = pool.acquire().await?;
    if scope == Scope::Missing {
        let others = store::other_models(&mut conn, &model).await?;
        if !others.is_empty() {
            return Err(JobError::MixedModels(mixed_models_message(&model, &others)));
        }
    }
    let total = store::count_pending(&mut conn, &model, redo_others).await? as u64;
    drop(conn);

    let mut summary = Summary {
        model: model.clone(),
        embedded: 0,
        changed: 0,
        elapsed: Duration::ZERO,
        cancelled: false,
    };
    let mut done = 0;
    let mut after = 0;
    progress(Progress { done, total });
    loop {
        if cancel.is_cancelled() {
            summary.cancelled = true;
            break;
        }
        let batch = {
            let mut conn = pool.acquire().await?;
            store::pending(&mut conn, &model, redo_others, after, batch_size as i64).await?
        };
        let Some(last) = batch.last() else { break };
        after = last.id;
        let texts: Vec<String> = batch
            .iter()
            .map(|p| pattern_text(&p.name, p.description.as_deref(), p.context.as_deref()))
            .collect();
        let vectors = tokio::select! {
            result = embedder.embed(&texts) => result.map_err(|error| JobError::Embed {
                error,
                done: summary.embedded,
            })?,
            () = cancel.cancelled() => {
                summary.cancelled = true;
                break;
            }
        };
        let vectors: Vec<Vector> = vectors.into_iter().map(Vector::from).collect();
        let mut tx = crate::db::begin(pool).await?;
        let stored = store::set_embeddings(&mut tx, &model, &batch, &vectors).await?;
        tx.commit().await?;
        summary.embedded += stored;
        summary.changed += batch.len() as u64 - stored;
        done += batch.len() as u64;
        // Patterns added during the run are embedded too; the total grows with them.
        progress(Progress {
            done,
            total: total.max(done),
        });
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// How often the background backfill looks for patterns without an embedding when nothing
/// woke it (an `import-json` run by another process, say).
const BACKFILL_INTERVAL: Duration = Duration::from_secs(600);
const BACKFILL_FIRST_RETRY: Duration = Duration::from_secs(30);
const BACKFILL_MAX_RETRY: Duration = Duration::from_secs(1800);
/// Patterns per transaction in the background: small, so writers never wait long.
const BACKFILL_BATCH: usize = 100;

/// `nexusd serve`'s background task: once the schema is ready, and then whenever woken
/// ([`Search::wake_backfill`]) or every [`BACKFILL_INTERVAL`], embeds the patterns that have
/// no embedding — never replacing other models' embeddings (that is `nexusd embed --reembed`'s
/// job). Failures are logged and retried with backoff. With several replicas only the leader
/// (`db/leader.rs`) runs it; losing leadership stops the run between batches.
pub fn spawn_backfill(
    db: Database,
    search: Arc<Search>,
    cache: Arc<crate::skills::SkillCache>,
    mut readiness: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !search.backfill {
        return None;
    }
    let embedder = search.embedder.clone()?;
    Some(tokio::spawn(async move {
        tokio::select! {
            ready = readiness.wait_for(|r| matches!(r, Readiness::Ready(_))) => {
                if ready.is_err() {
                    return;
                }
            }
            () = shutdown.cancelled() => return,
        }
        let mut retry = BACKFILL_FIRST_RETRY;
        let mut last_refusal = None;
        let mut leader = db.leader().clone();
        loop {
            let lease = tokio::select! {
                lease = leader.wait_lease() => lease,
                () = shutdown.cancelled() => return,
            };
            let cancel = lease.guard(&shutdown);
            let wait = match run(
                db.pool(),
                &embedder,
                Scope::Missing,
                BACKFILL_BATCH,
                &cancel,
                // After each committed batch: this replica's cached answers may predate it and
                // the trigger may not have told anyone (`skills/cache.rs`).
                |p| {
                    if p.done > 0 {
                        cache.invalidate();
                    }
                },
            )
            .await
            {
                Ok(summary) => {
                    retry = BACKFILL_FIRST_RETRY;
                    last_refusal = None;
                    if summary.embedded > 0 {
                        tracing::info!(
                            embedded = summary.embedded,
                            model = %summary.model,
                            secs = summary.elapsed.as_secs_f64(),
                            "embedded patterns that had no embedding"
                        );
                    }
                    BACKFILL_INTERVAL
                }
                Err(JobError::MixedModels(why)) => {
                    if last_refusal.as_ref() != Some(&why) {
                        tracing::warn!("{why} Searches by meaning are refused until then.");
                        last_refusal = Some(why);
                    }
                    BACKFILL_INTERVAL
                }
                Err(e) => {
                    let wait = retry;
                    tracing::warn!(error = %e, retry_in = ?wait, "background embedding failed");
                    retry = (retry * 2).min(BACKFILL_MAX_RETRY);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = search.backfill_wanted() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }))
}

/// `nexusd embed [--reembed] [--batch-size N]` against `pool`: progress on stderr (rate and
/// time left on a terminal, a line per batch otherwise); returns the summary line to print.
pub async fn command(
    pool: &PgPool,
    embedder: &Embedder,
    reembed: bool,
    batch_size: usize,
) -> anyhow::Result<String> {
    let scope = if reembed {
        Scope::NotCurrent
    } else {
        Scope::Missing
    };
    let model = embedder.model_id();
    let cancel = CancellationToken::new();
    let mut display = Display::new(format!("embedding patterns with {model}"));
    let result = run(pool, embedder, scope, batch_size, &cancel, |p| {
        display.update(p.done, p.total)
    })
    .await;
    display.finish();
    let summary = result?;
    let mut line = format!(
        "embedded {} patterns with {} in {:.1} s",
        summary.embedded,
        summary.model,
        summary.elapsed.as_secs_f64()
    );
    if summary.changed > 0 {
        line.push_str(&format!(
            "; {} changed while being embedded (run again for them)",
            summary.changed
        ));
    }
    let mut conn = pool.acquire().await?;
    let (models, missing) = store::models(&mut conn).await?;
    let stored: Vec<String> = models.iter().map(|(m, n)| format!("{n} by {m}")).collect();
    line.push_str(&format!(
        "\nstored embeddings: {}; patterns without one: {missing}",
        if stored.is_empty() {
            "none".to_string()
        } else {
            stored.join(", ")
        }
    ));
    Ok(line)
}
