-- 7: the event texts the functions wrote by concatenation (a start's
-- task_started or "attempt N of M started" line, a requeue's
-- tasktape.attempt_failed partial and history record) come from the
-- caller, written once in Rust (tasktape_core's bodies; texts.rs), with
-- marks (the mark placeholders) these functions replace by the locked row's values
-- before sealing the event with its seq and ts. New overloads: the
-- earlier functions stay for the earlier release's instances.

CREATE FUNCTION {s}.start_one(p_id uuid, p_op text, p_owner text, p_until bigint, p_now bigint, p_ts text,
                              p_started text, p_attempt text)
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

CREATE FUNCTION {s}.start_task(p_id uuid, p_owner text, p_until bigint, p_now bigint, p_ts text,
                               p_started text, p_attempt text)
RETURNS TABLE (out_code smallint, out_status text) LANGUAGE plpgsql AS $fn$
DECLARE
    cur record;
BEGIN
    SELECT t.status, t.op INTO cur FROM {s}.tasks t WHERE t.task_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        out_code := {start.not_found};
    ELSIF cur.status = 'running' THEN
        out_code := {start.already_running};
    ELSIF cur.status <> 'pending' THEN
        out_code := {start.already_finished};
        out_status := cur.status;
    ELSE
        PERFORM {s}.start_one(p_id, cur.op, p_owner, p_until, p_now, p_ts, p_started, p_attempt);
        out_code := {start.started};
    END IF;
    RETURN NEXT;
END
$fn$;

CREATE FUNCTION {s}.claim_due(p_op text, p_limit integer, p_owner text, p_until bigint, p_now bigint, p_ts text,
                              p_started text, p_attempt text)
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
        PERFORM {s}.start_one(v_id, p_op, p_owner, p_until, p_now, p_ts, p_started, p_attempt);
        RETURN QUERY SELECT * FROM {s}.tasks t WHERE t.task_id = v_id;
    END LOOP;
END
$fn$;

-- requeue_task with the caller's partial (open JSON) and history record,
-- each with the attempt's number marked; the codes of migration 5's.
CREATE FUNCTION {s}.requeue_task(p_id uuid, p_partial text, p_record text, p_run_at bigint,
                                 p_cancel_final text, p_now bigint, p_ts text,
                                 p_expired_before bigint, p_owner text)
RETURNS TABLE (out_code smallint, out_status text, out_seq bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    cur record;
    v_attempt text;
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
    -- The mark's first match only (regexp_replace without 'g'): the
    -- attempt comes before the error in both texts, and an error whose
    -- detail held the same key and value keeps it.
    v_attempt := '"attempt":' || greatest(cur.attempt, 1);
    v_entry := regexp_replace(p_record, '"attempt":{mark.attempt}', v_attempt);
    UPDATE {s}.tasks t
       SET status = 'pending', run_at = p_run_at, owner = NULL, lease_until = NULL, last_seq = out_seq,
           history = CASE WHEN t.history IS NULL THEN '[' || v_entry || ']'
                          ELSE left(t.history, -1) || ',' || v_entry || ']' END
     WHERE t.task_id = p_id;
    INSERT INTO {s}.events (task_id, seq, json)
    VALUES (p_id, out_seq, regexp_replace(p_partial, '"attempt":{mark.attempt}', v_attempt)
                           || ',"seq":' || out_seq || ',"ts":"' || p_ts || '"}');
    PERFORM pg_notify({chan}, 'e ' || p_id || ' ' || out_seq);
    PERFORM pg_notify({chan}, 'd ' || p_run_at || ' ' || cur.op);
    out_code := {finish.requeued};
    RETURN NEXT;
END
$fn$;
