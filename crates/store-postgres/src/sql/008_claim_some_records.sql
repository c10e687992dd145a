-- 8: claims that start at most `p_take` tasks (a caller with that many
-- free slots: a remote worker's claim), and the records the engine keeps
-- by kind and key (remote ops' declarations, remote workers: JSON texts
-- every instance reads; written by compare-and-swap).

CREATE TABLE {s}.records (
    kind text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE FUNCTION {s}.claim_due(p_op text, p_limit integer, p_take integer, p_owner text, p_until bigint, p_now bigint, p_ts text,
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
         LIMIT LEAST(p_limit - v_running, p_take)
         FOR UPDATE SKIP LOCKED),
    came_due AS (
        SELECT t.task_id, t.priority, t.created_at FROM {s}.tasks t
         WHERE t.op = p_op AND t.status = 'pending' AND t.run_at <= p_now
         ORDER BY t.priority DESC, t.created_at, t.task_id
         LIMIT LEAST(p_limit - v_running, p_take)
         FOR UPDATE SKIP LOCKED)
    SELECT array_agg(x.task_id ORDER BY x.priority DESC, x.created_at, x.task_id) INTO v_ids
      FROM (SELECT * FROM ready UNION ALL SELECT * FROM came_due
             ORDER BY priority DESC, created_at, task_id
             LIMIT LEAST(p_limit - v_running, p_take)) x;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    FOREACH v_id IN ARRAY v_ids LOOP
        PERFORM {s}.start_one(v_id, p_op, p_owner, p_until, p_now, p_ts, p_started, p_attempt);
        RETURN QUERY SELECT * FROM {s}.tasks t WHERE t.task_id = v_id;
    END LOOP;
END
$fn$;
