-- 11: submit() for applications that enqueue inside their own transaction
-- (the task exists if and only if that transaction commits; instances hear
-- of it at commit, by the NOTIFY create_task_at sends). The rules every
-- other submit meets hold: the op must be served (an instance's own op,
-- recorded at its start as kind 'served', or a remote worker's declaration,
-- kind 'op'); the priority, run_at and idempotency key rules; a repeated
-- key answers the existing task's id (a key another op's task holds is
-- refused). The params are checked against the
-- op's schema when the task is claimed (their digest is the mark 'sql'): a
-- bad one ends `failed` `invalid_request` naming the field. The retry
-- plan is the op's: what the serving instance recorded, or what the worker
-- declared.
CREATE FUNCTION {s}.submit(op text, params jsonb, idempotency_key text DEFAULT NULL,
                           run_at timestamptz DEFAULT NULL, priority integer DEFAULT 0)
RETURNS uuid LANGUAGE plpgsql AS $fn$
DECLARE
    v_now bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_run_at bigint;
    v_served jsonb;
    v_declared jsonb;
    v_retry jsonb;
    v_max integer := 1;
    v_id uuid;
    v_created boolean;
    v_existing_op text;
BEGIN
    IF op IS NULL OR op = '' THEN
        RAISE EXCEPTION 'op: an op name is required' USING ERRCODE = '22023';
    END IF;
    SELECT r.value::jsonb INTO v_served FROM {s}.records r WHERE r.kind = 'served' AND r.key = op;
    IF NOT FOUND THEN
        SELECT r.value::jsonb INTO v_declared FROM {s}.records r WHERE r.kind = 'op' AND r.key = op;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'op: % is not served by any instance or declared by any worker', op
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF priority IS NULL OR priority < {limit.priority_min} OR priority > {limit.priority_max} THEN
        RAISE EXCEPTION 'priority: must be % to %', {limit.priority_min}, {limit.priority_max}
            USING ERRCODE = '22023';
    END IF;
    IF idempotency_key IS NOT NULL THEN
        IF octet_length(idempotency_key) < 1 OR octet_length(idempotency_key) > {limit.key_bytes} THEN
            RAISE EXCEPTION 'idempotency_key: must be 1 to % bytes', {limit.key_bytes}
                USING ERRCODE = '22023';
        END IF;
        IF starts_with(idempotency_key, 'schedule:') THEN
            RAISE EXCEPTION 'idempotency_key: keys starting with "schedule:" are the schedules'' own'
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF run_at IS NOT NULL THEN
        v_run_at := (extract(epoch FROM run_at) * 1000)::bigint;
        IF v_run_at - v_now > {limit.max_delay_ms} THEN
            RAISE EXCEPTION 'run_at: must be at most 10 years from now' USING ERRCODE = '22023';
        END IF;
        -- A time already past is due now.
        IF v_run_at <= v_now THEN
            v_run_at := NULL;
        END IF;
    END IF;
    IF v_served IS NOT NULL THEN
        v_retry := v_served -> 'retry';
    ELSIF v_declared ? 'retry' AND jsonb_typeof(v_declared -> 'retry') = 'object' THEN
        v_retry := jsonb_build_object('policy', v_declared -> 'retry',
                                      'idempotent', coalesce((v_declared ->> 'idempotent')::boolean, false));
    END IF;
    IF v_retry IS NOT NULL AND jsonb_typeof(v_retry) = 'object' THEN
        v_max := coalesce((v_retry -> 'policy' ->> 'max_attempts')::integer, 1);
    ELSE
        v_retry := NULL;
    END IF;
    -- The new row's count goes to a shard the instances never use (16 and
    -- up, by transaction): the caller's transaction holds that counter row
    -- until it ends, and must not make the engine's own writes wait.
    PERFORM set_config('tasktape.counted', 'on', true);
    SELECT c.out_created, c.out_id INTO v_created, v_id
      FROM {s}.create_task_at(gen_random_uuid(), op, v_now, coalesce(params, 'null'::jsonb)::text,
                              'sql', idempotency_key, NULL, priority, v_run_at, v_max,
                              v_retry::text, NULL) c;
    PERFORM set_config('tasktape.counted', 'off', true);
    IF v_created THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n)
            VALUES ('pending', (16 + txid_current() % 256)::smallint, 1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1;
    ELSE
        SELECT t.op INTO v_existing_op FROM {s}.tasks t WHERE t.task_id = v_id;
        IF v_id IS NULL OR v_existing_op IS NULL THEN
            RAISE EXCEPTION 'idempotency_key: the task holding it was deleted meanwhile; submit again'
                USING ERRCODE = '40001';
        END IF;
        IF v_existing_op IS DISTINCT FROM op THEN
            RAISE EXCEPTION 'idempotency_key: already used by a task of op %', v_existing_op
                USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN v_id;
END
$fn$;

-- Statements that count their own rows (submit() above) have the insert
-- counter stand aside, as the per-row one does (migration 10).
DROP TRIGGER tasks_counted_in ON {s}.tasks;
CREATE TRIGGER tasks_counted_in AFTER INSERT ON {s}.tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    WHEN (current_setting('tasktape.counted', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {s}.count_inserted_tasks();
