-- 0007: a knowledge-base write is announced on `nexusd_kb` only when some replica other than the
-- writer's own could miss it (docs/read-path.md, "How a write reaches the caches").
--
-- Why: a transaction that notifies takes, at commit, a database-wide lock that serialises the
-- notification queue and holds it until its commit record is flushed. Every notifying commit then
-- waits for the previous one's flush: group commit stops working, and concurrent writers go from
-- ~5,000 to ~2,000 commits/s on the benchmark machine (pgbench, 8 clients). On the one-VM
-- deployment there is nobody to tell: the only cache is the writing process's own, and `serve`
-- empties it itself as soon as its write has committed (src/skills/cache.rs).
--
-- The rule, decided by the first write statement of each transaction:
-- * a session of `nexusd serve` names itself `nexusd serve <replica>` (its skills' pool); its
--   listener names itself `nexusd listen <replica>`, the same <replica>;
-- * such a session skips the notification when no `nexusd listen` session of *another* replica
--   is connected to this database: nobody else holds a cache of it;
-- * everyone else — psql, `nexusd import-json`, migrations, another tool — always notifies.
-- A replica whose listener connects while a write that skipped is still in flight would miss
-- it: a listener, once listening, waits for every transaction that was in progress to end
-- before its replica caches anything (src/skills/cache.rs, `listen`).
-- The generation is taken as before (migration 0004).

CREATE OR REPLACE FUNCTION nexusd_kb_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    app text := current_setting('application_name');
BEGIN
    IF coalesce(current_setting('nexusd.kb_generation', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('nexusd.kb_generation', nextval('public.kb_generation')::text, true);
    IF app LIKE 'nexusd serve %' AND NOT EXISTS (
        SELECT 1 FROM pg_stat_get_activity(NULL) a
         WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND a.application_name LIKE 'nexusd listen %'
           AND a.application_name <> 'nexusd listen ' || substr(app, 14)) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('nexusd_kb', current_setting('nexusd.kb_generation'));
    RETURN NULL;
END
$$;
