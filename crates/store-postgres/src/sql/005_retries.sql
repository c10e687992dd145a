-- Migration 5: retries, delayed tasks and priorities. New row fields; a
-- claim takes the due pending tasks of an op by priority, then age; a
-- later attempt of a retried task begins with a log line, not a second
-- task_started; requeue_task puts a failed attempt back to pending.
-- Instances of an earlier release still running on this database call
-- claim(): it now starts nothing, so they never run a task by rules they do
-- not know (delays, priorities, retries); this release claims with
-- claim_due(). Later releases notice a newer schema by its version
-- (`Store::check_schema`) and stop claiming by themselves.
-- Writes of a running task are fenced by its owner (append_events_at with
-- p_owner, finish_owned, requeue_task): once a lease ran out and another
-- instance took the task (a retry after owner_lost), the old owner's late
-- events are dropped and its finish loses.
LOCK TABLE {s}.tasks IN SHARE ROW EXCLUSIVE MODE;
ALTER TABLE {s}.tasks
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN run_at bigint,
    ADD COLUMN attempt integer NOT NULL DEFAULT 0,
    ADD COLUMN max_attempts integer NOT NULL DEFAULT 1,
    ADD COLUMN retry text,
    ADD COLUMN history text,
    ADD COLUMN retry_of uuid;
CREATE INDEX tasks_claim_order ON {s}.tasks (op, priority DESC, created_at, task_id)
    WHERE status = 'pending' AND run_at IS NULL;
CREATE INDEX tasks_due ON {s}.tasks (op, run_at) WHERE status = 'pending' AND run_at IS NOT NULL;
DROP INDEX {s}.tasks_pending;
-- Keys by byte order, for the schedules' "latest key with this prefix".
CREATE INDEX tasks_by_key_bytes ON {s}.tasks ((idempotency_key COLLATE "C"))
    WHERE idempotency_key IS NOT NULL;

CREATE OR REPLACE FUNCTION {s}.start_one(p_id uuid, p_op text, p_owner text, p_until bigint, p_now bigint, p_ts text)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_seq bigint;
    v_attempt integer;
    v_max integer;
BEGIN
    UPDATE {s}.tasks t
       SET status = 'running', started_at = coalesce(t.started_at, p_now), owner = p_owner,
           lease_until = p_until, last_seq = t.last_seq + 1, attempt = t.attempt + 1, run_at = NULL
     WHERE t.task_id = p_id
     RETURNING t.last_seq, t.attempt, t.max_attempts INTO v_seq, v_attempt, v_max;
    IF v_seq = 1 THEN
        INSERT INTO {s}.events (task_id, seq, json)
        VALUES (p_id, 1, '{"type":"task_started","task_id":"' || p_id || '","op":'
                         || to_json(p_op)::text || ',"seq":1,"ts":"' || p_ts || '"}');
    ELSE
        INSERT INTO {s}.events (task_id, seq, json)
        VALUES (p_id, v_seq, '{"type":"log","level":"info","message":"attempt ' || v_attempt
                             || ' of ' || v_max || ' started","seq":' || v_seq || ',"ts":"' || p_ts || '"}');
    END IF;
    PERFORM pg_notify({chan}, 'e ' || p_id || ' ' || v_seq);
END
$fn$;

-- An earlier release's claim: starts nothing (see the header).
CREATE OR REPLACE FUNCTION {s}.claim(p_op text, p_limit integer, p_owner text, p_until bigint, p_now bigint, p_ts text)
RETURNS SETOF {s}.tasks LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN;
END
$fn$;

CREATE FUNCTION {s}.claim_due(p_op text, p_limit integer, p_owner text, p_until bigint, p_now bigint, p_ts text)
RETURNS SETOF {s}.tasks LANGUAGE plpgsql AS $fn$
DECLARE
    v_running integer;
    v_ids uuid[];
    v_id uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext({lock} || p_op));
    SELECT count(*) INTO v_running FROM {s}.tasks t WHERE t.op = p_op AND t.status = 'running';
    IF v_running >= p_limit THEN
        RETURN;
    END IF;
    -- Due now (tasks_claim_order) and delayed ones that came due
    -- (tasks_due): never a walk past tasks delayed until later.
    WITH ready AS (
        SELECT t.task_id, t.priority, t.created_at FROM {s}.tasks t
         WHERE t.op = p_op AND t.status = 'pending' AND t.run_at IS NULL
         ORDER BY t.priority DESC, t.created_at, t.task_id
         LIMIT p_limit - v_running
         FOR UPDATE SKIP LOCKED),
    came_due AS (
        SELECT t.task_id, t.priority, t.created_at FROM {s}.tasks t
         WHERE t.op = p_op AND t.status = 'pending' AND t.run_at <= p_now
         ORDER BY t.priority DESC, t.created_at, t.task_id
         LIMIT p_limit - v_running
         FOR UPDATE SKIP LOCKED)
    SELECT array_agg(x.task_id ORDER BY x.priority DESC, x.created_at, x.task_id) INTO v_ids
      FROM (SELECT * FROM ready UNION ALL SELECT * FROM came_due
             ORDER BY priority DESC, created_at, task_id
             LIMIT p_limit - v_running) x;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    FOREACH v_id IN ARRAY v_ids LOOP
        PERFORM {s}.start_one(v_id, p_op, p_owner, p_until, p_now, p_ts);
        RETURN QUERY SELECT * FROM {s}.tasks t WHERE t.task_id = v_id;
    END LOOP;
