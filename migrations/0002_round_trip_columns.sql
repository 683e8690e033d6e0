-- 0002: columns so that what the write skills accept can be read back.
--
-- The original accepted these fields and dropped them (add_deployment_info's
-- deployment_frequency / last_deployed, add_lesson_learned's recorded_by / related_files / tags).
-- A client that writes a value and reads null back has lost data, so nexusd stores them.

ALTER TABLE deployment_scripts
    ADD COLUMN IF NOT EXISTS deployment_frequency VARCHAR(100),
    ADD COLUMN IF NOT EXISTS last_deployed        TIMESTAMPTZ,
    -- add_deployment_info upserts one row per (repository, platform); updated_at says when it was
    -- last recorded, which is what the activity feed shows.
    ADD COLUMN IF NOT EXISTS updated_at           TIMESTAMPTZ DEFAULT NOW();

UPDATE deployment_scripts SET updated_at = created_at WHERE updated_at IS DISTINCT FROM created_at;

DROP TRIGGER IF EXISTS deployment_scripts_touch_updated_at ON deployment_scripts;
CREATE TRIGGER deployment_scripts_touch_updated_at
    BEFORE UPDATE ON deployment_scripts
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION nexusd_touch_updated_at();

ALTER TABLE lessons_learned
    ADD COLUMN IF NOT EXISTS recorded_by   VARCHAR(200),
    ADD COLUMN IF NOT EXISTS related_files JSONB DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS tags          JSONB DEFAULT '[]';
