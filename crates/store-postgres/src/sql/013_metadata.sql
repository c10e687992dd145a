-- 13: metadata. The row keeps it as a JSON object (NULL: none);
-- `task_metadata` holds one entry per key in (key, value, created_at, task)
-- order, so a list filtered on a key walks its entries newest first
-- instead of every task. Row triggers keep it, and only rows with metadata
-- run them (the WHEN is checked without calling the function).
ALTER TABLE {s}.tasks ADD COLUMN metadata text;
CREATE TABLE {s}.task_metadata (
    key   text NOT NULL,
    value text NOT NULL,
    at    bigint NOT NULL,
    task  uuid NOT NULL
);
-- In list order (newest first, then by id), as `tasks_by_created` is.
CREATE UNIQUE INDEX task_metadata_order ON {s}.task_metadata (key, value, at DESC, task);
CREATE FUNCTION {s}.task_metadata_in() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO {s}.task_metadata (key, value, at, task)
        SELECT e.key, e.value, NEW.created_at, NEW.task_id FROM jsonb_each_text(NEW.metadata::jsonb) e;
    RETURN NULL;
END
$fn$;
CREATE FUNCTION {s}.task_metadata_out() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM {s}.task_metadata m
     USING jsonb_each_text(OLD.metadata::jsonb) e
     WHERE m.key = e.key AND m.value = e.value AND m.at = OLD.created_at AND m.task = OLD.task_id;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER tasks_metadata_in AFTER INSERT ON {s}.tasks
    FOR EACH ROW WHEN (NEW.metadata IS NOT NULL) EXECUTE FUNCTION {s}.task_metadata_in();
CREATE TRIGGER tasks_metadata_out AFTER DELETE ON {s}.tasks
    FOR EACH ROW WHEN (OLD.metadata IS NOT NULL) EXECUTE FUNCTION {s}.task_metadata_out();
