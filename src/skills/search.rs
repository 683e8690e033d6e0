//! Search by meaning: `find_similar_patterns` (nearest patterns to a pattern or a text) and the
//! hybrid search behind `query_patterns`' `query` — vector nearest neighbours on the HNSW index
//! fused with PostgreSQL full-text ranking by reciprocal rank fusion (RRF).
//!
//! Query vectors come from the configured embedder; they are compared only with stored vectors
//! of the same model, and a search is refused while the knowledge base holds vectors of another
//! model (`nexusd embed --reembed` rebuilds them).

use std::collections::HashMap;

use pgvector::Vector;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::embed::{Embedder, default_min_similarity, mixed_models_message, pattern_text};
use crate::kb::search::{self as store, Found};

/// RRF's damping constant: a document's fused score is Σ 1/(K + rank) over the lists it is in.
/// 60 is the value of the original paper (Cormack et al., 2009) and of most engines since.
const RRF_K: f64 = 60.0;
/// A word of a free-text query expected in more patterns than this is too common for the
/// full-text side to rank on (see [`store::FULL_TEXT_SQL`]); it bounds the rows `ts_rank` reads.
const MAX_TERM_ROWS: f64 = 500.0;
/// The most rows a query of only common words (then all required) may be expected to match.
const MAX_AND_ROWS: f64 = 2000.0;

/// `min_similarity`'s description; its default depends on the embedder (the agent card adds
/// this server's as `default`, see [`document_default`]).
const MIN_SIMILARITY_DESCRIPTION: &str = "Least cosine similarity to include. Default: 0.5 with \
    openai embeddings, 0.1 with the builtin embedder (whose scores for related texts are lower); \
    the answer's query.min_similarity is the one applied. An empty answer gives the best \
    similarity seen (best_similarity).";

pub fn find_similar_patterns() -> Skill {
    Skill {
        id: "find_similar_patterns",
        name: "Find Similar Patterns",
        description: "Find the patterns nearest in meaning to a recorded pattern (pattern_id) or to a text, by \
                      cosine similarity of their embeddings, across all repositories. A pattern is never \
                      listed as similar to itself.",
        tags: &["search", "patterns", "similarity", "embeddings"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "pattern_id": {"type": "integer", "description": "Id of a recorded pattern (as similar_patterns and record_analysis report them)", "minimum": 1, "maximum": 2147483647},
                "text": {"type": "string", "description": "A description of what to look for", "minLength": 1, "maxLength": 10000},
                "limit": {"type": "integer", "description": "Most patterns to return", "minimum": 1, "maximum": 100, "default": 10},
                "min_similarity": {"type": "number", "description": MIN_SIMILARITY_DESCRIPTION, "minimum": 0, "maximum": 1},
                "exclude_repository": repository_schema("Leave out this repository's patterns"),
            },
            "oneOf": [{"required": ["pattern_id"]}, {"required": ["text"]}],
        }),
        examples: vec![
            example(
                json!({"pattern_id": 42, "limit": 5, "exclude_repository": "acme/payments-api"}),
                "Patterns like pattern 42 in other repositories",
            ),
            example(
                json!({"text": "verify JWT bearer tokens in middleware", "min_similarity": 0.3}),
                "Patterns about token verification",
            ),
        ],
        aliases: &[],
        empty: json!({"similar_patterns": [], "count": 0}),
        uses_database: true,
        handler: handler(run_find_similar),
    }
}

#[derive(Deserialize)]
struct SimilarInput {
    pattern_id: Option<i32>,
    text: Option<String>,
    limit: Option<i64>,
    min_similarity: Option<f64>,
    exclude_repository: Option<String>,
}

/// What a similarity search compares with: the query vector, the model it must be compared
/// within, the transaction the search runs in, and the pattern asked about, if one was.
struct Query {
    vector: Vector,
    model: String,
    tx: Transaction<'static, Postgres>,
    source: Option<Value>,
}

/// The query vector of a pattern (its stored embedding, or its text embedded now) or of a
/// text. The transaction is opened only once any embedding is done, so no provider call
/// holds it.
async fn similarity_query(ctx: &SkillContext, q: &SimilarInput) -> Result<Query, SkillError> {
    let embedder = ctx.search.embedder.as_ref();
    match (q.pattern_id, &q.text) {
        (Some(id), _) => pattern_query(ctx, id).await,
        (None, Some(text)) => {
            let Some(e) = embedder else {
                return Err(SkillError::failed(
                    "Searching by text needs embeddings, which are off (NEXUSD_EMBEDDING_PROVIDER=none); \
                     query_patterns with 'query' searches by full text instead",
                ));
            };
            let vector = embed_query(e, text).await?;
            Ok(Query {
                vector,
                model: e.model_id(),
                tx: crate::db::begin(ctx.pool()).await?,
                source: None,
            })
        }
        (None, None) => Err(SkillError::Invalid(
            "Missing required parameter: one of 'pattern_id' or 'text'".into(),
        )),
    }
}

