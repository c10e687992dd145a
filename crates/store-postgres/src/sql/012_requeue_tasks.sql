-- 12: the requeues of many failed attempts in one statement (the writer's
-- batch), as finish_tasks does for finishes.

-- requeue_tasks: requeue_task for many tasks in one statement, each decided
-- under its row lock as requeue_task decides one (no such task; not the
-- owner: running, held by another instance, p_owner NULL skipping the
-- check; already finished; not started: pending; a recorded cancel ends it
-- cancelled; else pending again, due at its p_run_ats entry, with its
-- attempt_failed partial on the tape and its record in the history). The
-- ids must be distinct. The counters are summed once for the statement.
CREATE FUNCTION {s}.requeue_tasks(p_ids uuid[], p_partials text[], p_records text[], p_run_ats bigint[],
                                  p_cancel_final text, p_now bigint, p_ts text, p_owner text)
RETURNS TABLE (out_id uuid, out_code smallint, out_status text, out_seq bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    v_shard smallint := (pg_backend_pid() % 16)::smallint;
    v_old text[] := '{}';
    v_new text[] := '{}';
    v_ended text[] := '{}';
    v_fresh boolean;
BEGIN
    PERFORM set_config('tasktape.counted', 'on', true);
    FOR r IN
        WITH input AS (
            SELECT i.id, i.partial, i.record, i.run_at, i.n
              FROM unnest(p_ids, p_partials, p_records, p_run_ats)
                   WITH ORDINALITY AS i(id, partial, record, run_at, n)
        ),
        locked AS (
            SELECT t.task_id, t.status, t.cancel_requested, t.last_seq, t.op, t.owner, t.attempt
              FROM {s}.tasks t
             WHERE t.task_id = ANY (p_ids)
             ORDER BY t.task_id
               FOR UPDATE
        ),
        decided AS (
            SELECT i.id, i.n, i.run_at, l.op, l.status AS old_status, l.last_seq + 1 AS seq,
                   coalesce(l.cancel_requested, false) AS cancelled,
                   -- The mark's first match only, as requeue_task does.
                   regexp_replace(i.partial, '"attempt":{mark.attempt}',
                                  '"attempt":' || greatest(l.attempt, 1)) AS partial,
                   regexp_replace(i.record, '"attempt":{mark.attempt}',
                                  '"attempt":' || greatest(l.attempt, 1)) AS record,
                   (CASE WHEN l.task_id IS NULL THEN {finish.not_found}
                         WHEN p_owner IS NOT NULL AND l.status = 'running'
                              AND l.owner IS DISTINCT FROM p_owner THEN {finish.not_owner}
                         WHEN l.status NOT IN ('pending', 'running') THEN {finish.already_finished}
                         WHEN l.status = 'pending' THEN {finish.not_started}
                         WHEN l.cancel_requested THEN {finish.finished}
                         ELSE {finish.requeued} END)::smallint AS code
              FROM input i LEFT JOIN locked l ON l.task_id = i.id
        ),
        updated AS (
            UPDATE {s}.tasks t
               SET status = CASE WHEN d.cancelled THEN 'cancelled' ELSE 'pending' END,
                   finished_at = CASE WHEN d.cancelled THEN p_now ELSE t.finished_at END,
                   result = CASE WHEN d.cancelled THEN NULL ELSE t.result END,
                   error = CASE WHEN d.cancelled THEN NULL ELSE t.error END,
                   run_at = CASE WHEN d.cancelled THEN t.run_at ELSE d.run_at END,
                   owner = NULL, lease_until = NULL, last_seq = d.seq,
                   history = CASE WHEN d.cancelled THEN t.history
                                  WHEN t.history IS NULL THEN '[' || d.record || ']'
                                  ELSE left(t.history, -1) || ',' || d.record || ']' END
              FROM decided d
             WHERE t.task_id = d.id AND d.code IN ({finish.finished}, {finish.requeued})
            RETURNING t.task_id
        ),
        written AS (
            INSERT INTO {s}.events (task_id, seq, json)
            SELECT d.id, d.seq,
                   CASE WHEN d.cancelled THEN p_cancel_final ELSE d.partial END
                   || ',"seq":' || d.seq || ',"ts":"' || p_ts || '"}'
              FROM decided d
             WHERE d.code IN ({finish.finished}, {finish.requeued})
            RETURNING task_id
        )
        -- (`updated` and `written` run to completion, read or not.)
        SELECT d.id, d.code, d.op, d.old_status, d.seq, d.run_at
          FROM decided d
         ORDER BY d.n
    LOOP
        out_id := r.id;
        out_code := r.code;
        IF r.code = {finish.finished} THEN
            PERFORM pg_notify({chan}, 'f ' || r.id || ' ' || r.seq || ' ' || r.op);
            v_old := v_old || r.old_status;
            v_new := v_new || 'cancelled'::text;
            v_ended := v_ended || 'cancelled'::text;
            out_status := 'cancelled';
            out_seq := r.seq;
        ELSIF r.code = {finish.requeued} THEN
            PERFORM pg_notify({chan}, 'e ' || r.id || ' ' || r.seq);
            PERFORM pg_notify({chan}, 'd ' || r.run_at || ' ' || r.op);
            v_old := v_old || r.old_status;
            v_new := v_new || 'pending'::text;
            out_status := NULL;
            out_seq := r.seq;
        ELSE
            out_status := r.old_status;
            out_seq := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF cardinality(v_new) > 0 THEN
        -- Counter rows locked in the order every transition locks them.
        INSERT INTO {s}.task_counts AS c (status, shard, n)
            SELECT x.status, v_shard, sum(x.d)
              FROM (SELECT unnest(v_old) AS status, -1 AS d
                    UNION ALL SELECT unnest(v_new), 1) x
             GROUP BY x.status
             ORDER BY array_position(ARRAY['pending', 'running', 'succeeded', 'failed', 'cancelled'], x.status)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    IF cardinality(v_ended) > 0 THEN
        WITH ins AS (
            INSERT INTO {s}.finished_per_minute AS f (minute, status, shard, n)
                VALUES (p_now / 60000, 'cancelled', v_shard, cardinality(v_ended))
                ON CONFLICT (minute, status, shard) DO UPDATE SET n = f.n + excluded.n
                RETURNING (xmax = 0) AS fresh
        )
        SELECT bool_or(ins.fresh) INTO v_fresh FROM ins;
        IF v_fresh THEN
            DELETE FROM {s}.finished_per_minute f
             WHERE f.shard = v_shard AND f.minute < p_now / 60000 - 1440;
        END IF;
    END IF;
    PERFORM set_config('tasktape.counted', 'off', true);
END
$fn$;
