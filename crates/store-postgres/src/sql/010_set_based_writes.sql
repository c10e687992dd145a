-- 10: writes across tasks in one statement: finishes (finish_tasks) and
-- the starts of a claim (claim_due).

-- finish_tasks: the finishes of many tasks in one statement (the writer's
-- batch: one transaction, one commit), each decided under its row lock as
-- finish_owned decides one: no such task; already finished; not the owner
-- (a running task another instance holds now; p_owner NULL skips the
-- check); not started (a pending task cannot succeed); else finished, a
-- recorded cancel winning over what was reported. The ids must be distinct
-- (the writer sends a repeat in a later call, so the first finish wins).
-- The counters are summed once for the statement: the per-row counting
-- trigger stands aside while `tasktape.counted` is on.
CREATE FUNCTION {s}.finish_tasks(p_ids uuid[], p_statuses text[], p_results text[], p_errors text[],
                                 p_finals text[], p_cancel_final text, p_now bigint, p_ts text,
                                 p_owner text)
RETURNS TABLE (out_id uuid, out_code smallint, out_status text, out_seq bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    v_shard smallint := (pg_backend_pid() % 16)::smallint;
    v_old text[] := '{}';
    v_new text[] := '{}';
    v_fresh boolean;
BEGIN
    PERFORM set_config('tasktape.counted', 'on', true);
    FOR r IN
        WITH input AS (
            SELECT i.id, i.status, i.result, i.error, i.final, i.n
              FROM unnest(p_ids, p_statuses, p_results, p_errors, p_finals)
                   WITH ORDINALITY AS i(id, status, result, error, final, n)
        ),
        locked AS (
            SELECT t.task_id, t.status, t.cancel_requested, t.last_seq, t.op, t.owner
              FROM {s}.tasks t
             WHERE t.task_id = ANY (p_ids)
             ORDER BY t.task_id
               FOR UPDATE
        ),
        decided AS (
            SELECT i.id, i.n, l.op, l.status AS old_status, l.last_seq + 1 AS seq,
                   (CASE WHEN l.task_id IS NULL THEN {finish.not_found}
                         WHEN l.status NOT IN ('pending', 'running') THEN {finish.already_finished}
                         WHEN p_owner IS NOT NULL AND l.status = 'running'
                              AND l.owner IS DISTINCT FROM p_owner THEN {finish.not_owner}
                         WHEN l.status = 'pending' AND i.status = 'succeeded' THEN {finish.not_started}
                         ELSE {finish.finished} END)::smallint AS code,
                   CASE WHEN l.cancel_requested THEN 'cancelled' ELSE i.status END AS new_status,
                   CASE WHEN l.cancel_requested THEN NULL ELSE i.result END AS result,
                   CASE WHEN l.cancel_requested THEN NULL ELSE i.error END AS error,
                   CASE WHEN l.cancel_requested THEN p_cancel_final ELSE i.final END AS final
              FROM input i LEFT JOIN locked l ON l.task_id = i.id
        ),
        updated AS (
            UPDATE {s}.tasks t
               SET status = d.new_status, finished_at = p_now, result = d.result, error = d.error,
                   owner = NULL, lease_until = NULL, last_seq = d.seq
              FROM decided d
             WHERE t.task_id = d.id AND d.code = {finish.finished}
            RETURNING t.task_id
        ),
        written AS (
            INSERT INTO {s}.events (task_id, seq, json)
            SELECT d.id, d.seq, d.final || ',"seq":' || d.seq || ',"ts":"' || p_ts || '"}'
              FROM decided d
             WHERE d.code = {finish.finished}
            RETURNING task_id
        )
        -- (`updated` and `written` run to completion, read or not.)
        SELECT d.id, d.code, d.op, d.old_status, d.new_status, d.seq
          FROM decided d
         ORDER BY d.n
    LOOP
        out_id := r.id;
        out_code := r.code;
        IF r.code = {finish.finished} THEN
            PERFORM pg_notify({chan}, 'f ' || r.id || ' ' || r.seq || ' ' || r.op);
            v_old := v_old || r.old_status;
            v_new := v_new || r.new_status;
            out_status := r.new_status;
            out_seq := r.seq;
        ELSE
            out_status := r.old_status;
            out_seq := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF cardinality(v_new) > 0 THEN
        -- Counter rows locked in the order every transition locks them
        -- (pending, running, then the terminal statuses): no deadlocks.
        INSERT INTO {s}.task_counts AS c (status, shard, n)
            SELECT x.status, v_shard, sum(x.d)
              FROM (SELECT unnest(v_old) AS status, -1 AS d
                    UNION ALL SELECT unnest(v_new), 1) x
             GROUP BY x.status
             ORDER BY array_position(ARRAY['pending', 'running', 'succeeded', 'failed', 'cancelled'], x.status)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
        WITH ins AS (
            INSERT INTO {s}.finished_per_minute AS f (minute, status, shard, n)
                SELECT p_now / 60000, x.status, v_shard, count(*)
                  FROM unnest(v_new) AS x(status)
                 GROUP BY x.status
                 ORDER BY array_position(ARRAY['succeeded', 'failed', 'cancelled'], x.status)
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

-- The per-row counter stands aside for statements that count themselves.
DROP TRIGGER tasks_counted ON {s}.tasks;
CREATE TRIGGER tasks_counted AFTER DELETE OR UPDATE OF status ON {s}.tasks
    FOR EACH ROW WHEN (current_setting('tasktape.counted', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {s}.count_tasks();

-- claim_due starts the tasks it picked in one statement (row running and
-- `task_started`, or the later attempt's log line, for each) instead of a
-- start_one call each; delayed tasks that came due are first made due now
-- (run_at NULL), so the picking is one ordered index range; the op's
-- limit under its advisory lock and the answer (the started rows, in the
-- picked order) are as before.
-- Every picked task was pending: the counters move by the count, once.
CREATE OR REPLACE FUNCTION {s}.claim_due(p_op text, p_limit integer, p_take integer, p_owner text, p_until bigint, p_now bigint, p_ts text,
                                         p_started text, p_attempt text)
RETURNS SETOF {s}.tasks LANGUAGE plpgsql AS $fn$
DECLARE
    v_running integer;
    v_ids uuid[];
    v_count integer := 0;
    v_shard smallint := (pg_backend_pid() % 16)::smallint;
    r {s}.tasks%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext({lock} || p_op));
    SELECT count(*) INTO v_running FROM {s}.tasks t WHERE t.op = p_op AND t.status = 'running';
    IF v_running >= p_limit THEN
        RETURN;
    END IF;
    -- Delayed tasks that came due (tasks_due) join the due-now order
    -- (run_at NULL: due), so a claim reads one ordered range of
    -- tasks_claim_order instead of sorting every task that came due (with
    -- 20,000 due at once, each claim of one task sorted all of them).
    -- Rows another transaction holds are skipped (the next claim takes
    -- them), the others locked in task-id order, as bulk cancels lock
    -- theirs: no waits, no deadlocks. Due by the database's clock too, so
    -- an instance whose clock runs ahead makes nothing due early.
    UPDATE {s}.tasks t SET run_at = NULL
     WHERE t.task_id IN (
        SELECT d.task_id FROM {s}.tasks d
         WHERE d.op = p_op AND d.status = 'pending' AND d.run_at IS NOT NULL
           AND d.run_at <= LEAST(p_now, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
         ORDER BY d.task_id
           FOR UPDATE SKIP LOCKED);
    SELECT array_agg(x.task_id ORDER BY x.priority DESC, x.created_at, x.task_id) INTO v_ids
      FROM (SELECT t.task_id, t.priority, t.created_at FROM {s}.tasks t
             WHERE t.op = p_op AND t.status = 'pending' AND t.run_at IS NULL
             ORDER BY t.priority DESC, t.created_at, t.task_id
             LIMIT LEAST(p_limit - v_running, p_take)
             FOR UPDATE SKIP LOCKED) x;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('tasktape.counted', 'on', true);
    FOR r IN
        WITH started AS (
            UPDATE {s}.tasks t
               SET status = 'running', started_at = coalesce(t.started_at, greatest(p_now, t.created_at)),
                   owner = p_owner, lease_until = p_until, last_seq = t.last_seq + 1,
                   attempt = t.attempt + 1, run_at = NULL
             WHERE t.task_id = ANY (v_ids)
            RETURNING t.*
        ),
        written AS (
            INSERT INTO {s}.events (task_id, seq, json)
            SELECT s.task_id, s.last_seq,
                   CASE WHEN s.last_seq = 1 THEN
                            replace(replace(p_started, '{mark.task_id}', '"' || s.task_id || '"'),
                                    '{mark.op}', to_json(p_op)::text)
                            || ',"seq":1,"ts":"' || p_ts || '"}'
                        ELSE
                            replace(replace(p_attempt, '{mark.attempt}', s.attempt::text),
                                    '{mark.max_attempts}', s.max_attempts::text)
                            || ',"seq":' || s.last_seq || ',"ts":"' || p_ts || '"}'
                   END
              FROM started s
            RETURNING task_id
        )
        SELECT s.* FROM started s
          JOIN unnest(v_ids) WITH ORDINALITY AS o(id, n) ON o.id = s.task_id
         ORDER BY o.n
    LOOP
        PERFORM pg_notify({chan}, 'e ' || r.task_id || ' ' || r.last_seq);
        v_count := v_count + 1;
        RETURN NEXT r;
    END LOOP;
    IF v_count > 0 THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n)
            VALUES ('pending', v_shard, -v_count), ('running', v_shard, v_count)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    PERFORM set_config('tasktape.counted', 'off', true);
END
$fn$;

-- The per-row counter locks its two rows in status order (pending,
-- running, then the terminal ones), as the statements that count
-- themselves do: a requeue (running -> pending) and a claim on one shard
-- cannot deadlock.
CREATE OR REPLACE FUNCTION {s}.count_tasks() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    v_shard smallint := (pg_backend_pid() % 16)::smallint;
    v_minute bigint;
    v_new boolean;
    v_order text[] := ARRAY['pending', 'running', 'succeeded', 'failed', 'cancelled'];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n) VALUES (NEW.status, v_shard, 1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n) VALUES (OLD.status, v_shard, -1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n - 1;
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n)
            SELECT x.status, v_shard, x.d
              FROM (VALUES (OLD.status, -1), (NEW.status, 1)) AS x(status, d)
             ORDER BY array_position(v_order, x.status)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
        IF NEW.status IN ('succeeded', 'failed', 'cancelled') AND NEW.finished_at IS NOT NULL THEN
            v_minute := NEW.finished_at / 60000;
            INSERT INTO {s}.finished_per_minute AS f (minute, status, shard, n)
                VALUES (v_minute, NEW.status, v_shard, 1)
                ON CONFLICT (minute, status, shard) DO UPDATE SET n = f.n + 1
                RETURNING (xmax = 0) INTO v_new;
            IF v_new THEN
                DELETE FROM {s}.finished_per_minute f
                 WHERE f.shard = v_shard AND f.minute < v_minute - 1440;
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;