/// The query of pattern `id`: its stored embedding, or, when it has none yet (the backfill
/// will store one), its text embedded now without storing.
async fn pattern_query(ctx: &SkillContext, id: i32) -> Result<Query, SkillError> {
    let mut tx = crate::db::begin(ctx.pool()).await?;
    let Some(p) = store::pattern(&mut tx, id).await? else {
        return Err(SkillError::failed(format!("Pattern {id} not found")));
    };
    let source = Some(json!({"pattern_id": p.id, "pattern": p.name, "repository": p.repository}));
    let (vector, model, tx) = match (p.embedding, p.embedding_model, ctx.search.embedder.as_ref()) {
        (Some(v), Some(m), _) => (v, m, tx),
        (_, _, Some(e)) => {
            tx.rollback().await?;
            let text = pattern_text(&p.name, p.description.as_deref(), p.context.as_deref());
            let v = embed_query(e, &text).await?;
            (v, e.model_id(), crate::db::begin(ctx.pool()).await?)
        }
        _ => {
            return Err(SkillError::failed(format!(
                "Pattern {id} has no embedding, and embeddings are off (NEXUSD_EMBEDDING_PROVIDER=none)"
            )));
        }
    };
    Ok(Query {
        vector,
        model,
        tx,
        source,
    })
}

async fn run_find_similar(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: SimilarInput = parse(input)?;
    let limit = q.limit.unwrap_or(10);
    let Query {
        vector,
        model,
        mut tx,
        source,
    } = similarity_query(&ctx, &q).await?;
    let min_similarity = q
        .min_similarity
        .unwrap_or_else(|| default_min_similarity(&model));

    ensure_one_model(&mut tx, &model).await?;
    // One more than asked for: the pattern itself comes back first and is dropped.
    let fetch = limit + i64::from(q.pattern_id.is_some());
    store::set_search_width(
        &mut tx,
        ctx.search.ef_search.max(fetch as u32),
        q.exclude_repository.is_some(),
    )
    .await?;
    // The threshold is applied here rather than in SQL, so an empty answer can say how near
    // the nearest pattern came.
    let mut found = store::nearest(
        &mut tx,
        &vector,
        fetch,
        q.exclude_repository.as_deref(),
        -1.0,
    )
    .await?;
    tx.commit().await?;
    if let Some(id) = q.pattern_id {
        found.retain(|f| f.pattern_id != id);
    }
    let nearest = found.first().map(|f| (f.similarity, f.pattern.clone()));
    found.retain(|f| f.similarity.is_some_and(|s| s >= min_similarity));
    found.truncate(limit as usize);

    let similar: Vec<Value> = found.into_iter().map(similar_json).collect();
    let count = similar.len();
    let mut out = output(json!({
        "similar_patterns": similar,
        "count": count,
        "query": echo(q, limit, min_similarity),
        "embedding_model": model,
    }));
    if let Some(source) = source {
        out.insert("source_pattern".into(), source);
    }
    if count == 0 {
        let best = nearest.as_ref().and_then(|(s, _)| *s).map(round);
        out.insert("best_similarity".into(), json!(best));
        out.insert(
            "message".into(),
            json!(empty_message(nearest, min_similarity)),
        );
    }
    Ok(out)
}

/// Why a similarity search found nothing: how near the nearest pattern came, or that there is
/// nothing to compare with.
fn empty_message(nearest: Option<(Option<f64>, String)>, min_similarity: f64) -> String {
    match nearest {
        Some((Some(best), pattern)) => format!(
            "No pattern reached min_similarity {min_similarity}; the nearest, {pattern:?}, scored {}: \
             lower min_similarity to see it",
            round(best)
        ),
        _ => {
            "No other pattern has an embedding to compare with (nexusd embed computes missing ones)"
                .to_string()
        }
    }
}

