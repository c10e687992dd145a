-- Migration 4: retention and deletes in small steps. A deleted task's row
-- goes at once (so every read answers "no such task"); its tape waits in
-- deleted_tapes for sweep_tapes, which deletes a few thousand events per
-- call, so deleting a tape of millions of events holds no lock for long.
CREATE TABLE {s}.deleted_tapes (task_id uuid PRIMARY KEY);
CREATE INDEX tasks_by_finished ON {s}.tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE OR REPLACE FUNCTION {s}.delete_task(p_id uuid)
RETURNS TABLE (out_code smallint, out_status text) LANGUAGE plpgsql AS $fn$
DECLARE
    v_status text;
BEGIN
    SELECT t.status INTO v_status FROM {s}.tasks t WHERE t.task_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        out_code := {delete.not_found};
    ELSIF v_status IN ('pending', 'running') THEN
        out_code := {delete.not_terminal};
        out_status := v_status;
    ELSE
        DELETE FROM {s}.tasks t WHERE t.task_id = p_id;
        INSERT INTO {s}.deleted_tapes (task_id) VALUES (p_id) ON CONFLICT DO NOTHING;
        out_code := {delete.deleted};
    END IF;
    RETURN NEXT;
END
$fn$;

-- Deletes up to p_limit terminal tasks that finished before p_before, oldest
-- first, like delete_task; returns how many. Concurrent purges skip each
-- other's rows.
CREATE FUNCTION {s}.purge_tasks(p_before bigint, p_limit integer)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_n bigint;
BEGIN
    WITH old AS (
        SELECT t.task_id FROM {s}.tasks t
         WHERE t.finished_at < p_before AND t.status IN ('succeeded', 'failed', 'cancelled')
         ORDER BY t.finished_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
    gone AS (
        DELETE FROM {s}.tasks t USING old WHERE t.task_id = old.task_id RETURNING t.task_id)
    INSERT INTO {s}.deleted_tapes (task_id) SELECT task_id FROM gone ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$fn$;

-- Deletes up to p_limit events of queued tapes (lowest seqs first); a tape
-- found with fewer left than asked is done and leaves the queue.
CREATE FUNCTION {s}.sweep_tapes(p_limit integer)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_id uuid;
    v_left integer := p_limit;
    v_n bigint;
    v_total bigint := 0;
BEGIN
    FOR v_id IN
        SELECT q.task_id FROM {s}.deleted_tapes q ORDER BY q.task_id FOR UPDATE SKIP LOCKED
    LOOP
        DELETE FROM {s}.events e
         WHERE e.task_id = v_id
           AND e.seq IN (SELECT x.seq FROM {s}.events x WHERE x.task_id = v_id ORDER BY x.seq LIMIT v_left);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_total := v_total + v_n;
        v_left := v_left - v_n;
        IF v_left > 0 THEN
            DELETE FROM {s}.deleted_tapes q WHERE q.task_id = v_id;
        END IF;
        EXIT WHEN v_left <= 0;
    END LOOP;
    RETURN v_total;
END
$fn$;
