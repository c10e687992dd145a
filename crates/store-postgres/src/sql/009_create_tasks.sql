-- 9: many tasks created in one statement (`POST /v1/tasks/batch`): one
-- INSERT of all rows (a repeated idempotency key finds its task instead),
-- one NOTIFY per op. Answers one row per input, in input order: whether it
-- was created, and the task's id (the existing task's, for a key in use).
-- The caller gives each key at most once.

CREATE FUNCTION {s}.create_tasks(p_ids uuid[], p_ops text[], p_created bigint[], p_params text[],
                                 p_digests text[], p_keys text[], p_traces text[],
                                 p_priorities integer[], p_run_ats bigint[],
                                 p_max_attempts integer[], p_retries text[], p_retry_ofs uuid[])
RETURNS TABLE (out_created boolean, out_id uuid) LANGUAGE plpgsql AS $fn$
DECLARE
    v_inserted uuid[];
    v_op record;
BEGIN
    WITH inserted AS (
        INSERT INTO {s}.tasks (task_id, op, status, created_at, params, params_digest,
                               idempotency_key, trace_parent, priority, run_at, max_attempts,
                               retry, retry_of)
        SELECT i.id, i.op, 'pending', i.created, i.params, i.digest, i.key, i.trace, i.priority,
               i.run_at, i.max_attempts, i.retry, i.retry_of
          FROM unnest(p_ids, p_ops, p_created, p_params, p_digests, p_keys, p_traces,
                      p_priorities, p_run_ats, p_max_attempts, p_retries, p_retry_ofs)
               WITH ORDINALITY AS i(id, op, created, params, digest, key, trace, priority,
                                    run_at, max_attempts, retry, retry_of, n)
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

-- New rows are counted once per statement, summed by status: a bulk
-- submit of 10,000 rows made 10,000 upserts of the counter rows. Deletes
-- and status changes stay counted per row (`count_tasks`).
DROP TRIGGER tasks_counted ON {s}.tasks;
CREATE TRIGGER tasks_counted AFTER DELETE OR UPDATE OF status ON {s}.tasks
    FOR EACH ROW EXECUTE FUNCTION {s}.count_tasks();
CREATE FUNCTION {s}.count_inserted_tasks() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO {s}.task_counts AS c (status, shard, n)
        SELECT i.status, (pg_backend_pid() % 16)::smallint, count(*)
          FROM inserted i GROUP BY i.status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER tasks_counted_in AFTER INSERT ON {s}.tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_inserted_tasks();

-- A claim's `p_now` is read before its statement runs, and the statement
-- may take a task created after that (a claim waiting on a lock): a start
-- is never before the task's creation.
CREATE OR REPLACE FUNCTION {s}.start_one(p_id uuid, p_op text, p_owner text, p_until bigint, p_now bigint, p_ts text,
                                         p_started text, p_attempt text)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_seq bigint;
    v_attempt integer;
    v_max integer;
BEGIN
    UPDATE {s}.tasks t
       SET status = 'running', started_at = coalesce(t.started_at, greatest(p_now, t.created_at)),
           owner = p_owner, lease_until = p_until, last_seq = t.last_seq + 1,
           attempt = t.attempt + 1, run_at = NULL
     WHERE t.task_id = p_id
     RETURNING t.last_seq, t.attempt, t.max_attempts INTO v_seq, v_attempt, v_max;
    IF v_seq = 1 THEN
        INSERT INTO {s}.events (task_id, seq, json)
        VALUES (p_id, 1, replace(replace(p_started, '{mark.task_id}', '"' || p_id || '"'),
                                 '{mark.op}', to_json(p_op)::text)
                         || ',"seq":1,"ts":"' || p_ts || '"}');
    ELSE
        INSERT INTO {s}.events (task_id, seq, json)
        VALUES (p_id, v_seq, replace(replace(p_attempt, '{mark.attempt}', v_attempt::text),
                                     '{mark.max_attempts}', v_max::text)
                             || ',"seq":' || v_seq || ',"ts":"' || p_ts || '"}');
    END IF;
    PERFORM pg_notify({chan}, 'e ' || p_id || ' ' || v_seq);
END
$fn$;
