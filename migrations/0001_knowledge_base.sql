-- 0001: the Dev-Nexus knowledge-base schema (dev-nexus reference §4.2–4.3).
--
-- Every object is created only if it is missing, so this migration also adopts a database that
-- the original provisioning script (postgres_init.sh + migration 001 + "migration 004") already
-- built: an existing deployment switches to nexusd without losing a row.
--
-- Fixes over the original:
--   * UNIQUE (repo_id, name) on deployment_scripts and UNIQUE (repo_id, what) on
--     technical_decisions: the original upserted with ON CONFLICT on those columns, which fails
--     without a matching constraint, so every such write was lost.
--   * repositories.updated_at (and component_vectors.last_updated) are kept current by triggers;
--     the original set them at insert time only.
--   * Vector indexes are HNSW instead of ivfflat (see the patterns section).
--
-- The `vector` extension is created by nexusd's bootstrap before migrations run, possibly over a
-- separate superuser connection (NEXUSD_BOOTSTRAP_DATABASE_URL).

-- 1. repositories ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS repositories (
    id              SERIAL PRIMARY KEY,
    name            VARCHAR(255) NOT NULL UNIQUE,
    problem_domain  TEXT,
    last_analyzed   TIMESTAMPTZ DEFAULT NOW(),
    last_commit_sha VARCHAR(40),
    created_at      TIMESTAMPTZ DEFAULT NOW(),
    updated_at      TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_repositories_name ON repositories (name);
CREATE INDEX IF NOT EXISTS idx_repositories_last_analyzed ON repositories (last_analyzed);

-- 2. patterns ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS patterns (
    id          SERIAL PRIMARY KEY,
    repo_id     INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    name        VARCHAR(500) NOT NULL,
    description TEXT,
    context     TEXT,
    embedding   vector(1536),
    created_at  TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (repo_id, name)
);
CREATE INDEX IF NOT EXISTS idx_patterns_repo_id ON patterns (repo_id);
CREATE INDEX IF NOT EXISTS idx_patterns_name ON patterns (name);
CREATE INDEX IF NOT EXISTS idx_patterns_description_fts
    ON patterns USING gin (to_tsvector('english', description));
CREATE INDEX IF NOT EXISTS idx_patterns_context_fts
    ON patterns USING gin (to_tsvector('english', context));

-- Why HNSW on halfvec rather than the original's ivfflat (lists = 100):
--   * ivfflat computes its list centroids from the rows present when the index is built. The
--     original built it on an empty table, so every later vector landed in lists chosen from no
--     data and recall was poor until someone rebuilt the index by hand. HNSW needs no training
--     data: it stays accurate as rows arrive, at any table size.
--   * Indexing the embedding cast to halfvec (2 bytes per dimension) halves the index — 3 KB
--     instead of 6 KB per pattern — which matters on a 1 GB machine where the index should sit in
--     shared_buffers. Cosine ranking on half precision loses no meaningful recall for 1536-d
--     embeddings. Queries must use the same expression to use the index:
--       ORDER BY embedding::halfvec(1536) <=> $1::halfvec(1536)
--   * m = 16, ef_construction = 64 are pgvector's defaults, a good recall/build-time balance for
--     tens of thousands of patterns.
DROP INDEX IF EXISTS idx_patterns_embedding;
CREATE INDEX IF NOT EXISTS idx_patterns_embedding_hnsw
    ON patterns USING hnsw ((embedding::halfvec(1536)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64);

-- 3. technical_decisions ----------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS technical_decisions (
    id           SERIAL PRIMARY KEY,
    repo_id      INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    what         TEXT NOT NULL,
    why          TEXT,
    alternatives TEXT,
    created_at   TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_decisions_repo_id ON technical_decisions (repo_id);

-- 4. reusable_components: the base table, then the columns of the original "migration 004" ----
CREATE TABLE IF NOT EXISTS reusable_components (
    id         SERIAL PRIMARY KEY,
    repo_id    INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    name       VARCHAR(500) NOT NULL,
    purpose    TEXT,
    location   TEXT,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
ALTER TABLE reusable_components
    ADD COLUMN IF NOT EXISTS component_id          TEXT UNIQUE,
    ADD COLUMN IF NOT EXISTS component_type        VARCHAR(50) DEFAULT 'unknown',
    ADD COLUMN IF NOT EXISTS language              VARCHAR(50) DEFAULT 'unknown',
    ADD COLUMN IF NOT EXISTS api_signature         TEXT,
    ADD COLUMN IF NOT EXISTS imports               JSONB DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS keywords              JSONB DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS lines_of_code         INTEGER DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cyclomatic_complexity DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS public_methods        JSONB DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS first_seen            TIMESTAMP DEFAULT NOW(),
    ADD COLUMN IF NOT EXISTS derived_from          TEXT,
    ADD COLUMN IF NOT EXISTS sync_status           VARCHAR(50) DEFAULT 'unknown';
CREATE INDEX IF NOT EXISTS idx_components_repo_id ON reusable_components (repo_id);
CREATE INDEX IF NOT EXISTS idx_components_name ON reusable_components (name);
CREATE INDEX IF NOT EXISTS idx_reusable_components_component_id ON reusable_components (component_id);

-- 5. keywords -----------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS keywords (
    id      SERIAL PRIMARY KEY,
    keyword VARCHAR(200) NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS idx_keywords_keyword ON keywords (keyword);

-- 6. pattern_keywords ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS pattern_keywords (
    pattern_id INTEGER REFERENCES patterns (id) ON DELETE CASCADE,
    keyword_id INTEGER REFERENCES keywords (id) ON DELETE CASCADE,
    PRIMARY KEY (pattern_id, keyword_id)
);

-- 7. dependencies -------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS dependencies (
    id                 SERIAL PRIMARY KEY,
    repo_id            INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    dependency_name    VARCHAR(500) NOT NULL,
    dependency_version VARCHAR(100),
    dependency_type    VARCHAR(50),
    created_at         TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_dependencies_repo_id ON dependencies (repo_id);
CREATE INDEX IF NOT EXISTS idx_dependencies_name ON dependencies (dependency_name);

-- 8. repository_relationships -------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS repository_relationships (
    id                SERIAL PRIMARY KEY,
    source_repo_id    INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    target_repo_id    INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    relationship_type VARCHAR(50) NOT NULL,
    description       TEXT,
    created_at        TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (source_repo_id, target_repo_id, relationship_type)
);
CREATE INDEX IF NOT EXISTS idx_repo_relationships_source ON repository_relationships (source_repo_id);
CREATE INDEX IF NOT EXISTS idx_repo_relationships_target ON repository_relationships (target_repo_id);

-- 9. deployment_scripts -------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS deployment_scripts (
    id                    SERIAL PRIMARY KEY,
    repo_id               INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    name                  VARCHAR(500) NOT NULL,
    description           TEXT,
    commands              JSONB,
    environment_variables JSONB,
    created_at            TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_deployment_scripts_repo_id ON deployment_scripts (repo_id);

-- 10. lessons_learned ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS lessons_learned (
    id          SERIAL PRIMARY KEY,
    repo_id     INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    title       VARCHAR(500) NOT NULL,
    description TEXT,
    category    VARCHAR(100),
    impact      VARCHAR(50),
    date        TIMESTAMPTZ DEFAULT NOW(),
    created_at  TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_lessons_repo_id ON lessons_learned (repo_id);
CREATE INDEX IF NOT EXISTS idx_lessons_category ON lessons_learned (category);
CREATE INDEX IF NOT EXISTS idx_lessons_date ON lessons_learned (date);
CREATE INDEX IF NOT EXISTS idx_lessons_description_fts
    ON lessons_learned USING gin (to_tsvector('english', description));

-- 11. analysis_history --------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS analysis_history (
    id               SERIAL PRIMARY KEY,
    repo_id          INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    commit_sha       VARCHAR(40),
    analyzed_at      TIMESTAMPTZ DEFAULT NOW(),
    patterns_count   INTEGER DEFAULT 0,
    decisions_count  INTEGER DEFAULT 0,
    components_count INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_history_repo_id ON analysis_history (repo_id);
CREATE INDEX IF NOT EXISTS idx_history_analyzed_at ON analysis_history (analyzed_at);
CREATE INDEX IF NOT EXISTS idx_history_commit_sha ON analysis_history (commit_sha);

-- 12. test_frameworks ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS test_frameworks (
    id                  SERIAL PRIMARY KEY,
    repo_id             INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    framework_name      VARCHAR(200) NOT NULL,
    coverage_percentage NUMERIC(5, 2),
    created_at          TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_test_frameworks_repo_id ON test_frameworks (repo_id);

-- 13. security_patterns -------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS security_patterns (
    id                    SERIAL PRIMARY KEY,
    repo_id               INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    pattern_name          VARCHAR(500) NOT NULL,
    description           TEXT,
    authentication_method VARCHAR(200),
    compliance_standard   VARCHAR(200),
    created_at            TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_security_patterns_repo_id ON security_patterns (repo_id);

-- 14. runtime_issues (with the full-text indexes of the original's migration 001) ---------------
CREATE TABLE IF NOT EXISTS runtime_issues (
    id                SERIAL PRIMARY KEY,
    repo_id           INTEGER REFERENCES repositories (id) ON DELETE CASCADE,
    issue_id          VARCHAR(100) NOT NULL UNIQUE,
    detected_at       TIMESTAMPTZ NOT NULL,
    issue_type        VARCHAR(50) NOT NULL,
    severity          VARCHAR(20) NOT NULL,
    service_type      VARCHAR(50) NOT NULL,
    log_snippet       TEXT,
    root_cause        TEXT,
    suggested_fix     TEXT,
    pattern_reference VARCHAR(500),
    github_issue_url  VARCHAR(500),
    status            VARCHAR(50) DEFAULT 'open',
    metrics           JSONB,
    resolution_time   TIMESTAMPTZ,
    created_at        TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_runtime_issues_repo_id ON runtime_issues (repo_id);
CREATE INDEX IF NOT EXISTS idx_runtime_issues_detected_at ON runtime_issues (detected_at DESC);
CREATE INDEX IF NOT EXISTS idx_runtime_issues_issue_type ON runtime_issues (issue_type);
CREATE INDEX IF NOT EXISTS idx_runtime_issues_severity ON runtime_issues (severity);
CREATE INDEX IF NOT EXISTS idx_runtime_issues_repo_detected ON runtime_issues (repo_id, detected_at DESC);
CREATE INDEX IF NOT EXISTS idx_runtime_issues_log_fts
    ON runtime_issues USING gin (to_tsvector('english', COALESCE(log_snippet, '')));
CREATE INDEX IF NOT EXISTS idx_runtime_issues_root_cause_fts
    ON runtime_issues USING gin (to_tsvector('english', COALESCE(root_cause, '')));

-- 15. component_vectors (the original created it from the app through SQLAlchemy) ---------------
CREATE TABLE IF NOT EXISTS component_vectors (
    vector_id           VARCHAR(255) PRIMARY KEY,
    component_id        VARCHAR(255) UNIQUE,
    repository          VARCHAR(255),
    component_name      VARCHAR(255),
    vector              vector(300),
    embedding_dimension INTEGER,
    created_at          TIMESTAMP DEFAULT NOW(),
    last_updated        TIMESTAMP DEFAULT NOW()
);
-- Same reasoning as for patterns: the original ivfflat index was trained on an empty table.
-- 300 dimensions are small enough to index as full-precision vectors.
DROP INDEX IF EXISTS idx_component_vector_cosine;
CREATE INDEX IF NOT EXISTS idx_component_vectors_hnsw
    ON component_vectors USING hnsw (vector vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);

-- Unique keys the original's upserts assumed. A database built by the original can hold
-- duplicates only from hand-loaded data (its own upserts always failed); keep one row of each:
-- the newest deployment row (the one the original read back) and the first recorded decision.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'deployment_scripts_repo_id_name_key') THEN
        DELETE FROM deployment_scripts d
         USING deployment_scripts newer
         WHERE d.repo_id = newer.repo_id AND d.name = newer.name AND d.id < newer.id;
        ALTER TABLE deployment_scripts
            ADD CONSTRAINT deployment_scripts_repo_id_name_key UNIQUE (repo_id, name);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'technical_decisions_repo_id_what_key') THEN
        DELETE FROM technical_decisions d
         USING technical_decisions older
         WHERE d.repo_id = older.repo_id AND d.what = older.what AND d.id > older.id;
        ALTER TABLE technical_decisions
            ADD CONSTRAINT technical_decisions_repo_id_what_key UNIQUE (repo_id, what);
    END IF;
END
$$;

-- updated_at maintenance: bumped on every update that changes the row.
CREATE OR REPLACE FUNCTION nexusd_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := NOW();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION nexusd_touch_last_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_updated := NOW();
    RETURN NEW;
END
$$;

-- CREATE OR REPLACE TRIGGER needs PostgreSQL 14; nexusd supports 13.
DROP TRIGGER IF EXISTS repositories_touch_updated_at ON repositories;
CREATE TRIGGER repositories_touch_updated_at
    BEFORE UPDATE ON repositories
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION nexusd_touch_updated_at();

DROP TRIGGER IF EXISTS component_vectors_touch_last_updated ON component_vectors;
CREATE TRIGGER component_vectors_touch_last_updated
    BEFORE UPDATE ON component_vectors
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION nexusd_touch_last_updated();

-- §4.3: pattern pairs with cosine similarity above 0.8, for SQL users. (nexusd's own
-- similarity search goes through the HNSW index instead of this O(n²) self-join.)
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
   AND 1 - (p1.embedding <=> p2.embedding) > 0.8;
