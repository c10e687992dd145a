//! The statements this store runs (outside the PL/pgSQL functions of
//! `schema.rs`), rendered for its schema once.

use crate::rows::TASK_COLUMNS;
use crate::schema;
use crate::texts::StartTexts;

/// The database's clock in epoch milliseconds. Leases are written and
/// judged by it, never by an instance's clock (instances' clocks differ).
const DB_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The SQL this store runs, rendered for its schema once.
pub(crate) struct Sql {
    pub(crate) append: String,
    pub(crate) start: String,
    pub(crate) claim: String,
    pub(crate) claim_keyed: String,
    pub(crate) rate_window: String,
    pub(crate) finish: String,
    pub(crate) finish_many: String,
    pub(crate) requeue_many: String,
    pub(crate) cancel: String,
    pub(crate) cancel_many: String,
    pub(crate) lock_many: String,
    pub(crate) create: String,
    pub(crate) create_many: String,
    pub(crate) delete: String,
    pub(crate) get: String,
    pub(crate) get_many: String,
    pub(crate) list: String,
    pub(crate) list_by_metadata: String,
    /// The schema's name, quoted.
    pub(crate) schema: String,
    pub(crate) counts: String,
    pub(crate) finished_per_minute: String,
    pub(crate) events: String,
    pub(crate) last_seq: String,
    pub(crate) tape_bytes: String,
    pub(crate) last_seqs: String,
    pub(crate) renew: String,
    pub(crate) expired: String,
    pub(crate) leftovers: String,
    pub(crate) pending: String,
    pub(crate) purge: String,
    pub(crate) sweep: String,
    pub(crate) requeue: String,
    pub(crate) lock_running: String,
    pub(crate) next_due: String,
    pub(crate) latest_key: String,
    pub(crate) schema_version: String,
    pub(crate) records: String,
    pub(crate) record_insert: String,
    pub(crate) record_update: String,
    pub(crate) record_delete: String,
    /// The texts a start writes (`start`, `claim`).
    pub(crate) start_texts: StartTexts,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Sql {
        let s = schema::quoted(schema);
        let chan = format!("'{}'", schema::channel(schema));
        Sql {
            // $4: this instance's id (the tasks' owner), or NULL.
            append: format!(
                "SELECT out_id, out_base, out_code FROM {s}.append_task_events($1, $2, $3, $4, $5)"
            ),
            // $3: the lease's length in ms, from the database's now.
            // $6, $7: the start's texts (`StartTexts`).
            start: format!(
                "SELECT out_code, out_status FROM {s}.start_task($1, $2, {DB_MS} + $3, $4, $5, $6, $7)"
            ),
            // $4: the lease's length in ms, from the database's now.
            // $7, $8: the start's texts (`StartTexts`).
            // $3: the most tasks to start.
            claim: format!(
                "SELECT {TASK_COLUMNS} FROM {s}.claim_due($1, $2, $3, $4, {DB_MS} + $5, $6, $7, $8, $9)"
            ),
            // $10: keyed; $11: the key concurrency (NULL: none); $12, $13:
            // the weights; $14-$16: the rate (NULL: none), its window, per key.
            claim_keyed: format!(
                "SELECT {TASK_COLUMNS} FROM {s}.claim_flow($1, $2, $3, $4, {DB_MS} + $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15, $16)"
            ),
            records: format!("SELECT key, value FROM {s}.records WHERE kind = $1 ORDER BY key"),
            // Each write NOTIFYs "r KIND\tWRITER\tKEY" ($4 or $5: this
            // instance's id), so other instances hear of takeovers and drains.
            record_insert: format!(
                "WITH w AS (INSERT INTO {s}.records (kind, key, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1) \
                 SELECT pg_notify({chan}, 'r ' || $1 || E'\\t' || $4 || E'\\t' || $2) FROM w"
            ),
            record_update: format!(
                "WITH w AS (UPDATE {s}.records SET value = $4 WHERE kind = $1 AND key = $2 AND value = $3 RETURNING 1) \
                 SELECT pg_notify({chan}, 'r ' || $1 || E'\\t' || $5 || E'\\t' || $2) FROM w"
            ),
            record_delete: format!(
                "WITH w AS (DELETE FROM {s}.records WHERE kind = $1 AND key = $2 AND value = $3 RETURNING 1) \
                 SELECT pg_notify({chan}, 'r ' || $1 || E'\\t' || $4 || E'\\t' || $2) FROM w"
            ),
            // $9: whether this is a reap (then only a lease over by the
            // database's clock may be finished); $10: this instance's id, or
            // NULL (a running task another instance holds is not finished).
            // Many finishes in one statement (`finish_tasks`, ids distinct);
            // $9: this instance's id, or NULL.
            finish_many: format!(
                "SELECT out_id, out_code, out_status, out_seq FROM {s}.finish_tasks($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            requeue_many: format!(
                "SELECT out_id, out_code, out_status, out_seq FROM {s}.requeue_tasks($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            finish: format!(
                "SELECT out_code, out_status, out_seq FROM {s}.finish_owned($1, $2, $3, $4, $5, $6, $7, $8, \
                 CASE WHEN $9::boolean THEN {DB_MS} END, $10)"
            ),
            cancel: format!(
                "SELECT out_code, out_status, out_seq, out_owner FROM {s}.request_cancel($1, $2, $3, $4)"
            ),
            lock_many: format!(
                "SELECT 1 FROM {s}.tasks WHERE task_id = ANY ($1) ORDER BY task_id FOR UPDATE"
            ),
            // One statement for many: each task's cancel as above, in input order.
            cancel_many: format!(
                "SELECT c.out_code, c.out_status, c.out_seq, c.out_owner \
                 FROM unnest($1::uuid[]) WITH ORDINALITY AS i(id, n), \
                 LATERAL {s}.request_cancel(i.id, $2, $3, $4) AS c ORDER BY i.n"
            ),
            create: format!(
                "SELECT out_created, out_id FROM {s}.create_task_at($1, $2, $3, $4, $5, $6, $7, $8, \
                 $9, $10, $11, $12, $13, $14)"
            ),
            create_many: format!(
                "SELECT out_created, out_id FROM {s}.create_tasks($1, $2, $3, $4, $5, $6, $7, $8, \
                 $9, $10, $11, $12, $13, $14)"
            ),
            // $2, $3: the partial and history record (`texts::requeue_texts`);
            // $8: whether this is a reap, as for `finish`.
            requeue: format!(
                "SELECT out_code, out_status, out_seq FROM {s}.requeue_task($1, $2, $3, $4, $5, $6, $7, \
                 CASE WHEN $8::boolean THEN {DB_MS} END, $9)"
            ),
            // A reap's row, locked: a running task; with $2, only while its
            // lease is over by the database's clock.
            lock_running: format!(
                "SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE task_id = $1 AND status = 'running' \
                 AND (NOT $2::boolean OR lease_until < {DB_MS}) FOR UPDATE"
            ),
            next_due: format!(
                "SELECT min(run_at) FROM {s}.tasks WHERE op = $1 AND status = 'pending' AND run_at > $2"
            ),
            latest_key: format!(
                "SELECT idempotency_key FROM {s}.tasks WHERE idempotency_key IS NOT NULL \
                 AND (idempotency_key COLLATE \"C\") >= $1 AND (idempotency_key COLLATE \"C\") < $2 \
                 ORDER BY (idempotency_key COLLATE \"C\") DESC LIMIT 1"
            ),
            schema_version: format!("SELECT coalesce(max(version), 0) FROM {s}.migrations"),
            start_texts: StartTexts::new(),
            delete: format!("SELECT out_code, out_status FROM {s}.delete_task($1)"),
            get: format!("SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE task_id = $1"),
            get_many: format!("SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE task_id = ANY ($1)"),
            list: format!("SELECT {TASK_COLUMNS} FROM {s}.tasks t WHERE true"),
            list_by_metadata: format!(
                "SELECT {TASK_COLUMNS} FROM {s}.task_metadata JOIN {s}.tasks t ON t.task_id = task \
                 WHERE key = $1 AND value = $2"
            ),
            rate_window: format!(
                "SELECT count(*), min(at) FROM {s}.flow_starts WHERE op = $1 AND at > $2"
            ),
            schema: s.clone(),
            counts: format!("SELECT status, sum(n)::bigint FROM {s}.task_counts GROUP BY status"),
            finished_per_minute: format!(
                "SELECT minute, status, sum(n)::bigint FROM {s}.finished_per_minute \
                 WHERE minute >= $1 GROUP BY minute, status ORDER BY minute, status"
            ),
            // One statement, one snapshot: status, last seq and the page agree.
            events: format!(
                "SELECT t.status, t.last_seq, e.seq, e.json FROM {s}.tasks t \
                 LEFT JOIN LATERAL (SELECT seq, json FROM {s}.events e \
                     WHERE e.task_id = t.task_id AND e.seq >= $2 ORDER BY e.seq LIMIT $3) e ON true \
                 WHERE t.task_id = $1 ORDER BY e.seq"
            ),
            last_seq: format!("SELECT last_seq FROM {s}.tasks WHERE task_id = $1"),
            tape_bytes: format!(
                "SELECT coalesce(sum(octet_length(json)), 0)::bigint FROM {s}.events WHERE task_id = $1"
            ),
            last_seqs: format!("SELECT task_id, last_seq FROM {s}.tasks WHERE task_id = ANY ($1)"),
            // Rows are locked in id order, like the writer's batches: no deadlock.
            renew: format!(
                "WITH mine AS (SELECT task_id FROM {s}.tasks WHERE status = 'running' AND owner = $1 \
                     ORDER BY task_id FOR UPDATE) \
                 UPDATE {s}.tasks t SET lease_until = {DB_MS} + $2 FROM mine WHERE t.task_id = mine.task_id"
            ),
            expired: format!(
                "SELECT task_id FROM {s}.tasks WHERE status = 'running' AND lease_until < {DB_MS} \
                 AND owner IS DISTINCT FROM $1 ORDER BY task_id"
            ),
            leftovers: format!(
                "SELECT task_id FROM {s}.tasks WHERE status = 'running' AND owner = $1 ORDER BY task_id"
            ),
            // Ops with pending tasks, from the two partial indexes.
            pending: format!(
                "SELECT op, sum(n)::bigint FROM ( \
                     SELECT op, count(*) AS n FROM {s}.tasks WHERE status = 'pending' AND run_at IS NULL GROUP BY op \
                     UNION ALL \
                     SELECT op, count(*) FROM {s}.tasks WHERE status = 'pending' AND run_at IS NOT NULL GROUP BY op) c \
                 GROUP BY op"
            ),
            purge: format!("SELECT {s}.purge_tasks($1, $2)"),
            sweep: format!("SELECT {s}.sweep_tapes($1)"),
        }
    }
}
