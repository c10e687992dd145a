//! The writer's deletes: a terminal task's row goes at once (`delete`,
//! `purge`: old finished ones, oldest first), its tape waits in
//! `deleted_tapes` for `sweep`, which deletes whole seq ranges in small
//! batches. Only the writer thread calls these.

use rusqlite::{OptionalExtension, params};
use tasktape_core::model::{Status, TaskId};
use tasktape_core::store::DeleteOutcome;
use tasktape_core::time::Timestamp;

use crate::rows::{status_from, task_id_from};
use crate::tail::Change;
use crate::writer::Writer;

impl Writer {
    pub(crate) fn delete(&mut self, task_id: TaskId) -> rusqlite::Result<DeleteOutcome> {
        let Some(live) = self.live(task_id)? else {
            return Ok(DeleteOutcome::NotFound);
        };
        if !live.status.is_terminal() {
            return Ok(DeleteOutcome::NotTerminal {
                status: live.status,
            });
        }
        self.remove(task_id, live.status)?;
        Ok(DeleteOutcome::Deleted)
    }

    /// Deletes a terminal task's row and queues its tape for the sweeper.
    fn remove(&mut self, task_id: TaskId, status: Status) -> rusqlite::Result<()> {
        let id = task_id.as_bytes().as_slice();
        self.conn
            .prepare_cached("DELETE FROM tasks WHERE task_id = ?1")?
            .execute([id])?;
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO deleted_tapes (task_id) VALUES (?1)")?
            .execute([id])?;
        self.counters.removed(status);
        self.staged.push(Change::Forget(task_id));
        self.live.remove(&task_id);
        Ok(())
    }

    pub(crate) fn purge(&mut self, cutoff: Timestamp, limit: usize) -> rusqlite::Result<u64> {
        let done: Vec<(TaskId, Status)> = {
            let mut oldest = self.conn.prepare_cached(
                "SELECT task_id, status FROM tasks WHERE finished_at < ?1 \
                 AND status IN ('succeeded', 'failed', 'cancelled') ORDER BY finished_at LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            oldest
                .query_map(params![cutoff.as_millis(), limit], |row| {
                    Ok((
                        task_id_from(row.get(0)?)?,
                        status_from(&row.get::<_, String>(1)?, 1)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?
        };
        for (task_id, status) in &done {
            self.remove(*task_id, *status)?;
        }
        Ok(done.len() as u64)
    }

    /// Deletes up to `limit` events of queued tapes (whole ranges by seq).
    pub(crate) fn sweep(&mut self, limit: usize) -> rusqlite::Result<u64> {
        let mut left = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut swept = 0u64;
        while left > 0 {
            let next: Option<Vec<u8>> = self
                .conn
                .prepare_cached("SELECT task_id FROM deleted_tapes LIMIT 1")?
                .query_row([], |row| row.get(0))
                .optional()?;
            let Some(id) = next else { break };
            // The seq `left` events in: delete up to it, or the whole rest.
            let upto: Option<i64> = self
                .conn
                .prepare_cached(
                    "SELECT seq FROM events WHERE task_id = ?1 ORDER BY seq LIMIT 1 OFFSET ?2",
                )?
                .query_row(params![id, left - 1], |row| row.get(0))
                .optional()?;
            let deleted = match upto {
                Some(upto) => self
                    .conn
                    .prepare_cached("DELETE FROM events WHERE task_id = ?1 AND seq <= ?2")?
                    .execute(params![id, upto])?,
                None => {
                    let deleted = self
                        .conn
                        .prepare_cached("DELETE FROM events WHERE task_id = ?1")?
                        .execute([&id])?;
                    self.conn
                        .prepare_cached("DELETE FROM deleted_tapes WHERE task_id = ?1")?
                        .execute([&id])?;
                    deleted
                }
            };
            swept += deleted as u64;
            left -= deleted as i64;
        }
        Ok(swept)
    }
}
