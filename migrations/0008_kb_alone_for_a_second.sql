-- 0008: a `nexusd serve` session that found no other replica listening remembers it for one
-- second, instead of reading `kb_listeners` in every writing transaction
-- (docs/read-path.md, "How a write reaches the caches").
--
-- Why: the look at `kb_listeners` (migration 0007) is a query inside the trigger of every write;
-- on the benchmark machine it cost about a sixth of the commit rate of a one-statement write.
--
-- The rule added: when the look finds no other live listener, the session records the time it
-- looked (`nexusd.kb_alone_at`, a session setting: rolled back with a transaction that fails,
-- forgotten with the session) and, for the next second of the server's clock, skips the look and
-- the notification. A clock that went back counts as no record. The time is read before the look's
-- snapshot is taken, so a registration the look could not see committed after it.
--
-- What keeps it exact: a listener, once registered and listening, waits longer than that second
-- (src/skills/cache.rs, `listen`) before it takes the list of transactions in progress and waits
-- for them to end. Every write that begins after the wait looks again and sees the registration;
-- every write that began before has its transaction id by then, so the list names it.
-- Everything else about migration 0007's rule is unchanged. A replica still running an older
-- nexusd does not wait: during a rolling upgrade, a write made within a second of its listener's
-- start may be missed by its cache until the next notification (the next write from anywhere
-- after that second).

CREATE OR REPLACE FUNCTION nexusd_kb_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    app text := current_setting('application_name');
    now_s float8;
    alone_at float8;
BEGIN
    IF coalesce(current_setting('nexusd.kb_generation', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('nexusd.kb_generation', nextval('public.kb_generation')::text, true);
    IF app LIKE 'nexusd serve %'
       AND current_setting('transaction_isolation') = 'read committed' THEN
        now_s := date_part('epoch', clock_timestamp());
        alone_at := nullif(current_setting('nexusd.kb_alone_at', true), '')::float8;
        IF now_s >= alone_at AND now_s < alone_at + 1 THEN
            RETURN NULL;
        END IF;
        IF NOT EXISTS (
               SELECT 1 FROM public.kb_listeners l
                WHERE l.replica <> substr(app, 14)
                  AND NOT pg_try_advisory_xact_lock_shared(1853385570, l.lock_key)) THEN
            PERFORM set_config('nexusd.kb_alone_at', now_s::text, false);
            RETURN NULL;
        END IF;
    END IF;
    PERFORM pg_notify('nexusd_kb', current_setting('nexusd.kb_generation'));
    RETURN NULL;
END
$$;
