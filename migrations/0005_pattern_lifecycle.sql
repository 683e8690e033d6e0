-- 0005: the pattern lifecycle — a status on every pattern and its history, written by the
-- database itself in the transaction of every change (docs/skills-api.md, "Pattern lifecycle").
--
-- * `patterns.status` is active, deprecated or archived; deprecation keeps its reason, the
--   replacement and the migration notes; `updated_at` says when the row last changed.
-- * `pattern_history` gets one row per inserted, updated or deleted pattern row, from a trigger:
--   every writer is caught — the lifecycle skills, record_analysis, import-json, SQL typed in
--   psql — and the row is written in the writer's transaction, so a change and its history
--   commit or roll back together. History rows have no foreign key: they outlive the pattern.
-- * Who and why: a writer may say so in transaction-local settings (`nexusd.actor`,
--   `nexusd.change_summary`, `nexusd.change_extra` — a JSON object of extra before/after
--   fields, such as keywords, which live in another table); without them the history records
--   the session's application_name or role.
-- * An update that changes nothing a reader sees (the embedding job writing embeddings, an
--   upsert writing the same values) is not a change and leaves no history.
-- * `txid` groups the rows of one transaction: renaming a cross-repository pattern is one
--   version, however many repositories hold it.

ALTER TABLE patterns
    ADD COLUMN IF NOT EXISTS status              VARCHAR(20) NOT NULL DEFAULT 'active',
    ADD COLUMN IF NOT EXISTS deprecation_reason  TEXT,
    ADD COLUMN IF NOT EXISTS replacement_pattern VARCHAR(500),
    ADD COLUMN IF NOT EXISTS migration_notes     JSONB,
    ADD COLUMN IF NOT EXISTS updated_at          TIMESTAMPTZ DEFAULT NOW();

UPDATE patterns SET updated_at = created_at WHERE updated_at IS DISTINCT FROM created_at;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'patterns_status_check') THEN
        ALTER TABLE patterns ADD CONSTRAINT patterns_status_check
            CHECK (status IN ('active', 'deprecated', 'archived'));
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS idx_patterns_status ON patterns (status);

CREATE TABLE IF NOT EXISTS pattern_history (
    id             BIGSERIAL PRIMARY KEY,
    pattern_id     INTEGER NOT NULL,
    repository     VARCHAR(255),
    pattern_name   VARCHAR(500) NOT NULL,
    operation      VARCHAR(20) NOT NULL,
    changed_by     TEXT NOT NULL,
    change_summary TEXT,
    changed_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    txid           BIGINT NOT NULL DEFAULT txid_current(),
    before         JSONB,
    after          JSONB
);
CREATE INDEX IF NOT EXISTS idx_pattern_history_name ON pattern_history (pattern_name);
CREATE INDEX IF NOT EXISTS idx_pattern_history_pattern ON pattern_history (pattern_id, id);

-- What a reader of a pattern sees (no embedding, no search vector).
CREATE OR REPLACE FUNCTION nexusd_pattern_snapshot(p patterns) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'repository', (SELECT r.name FROM repositories r WHERE r.id = p.repo_id),
        'name', p.name,
        'description', p.description,
        'context', p.context,
        'status', p.status,
        'deprecation_reason', p.deprecation_reason,
        'replacement_pattern', p.replacement_pattern,
        'migration_notes', p.migration_notes)
$$;

CREATE OR REPLACE FUNCTION nexusd_pattern_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    before_row jsonb;
    after_row  jsonb;
    extra      jsonb;
    op         text;
    pat        patterns;
BEGIN
    IF TG_OP = 'INSERT' THEN
        pat := NEW; op := 'created';
        after_row := nexusd_pattern_snapshot(NEW);
    ELSIF TG_OP = 'DELETE' THEN
        pat := OLD; op := 'deleted';
        before_row := nexusd_pattern_snapshot(OLD);
    ELSE
        pat := NEW;
        before_row := nexusd_pattern_snapshot(OLD);
        after_row := nexusd_pattern_snapshot(NEW);
        op := CASE WHEN NEW.status IS DISTINCT FROM OLD.status THEN NEW.status ELSE 'updated' END;
    END IF;
    extra := nullif(current_setting('nexusd.change_extra', true), '')::jsonb;
    IF extra IS NOT NULL AND TG_OP = 'UPDATE' THEN
        before_row := before_row || coalesce(extra -> 'before', '{}');
        after_row := after_row || coalesce(extra -> 'after', '{}');
    END IF;
    IF TG_OP = 'UPDATE' AND before_row = after_row THEN
        RETURN NULL;
    END IF;
    INSERT INTO pattern_history (pattern_id, repository, pattern_name, operation, changed_by,
                                 change_summary, before, after)
    VALUES (pat.id, coalesce(after_row, before_row) ->> 'repository', pat.name, op,
            coalesce(nullif(current_setting('nexusd.actor', true), ''),
                     nullif(current_setting('application_name', true), ''), session_user),
            nullif(current_setting('nexusd.change_summary', true), ''),
            before_row, after_row);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS patterns_history ON patterns;
CREATE TRIGGER patterns_history
    AFTER INSERT OR UPDATE OR DELETE ON patterns
    FOR EACH ROW EXECUTE FUNCTION nexusd_pattern_history();

-- Patterns that exist before this migration get their creation as the first version.
INSERT INTO pattern_history (pattern_id, repository, pattern_name, operation, changed_by,
                             change_summary, changed_at, after)
SELECT p.id, r.name, p.name, 'created', 'migration 0005', 'Recorded before history was kept',
       coalesce(p.created_at, NOW()), nexusd_pattern_snapshot(p)
  FROM patterns p LEFT JOIN repositories r ON r.id = p.repo_id
 WHERE NOT EXISTS (SELECT 1 FROM pattern_history h WHERE h.pattern_id = p.id);

-- The read skills' cache learns of history written by hand too (0004).
DROP TRIGGER IF EXISTS pattern_history_kb_changed ON pattern_history;
CREATE TRIGGER pattern_history_kb_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pattern_history
    FOR EACH STATEMENT EXECUTE FUNCTION nexusd_kb_changed();
