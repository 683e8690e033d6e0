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
-- * a session of `nexusd serve`'s skills' pool names itself `nexusd serve <replica>`;
-- * each replica's cache listener registers in `kb_listeners` and holds, for as long as its
--   session lives, an exclusive session advisory lock (class 0x6e786b62, key `lock_key`);
-- * a `nexusd serve` session in a READ COMMITTED transaction skips the notification when no
--   *other* replica's listener is alive (registered, and its lock held: a registration whose
--   session died is ignored — trying the lock succeeds);
-- * everyone else — psql, `nexusd import-json`, migrations, another tool, a REPEATABLE READ
--   transaction (whose snapshot may predate a registration) — always notifies.
-- A table and a lock rather than a look at pg_stat_activity: reading the activity of every
-- backend copies all of it into the transaction, which cost a third of the write rate.
-- A replica whose listener registers while a write that skipped is still in flight would miss
-- it: a listener, once listening, waits for every transaction that was in progress to end
-- before its replica caches anything (src/skills/cache.rs, `listen`).
-- The generation is taken as before (migration 0004).

CREATE TABLE IF NOT EXISTS kb_listeners (
    replica  TEXT PRIMARY KEY,
    lock_key INTEGER NOT NULL,
    since    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION nexusd_kb_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    app text := current_setting('application_name');
BEGIN
    IF coalesce(current_setting('nexusd.kb_generation', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('nexusd.kb_generation', nextval('public.kb_generation')::text, true);
    IF app LIKE 'nexusd serve %'
       AND current_setting('transaction_isolation') = 'read committed'
       AND NOT EXISTS (
           SELECT 1 FROM public.kb_listeners l
            WHERE l.replica <> substr(app, 14)
              AND NOT pg_try_advisory_xact_lock_shared(1853385570, l.lock_key)) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('nexusd_kb', current_setting('nexusd.kb_generation'));
    RETURN NULL;
END
$$;
