//! The PostgreSQL schema, its functions, and its versioned migrations
//! (recorded in `<schema>.migrations`, applied by `migrations.rs`). Every
//! statement names the schema through the `{s}` placeholder; `{chan}` is the
//! NOTIFY channel, `{lock}` the advisory-lock prefix, and `{start.started}`
//! and the like the answer codes named in `codes.rs`. Migrations only ever
//! append to [`MIGRATIONS`] (rendering a placeholder gives the same text the
//! number gave before it was named).
//!
//! Transitions are PL/pgSQL functions: each checks the row it locks and
//! writes row and tape in the one statement's transaction, so a transition
//! is one round trip and no caller reads-then-writes. Commits that matter to
//! other instances send a NOTIFY (delivered at commit):
//!
//! - `e <task_id> <seq>`: events up to `seq` are on the tape;
//! - `f <task_id> <seq> <op>`: the task ended with `final` at `seq`;
//! - `p <op>`: a pending task was created;
//! - `d <run_at> <op>`: a pending task of `op` is due at `run_at` (epoch ms):
//!   a delayed task, or a retried one's next attempt;
//! - `c <task_id> <owner>`: a cancel was recorded for a running task.

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE {s}.tasks (
    task_id          uuid PRIMARY KEY,
    op               text NOT NULL,
    status           text NOT NULL,
    created_at       bigint NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    params           text NOT NULL,
    params_digest    text NOT NULL,
    result           text,
    error            text,
    idempotency_key  text,
    cancel_requested boolean NOT NULL DEFAULT false,
    owner            text,
    lease_until      bigint,
    last_seq         bigint NOT NULL DEFAULT 0,
    trace_parent     text
);
CREATE INDEX tasks_by_created ON {s}.tasks (created_at DESC, task_id);
CREATE INDEX tasks_by_status ON {s}.tasks (status, created_at DESC, task_id);
CREATE INDEX tasks_by_op ON {s}.tasks (op, created_at DESC, task_id);
CREATE UNIQUE INDEX tasks_by_idempotency_key ON {s}.tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_pending ON {s}.tasks (op, created_at, task_id) WHERE status = 'pending';
CREATE INDEX tasks_running ON {s}.tasks (op) WHERE status = 'running';

