-- 0004: the knowledge base's generation — every write to a knowledge-base table, by nexusd or by
-- hand in psql, announces itself on the channel `nexusd_kb`, so every nexusd replica can drop the
-- read answers it cached (src/skills/cache.rs).
--
-- * A sequence, not a one-row table: bumping a row would take its lock until commit, so concurrent
--   writers would queue behind each other and two writers touching the same rows in different
--   orders could deadlock. nextval never blocks and is not rolled back, which costs nothing here:
--   a generation that no committed transaction announced is only a number skipped.
-- * Statement-level triggers (once per statement, not per row), and inside one transaction only
--   the first statement takes a new generation and queues the notification: a transaction-local
--   setting remembers it, so an import of thousands of rows sends one notification.
-- * PostgreSQL delivers a notification only when its transaction commits, and never one from a
--   rolled-back transaction; its payload is the generation the transaction took.
-- * SECURITY DEFINER: a role allowed to write the tables but not to use the sequence (an operator
--   in psql) still gets its writes announced rather than refused.

CREATE SEQUENCE IF NOT EXISTS kb_generation;

CREATE OR REPLACE FUNCTION nexusd_kb_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(current_setting('nexusd.kb_generation', true), '') = '' THEN
        PERFORM set_config('nexusd.kb_generation', nextval('public.kb_generation')::text, true);
        PERFORM pg_notify('nexusd_kb', current_setting('nexusd.kb_generation'));
    END IF;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['analysis_history', 'component_vectors', 'dependencies',
                             'deployment_scripts', 'keywords', 'lessons_learned', 'pattern_keywords',
                             'patterns', 'repositories', 'repository_relationships',
                             'reusable_components', 'runtime_issues', 'security_patterns',
                             'technical_decisions', 'test_frameworks']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_kb_changed', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION nexusd_kb_changed()',
                       t || '_kb_changed', t);
    END LOOP;
END
$$;