/// The agent card's entry of `find_similar_patterns` with this server's default `min_similarity`
/// (it depends on the configured embedder).
pub fn document_default(entries: &mut [Value], embedder: Option<&Embedder>) {
    let Some(embedder) = embedder else {
        return;
    };
    let default = default_min_similarity(&embedder.model_id());
    for entry in entries.iter_mut() {
        if entry["id"] == "find_similar_patterns"
            && let Some(property) = entry
                .pointer_mut("/input_schema/properties/min_similarity")
                .and_then(Value::as_object_mut)
        {
            property.insert("default".into(), json!(default));
        }
    }
}

fn similar_json(f: Found) -> Value {
    json!({
        "pattern_id": f.pattern_id,
        "pattern": f.pattern,
        "repository": f.repository,
        "description": f.description,
        "similarity": f.similarity.map(round),
    })
}

/// The query as answered: the fields given, with the defaults applied.
fn echo(q: SimilarInput, limit: i64, min_similarity: f64) -> Map<String, Value> {
    let mut echo = Map::new();
    if let Some(id) = q.pattern_id {
        echo.insert("pattern_id".into(), json!(id));
    }
    if let Some(text) = q.text {
        echo.insert("text".into(), json!(text));
    }
    echo.insert("limit".into(), json!(limit));
    echo.insert("min_similarity".into(), json!(min_similarity));
    if let Some(r) = q.exclude_repository {
        echo.insert("exclude_repository".into(), json!(r));
    }
    echo
}

/// The result of a hybrid search.
pub struct Hybrid {
    /// `hybrid`, or `full_text` when embeddings are off.
    pub mode: &'static str,
    pub results: Vec<Value>,
}

/// `query_patterns`' `query`: the `limit` best patterns for `text` — nearest by embedding and
/// best by full-text rank, fused by RRF — as `{pattern_id, pattern, repository, description,
/// similarity, rank, score, matched_by}`.
pub async fn hybrid(ctx: &SkillContext, text: &str, limit: usize) -> Result<Hybrid, SkillError> {
    let embedder = ctx.search.embedder.as_ref();
    // Each list brings more candidates than shown, so that RRF can promote one both agree on.
    let candidates = (limit * 3).clamp(30, 200);
    let vector = match embedder {
        Some(e) => Some(embed_query(e, text).await?),
        None => None,
    };

    // The two sides run at once when a second connection is idle, so that the search takes as
    // long as the slower side; otherwise one after the other on one connection. Never waiting
    // for a second connection while holding one keeps concurrent searches from starving the pool.
    let model = embedder.map(Embedder::model_id);
    let (vector, model) = (vector.as_ref(), model.as_deref());
    let mut first = ctx.pool().acquire().await?;
    let (nearest, matching) = match ctx.pool().try_acquire() {
        Some(mut second) => {
            // Both run to the end: try_join! would drop the vector side halfway when the text
            // side fails, and a transaction cut off in its BEGIN stays open on its pooled
            // connection (src/db/mod.rs).
            let (nearest, matching) = tokio::join!(
                nearest_side(ctx, &mut first, vector, model, candidates),
                full_text_side(ctx, &mut second, text, vector, candidates),
            );
            (nearest?, matching?)
        }
        None => (
            nearest_side(ctx, &mut first, vector, model, candidates).await?,
            full_text_side(ctx, &mut first, text, vector, candidates).await?,
        ),
    };

    let vector_ids: Vec<i32> = nearest.iter().map(|f| f.pattern_id).collect();
    let text_ids: Vec<i32> = matching.iter().map(|f| f.pattern_id).collect();
    let fused = rrf(&[&vector_ids, &text_ids], RRF_K, limit);
    let mut found: HashMap<i32, Found> = matching
        .into_iter()
        .chain(nearest)
        .map(|f| (f.pattern_id, f))
        .collect();
    let results = fused
        .into_iter()
        .enumerate()
        .filter_map(|(i, (id, score))| {
            let f = found.remove(&id)?;
            let mut matched_by = Vec::new();
            if vector_ids.contains(&id) {
                matched_by.push("vector");
            }
            if text_ids.contains(&id) {
                matched_by.push("full_text");
            }
            Some(json!({
                "pattern_id": f.pattern_id,
                "pattern": f.pattern,
                "repository": f.repository,
                "description": f.description,
                "similarity": f.similarity.map(round),
                "rank": i + 1,
                "score": (score * 1e6).round() / 1e6,
                "matched_by": matched_by,
            }))
        })
        .collect();
    Ok(Hybrid {
        mode: if embedder.is_some() {
            "hybrid"
        } else {
            "full_text"
        },
        results,
    })
}

