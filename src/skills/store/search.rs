//! `patterns.embedding`, `patterns.embedding_model` and `patterns.search_tsv`: nearest neighbours
//! on the HNSW index, full-text matches, which models made the stored vectors, and the batches of
//! the embedding job.
//!
//! Vector queries order by `embedding::halfvec(1536) <=> $1::halfvec(1536)` — the expression the
//! index `idx_patterns_embedding_hnsw` is built on, so PostgreSQL walks the index instead of
//! computing every distance. They run in a transaction that first sets `hnsw.ef_search` (and
//! `hnsw.iterative_scan` when a filter could starve the candidate list) for that transaction only.

use pgvector::Vector;
use sqlx::PgConnection;

/// A pattern found by a search.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Found {
    pub pattern_id: i32,
    pub pattern: String,
    pub repository: Option<String>,
    pub description: Option<String>,
    /// Cosine similarity to the query vector (none without a query vector or embedding).
    pub similarity: Option<f64>,
}

/// The nearest patterns to `$1` by cosine distance, at most `$2`, optionally leaving out the
/// patterns of repository `$3`, keeping those with similarity ≥ `$4`; nearest first.
///
/// The inner query is what the HNSW index answers (ORDER BY the indexed expression, LIMIT). It
/// is a MATERIALIZED CTE so that the joins and the similarity filter run on its few rows
/// afterwards — a filter on the distance inside it would defeat the index — and so that the
/// outer ORDER BY restores exact order after a relaxed iterative scan.
pub const NEAREST_SQL: &str = "
WITH nearest AS MATERIALIZED (
    SELECT id, embedding::halfvec(1536) <=> $1::halfvec(1536) AS distance
      FROM patterns
     WHERE embedding IS NOT NULL
       AND ($3::text IS NULL
            OR repo_id IS DISTINCT FROM (SELECT id FROM repositories WHERE name = $3))
     ORDER BY embedding::halfvec(1536) <=> $1::halfvec(1536)
     LIMIT $2)
SELECT n.id AS pattern_id, p.name::text AS pattern, r.name::text AS repository, p.description,
       (1 - n.distance)::float8 AS similarity
  FROM nearest n
  JOIN patterns p ON p.id = n.id
  LEFT JOIN repositories r ON r.id = p.repo_id
 WHERE 1 - n.distance >= $4
 ORDER BY n.distance, n.id";

/// Patterns matching the full-text query `$1` (`to_tsquery` syntax), best `ts_rank` first, at
/// most `$2`; with the cosine similarity to `$3` when given.
pub const FULL_TEXT_SQL: &str = "
WITH matches AS MATERIALIZED (
    SELECT p.id, ts_rank(p.search_tsv, q) AS score
      FROM patterns p, to_tsquery('english', $1) q
     WHERE p.search_tsv @@ q
     ORDER BY score DESC, p.id
     LIMIT $2)
SELECT m.id AS pattern_id, p.name::text AS pattern, r.name::text AS repository, p.description,
       CASE WHEN $3::vector IS NULL OR p.embedding IS NULL THEN NULL
            ELSE (1 - (p.embedding::halfvec(1536) <=> $3::halfvec(1536)))::float8 END AS similarity
  FROM matches m
  JOIN patterns p ON p.id = m.id
  LEFT JOIN repositories r ON r.id = p.repo_id
 ORDER BY m.score DESC, m.id";

/// Sets the HNSW search width for the current transaction; `filtered` also turns on relaxed
/// iterative scans, so a filter that rejects candidates makes the index look further instead of
/// returning fewer rows.
pub async fn set_search_width(
    conn: &mut PgConnection,
    ef_search: u32,
    filtered: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('hnsw.ef_search', $1, true),
                set_config('hnsw.iterative_scan', $2, true)",
    )
    .bind(ef_search.to_string())
    .bind(if filtered { "relaxed_order" } else { "off" })
    .execute(conn)
    .await
    .map(|_| ())
}

/// See [`NEAREST_SQL`]. Call [`set_search_width`] first in the same transaction.
pub async fn nearest(
    conn: &mut PgConnection,
    query: &Vector,
    limit: i64,
    exclude_repository: Option<&str>,
    min_similarity: f64,
) -> Result<Vec<Found>, sqlx::Error> {
    sqlx::query_as(NEAREST_SQL)
        .bind(query)
        .bind(limit)
        .bind(exclude_repository)
        .bind(min_similarity)
        .fetch_all(conn)
        .await
}

/// See [`FULL_TEXT_SQL`].
pub async fn full_text(
    conn: &mut PgConnection,
    tsquery: &str,
    limit: i64,
    query: Option<&Vector>,
) -> Result<Vec<Found>, sqlx::Error> {
    sqlx::query_as(FULL_TEXT_SQL)
        .bind(tsquery)
        .bind(limit)
        .bind(query)
        .fetch_all(conn)
        .await
}

