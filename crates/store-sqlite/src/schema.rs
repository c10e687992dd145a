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
    // 9: events in a rowid table with a `(task_id, seq)` index. In the
    // `WITHOUT ROWID` table of migration 1 a row lives in the key's b-tree,
    // which keeps about a quarter page of it locally: on 4 KiB pages an
    // event of 1–3 KB took a 4 KiB overflow page of its own (2–5x its
    // size). A rowid table keeps rows up to nearly a page whole, appended
    // in order (`benches/storage.rs` measures both, by event size).
    "CREATE TABLE events_by_rowid (
        task_id BLOB NOT NULL,
        seq     INTEGER NOT NULL,
        json    TEXT NOT NULL
    );
    INSERT INTO events_by_rowid (task_id, seq, json)
        SELECT task_id, seq, json FROM events ORDER BY task_id, seq;
    DROP TABLE events;
    ALTER TABLE events_by_rowid RENAME TO events;
    CREATE UNIQUE INDEX events_by_task ON events (task_id, seq);",
    // 10: metadata. The row keeps it as a JSON object (NULL: none);
    // `task_metadata` holds one entry per key, in (key, value, created_at,
    // task) order, so a list filtered on a key walks its entries newest
    // first instead of every task. Triggers keep it (only rows with
    // metadata run them); the column names differ from `tasks`' so the
    // two join without qualifying.
    "ALTER TABLE tasks ADD COLUMN metadata TEXT;
    CREATE TABLE task_metadata (
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        at    INTEGER NOT NULL,
        task  BLOB NOT NULL,
        PRIMARY KEY (key, value, at DESC, task)
    ) WITHOUT ROWID;
    CREATE TRIGGER tasks_metadata_in AFTER INSERT ON tasks WHEN NEW.metadata IS NOT NULL BEGIN
        INSERT INTO task_metadata (key, value, at, task)
            SELECT j.key, j.value, NEW.created_at, NEW.task_id FROM json_each(NEW.metadata) j;
    END;
    CREATE TRIGGER tasks_metadata_out AFTER DELETE ON tasks WHEN OLD.metadata IS NOT NULL BEGIN
        DELETE FROM task_metadata
         WHERE (key, value, at, task) IN
               (SELECT j.key, j.value, OLD.created_at, OLD.task_id FROM json_each(OLD.metadata) j);
    END;",
    // 11: flow keys. A task of an op with a flow key keeps it; claims of
    // such an op walk the keys with due tasks in key order (the first
    // index: the next key after the op's cursor, then that key's best
    // tasks) and count each key's running tasks (the second).
    "ALTER TABLE tasks ADD COLUMN flow_key TEXT;
    CREATE INDEX tasks_key_order ON tasks (op, flow_key, priority DESC, created_at, task_id)
        WHERE status = 'pending' AND run_at IS NULL AND flow_key IS NOT NULL;
    CREATE INDEX tasks_key_running ON tasks (op, flow_key)
        WHERE status = 'running' AND flow_key IS NOT NULL;
    CREATE TABLE flow_cursor (op TEXT PRIMARY KEY NOT NULL, last_key TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE flow_starts (op TEXT NOT NULL, key TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE INDEX flow_starts_by_key ON flow_starts (op, key, at);
    CREATE INDEX flow_starts_by_time ON flow_starts (op, at);",
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
        if current > 0 {
            // Some rebuild a table: on a large file that takes a while.
            tracing::info!(migration = index + 1, "upgrading the store's schema (once)");
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    if current > 0 && current < latest() {
        // A migration that rebuilt a table left it in the log: into the
        // file, and the log back to nothing, before serving.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(Migrated::Current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_9_moves_a_tape_into_the_rowid_table_whole_and_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A file as schema 8 left it, with two interleaved tapes.
        for (index, sql) in MIGRATIONS.iter().take(8).enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", index as i64 + 1)
                .unwrap();
        }
        for seq in 1..=300_i64 {
            for task in [[1_u8; 16], [2_u8; 16]] {
                conn.execute(
                    "INSERT INTO events (task_id, seq, json) VALUES (?1, ?2, ?3)",
                    rusqlite::params![task.as_slice(), seq, format!("{{\"n\":{seq}}}").repeat(50)],
                )
                .unwrap();
            }
        }
        assert!(matches!(migrate(&mut conn).unwrap(), Migrated::Current));
        let table: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'events'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(!table.contains("WITHOUT ROWID"), "{table}");
        let mut select = conn
            .prepare("SELECT seq, json FROM events WHERE task_id = ?1 ORDER BY seq")
            .unwrap();
        for task in [[1_u8; 16], [2_u8; 16]] {
            let rows: Vec<(i64, String)> = select
                .query_map([task.as_slice()], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(rows.len(), 300);
            for (index, (seq, json)) in rows.iter().enumerate() {
                assert_eq!(*seq, index as i64 + 1);
                assert_eq!(*json, format!("{{\"n\":{seq}}}").repeat(50));
            }
        }
        // The index keeps one event per (task, seq).
        let again = conn.execute(
            "INSERT INTO events (task_id, seq, json) VALUES (?1, 1, '{}')",
            [[1_u8; 16].as_slice()],
        );
        assert!(again.is_err(), "a second event at seq 1 was accepted");
    }
}