/// The hybrid search's vector side: the `candidates` nearest patterns to `vector` (none without
/// one), in a transaction that sets the search width.
async fn nearest_side(
    ctx: &SkillContext,
    conn: &mut PgConnection,
    vector: Option<&Vector>,
    model: Option<&str>,
    candidates: usize,
) -> Result<Vec<Found>, SkillError> {
    let (Some(vector), Some(model)) = (vector, model) else {
        return Ok(Vec::new());
    };
    // Never cut off halfway: the skill's task is not cancelled, and the caller joins both sides.
    #[allow(clippy::disallowed_methods)]
    let mut tx = conn.begin().await?;
    ensure_one_model(&mut tx, model).await?;
    let width = ctx.search.ef_search.max(candidates as u32);
    store::set_search_width(&mut tx, width, false).await?;
    let nearest = store::nearest(&mut tx, vector, candidates as i64, None, -1.0).await?;
    tx.commit().await?;
    Ok(nearest)
}

/// The hybrid search's full-text side: the `candidates` best-ranked patterns for `text`.
async fn full_text_side(
    ctx: &SkillContext,
    conn: &mut PgConnection,
    text: &str,
    vector: Option<&Vector>,
    candidates: usize,
) -> Result<Vec<Found>, SkillError> {
    let search = &ctx.search;
    let frequent = match search.frequent_lexemes() {
        Some(f) => f,
        None => {
            search.remember_frequent_lexemes(store::frequent_lexemes(conn, MAX_TERM_ROWS).await?)
        }
    };
    Ok(store::full_text(
        conn,
        text,
        candidates as i64,
        vector,
        &frequent,
        MAX_AND_ROWS,
    )
    .await?)
}

/// Embeds a query; a provider failure is the skill's failure, with the provider's words.
async fn embed_query(embedder: &Embedder, text: &str) -> Result<Vector, SkillError> {
    embedder
        .embed_one(text)
        .await
        .map(Vector::from)
        .map_err(|e| SkillError::failed(format!("Cannot embed the query: {e}")))
}

/// Refuses when stored embeddings come from another model than `model`.
async fn ensure_one_model(conn: &mut PgConnection, model: &str) -> Result<(), SkillError> {
    let others = store::other_models(conn, model).await?;
    if others.is_empty() {
        Ok(())
    } else {
        Err(SkillError::failed(mixed_models_message(model, &others)))
    }
}

fn round(similarity: f64) -> f64 {
    (similarity * 1e4).round() / 1e4
}

/// Reciprocal rank fusion of ranked id lists (best first): each id scores Σ 1/(k + rank) over
/// the lists holding it (rank from 1). Returns the best `limit` with their scores, best first;
/// ties go to the id ranked higher in any list, then the smaller id.
fn rrf(lists: &[&[i32]], k: f64, limit: usize) -> Vec<(i32, f64)> {
    let mut scores: HashMap<i32, (f64, usize)> = HashMap::new();
    for list in lists {
        for (i, id) in list.iter().enumerate() {
            let entry = scores.entry(*id).or_insert((0.0, usize::MAX));
            entry.0 += 1.0 / (k + (i + 1) as f64);
            entry.1 = entry.1.min(i);
        }
    }
    let mut fused: Vec<(i32, f64, usize)> = scores
        .into_iter()
        .map(|(id, (score, best))| (id, score, best))
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    fused.truncate(limit);
    fused
        .into_iter()
        .map(|(id, score, _)| (id, score))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_rewards_agreement_between_lists() {
        // 3 is second in both lists; 1 and 5 top one list each but miss the other.
        let fused = rrf(&[&[1, 3, 4], &[5, 3, 6]], RRF_K, 10);
        let ids: Vec<i32> = fused.iter().map(|f| f.0).collect();
        assert_eq!(ids, [3, 1, 5, 4, 6]);
        assert!((fused[0].1 - 2.0 / 62.0).abs() < 1e-12);
        assert!((fused[1].1 - 1.0 / 61.0).abs() < 1e-12);
    }

    #[test]
    fn rrf_with_one_list_keeps_its_order_and_limit() {
        let fused = rrf(&[&[9, 2, 7], &[]], RRF_K, 2);
        assert_eq!(fused.iter().map(|f| f.0).collect::<Vec<_>>(), [9, 2]);
        assert!(rrf(&[&[], &[]], RRF_K, 5).is_empty());
    }
}
