-- 0006: async workflows, repository complexity and dependencies discovered from manifests
-- (docs/workflows.md).
--
-- workflow_jobs is the queue every nexusd replica drains: a worker claims a row with
-- FOR UPDATE SKIP LOCKED, so two replicas never claim the same job; `attempt` is the fencing
-- token (a worker whose job was taken over can no longer write it). A running job belongs to
-- its worker's dedicated session (`worker_pid`) and lease (`lease_until`, renewed by the
-- worker's heartbeat): when that session is gone or the lease has run out, the job is claimed
-- again. The queue is not part of the knowledge base's generation (migrations/0004): its rows
-- change every few seconds while a job runs and no cached answer reads them.

CREATE TABLE IF NOT EXISTS workflow_jobs (
    id                     UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    kind                   TEXT NOT NULL,
    input                  JSONB NOT NULL DEFAULT '{}',
    status                 TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'completed', 'partial_success', 'failed', 'cancelled')),
    repositories           TEXT[] NOT NULL DEFAULT '{}',
    repositories_completed INTEGER NOT NULL DEFAULT 0,
    progress_percent       INTEGER NOT NULL DEFAULT 0 CHECK (progress_percent BETWEEN 0 AND 100),
    current_step           TEXT,
    results                JSONB NOT NULL DEFAULT '[]',
    error                  TEXT,
    cancel_requested       BOOLEAN NOT NULL DEFAULT false,
    attempt                INTEGER NOT NULL DEFAULT 0,
    worker                 TEXT,
    worker_pid             INTEGER,
    lease_until            TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at             TIMESTAMPTZ,
    finished_at            TIMESTAMPTZ,
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- What a worker scans for: jobs not finished, oldest first.
CREATE INDEX IF NOT EXISTS idx_workflow_jobs_open
    ON workflow_jobs (created_at) WHERE status IN ('queued', 'running');

-- The complexity of a repository's source as last measured from its GitHub tree: one row per
-- repository, replaced by each analysis.
CREATE TABLE IF NOT EXISTS repository_complexity (
    repo_id     INTEGER PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    analyzed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    score       DOUBLE PRECISION NOT NULL,
    metrics     JSONB NOT NULL,
    files       JSONB NOT NULL DEFAULT '[]'
);

-- Packages a repository's manifests declare (Cargo.toml, package.json, requirements.txt, go.mod,
-- pyproject.toml), replaced per repository by each discovery.
CREATE TABLE IF NOT EXISTS manifest_dependencies (
    id            SERIAL PRIMARY KEY,
    repo_id       INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    manifest      TEXT NOT NULL,
    ecosystem     TEXT NOT NULL,
    name          TEXT NOT NULL,
    requirement   TEXT,
    scope         TEXT NOT NULL DEFAULT 'runtime',
    discovered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (repo_id, manifest, name, scope)
);
CREATE INDEX IF NOT EXISTS idx_manifest_dependencies_name ON manifest_dependencies (name);

-- Repository-to-repository dependencies: found in manifests (a package or module that is another
-- repository of the knowledge base) or stated by a person through update_dependency_verification.
CREATE TABLE IF NOT EXISTS dependency_edges (
    source_repo_id  INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    target_repo_id  INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    dependency_type TEXT NOT NULL,
    confidence      INTEGER NOT NULL CHECK (confidence BETWEEN 0 AND 100),
    verified        BOOLEAN NOT NULL DEFAULT false,
    evidence        TEXT,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source_repo_id, target_repo_id, dependency_type)
);

-- The new knowledge-base tables announce their writes like the others (migrations/0004).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['repository_complexity', 'manifest_dependencies', 'dependency_edges']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_kb_changed', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION nexusd_kb_changed()',
                       t || '_kb_changed', t);
    END LOOP;
END
$$;
