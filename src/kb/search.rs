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

/// Lexemes of `patterns.search_tsv` that PostgreSQL's statistics say many patterns contain,
/// with the fraction that do.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FrequentLexemes {
    pub lexemes: Vec<String>,
    pub fractions: Vec<f32>,
    /// Patterns in the table (estimated).
    pub patterns: f64,
}

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

/// Patterns whose words match the free text `$1`, best `ts_rank` first, at most `$2`; with the
/// cosine similarity to `$3` when given.
///
/// `ts_rank` must be computed for every matching row before the best can be kept, so the cost
/// of a full-text search is the number of rows its terms match. Words that many patterns
/// contain — `$4`, with the fraction `$5` of the `$6` patterns that do — match too much to rank
/// on and say little (they are what IDF weighs down): the query is the OR of the text's other
/// words. If it has no other word, it is the AND of its words, unless even that is expected to
/// match more than `$7` rows; then the full-text side finds nothing and the vector side answers.
pub const FULL_TEXT_SQL: &str = r#"
WITH terms AS (
    SELECT t.lexeme, f.fraction
      FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS t(lexeme)
      LEFT JOIN unnest($4::text[], $5::real[]) AS f(lexeme, fraction) USING (lexeme)
     LIMIT 16),
quoted AS (
    -- A lexeme as a tsquery operand: quoted, quotes and backslashes doubled.
    SELECT '''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''' AS term, fraction
      FROM terms),
query AS (
    SELECT coalesce(
               (SELECT string_agg(term, ' | ') FROM quoted WHERE fraction IS NULL),
               (SELECT string_agg(term, ' & ') FROM quoted HAVING $6 * exp(sum(ln(fraction))) <= $7)
           )::tsquery AS q),
matches AS MATERIALIZED (
    SELECT p.id, ts_rank(p.search_tsv, query.q) AS score
      FROM patterns p, query
     WHERE p.search_tsv @@ query.q
     ORDER BY score DESC, p.id
     LIMIT $2)
SELECT m.id AS pattern_id, p.name::text AS pattern, r.name::text AS repository, p.description,
       CASE WHEN $3::vector IS NULL OR p.embedding IS NULL THEN NULL
            ELSE (1 - (p.embedding::halfvec(1536) <=> $3::halfvec(1536)))::float8 END AS similarity
  FROM matches m
  JOIN patterns p ON p.id = m.id
  LEFT JOIN repositories r ON r.id = p.repo_id
 ORDER BY m.score DESC, m.id"#;

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

/// See [`FULL_TEXT_SQL`]: `frequent` are the words too common to rank on, `max_rows` the most
/// rows an AND of only such words may be expected to match.
pub async fn full_text(
    conn: &mut PgConnection,
    text: &str,
    limit: i64,
    query: Option<&Vector>,
    frequent: &FrequentLexemes,
    max_rows: f64,
) -> Result<Vec<Found>, sqlx::Error> {
    sqlx::query_as(FULL_TEXT_SQL)
        .bind(text)
        .bind(limit)
        .bind(query)
        .bind(&frequent.lexemes)
        .bind(&frequent.fractions)
        .bind(frequent.patterns)
        .bind(max_rows)
        .fetch_all(conn)
        .await
}

/// The lexemes of `patterns.search_tsv` that PostgreSQL's statistics (the most common elements
/// ANALYZE found) say at least `min_rows` patterns contain, with the fraction that do, and the
/// estimated number of patterns. Empty before the table was first analysed.
pub async fn frequent_lexemes(
    conn: &mut PgConnection,
    min_rows: f64,
) -> Result<FrequentLexemes, sqlx::Error> {
    let (patterns, lexemes, fractions): (f64, Vec<String>, Vec<f32>) = sqlx::query_as(
        "SELECT greatest(c.reltuples, 0)::float8,
                coalesce(s.most_common_elems::text::text[], '{}'),
                coalesce(s.most_common_elem_freqs, '{}')
           FROM pg_class c
           LEFT JOIN pg_stats s
                  ON s.schemaname = current_schema() AND s.tablename = 'patterns' AND s.attname = 'search_tsv'
          WHERE c.oid = 'patterns'::regclass",
    )
    .fetch_one(conn)
    .await?;
    // The fractions end with three summary values, which no lexeme pairs with.
    let (lexemes, fractions) = lexemes
        .into_iter()
        .zip(fractions)
        .filter(|(_, f)| f64::from(*f) * patterns >= min_rows)
        .unzip();
    Ok(FrequentLexemes {
        lexemes,
        fractions,
        patterns,
    })
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
    vectors: &[Vector],
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
    .bind(vectors)
    .bind(&names)
    .bind(&descriptions)
    .bind(&contexts)
    .bind(model)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