/// Models that made stored embeddings, other than `model`, with how many each; most first.
/// Two range probes of `idx_patterns_embedding_model` when there are none, so every search can
/// afford to ask.
pub async fn other_models(
    conn: &mut PgConnection,
    model: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT embedding_model, count(*) FROM patterns
          WHERE embedding_model < $1 OR embedding_model > $1
          GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .bind(model)
    .fetch_all(conn)
    .await
}

/// Every model that made stored embeddings, with counts (most first), and the number of
/// patterns without one.
pub async fn models(conn: &mut PgConnection) -> Result<(Vec<(String, i64)>, i64), sqlx::Error> {
    let models = sqlx::query_as(
        "SELECT embedding_model, count(*) FROM patterns WHERE embedding_model IS NOT NULL
          GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let missing = sqlx::query_scalar("SELECT count(*) FROM patterns WHERE embedding IS NULL")
        .fetch_one(conn)
        .await?;
    Ok((models, missing))
}

/// A pattern with its stored vector.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredPattern {
    pub id: i32,
    pub name: String,
    pub repository: Option<String>,
    pub description: Option<String>,
    pub context: Option<String>,
    pub embedding: Option<Vector>,
    pub embedding_model: Option<String>,
}

pub async fn pattern(
    conn: &mut PgConnection,
    id: i32,
) -> Result<Option<StoredPattern>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.name::text AS name, r.name::text AS repository, p.description, p.context,
                p.embedding, p.embedding_model
           FROM patterns p LEFT JOIN repositories r ON r.id = p.repo_id
          WHERE p.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A pattern's text as stored, and the model of its embedding if it has one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PatternText {
    pub id: i32,
    pub name: String,
    pub description: Option<String>,
    pub context: Option<String>,
    pub embedding_model: Option<String>,
}

/// The stored patterns of `repository` named in `names`.
pub async fn texts_by_name(
    conn: &mut PgConnection,
    repository: &str,
    names: &[String],
) -> Result<Vec<PatternText>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.name::text AS name, p.description, p.context, p.embedding_model
           FROM patterns p JOIN repositories r ON r.id = p.repo_id
          WHERE r.name = $1 AND p.name = ANY($2)",
    )
    .bind(repository)
    .bind(names)
    .fetch_all(conn)
    .await
}

/// Up to `limit` patterns with id above `after`, in id order, that need an embedding from
/// `model`: those without one, or with `redo_others` also those made by another model.
pub async fn pending(
    conn: &mut PgConnection,
    model: &str,
    redo_others: bool,
    after: i32,
    limit: i64,
) -> Result<Vec<PatternText>, sqlx::Error> {
    let query = if redo_others {
        sqlx::query_as(
            "SELECT id, name::text AS name, description, context, embedding_model FROM patterns
              WHERE id > $1 AND embedding_model IS DISTINCT FROM $3 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .bind(model)
    } else {
        // Served by the partial index idx_patterns_embedding_missing.
        sqlx::query_as(
            "SELECT id, name::text AS name, description, context, embedding_model FROM patterns
              WHERE id > $1 AND embedding IS NULL ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
    };
    query.fetch_all(conn).await
}

/// How many patterns [`pending`] would go through.
pub async fn count_pending(
    conn: &mut PgConnection,
    model: &str,
    redo_others: bool,
) -> Result<i64, sqlx::Error> {
    let query = if redo_others {
        sqlx::query_scalar(
            "SELECT count(*) FROM patterns WHERE embedding_model IS DISTINCT FROM $1",
        )
        .bind(model)
    } else {
        sqlx::query_scalar("SELECT count(*) FROM patterns WHERE embedding IS NULL")
    };
    query.fetch_one(conn).await
}

/// Stores `vectors[i]` as the embedding of `texts[i]` made by `model` — only where the pattern
/// still has exactly that text, so a pattern edited since it was read keeps no stale vector
/// (it stays without one, and is picked up again). Returns how many were stored.
pub async fn set_embeddings(
    conn: &mut PgConnection,
    model: &str,
    texts: &[PatternText],
    vectors: Vec<Vector>,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<i32> = texts.iter().map(|t| t.id).collect();
    let names: Vec<&str> = texts.iter().map(|t| t.name.as_str()).collect();
    let descriptions: Vec<Option<&str>> = texts.iter().map(|t| t.description.as_deref()).collect();
    let contexts: Vec<Option<&str>> = texts.iter().map(|t| t.context.as_deref()).collect();
    let done = sqlx::query(
        "UPDATE patterns p SET embedding = u.embedding, embedding_model = $6
           FROM unnest($1::int[], $2::vector[], $3::text[], $4::text[], $5::text[])
                AS u(id, embedding, name, description, context)
          WHERE p.id = u.id AND p.name = u.name
            AND p.description IS NOT DISTINCT FROM u.description
            AND p.context IS NOT DISTINCT FROM u.context",
    )
    .bind(&ids)
    .bind(&vectors)
    .bind(&names)
    .bind(&descriptions)
    .bind(&contexts)
    .bind(model)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
