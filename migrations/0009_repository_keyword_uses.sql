-- 0009: how many of a repository's patterns use each keyword, kept by the database in the
-- transaction of every change, so `get_repository_list` ranks a few hundred (repository, keyword)
-- counts instead of aggregating every pattern–keyword link on each request
-- (docs/read-path.md, "get_repository_list").
--
-- * Each link (`pattern_keywords`) carries its pattern's repository, set by a trigger from the
--   pattern (under `FOR KEY SHARE`, so a move of the pattern waits for the link, or the link for
--   the move); a pattern moved to another repository moves its links. A change of a link is then
--   counted from the link row alone — the version the statement locked and changed — even when
--   its pattern is deleted in the same statement. Every writer is caught: the skills,
--   import-json, SQL typed in psql.
-- * The counts are an append-only ledger, `repository_keyword_uses`: statement-level triggers on
--   `pattern_keywords` add one row per (repository, keyword) a statement links (+n) or unlinks
--   (-n); a count is the sum of its rows. A counter updated in place would hold its row lock to
--   commit, so two transactions changing keywords of one repository in different orders (two
--   lifecycle edits, an import beside an analysis) could deadlock. Inserting never waits.
--   TRUNCATE empties the ledger.
-- * `nexusd serve` folds the ledger about every ten seconds: the rows of each changed
--   (repository, keyword) are replaced by their sum, marked `compacted`; a sum of zero leaves
--   nothing (src/kb/keyword_uses.rs). Readers sum whatever is there, so folding never changes an
--   answer, and two replicas folding at once each delete only rows the other did not.
-- * SECURITY DEFINER, as 0004: a role allowed to write the links but not the ledger still gets
--   its writes counted rather than refused.
-- * The ledger is derived data and announces nothing itself: the statement on `pattern_keywords`
--   that changed it already did (0004).

-- No write to the patterns or their links until this migration commits.
LOCK TABLE patterns, pattern_keywords IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE pattern_keywords ADD COLUMN repo_id INTEGER;
UPDATE pattern_keywords pk SET repo_id = p.repo_id FROM patterns p WHERE p.id = pk.pattern_id;

CREATE TABLE repository_keyword_uses (
    repo_id    INTEGER NOT NULL,
    keyword_id INTEGER NOT NULL,
    uses       INTEGER NOT NULL,
    compacted  BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX idx_repository_keyword_uses_new
    ON repository_keyword_uses (repo_id, keyword_id) WHERE NOT compacted;
INSERT INTO repository_keyword_uses (repo_id, keyword_id, uses, compacted)
SELECT repo_id, keyword_id, count(*), TRUE FROM pattern_keywords
 WHERE repo_id IS NOT NULL GROUP BY 1, 2;

CREATE FUNCTION nexusd_pattern_keywords_repo() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT p.repo_id INTO NEW.repo_id FROM public.patterns p WHERE p.id = NEW.pattern_id FOR KEY SHARE;
    RETURN NEW;
END
$$;

CREATE TRIGGER pattern_keywords_repo BEFORE INSERT OR UPDATE ON pattern_keywords
    FOR EACH ROW EXECUTE FUNCTION nexusd_pattern_keywords_repo();

CREATE FUNCTION nexusd_keyword_uses() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- TRUNCATE, not DELETE: it waits for a fold in progress, whose sums a DELETE would miss.
        TRUNCATE public.repository_keyword_uses;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO public.repository_keyword_uses (repo_id, keyword_id, uses)
        SELECT repo_id, keyword_id, count(*) FROM linked
         WHERE repo_id IS NOT NULL GROUP BY 1, 2;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO public.repository_keyword_uses (repo_id, keyword_id, uses)
        SELECT repo_id, keyword_id, -count(*) FROM unlinked
         WHERE repo_id IS NOT NULL GROUP BY 1, 2;
    ELSE
        INSERT INTO public.repository_keyword_uses (repo_id, keyword_id, uses)
        SELECT repo_id, keyword_id, sum(n)
          FROM (SELECT repo_id, keyword_id, 1 AS n FROM linked
                UNION ALL
                SELECT repo_id, keyword_id, -1 FROM unlinked) l
         WHERE repo_id IS NOT NULL
         GROUP BY 1, 2
        HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER pattern_keywords_uses_linked AFTER INSERT ON pattern_keywords
    REFERENCING NEW TABLE AS linked
    FOR EACH STATEMENT EXECUTE FUNCTION nexusd_keyword_uses();
CREATE TRIGGER pattern_keywords_uses_unlinked AFTER DELETE ON pattern_keywords
    REFERENCING OLD TABLE AS unlinked
    FOR EACH STATEMENT EXECUTE FUNCTION nexusd_keyword_uses();
CREATE TRIGGER pattern_keywords_uses_relinked AFTER UPDATE ON pattern_keywords
    REFERENCING OLD TABLE AS unlinked NEW TABLE AS linked
    FOR EACH STATEMENT EXECUTE FUNCTION nexusd_keyword_uses();
CREATE TRIGGER pattern_keywords_uses_truncated AFTER TRUNCATE ON pattern_keywords
    FOR EACH STATEMENT EXECUTE FUNCTION nexusd_keyword_uses();

CREATE FUNCTION nexusd_pattern_moved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE public.pattern_keywords SET repo_id = NEW.repo_id WHERE pattern_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER patterns_moved AFTER UPDATE OF repo_id ON patterns
    FOR EACH ROW WHEN (OLD.repo_id IS DISTINCT FROM NEW.repo_id)
    EXECUTE FUNCTION nexusd_pattern_moved();
