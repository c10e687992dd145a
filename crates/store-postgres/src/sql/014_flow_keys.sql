-- 14: flow keys and rates. A task of an op with a flow key keeps it; claims of
-- such an op (claim_flow) walk the keys with due tasks in key order from
-- where the op's last claim left off (flow_cursor), each key's turn
-- starting up to its weight of its best tasks, never more than the key's
-- concurrency running (counted under the op's claim lock, so across every
-- instance).
ALTER TABLE {s}.tasks ADD COLUMN flow_key text;
CREATE INDEX tasks_key_order ON {s}.tasks (op, flow_key, priority DESC, created_at, task_id)
    WHERE status = 'pending' AND run_at IS NULL AND flow_key IS NOT NULL;
CREATE INDEX tasks_key_running ON {s}.tasks (op, flow_key)
    WHERE status = 'running' AND flow_key IS NOT NULL;
CREATE TABLE {s}.flow_cursor (op text PRIMARY KEY, last_key text NOT NULL);
-- Starts of ops with a rate, by key ('' for the op's own rate).
CREATE TABLE {s}.flow_starts (op text NOT NULL, key text NOT NULL, at bigint NOT NULL);
CREATE INDEX flow_starts_by_key ON {s}.flow_starts (op, key, at);
CREATE INDEX flow_starts_by_time ON {s}.flow_starts (op, at);

-- How many more starts a rate allows now (by the database's clock).
CREATE FUNCTION {s}.rate_room(p_op text, p_key text, p_count integer, p_window bigint, p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_used integer;
BEGIN
    SELECT count(*) INTO v_used FROM {s}.flow_starts f
     WHERE f.op = p_op AND f.key = p_key AND f.at > p_now - p_window;
    RETURN GREATEST(0, p_count - v_used);
END
$fn$;

-- create_task_at and create_tasks with the task's metadata and flow key
-- (new overloads: an instance of the release before keeps calling the
-- ones it knows).
CREATE FUNCTION {s}.create_task_at(p_id uuid, p_op text, p_created bigint, p_params text,
                                   p_digest text, p_key text, p_trace text, p_priority integer,
                                   p_run_at bigint, p_max_attempts integer, p_retry text,
                                   p_retry_of uuid, p_metadata text, p_flow_key text)
RETURNS TABLE (out_created boolean, out_id uuid) LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO {s}.tasks (task_id, op, status, created_at, params, params_digest,
                           idempotency_key, trace_parent, priority, run_at, max_attempts,
                           retry, retry_of, metadata, flow_key)
    VALUES (p_id, p_op, 'pending', p_created, p_params, p_digest, p_key, p_trace, p_priority,
            p_run_at, p_max_attempts, p_retry, p_retry_of, p_metadata, p_flow_key)
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
                                 p_metadata text[], p_flow_keys text[])
RETURNS TABLE (out_created boolean, out_id uuid) LANGUAGE plpgsql AS $fn$
DECLARE
    v_inserted uuid[];
    v_op record;
BEGIN
    WITH inserted AS (
        INSERT INTO {s}.tasks (task_id, op, status, created_at, params, params_digest,
                               idempotency_key, trace_parent, priority, run_at, max_attempts,
                               retry, retry_of, metadata, flow_key)
        SELECT i.id, i.op, 'pending', i.created, i.params, i.digest, i.key, i.trace, i.priority,
               i.run_at, i.max_attempts, i.retry, i.retry_of, i.metadata, i.flow_key
          FROM unnest(p_ids, p_ops, p_created, p_params, p_digests, p_keys, p_traces,
                      p_priorities, p_run_ats, p_max_attempts, p_retries, p_retry_ofs, p_metadata, p_flow_keys)
               WITH ORDINALITY AS i(id, op, created, params, digest, key, trace, priority,
                                    run_at, max_attempts, retry, retry_of, metadata, flow_key, n)
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


-- claim_due for an op with flow control. With p_keyed the tasks are
-- picked by key, in turns (see the top); a round that started something
-- and left room is followed by another with larger turns, so one key
-- alone still fills the claim; a task without a key is taken when it
-- heads the op's queue. With a rate (p_rate_count per p_rate_window ms;
-- per key with p_rate_per_key) no more starts than it allows; each start
-- is recorded in flow_starts.
CREATE FUNCTION {s}.claim_flow(p_op text, p_limit integer, p_take integer, p_owner text, p_until bigint,
                               p_now bigint, p_ts text, p_started text, p_attempt text,
                               p_keyed boolean, p_key_limit integer, p_weight_keys text[], p_weights integer[],
                               p_rate_count integer, p_rate_window bigint, p_rate_per_key boolean)
RETURNS SETOF {s}.tasks LANGUAGE plpgsql AS $fn$
DECLARE
    v_running integer;
    v_room integer;
    v_ids uuid[] := '{}';
    v_count integer := 0;
    v_shard smallint := (pg_backend_pid() % 16)::smallint;
    v_cursor text;
    v_position text;
    v_began text;
    v_wrapped boolean;
    v_key text;
    v_visits integer;
    v_multiplier integer := 1;
    v_took integer;
    v_quota integer;
    v_key_running integer;
    v_found uuid[];
    v_head record;
    v_id_keys text[] := '{}';
    v_key_picked integer;
    -- A rate goes by the database's clock (read after the lock, so the
    -- claims of every instance see it move forward in their order).
    v_rate_now bigint;
    v_per_key boolean := p_rate_count IS NOT NULL AND p_rate_per_key;
    r {s}.tasks%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext({lock} || p_op));
    SELECT count(*) INTO v_running FROM {s}.tasks t WHERE t.op = p_op AND t.status = 'running';
    v_room := LEAST(p_limit - v_running, p_take);
    IF v_room <= 0 THEN
        RETURN;
    END IF;
    UPDATE {s}.tasks t SET run_at = NULL
     WHERE t.task_id IN (
        SELECT d.task_id FROM {s}.tasks d
         WHERE d.op = p_op AND d.status = 'pending' AND d.run_at IS NOT NULL
           AND d.run_at <= LEAST(p_now, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
         ORDER BY d.task_id
           FOR UPDATE SKIP LOCKED);
    IF p_rate_count IS NOT NULL THEN
        v_rate_now := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        DELETE FROM {s}.flow_starts f WHERE f.op = p_op AND f.at <= v_rate_now - 2 * p_rate_window;
        -- The runs start at that time too (row and `task_started`), so any
        -- window of start times holds what the rate allowed: a claim that
        -- waited for the lock would otherwise start its tasks at the time
        -- it was asked for, earlier than the window it was counted in.
        IF v_rate_now > p_now THEN
            p_now := v_rate_now;
            p_ts := to_char(to_timestamp(v_rate_now / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                    || '.' || lpad((v_rate_now % 1000)::text, 3, '0') || 'Z';
        END IF;
    END IF;
    IF p_rate_count IS NOT NULL AND NOT v_per_key THEN
        v_room := LEAST(v_room, {s}.rate_room(p_op, '', p_rate_count, p_rate_window, v_rate_now));
        IF v_room <= 0 THEN
            RETURN;
        END IF;
    END IF;
    IF NOT p_keyed THEN
        SELECT coalesce(array_agg(x.task_id ORDER BY x.priority DESC, x.created_at, x.task_id), '{}') INTO v_ids
          FROM (SELECT t.task_id, t.priority, t.created_at FROM {s}.tasks t
                 WHERE t.op = p_op AND t.status = 'pending' AND t.run_at IS NULL
                 ORDER BY t.priority DESC, t.created_at, t.task_id
                 LIMIT v_room
                 FOR UPDATE SKIP LOCKED) x;
        v_visits := 0;
    END IF;
    SELECT c.last_key INTO v_cursor FROM {s}.flow_cursor c WHERE c.op = p_op;
    v_position := v_cursor;
    IF p_keyed THEN
        -- No budget of visits: a round ends when it has been round every
        -- key once (keys at their concurrency cost a seek each).
        v_visits := 2147483647;
        -- The op's head, when it has no key (a task made before the op's
        -- flow existed, or by submit() in SQL): taken first.
        SELECT t.task_id, t.flow_key INTO v_head FROM {s}.tasks t
         WHERE t.op = p_op AND t.status = 'pending' AND t.run_at IS NULL
         ORDER BY t.priority DESC, t.created_at, t.task_id LIMIT 1;
        IF FOUND AND v_head.flow_key IS NULL THEN
            PERFORM 1 FROM {s}.tasks t
             WHERE t.task_id = v_head.task_id AND t.status = 'pending' FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                v_ids := v_ids || v_head.task_id;
                v_id_keys := v_id_keys || NULL::text;
            END IF;
        END IF;
    END IF;
    <<rounds>>
    WHILE p_keyed LOOP
        v_took := 0;
        v_began := v_position;
        v_wrapped := false;
        LOOP
            EXIT rounds WHEN cardinality(v_ids) >= v_room OR v_visits <= 0;
            v_key := NULL;
            -- Two statements, so each is one seek into tasks_key_order (an
            -- OR of the two would read every task of the keys before).
            IF v_position IS NULL THEN
                SELECT t.flow_key INTO v_key FROM {s}.tasks t
                 WHERE t.op = p_op AND t.status = 'pending' AND t.run_at IS NULL AND t.flow_key IS NOT NULL
                 ORDER BY t.flow_key LIMIT 1;
            ELSE
                SELECT t.flow_key INTO v_key FROM {s}.tasks t
                 WHERE t.op = p_op AND t.status = 'pending' AND t.run_at IS NULL AND t.flow_key IS NOT NULL
                   AND t.flow_key > v_position
                 ORDER BY t.flow_key LIMIT 1;
            END IF;
            IF v_key IS NULL THEN
                EXIT WHEN v_wrapped OR v_began IS NULL;
                v_wrapped := true;
                v_position := NULL;
                CONTINUE;
            END IF;
            EXIT WHEN v_wrapped AND v_began IS NOT NULL AND v_key > v_began;
            v_visits := v_visits - 1;
            v_position := v_key;
            v_quota := coalesce(p_weights[array_position(p_weight_keys, v_key)], 1) * v_multiplier;
            -- Picked in this claim, not started yet: they count too.
            v_key_picked := coalesce(cardinality(array_positions(v_id_keys, v_key)), 0);
            IF p_key_limit IS NOT NULL THEN
                SELECT count(*) INTO v_key_running FROM {s}.tasks t
                 WHERE t.op = p_op AND t.flow_key = v_key AND t.status = 'running';
                v_key_running := v_key_running + v_key_picked;
                v_quota := LEAST(v_quota, p_key_limit - v_key_running);
            END IF;
            v_quota := LEAST(v_quota, v_room - cardinality(v_ids));
            IF v_per_key AND v_quota > 0 THEN
                v_quota := LEAST(v_quota,
                                 {s}.rate_room(p_op, v_key, p_rate_count, p_rate_window, v_rate_now) - v_key_picked);
            END IF;
            CONTINUE WHEN v_quota <= 0;
            SELECT coalesce(array_agg(x.task_id), '{}') INTO v_found
              FROM (SELECT t.task_id FROM {s}.tasks t
                     WHERE t.op = p_op AND t.flow_key = v_key AND t.status = 'pending' AND t.run_at IS NULL
                       AND t.task_id <> ALL (v_ids)
                     ORDER BY t.priority DESC, t.created_at, t.task_id
                     LIMIT v_quota
                     FOR UPDATE SKIP LOCKED) x;
            v_ids := v_ids || v_found;
            v_id_keys := v_id_keys || array_fill(v_key, ARRAY[cardinality(v_found)]);
            v_took := v_took + cardinality(v_found);
        END LOOP;
        EXIT WHEN v_took = 0 OR cardinality(v_ids) >= v_room;
        v_multiplier := LEAST(v_room::bigint,
                              v_multiplier::bigint * GREATEST(1, ceil((v_room - cardinality(v_ids))::numeric / v_took)::bigint))::integer;
    END LOOP;
    IF v_position IS NOT NULL AND v_position IS DISTINCT FROM v_cursor THEN
        INSERT INTO {s}.flow_cursor AS c (op, last_key) VALUES (p_op, v_position)
            ON CONFLICT (op) DO UPDATE SET last_key = excluded.last_key;
    END IF;
    IF cardinality(v_ids) = 0 THEN
        RETURN;
    END IF;
    -- Each start (a later attempt's too), by the database's clock; with a
    -- rate per key, a task without a key is not counted.
    IF p_rate_count IS NOT NULL THEN
        INSERT INTO {s}.flow_starts (op, key, at)
            SELECT p_op, CASE WHEN v_per_key THEN t.flow_key ELSE '' END, v_rate_now
              FROM {s}.tasks t
             WHERE t.task_id = ANY (v_ids) AND (NOT v_per_key OR t.flow_key IS NOT NULL);
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
