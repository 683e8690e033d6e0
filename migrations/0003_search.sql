-- 0003: search — which model made each pattern embedding, and full-text search over patterns.
--
-- Vectors from different embedding models live in unrelated spaces: a query embedded by one
-- cannot be compared with rows embedded by another. nexusd therefore records the model of every
-- stored embedding and refuses searches that would mix them (`nexusd embed --reembed` rebuilds).

-- 1. The model of each embedding: `provider:model`, e.g. `builtin:hash-ngrams-v1` or
--    `openai:text-embedding-3-small`. NULL exactly when the embedding is NULL.
ALTER TABLE patterns ADD COLUMN IF NOT EXISTS embedding_model TEXT;

-- Embeddings stored before this migration can only come from the original system, whose one
-- embedder was OpenAI's text-embedding-3-small (dev-nexus reference §6).
UPDATE patterns SET embedding_model = 'openai:text-embedding-3-small'
 WHERE embedding IS NOT NULL AND embedding_model IS NULL;

-- Keeps embeddings honest for every writer, SQL users included:
--   * new text (name, description or context) without a new embedding drops the old embedding,
--     which described the old text (nexusd then embeds the new one);
--   * no embedding, no model; an embedding written without a model is marked 'unknown' — never
--     compared with anything until `nexusd embed --reembed` replaces it.
CREATE OR REPLACE FUNCTION nexusd_patterns_embedding_model() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.name, NEW.description, NEW.context) IS DISTINCT FROM (OLD.name, OLD.description, OLD.context)
       AND NEW.embedding IS NOT DISTINCT FROM OLD.embedding THEN
        NEW.embedding := NULL;
    END IF;
    IF NEW.embedding IS NULL THEN
        NEW.embedding_model := NULL;
    ELSIF NEW.embedding_model IS NULL THEN
        NEW.embedding_model := 'unknown';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS patterns_embedding_model ON patterns;
CREATE TRIGGER patterns_embedding_model
    BEFORE INSERT OR UPDATE OF name, description, context, embedding, embedding_model ON patterns
    FOR EACH ROW EXECUTE FUNCTION nexusd_patterns_embedding_model();

-- Every search asks "are there embeddings from another model?": two range probes here.
CREATE INDEX IF NOT EXISTS idx_patterns_embedding_model ON patterns (embedding_model);
-- The embedding job and the background backfill walk the patterns still without one.
CREATE INDEX IF NOT EXISTS idx_patterns_embedding_missing ON patterns (id) WHERE embedding IS NULL;

-- 2. Full-text search over name (weight A), description (B) and context (C), kept by
--    PostgreSQL itself. (The reference's expression indexes on description and context stay for
--    SQL users; nexusd ranks with this column.)
ALTER TABLE patterns ADD COLUMN IF NOT EXISTS search_tsv tsvector
    GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(name, '')), 'A')
        || setweight(to_tsvector('english', coalesce(description, '')), 'B')
        || setweight(to_tsvector('english', coalesce(context, '')), 'C')
    ) STORED;
CREATE INDEX IF NOT EXISTS idx_patterns_search_tsv ON patterns USING gin (search_tsv);

-- 3. pattern_similarity_view compares only vectors of the same model (same columns as before).
CREATE OR REPLACE VIEW pattern_similarity_view AS
SELECT p1.id      AS pattern1_id,
       p1.name    AS pattern1_name,
       p1.repo_id AS repo1_id,
       p2.id      AS pattern2_id,
       p2.name    AS pattern2_name,
       p2.repo_id AS repo2_id,
       1 - (p1.embedding <=> p2.embedding) AS similarity_score
  FROM patterns p1
  JOIN patterns p2 ON p1.id < p2.id
 WHERE p1.embedding IS NOT NULL
   AND p2.embedding IS NOT NULL
   AND p1.embedding_model = p2.embedding_model
   AND 1 - (p1.embedding <=> p2.embedding) > 0.8;
