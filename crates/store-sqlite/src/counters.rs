//! The counters `Store::counts` and `Store::finished_per_minute` read
//! (`task_counts`, `finished_per_minute`), kept by the writer: each
//! transition notes its change here, and the sums of a whole batch are
//! written once, in the batch's transaction, just before its COMMIT (so
//! they commit with the rows or roll back with them). Until schema 7
//! triggers kept them, a trigger program per status change.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use tasktape_core::model::Status;
use tasktape_core::time::Timestamp;

/// How long the per-minute counts are kept: 24 hours.
const KEEP_MINUTES: i64 = 1440;

/// The open transaction's counter changes.
#[derive(Default)]
pub(crate) struct Counters {
    by_status: HashMap<Status, i64>,
    ended: HashMap<(i64, Status), i64>,
}

impl Counters {
    /// A task was created with `status`.
    pub(crate) fn added(&mut self, status: Status) {
        *self.by_status.entry(status).or_default() += 1;
    }

    /// A task (with `status`) was deleted.
    pub(crate) fn removed(&mut self, status: Status) {
        *self.by_status.entry(status).or_default() -= 1;
    }

    /// A task went from `from` to `to` at `at` (a terminal `to` counts in
    /// its minute).
    pub(crate) fn moved(&mut self, from: Status, to: Status, at: Timestamp) {
        if from == to {
            return;
        }
        self.removed(from);
        self.added(to);
        if to.is_terminal() {
            let minute = at.as_millis() / 60_000;
            *self.ended.entry((minute, to)).or_default() += 1;
        }
    }

    /// Forgets the changes (the transaction rolled back).
    pub(crate) fn clear(&mut self) {
        self.by_status.clear();
        self.ended.clear();
    }

    /// Writes the sums (inside the open transaction) and clears them; drops
    /// per-minute counts older than a day before the newest minute written.
    pub(crate) fn write(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        for (status, delta) in self.by_status.drain() {
            if delta != 0 {
                conn.prepare_cached(
                    "INSERT INTO task_counts (status, n) VALUES (?1, ?2) \
                     ON CONFLICT (status) DO UPDATE SET n = n + excluded.n",
                )?
                .execute(params![status.as_str(), delta])?;
            }
        }
        let newest = self.ended.keys().map(|(minute, _)| *minute).max();
        for ((minute, status), n) in self.ended.drain() {
            conn.prepare_cached(
                "INSERT INTO finished_per_minute (minute, status, n) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (minute, status) DO UPDATE SET n = n + excluded.n",
            )?
            .execute(params![minute, status.as_str(), n])?;
        }
        if let Some(newest) = newest {
            conn.prepare_cached("DELETE FROM finished_per_minute WHERE minute < ?1")?
                .execute([newest - KEEP_MINUTES])?;
        }
        Ok(())
    }
}

/// Recounts `task_counts` and `finished_per_minute` (the last day) from the
/// rows, for a tool that wrote task rows behind the store's back (a bench
/// filling a file, an import): run it in the same transaction as the writes
/// and before the store opens the file again.
pub fn rebuild_counters(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DELETE FROM task_counts;
         INSERT INTO task_counts (status, n) SELECT status, COUNT(*) FROM tasks GROUP BY status;
         DELETE FROM finished_per_minute;",
    )?;
    conn.execute(
        "INSERT INTO finished_per_minute (minute, status, n)
             SELECT finished_at / 60000, status, COUNT(*) FROM tasks
              WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL
                AND finished_at >= ?1
              GROUP BY 1, 2",
        [Timestamp::now().as_millis() - KEEP_MINUTES * 60_000],
    )?;
    Ok(())
}