END
$fn$;

-- Like create_task, with the new fields. A delayed task announces when it
-- is due ('d <run_at> <op>'), so every instance can wake for it.
CREATE FUNCTION {s}.create_task_at(p_id uuid, p_op text, p_created bigint, p_params text,
                                   p_digest text, p_key text, p_trace text, p_priority integer,
                                   p_run_at bigint, p_max_attempts integer, p_retry text,
                                   p_retry_of uuid)
RETURNS TABLE (out_created boolean, out_id uuid) LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO {s}.tasks (task_id, op, status, created_at, params, params_digest,
                           idempotency_key, trace_parent, priority, run_at, max_attempts,
                           retry, retry_of)
    VALUES (p_id, p_op, 'pending', p_created, p_params, p_digest, p_key, p_trace, p_priority,
            p_run_at, p_max_attempts, p_retry, p_retry_of)
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

-- A failed attempt back to pending, due at p_run_at: out_code
-- {finish.requeued} (out_seq: the attempt_failed partial); a recorded
-- cancel ends the task cancelled instead ({finish.finished}); otherwise the
-- codes of finish_task (a pending task: {finish.not_started}).
CREATE FUNCTION {s}.requeue_task(p_id uuid, p_error text, p_run_at bigint, p_run_at_text text,
                                 p_started text, p_cancel_final text, p_now bigint, p_ts text,
                                 p_expired_before bigint, p_owner text)