CREATE TABLE {s}.events (
    task_id uuid NOT NULL,
    seq     bigint NOT NULL,
    json    text NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- Appends in order; one row per input, in input order: out_code 0 appended
-- (out_seq), 1 dropped (out_seq = the tape's last seq), 2 no such task.
-- One UPDATE per task however many events it gets (updating one row again
-- and again in a transaction grows its version chain), by primary key, in
-- task-id order (lease renewal locks in that order too), then one INSERT.
CREATE FUNCTION {s}.append_events(p_ids uuid[], p_bodies text[], p_ts text)
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
        SELECT i.id, i.body, i.ord,
               row_number() OVER (PARTITION BY i.id ORDER BY i.ord) AS k
          FROM unnest(p_ids, p_bodies) WITH ORDINALITY AS i(id, body, ord)),
    bumped AS (SELECT * FROM unnest(bumped_ids, bumped_base) AS b(id, base)),
    dropped AS (SELECT * FROM unnest(dropped_ids, dropped_last) AS d(id, last)),
    inserted AS (
        INSERT INTO {s}.events (task_id, seq, json)
        SELECT i.id, b.base + i.k,
               i.body || ',"seq":' || (b.base + i.k) || ',"ts":"' || p_ts || '"}'
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

-- Makes a pending task running and writes task_started (the caller holds the row).
CREATE FUNCTION {s}.start_one(p_id uuid, p_op text, p_owner text, p_until bigint, p_now bigint, p_ts text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE {s}.tasks t
       SET status = 'running', started_at = p_now, owner = p_owner, lease_until = p_until, last_seq = 1
     WHERE t.task_id = p_id;
    INSERT INTO {s}.events (task_id, seq, json)
    VALUES (p_id, 1, '{"type":"task_started","task_id":"' || p_id || '","op":'
                     || to_json(p_op)::text || ',"seq":1,"ts":"' || p_ts || '"}');
    PERFORM pg_notify({chan}, 'e ' || p_id || ' 1');
END
$fn$;

-- out_code 0 started, 1 already running, 2 already finished (out_status), 3 no such task.
CREATE FUNCTION {s}.start_task(p_id uuid, p_owner text, p_until bigint, p_now bigint, p_ts text)
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
        PERFORM {s}.start_one(p_id, cur.op, p_owner, p_until, p_now, p_ts);
        out_code := {start.started};
    END IF;
    RETURN NEXT;
END
$fn$;

-- Starts the oldest pending tasks of p_op while fewer than p_limit run. The
-- advisory lock serializes claims of one op across instances, so the count
-- and the limit hold; SKIP LOCKED passes over rows a cancel holds.
CREATE FUNCTION {s}.claim(p_op text, p_limit integer, p_owner text, p_until bigint, p_now bigint, p_ts text)
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
    SELECT array_agg(x.task_id ORDER BY x.created_at, x.task_id) INTO v_ids
      FROM (SELECT t.task_id, t.created_at FROM {s}.tasks t
             WHERE t.op = p_op AND t.status = 'pending'
             ORDER BY t.created_at, t.task_id
             LIMIT p_limit - v_running
             FOR UPDATE SKIP LOCKED) x;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    FOREACH v_id IN ARRAY v_ids LOOP
        PERFORM {s}.start_one(v_id, p_op, p_owner, p_until, p_now, p_ts);
        RETURN QUERY SELECT * FROM {s}.tasks t WHERE t.task_id = v_id;
    END LOOP;
END
$fn$;

-- out_code 0 finished (out_status, out_seq), 1 already finished (out_status),
-- 2 not started (a pending task cannot succeed), 3 no such task, 4 (a reap,
-- p_expired_before set) not running or its lease was renewed. A recorded
-- cancel wins: the task ends cancelled whatever p_status says.
CREATE FUNCTION {s}.finish_task(p_id uuid, p_status text, p_result text, p_error text,
                                p_final text, p_cancel_final text, p_now bigint, p_ts text,
                                p_expired_before bigint)
RETURNS TABLE (out_code smallint, out_status text, out_seq bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    cur record;
    v_status text := p_status;
    v_final text := p_final;
BEGIN
    SELECT t.status, t.cancel_requested, t.last_seq, t.op, t.lease_until INTO cur
      FROM {s}.tasks t WHERE t.task_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        out_code := {finish.not_found};
        RETURN NEXT;
        RETURN;
    END IF;
    -- A reap: only a running task whose lease is still over, checked under the lock.
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
    IF cur.status = 'pending' AND p_status = 'succeeded' THEN
        out_code := {finish.not_started};
        RETURN NEXT;
        RETURN;
    END IF;
    IF cur.cancel_requested THEN
        v_status := 'cancelled';
        p_result := NULL;
        p_error := NULL;
        v_final := p_cancel_final;
    END IF;
    out_seq := cur.last_seq + 1;
    UPDATE {s}.tasks t
       SET status = v_status, finished_at = p_now, result = p_result, error = p_error,
           owner = NULL, lease_until = NULL, last_seq = out_seq
     WHERE t.task_id = p_id;
    INSERT INTO {s}.events (task_id, seq, json)
    VALUES (p_id, out_seq, v_final || ',"seq":' || out_seq || ',"ts":"' || p_ts || '"}');
    PERFORM pg_notify({chan}, 'f ' || p_id || ' ' || out_seq || ' ' || cur.op);
    out_code := {finish.finished};
    out_status := v_status;
    RETURN NEXT;
END
$fn$;

-- out_code 0 cancelled a pending task (out_seq), 1 recorded for a running
-- one (out_owner), 2 already terminal (out_status), 3 no such task.
CREATE FUNCTION {s}.request_cancel(p_id uuid, p_cancel_final text, p_now bigint, p_ts text)
RETURNS TABLE (out_code smallint, out_status text, out_seq bigint, out_owner text)
LANGUAGE plpgsql AS $fn$
DECLARE
    cur record;
BEGIN
    SELECT t.status, t.last_seq, t.op, t.owner INTO cur
      FROM {s}.tasks t WHERE t.task_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        out_code := {cancel.not_found};
    ELSIF cur.status = 'pending' THEN
        out_seq := cur.last_seq + 1;
        UPDATE {s}.tasks t
           SET status = 'cancelled', finished_at = p_now, last_seq = out_seq
         WHERE t.task_id = p_id;
        INSERT INTO {s}.events (task_id, seq, json)
        VALUES (p_id, out_seq, p_cancel_final || ',"seq":' || out_seq || ',"ts":"' || p_ts || '"}');
        PERFORM pg_notify({chan}, 'f ' || p_id || ' ' || out_seq || ' ' || cur.op);
        out_code := {cancel.cancelled};
    ELSIF cur.status = 'running' THEN
        UPDATE {s}.tasks t SET cancel_requested = true WHERE t.task_id = p_id;
        PERFORM pg_notify({chan}, 'c ' || p_id || ' ' || coalesce(cur.owner, ''));
        out_code := {cancel.requested};
        out_owner := cur.owner;
    ELSE
        out_code := {cancel.already_terminal};
        out_status := cur.status;
    END IF;
    RETURN NEXT;
END
$fn$;

-- out_created false: the key's task (out_id) was there first.
CREATE FUNCTION {s}.create_task(p_id uuid, p_op text, p_created bigint, p_params text,
                                p_digest text, p_key text, p_trace text)
RETURNS TABLE (out_created boolean, out_id uuid) LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO {s}.tasks (task_id, op, status, created_at, params, params_digest,
                           idempotency_key, trace_parent)
    VALUES (p_id, p_op, 'pending', p_created, p_params, p_digest, p_key, p_trace)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify({chan}, 'p ' || p_op);
        out_created := true;
        out_id := p_id;
    ELSE
        SELECT t.task_id INTO out_id FROM {s}.tasks t WHERE t.idempotency_key = p_key;
        out_created := false;
    END IF;
    RETURN NEXT;
END
$fn$;

-- out_code 0 deleted, 1 not terminal (out_status), 2 no such task.
CREATE FUNCTION {s}.delete_task(p_id uuid)
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
        DELETE FROM {s}.events e WHERE e.task_id = p_id;
        DELETE FROM {s}.tasks t WHERE t.task_id = p_id;
        out_code := {delete.deleted};
    END IF;
    RETURN NEXT;
END
$fn$;
"#,
    r#"
-- Counters kept by a trigger in the same transactions as the rows, so the
-- dashboard's counts and activity chart never scan the tasks. Each
-- connection updates its own shard of rows (the backend pid mod 16), so
-- transactions on different connections never wait on a counter; a
-- transaction locks counter rows in status order (pending, running, then a
-- terminal one, then its minute), so two on one shard cannot deadlock.
-- The counters change once per row changed: a statement changing very many
-- rows in one transaction (a purge of millions) should go in batches, or
-- the counter rows' version chains grow with it.
-- Writers wait while the counters are seeded (an older instance still
-- running during an upgrade must not commit between the seed and the
-- trigger); reads go on.
LOCK TABLE {s}.tasks IN SHARE ROW EXCLUSIVE MODE;
-- Lists filtered by op and status (SQLite has this since its migration 2).
CREATE INDEX tasks_by_op_status ON {s}.tasks (op, status, created_at DESC, task_id);
CREATE TABLE {s}.task_counts (
    status text NOT NULL,
    shard  smallint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (status, shard)
);
INSERT INTO {s}.task_counts (status, shard, n)
    SELECT status, 0, count(*) FROM {s}.tasks GROUP BY status;
CREATE TABLE {s}.finished_per_minute (
    minute bigint NOT NULL,
    status text NOT NULL,
    shard  smallint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (minute, status, shard)
);
INSERT INTO {s}.finished_per_minute (minute, status, shard, n)
    SELECT finished_at / 60000, status, 0, count(*) FROM {s}.tasks
     WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL
       AND finished_at >= (extract(epoch FROM now())::bigint - 86400) * 1000
     GROUP BY 1, 2;

CREATE FUNCTION {s}.count_tasks() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    v_shard smallint := (pg_backend_pid() % 16)::smallint;
    v_minute bigint;
    v_new boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n) VALUES (NEW.status, v_shard, 1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n) VALUES (OLD.status, v_shard, -1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n - 1;
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO {s}.task_counts AS c (status, shard, n) VALUES (OLD.status, v_shard, -1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n - 1;
        INSERT INTO {s}.task_counts AS c (status, shard, n) VALUES (NEW.status, v_shard, 1)
            ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1;
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
CREATE TRIGGER tasks_counted AFTER INSERT OR DELETE OR UPDATE OF status ON {s}.tasks
    FOR EACH ROW EXECUTE FUNCTION {s}.count_tasks();
"#,
    include_str!("sql/003_append_events_at.sql"),
    include_str!("sql/004_deleted_tapes.sql"),
    include_str!("sql/005_retries.sql"),
    include_str!("sql/006_append_task_events.sql"),
    include_str!("sql/007_event_texts.sql"),
    include_str!("sql/008_claim_some_records.sql"),
    include_str!("sql/009_create_tasks.sql"),
    include_str!("sql/010_set_based_writes.sql"),
    include_str!("sql/011_sql_submit.sql"),
    include_str!("sql/012_requeue_tasks.sql"),
    include_str!("sql/013_metadata.sql"),
    include_str!("sql/014_flow_keys.sql"),
    include_str!("sql/015_flow_claims_by_set.sql"),
];

/// The schema version this build writes.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.len() as i32
}

/// `sql` with the placeholders filled in for `schema`.
pub(crate) fn render(sql: &str, schema: &str) -> String {
    let mut sql = sql
        .replace("{s}", &quoted(schema))
        .replace("{chan}", &format!("'{}'", channel(schema)))
        .replace("{lock}", &format!("'tasktape.{schema}.claim.'"));
    for (placeholder, code) in crate::codes::PLACEHOLDERS {
        sql = sql.replace(placeholder, &code.to_string());
    }
    for (placeholder, text) in crate::texts::marks() {
        sql = sql.replace(placeholder, &text);
    }
    // The submit rules' limits (`submit()`, migration 11), from core's.
    let limits = [
        (
            "{limit.priority_min}",
            tasktape_core::PRIORITY_RANGE.start().to_string(),
        ),
        (
            "{limit.priority_max}",
            tasktape_core::PRIORITY_RANGE.end().to_string(),
        ),
        ("{limit.key_bytes}", tasktape_core::MAX_KEY_LEN.to_string()),
        (
            "{limit.max_delay_ms}",
            tasktape_core::MAX_DELAY_MS.to_string(),
        ),
    ];
    for (placeholder, value) in limits {
        sql = sql.replace(placeholder, &value);
    }
    sql
}

/// The schema's NOTIFY channel.
pub(crate) fn channel(schema: &str) -> String {
    format!("tasktape_{schema}")
}

/// The schema as a quoted identifier.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Whether `name` is a schema name this store accepts: lowercase ASCII
/// letters, digits and `_`, starting with a letter or `_`, at most 48 bytes
/// (the channel name adds 9 to PostgreSQL's 63).
pub fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_and_rendered_quoted() {
        for good in ["tasktape", "t_1", "_x"] {
            assert!(valid_schema_name(good), "{good}");
        }
        for bad in ["", "1x", "Tasks", "a-b", "a\"b", &"x".repeat(49)] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
        for migration in MIGRATIONS {
            let rendered = render(migration, "t_1");
            for placeholder in [
                "{s}", "{chan}", "{lock}", "{append.", "{start.", "{finish.", "{cancel.",
                "{delete.", "{mark.",
            ] {
                assert!(
                    !rendered.contains(placeholder),
                    "{placeholder} left unrendered"
                );
            }
        }
        let sql = render("SELECT {chan}, {lock} FROM {s}.tasks", "t_1");
        assert_eq!(
            sql,
            "SELECT 'tasktape_t_1', 'tasktape.t_1.claim.' FROM \"t_1\".tasks"
        );
    }
}
