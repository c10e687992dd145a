-- Migration 3: append_events_at, like append_events (kept for older
-- instances on the same database) but with each event's own time: when
-- its op reported it, not when the batch was flushed.
CREATE FUNCTION {s}.append_events_at(p_ids uuid[], p_bodies text[], p_ts text[])
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
