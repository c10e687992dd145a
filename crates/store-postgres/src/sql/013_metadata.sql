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

-- create_task_at and create_tasks with the task's metadata (new overloads:
-- an instance of the release before keeps calling the ones it knows).
CREATE FUNCTION {s}.create_task_at(p_id uuid, p_op text, p_created bigint, p_params text,
                                   p_digest text, p_key text, p_trace text, p_priority integer,
                                   p_run_at bigint, p_max_attempts integer, p_retry text,
                                   p_retry_of uuid, p_metadata text)
RETURNS TABLE (out_created boolean, out_id uuid) LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO {s}.tasks (task_id, op, status, created_at, params, params_digest,
                           idempotency_key, trace_parent, priority, run_at, max_attempts,
                           retry, retry_of, metadata)
    VALUES (p_id, p_op, 'pending', p_created, p_params, p_digest, p_key, p_trace, p_priority,
            p_run_at, p_max_attempts, p_retry, p_retry_of, p_metadata)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF FOUND THEN
        IF p_run_at IS NULL THEN
            PERFORM pg_notify({chan}, 'p ' || p_op);
        ELSE
            PERFORM pg_notify({chan}, 'd ' || p_run_at || ' ' || p_op);
        END IF;
        out_created := true;
        out_id := p_id;
    ELSE
        SELECT t.task_id INTO out_id FROM {s}.tasks t WHERE t.idempotency_key = p_key;
        out_created := false;
    END IF;
    RETURN NEXT;
END
$fn$;

CREATE FUNCTION {s}.create_tasks(p_ids uuid[], p_ops text[], p_created bigint[], p_params text[],
                                 p_digests text[], p_keys text[], p_traces text[],
                                 p_priorities integer[], p_run_ats bigint[],
                                 p_max_attempts integer[], p_retries text[], p_retry_ofs uuid[],
                                 p_metadata text[])
RETURNS TABLE (out_created boolean, out_id uuid) LANGUAGE plpgsql AS $fn$
DECLARE
    v_inserted uuid[];
    v_op record;
BEGIN
    WITH inserted AS (
        INSERT INTO {s}.tasks (task_id, op, status, created_at, params, params_digest,
                               idempotency_key, trace_parent, priority, run_at, max_attempts,
                               retry, retry_of, metadata)
        SELECT i.id, i.op, 'pending', i.created, i.params, i.digest, i.key, i.trace, i.priority,
               i.run_at, i.max_attempts, i.retry, i.retry_of, i.metadata
          FROM unnest(p_ids, p_ops, p_created, p_params, p_digests, p_keys, p_traces,
                      p_priorities, p_run_ats, p_max_attempts, p_retries, p_retry_ofs, p_metadata)
               WITH ORDINALITY AS i(id, op, created, params, digest, key, trace, priority,
                                    run_at, max_attempts, retry, retry_of, metadata, n)
         -- Keys in one order in every batch: two batches sharing keys
         -- never wait on each other's in turn.
         ORDER BY i.key NULLS LAST, i.n
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING task_id
    )
    SELECT coalesce(array_agg(task_id), '{}') INTO v_inserted FROM inserted;
    -- One wake-up per op: tasks due now, and the earliest delayed one.
    FOR v_op IN
        SELECT i.op, bool_or(i.run_at IS NULL) AS due_now, min(i.run_at) AS first_run_at
          FROM unnest(p_ids, p_ops, p_run_ats) AS i(id, op, run_at)
          JOIN unnest(v_inserted) AS c(id) ON c.id = i.id
         GROUP BY i.op
    LOOP
        IF v_op.due_now THEN
            PERFORM pg_notify({chan}, 'p ' || v_op.op);
        END IF;
        IF v_op.first_run_at IS NOT NULL THEN
            PERFORM pg_notify({chan}, 'd ' || v_op.first_run_at || ' ' || v_op.op);
        END IF;
    END LOOP;
    -- A new statement: sees a task another transaction made with a key
    -- since the INSERT began.
    RETURN QUERY
    SELECT c.id IS NOT NULL, coalesce(c.id, existing.task_id)
      FROM unnest(p_ids, p_keys) WITH ORDINALITY AS i(id, key, n)
      LEFT JOIN unnest(v_inserted) AS c(id) ON c.id = i.id
      LEFT JOIN {s}.tasks existing ON c.id IS NULL AND existing.idempotency_key = i.key
     ORDER BY i.n;
END
$fn$;
