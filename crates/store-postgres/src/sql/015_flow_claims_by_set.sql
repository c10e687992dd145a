-- 15: claim_flow picks keys set-based. The keys' running counts are read
-- once per claim (one pass over the op's running tasks, grouped by key),
-- not once per key; the keys after the position are walked and their
-- tasks picked in one statement per batch of keys (a skip scan of
-- tasks_key_order, each key's turn cut where the claim's room runs out),
-- not three statements per key. Same signature and rules as migration 14.
CREATE OR REPLACE FUNCTION {s}.claim_flow(p_op text, p_limit integer, p_take integer, p_owner text, p_until bigint,
                                          p_now bigint, p_ts text, p_started text, p_attempt text,
                                          p_keyed boolean, p_key_limit integer, p_weight_keys text[], p_weights integer[],
                                          p_rate_count integer, p_rate_window bigint, p_rate_per_key boolean)
RETURNS SETOF {s}.tasks LANGUAGE plpgsql AS $fn$
DECLARE
    v_running integer;
    v_room integer;
    v_left integer;
    v_ids uuid[] := '{}';
    v_id_keys text[] := '{}';
    v_count integer := 0;
    v_shard smallint := (pg_backend_pid() % 16)::smallint;
    v_cursor text;
    v_position text;
    v_began text;
    v_stop text;
    v_wrapped boolean;
    v_key text;
    v_multiplier integer := 1;
    v_took integer;
    v_found uuid[];
    v_found_keys text[];
    v_last text;
    -- How many keys a batch walks: the room left + 16, doubled after each
    -- batch that took nothing (up to 8,192), so a claim passing over many
    -- full keys needs few statements.
    v_span bigint := 0;
    v_head record;
    -- Running tasks of the op by key, read once (the op's claim lock is
    -- held: no claim adds to them meanwhile; finishes only make room).
    v_run_keys text[] := '{}';
    v_run_counts integer[] := '{}';
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
    -- With a rate or a key concurrency the runs start at the database's
    -- time after the lock (row and `task_started`): any window of start
    -- times then holds what the rate allowed, and (as far as the
    -- instances' clocks agree with the database's, which stamp finishes) a
    -- run does not seem to start before the finish that made room for it:
    -- a claim that waited for the lock was asked for before that finish.
    IF p_rate_count IS NOT NULL OR (p_keyed AND p_key_limit IS NOT NULL) THEN
        v_rate_now := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        IF v_rate_now > p_now THEN
            p_now := v_rate_now;
            p_ts := to_char(to_timestamp(v_rate_now / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                    || '.' || lpad((v_rate_now % 1000)::text, 3, '0') || 'Z';
        END IF;
    END IF;
    IF p_rate_count IS NOT NULL THEN
        DELETE FROM {s}.flow_starts f WHERE f.op = p_op AND f.at <= v_rate_now - 2 * p_rate_window;
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
    END IF;
    SELECT c.last_key INTO v_cursor FROM {s}.flow_cursor c WHERE c.op = p_op;
    v_position := v_cursor;
    IF p_keyed THEN
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
        IF p_key_limit IS NOT NULL THEN
            SELECT coalesce(array_agg(g.flow_key), '{}'), coalesce(array_agg(g.n), '{}')
              INTO v_run_keys, v_run_counts
              FROM (SELECT t.flow_key, count(*)::integer AS n FROM {s}.tasks t
                     WHERE t.op = p_op AND t.status = 'running' AND t.flow_key IS NOT NULL
                     GROUP BY t.flow_key) g;
        END IF;
    END IF;
    <<rounds>>
    WHILE p_keyed LOOP
        v_took := 0;
        v_began := v_position;
        v_wrapped := false;
        LOOP
            v_left := v_room - cardinality(v_ids);
            EXIT rounds WHEN v_left <= 0;
            v_key := NULL;
            -- The first key after the position: two statements, so each is
            -- one seek into tasks_key_order.
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
            -- Once wrapped, the round ends with the key it began after.
            v_stop := CASE WHEN v_wrapped THEN v_began END;
            v_span := GREATEST(v_span, v_left::bigint + 16);
            -- From v_key on, a batch of keys in order (a skip scan), each
            -- with its turn: its weight times the round's multiplier, no more
            -- than its concurrency leaves (running, and picked in this
            -- claim), nor its rate; turns are cut where the room runs out.
            WITH RECURSIVE walk (k, n) AS (
                SELECT v_key, 1
                UNION ALL
                SELECT (SELECT t.flow_key FROM {s}.tasks t
                         WHERE t.op = p_op AND t.status = 'pending' AND t.run_at IS NULL
                           AND t.flow_key IS NOT NULL AND t.flow_key > w.k
                         ORDER BY t.flow_key LIMIT 1),
                       w.n + 1
                  FROM walk w
                 WHERE w.k IS NOT NULL AND w.n < v_span AND (v_stop IS NULL OR w.k < v_stop)
            ),
            keys AS (
                SELECT w.k, w.n FROM walk w
                 WHERE w.k IS NOT NULL AND (v_stop IS NULL OR w.k <= v_stop)
            ),
            picked AS (
                SELECT u.k, count(*)::integer AS n FROM unnest(v_id_keys) AS u(k)
                 WHERE u.k IS NOT NULL GROUP BY u.k
            ),
            turns AS (
                SELECT k.k, k.n, coalesce(p.n, 0) AS picked,
                       LEAST(coalesce(p_weights[array_position(p_weight_keys, k.k)], 1)::bigint * v_multiplier,
                             coalesce(p_key_limit - coalesce(run.n, 0) - coalesce(p.n, 0), v_left),
                             v_left) AS quota
                  FROM keys k
                  LEFT JOIN picked p ON p.k = k.k
                  LEFT JOIN unnest(v_run_keys, v_run_counts) AS run(k, n) ON run.k = k.k
            ),
            -- Each turn no larger than the key's rate allows (asked only of
            -- keys with a turn) nor than the tasks it has left to pick, so
            -- the room is cut by what each key will really take.
            sized AS (
                SELECT t.k, t.n, LEAST(t.quota, a.n) AS quota
                  FROM (SELECT t.k, t.n,
                               CASE WHEN v_per_key
                                    THEN LEAST(t.quota, {s}.rate_room(p_op, t.k, p_rate_count, p_rate_window, v_rate_now)
                                                        - t.picked)
                                    ELSE t.quota END AS quota
                          FROM turns t WHERE t.quota > 0) t
                  CROSS JOIN LATERAL (
                      SELECT count(*) AS n FROM (
                          SELECT 1 FROM {s}.tasks x
                           WHERE x.op = p_op AND x.flow_key = t.k AND x.status = 'pending' AND x.run_at IS NULL
                             AND x.task_id <> ALL (v_ids)
                           LIMIT GREATEST(t.quota, 0)) y) a
                 WHERE t.quota > 0
            ),
            cut AS (
                SELECT t.k, t.n, t.quota, (sum(t.quota) OVER (ORDER BY t.n))::bigint - t.quota AS before
                  FROM sized t WHERE t.quota > 0
            ),
            chosen AS (
                SELECT c.n, x.task_id, c.k, x.priority, x.created_at
                  FROM cut c
                  CROSS JOIN LATERAL (
                      SELECT t.task_id, t.priority, t.created_at FROM {s}.tasks t
                       WHERE t.op = p_op AND t.flow_key = c.k AND t.status = 'pending' AND t.run_at IS NULL
                         AND t.task_id <> ALL (v_ids)
                       ORDER BY t.priority DESC, t.created_at, t.task_id
                       LIMIT LEAST(c.quota, v_left - c.before)
                       FOR UPDATE SKIP LOCKED) x
                 WHERE c.before < v_left
            )
            SELECT coalesce((SELECT array_agg(h.task_id ORDER BY h.n, h.priority DESC, h.created_at, h.task_id)
                               FROM chosen h), '{}'),
                   coalesce((SELECT array_agg(h.k ORDER BY h.n, h.priority DESC, h.created_at, h.task_id)
                               FROM chosen h), '{}'),
                   -- The last key visited: the one whose turn met the end
                   -- of the room, else the batch's last.
                   (SELECT k.k FROM keys k
                     WHERE k.n = coalesce((SELECT min(c.n) FROM cut c WHERE c.before + c.quota >= v_left),
                                          (SELECT max(k2.n) FROM keys k2)))
              INTO v_found, v_found_keys, v_last;
            v_ids := v_ids || v_found;
            v_id_keys := v_id_keys || v_found_keys;
            v_took := v_took + cardinality(v_found);
            v_span := CASE WHEN cardinality(v_found) = 0 THEN LEAST(v_span * 2, 8192) ELSE 0 END;
            v_position := coalesce(v_last, v_key);
            EXIT WHEN v_stop IS NOT NULL AND v_position >= v_stop;
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