RETURNS TABLE (out_code smallint, out_status text, out_seq bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    cur record;
    v_attempt integer;
    v_entry text;
BEGIN
    SELECT t.status, t.cancel_requested, t.last_seq, t.op, t.lease_until, t.attempt, t.owner INTO cur
      FROM {s}.tasks t WHERE t.task_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        out_code := {finish.not_found};
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_owner IS NOT NULL AND p_expired_before IS NULL AND cur.status = 'running'
       AND cur.owner IS DISTINCT FROM p_owner THEN
        out_code := {finish.not_owner};
        out_status := cur.status;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_expired_before IS NOT NULL
       AND (cur.status <> 'running' OR cur.lease_until IS NULL OR cur.lease_until >= p_expired_before) THEN
        out_code := {finish.not_expired};
        RETURN NEXT;
        RETURN;
    END IF;
    IF cur.status NOT IN ('pending', 'running') THEN
        out_code := {finish.already_finished};
        out_status := cur.status;
        RETURN NEXT;
        RETURN;
    END IF;
    IF cur.status = 'pending' THEN
        out_code := {finish.not_started};
        RETURN NEXT;
        RETURN;
    END IF;
    out_seq := cur.last_seq + 1;
    IF cur.cancel_requested THEN
        UPDATE {s}.tasks t
           SET status = 'cancelled', finished_at = p_now, result = NULL, error = NULL,
               owner = NULL, lease_until = NULL, last_seq = out_seq
         WHERE t.task_id = p_id;
        INSERT INTO {s}.events (task_id, seq, json)
        VALUES (p_id, out_seq, p_cancel_final || ',"seq":' || out_seq || ',"ts":"' || p_ts || '"}');
        PERFORM pg_notify({chan}, 'f ' || p_id || ' ' || out_seq || ' ' || cur.op);
        out_code := {finish.finished};
        out_status := 'cancelled';
        RETURN NEXT;
        RETURN;
    END IF;
    v_attempt := greatest(cur.attempt, 1);
    v_entry := '{"attempt":' || v_attempt || ',"error":' || p_error || ',"started_at":'
               || coalesce('"' || p_started || '"', 'null') || ',"ended_at":"' || p_ts || '"}';
    UPDATE {s}.tasks t
       SET status = 'pending', run_at = p_run_at, owner = NULL, lease_until = NULL, last_seq = out_seq,
           history = CASE WHEN t.history IS NULL THEN '[' || v_entry || ']'
                          ELSE left(t.history, -1) || ',' || v_entry || ']' END
     WHERE t.task_id = p_id;
    INSERT INTO {s}.events (task_id, seq, json)
    VALUES (p_id, out_seq, '{"type":"partial","kind":"tasktape.attempt_failed","payload":{"attempt":'
                           || v_attempt || ',"error":' || p_error || ',"retry_at":"' || p_run_at_text
                           || '"},"seq":' || out_seq || ',"ts":"' || p_ts || '"}');
    PERFORM pg_notify({chan}, 'e ' || p_id || ' ' || out_seq);
    PERFORM pg_notify({chan}, 'd ' || p_run_at || ' ' || cur.op);
    out_code := {finish.requeued};
    RETURN NEXT;
END
$fn$;

-- finish_task for the task's owner: a running task another instance holds
-- now (its lease ran out and the task was taken again) is not finished by
-- the old owner ({finish.not_owner}). Reaps (p_expired_before) and a NULL
-- p_owner skip the check.
CREATE FUNCTION {s}.finish_owned(p_id uuid, p_status text, p_result text, p_error text,
                                 p_final text, p_cancel_final text, p_now bigint, p_ts text,
                                 p_expired_before bigint, p_owner text)
RETURNS TABLE (out_code smallint, out_status text, out_seq bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    cur record;
BEGIN
    IF p_owner IS NOT NULL AND p_expired_before IS NULL THEN
        SELECT t.status, t.owner INTO cur FROM {s}.tasks t WHERE t.task_id = p_id FOR UPDATE;
        IF FOUND AND cur.status = 'running' AND cur.owner IS DISTINCT FROM p_owner THEN
            out_code := {finish.not_owner};
            out_status := cur.status;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM {s}.finish_task(p_id, p_status, p_result, p_error, p_final,
                                               p_cancel_final, p_now, p_ts, p_expired_before);
END
$fn$;

-- append_events_at for the tasks' owner: events of a task another instance
-- runs now are dropped. The three-argument form (an earlier release's)
-- appends without the check.
CREATE FUNCTION {s}.append_events_at(p_ids uuid[], p_bodies text[], p_ts text[], p_owner text)
RETURNS TABLE (out_seq bigint, out_code smallint) LANGUAGE plpgsql AS $fn$
DECLARE
    v_id uuid;
    v_n bigint;
    v_top bigint;
    bumped_ids uuid[] := '{}';
    bumped_base bigint[] := '{}';
    dropped_ids uuid[] := '{}';
    dropped_last bigint[] := '{}';
BEGIN
    FOR v_id, v_n IN
        SELECT x.id, count(*) FROM unnest(p_ids) AS x(id) GROUP BY x.id ORDER BY x.id
    LOOP
        UPDATE {s}.tasks t SET last_seq = t.last_seq + v_n
         WHERE t.task_id = v_id AND t.status = 'running'
           AND (p_owner IS NULL OR t.owner = p_owner)
         RETURNING t.last_seq INTO v_top;
        IF FOUND THEN
            bumped_ids := bumped_ids || v_id;
            bumped_base := bumped_base || (v_top - v_n);
            PERFORM pg_notify({chan}, 'e ' || v_id || ' ' || v_top);
        ELSE
            SELECT t.last_seq INTO v_top FROM {s}.tasks t WHERE t.task_id = v_id;
            IF FOUND THEN
                dropped_ids := dropped_ids || v_id;
                dropped_last := dropped_last || v_top;
            END IF;
        END IF;
    END LOOP;
    RETURN QUERY
    WITH input AS (
        SELECT i.id, i.body, i.ts, i.ord,
               row_number() OVER (PARTITION BY i.id ORDER BY i.ord) AS k
          FROM unnest(p_ids, p_bodies, p_ts) WITH ORDINALITY AS i(id, body, ts, ord)),
    bumped AS (SELECT * FROM unnest(bumped_ids, bumped_base) AS b(id, base)),
    dropped AS (SELECT * FROM unnest(dropped_ids, dropped_last) AS d(id, last)),
    inserted AS (
        INSERT INTO {s}.events (task_id, seq, json)
        SELECT i.id, b.base + i.k,
               i.body || ',"seq":' || (b.base + i.k) || ',"ts":"' || i.ts || '"}'
          FROM input i JOIN bumped b ON b.id = i.id)
    SELECT COALESCE(b.base + i.k, d.last, 0),
           (CASE WHEN b.id IS NOT NULL THEN {append.appended}
                 WHEN d.id IS NOT NULL THEN {append.dropped}
                 ELSE {append.not_found} END)::smallint
      FROM input i
      LEFT JOIN bumped b ON b.id = i.id
      LEFT JOIN dropped d ON d.id = i.id
     ORDER BY i.ord;
END
$fn$;

CREATE OR REPLACE FUNCTION {s}.append_events_at(p_ids uuid[], p_bodies text[], p_ts text[])
RETURNS TABLE (out_seq bigint, out_code smallint) LANGUAGE sql AS $fn$
    SELECT * FROM {s}.append_events_at(p_ids, p_bodies, p_ts, NULL::text);
$fn$;
