//! The SQLite schema and its versioned migrations (tracked in
//! `PRAGMA user_version`). Migrations only ever append to [`MIGRATIONS`].

use rusqlite::Connection;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: tasks and their tapes.
    "CREATE TABLE tasks (
        task_id          BLOB PRIMARY KEY NOT NULL,
        op               TEXT NOT NULL,
        status           TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        params           TEXT NOT NULL,
        params_digest    TEXT NOT NULL,
        result           TEXT,
        error            TEXT,
        idempotency_key  TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_until      INTEGER
    );
    CREATE INDEX tasks_by_created ON tasks (created_at DESC, task_id);
    CREATE INDEX tasks_by_status ON tasks (status, created_at DESC, task_id);
    CREATE INDEX tasks_by_op ON tasks (op, created_at DESC, task_id);
    CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE TABLE events (
        task_id BLOB NOT NULL,
        seq     INTEGER NOT NULL,
        json    TEXT NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;",
    // 2: claims find the oldest pending tasks of an op, and count its
    // running ones, without scanning its finished tasks.
    "CREATE INDEX tasks_by_op_status ON tasks (op, status, created_at, task_id);",
    // 3: the submitting span's traceparent, to link a task's run to it.
    "ALTER TABLE tasks ADD COLUMN trace_parent TEXT;",
    // 4: counters kept by triggers in the same transactions as the rows, so
    // the dashboard's counts and activity chart never scan the tasks: tasks
    // per status, and tasks ended per minute and status (the last 24 hours).
    "CREATE TABLE task_counts (
        status TEXT PRIMARY KEY NOT NULL,
        n      INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO task_counts (status, n) SELECT status, COUNT(*) FROM tasks GROUP BY status;
    CREATE TABLE finished_per_minute (
        minute INTEGER NOT NULL,
        status TEXT NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (minute, status)
    ) WITHOUT ROWID;
    INSERT INTO finished_per_minute (minute, status, n)
        SELECT finished_at / 60000, status, COUNT(*) FROM tasks
         WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL
           AND finished_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000
         GROUP BY 1, 2;
    CREATE TRIGGER tasks_counted_in AFTER INSERT ON tasks BEGIN
        INSERT INTO task_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tasks_counted_across AFTER UPDATE OF status ON tasks
        WHEN OLD.status <> NEW.status BEGIN
        UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
        INSERT INTO task_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
        INSERT INTO finished_per_minute (minute, status, n)
            SELECT NEW.finished_at / 60000, NEW.status, 1
             WHERE NEW.status IN ('succeeded', 'failed', 'cancelled') AND NEW.finished_at IS NOT NULL
            ON CONFLICT (minute, status) DO UPDATE SET n = n + 1;
        DELETE FROM finished_per_minute
         WHERE NEW.finished_at IS NOT NULL AND minute < NEW.finished_at / 60000 - 1440;
    END;
    CREATE TRIGGER tasks_counted_out AFTER DELETE ON tasks BEGIN
        UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
    END;",
    // 5: retention and deletes in small steps: a deleted task's row goes at
    // once, its tape waits in `deleted_tapes` for the sweeper, which takes a
    // few thousand events per transaction; finished tasks by age.
    "CREATE TABLE deleted_tapes (task_id BLOB PRIMARY KEY NOT NULL) WITHOUT ROWID;
    CREATE INDEX tasks_by_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;",
    // 6: retries, delayed tasks and priorities. Claims take the pending
    // tasks of an op by priority, then age: those due now from
    // `tasks_claim_order`, delayed ones that came due from `tasks_due` (so
    // a claim never walks past tasks delayed until later); the manager
    // sleeps until the earliest `run_at` (`tasks_due` too).
    "ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN run_at INTEGER;
    ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE tasks ADD COLUMN retry TEXT;
    ALTER TABLE tasks ADD COLUMN history TEXT;
    ALTER TABLE tasks ADD COLUMN retry_of BLOB;
    CREATE INDEX tasks_claim_order ON tasks (op, priority DESC, created_at, task_id)
        WHERE status = 'pending' AND run_at IS NULL;
    CREATE INDEX tasks_due ON tasks (op, run_at) WHERE status = 'pending' AND run_at IS NOT NULL;",
    // 7: the counters of migration 4 are kept by the writer (`counters.rs`),
    // still in the row's own transaction but summed over the whole batch:
    // the triggers made every status change a trigger program with a
    // statement journal and an ephemeral table.
    "DROP TRIGGER tasks_counted_in;
    DROP TRIGGER tasks_counted_across;
    DROP TRIGGER tasks_counted_out;",
    // 8: records the engine keeps by kind and key (remote ops'
    // declarations, remote workers), JSON texts.
    "CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (kind, key)) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// What [`migrate`] found.
pub(crate) enum Migrated {
    /// The schema is at [`latest`].
    Current,
    /// The file was written by a newer build.
    TooNew(i64),
}

/// Applies the missing migrations, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Migrated> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > latest() {
        return Ok(Migrated::TooNew(current));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(Migrated::Current)
}
