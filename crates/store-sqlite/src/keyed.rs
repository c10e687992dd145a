//! Claims of an op with a flow key (`tasktape_core::flow::ClaimRule`): keys
//! in turns from where the op's last claim left off (`flow_cursor`), each
//! turn starting up to the key's weight of its best tasks (priority, then
//! age), never more than `key_concurrency` of one key running. A round that
//! started something and left room is followed by another with larger
//! turns, so one key alone still fills the claim. Tasks of the op without
//! a key (made before its flow existed) are taken when they head the op's
//! queue.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};
use tasktape_core::flow::{ClaimRule, Rate};
use tasktape_core::model::{Task, TaskId};
use tasktape_core::store::{Lease, StartOutcome};
use tasktape_core::time::Timestamp;

use crate::rows::task_id_from;
use crate::writer::Writer;

impl Writer {
    /// Starts up to `room` due tasks of `op` by `rule` (delayed ones that
    /// came due were made due already); a rate goes by the writer's `now`,
    /// the time its runs start.
    pub(crate) fn claim_keyed(
        &mut self,
        op: &str,
        room: usize,
        rule: &ClaimRule,
        lease: &Lease,
        now: Timestamp,
    ) -> rusqlite::Result<Vec<Task>> {
        let mut started: Vec<Task> = Vec::new();
        // A rate of the op's own (not per key) bounds the whole claim.
        let op_rate = rule.rate.filter(|_| !rule.rate_per_key);
        let room = match op_rate {
            Some(rate) => room.min(self.rate_room(op, "", rate, now)?),
            None => room,
        };
        if room == 0 {
            return Ok(started);
        }
        let cursor: Option<String> = self
            .conn
            .prepare_cached("SELECT last_key FROM flow_cursor WHERE op = ?1")?
            .query_row([op], |row| row.get(0))
            .optional()?;
        // The op's head, when it has no key (made before the op's flow
        // existed, or by a submit that renders no key): taken first.
        let head: Option<(Vec<u8>, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT task_id, flow_key FROM tasks \
                 WHERE op = ?1 AND status = 'pending' AND run_at IS NULL \
                 ORDER BY priority DESC, created_at, task_id LIMIT 1",
            )?
            .query_row([op], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((id, None)) = head
            && let StartOutcome::Started(task) = self.start(task_id_from(id)?, lease, now)?
        {
            started.push(*task);
        }
        let mut position = cursor.clone();
        // Running tasks of the op by key, read once; each start of this
        // claim adds to them.
        let mut running: HashMap<String, i64> = HashMap::new();
        if rule.key_concurrency.is_some() {
            let mut statement = self.conn.prepare_cached(
                "SELECT flow_key, COUNT(*) FROM tasks \
                 WHERE op = ?1 AND status = 'running' AND flow_key IS NOT NULL GROUP BY flow_key",
            )?;
            let rows = statement.query_map([op], |row| Ok((row.get(0)?, row.get(1)?)))?;
            for row in rows {
                let (key, count): (String, i64) = row?;
                running.insert(key, count);
            }
        }
        let mut multiplier = 1usize;
        'rounds: loop {
            let mut took = 0usize;
            // Where this round began: after wrapping to the first key, it
            // ends past there.
            let began = position.clone();
            let mut wrapped = false;
            loop {
                if started.len() >= room {
                    break 'rounds;
                }
                // The next key and its best task, in one seek.
                let Some((key, head)) = self.next_head(op, position.as_deref())? else {
                    if wrapped || began.is_none() {
                        break;
                    }
                    wrapped = true;
                    position = None;
                    continue;
                };
                if wrapped && began.as_deref().is_some_and(|began| key.as_str() > began) {
                    break;
                }
                position = Some(key.clone());
                let mut quota = rule.weight(&key) as usize * multiplier;
                if let Some(limit) = rule.key_concurrency {
                    let running = running.get(&key).copied().unwrap_or(0);
                    quota = quota.min((i64::from(limit) - running).max(0) as usize);
                }
                quota = quota.min(room - started.len());
                let rate = rule.rate.filter(|_| rule.rate_per_key);
                if let Some(rate) = rate {
                    quota = quota.min(self.rate_room(op, &key, rate, now)?);
                }
                if quota == 0 {
                    continue;
                }
                let mut ids = vec![head];
                if quota > 1 {
                    self.conn
                        .prepare_cached(
                            "SELECT task_id FROM tasks \
                             WHERE op = ?1 AND flow_key = ?2 AND status = 'pending' AND run_at IS NULL \
                               AND task_id <> ?3 \
                             ORDER BY priority DESC, created_at, task_id LIMIT ?4",
                        )?
                        .query_map(params![op, key, head.as_bytes().as_slice(), quota as i64 - 1], |row| {
                            task_id_from(row.get(0)?)
                        })?
                        .try_for_each(|id| {
                            ids.push(id?);
                            Ok::<_, rusqlite::Error>(())
                        })?;
                }
                let before = started.len();
                for task_id in ids {
                    if let StartOutcome::Started(task) = self.start(task_id, lease, now)? {
                        started.push(*task);
                        took += 1;
                    }
                }
                if rule.key_concurrency.is_some() {
                    *running.entry(key.clone()).or_default() += (started.len() - before) as i64;
                }
                if rate.is_some() {
                    let created = created_times(&started[before..]);
                    self.note_starts(op, &key, &created, now)?;
                }
            }
            if took == 0 || started.len() >= room {
                break;
            }
            multiplier = multiplier
                .saturating_mul((room - started.len()).div_ceil(took).max(1))
                .min(room);
        }
        if op_rate.is_some() {
            let created = created_times(&started);
            self.note_starts(op, "", &created, now)?;
        }
        if position != cursor
            && let Some(key) = &position
        {
            self.conn
                .prepare_cached(
                    "INSERT INTO flow_cursor (op, last_key) VALUES (?1, ?2) \
                     ON CONFLICT (op) DO UPDATE SET last_key = excluded.last_key",
                )?
                .execute(params![op, key])?;
        }
        Ok(started)
    }

    /// Drops `op`'s starts two windows old (a rate counts its window's).
    pub(crate) fn forget_starts(
        &mut self,
        op: &str,
        rate: Rate,
        now: Timestamp,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM flow_starts WHERE op = ?1 AND at <= ?2")?
            .execute(params![op, now.as_millis() - 2 * rate.window_ms])?;
        Ok(())
    }

    /// How many more starts `rate` allows now for `op` (and `key`: `""`
    /// for the op's own rate).
    pub(crate) fn rate_room(
        &mut self,
        op: &str,
        key: &str,
        rate: Rate,
        now: Timestamp,
    ) -> rusqlite::Result<usize> {
        let since = now.as_millis() - rate.window_ms;
        let used: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM flow_starts WHERE op = ?1 AND key = ?2 AND at > ?3",
            )?
            .query_row(params![op, key, since], |row| row.get(0))?;
        Ok((i64::from(rate.count) - used).max(0) as usize)
    }

    /// Records the starts of tasks created at `created` (of `op`, under
    /// `key`) for its rate, each at the time its run started (`now`, or its
    /// creation if later).
    pub(crate) fn note_starts(
        &mut self,
        op: &str,
        key: &str,
        created: &[Timestamp],
        now: Timestamp,
    ) -> rusqlite::Result<()> {
        let mut statement = self
            .conn
            .prepare_cached("INSERT INTO flow_starts (op, key, at) VALUES (?1, ?2, ?3)")?;
        for at in created {
            let at = now.as_millis().max(at.as_millis());
            statement.execute(params![op, key, at])?;
        }
        Ok(())
    }

    /// The first key after `after` (from the start: `None`) with a due
    /// pending task of `op`, and that key's best task (priority, then age):
    /// one seek into `tasks_key_order`, whose order this is.
    fn next_head(
        &mut self,
        op: &str,
        after: Option<&str>,
    ) -> rusqlite::Result<Option<(String, TaskId)>> {
        let row =
            |row: &rusqlite::Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?));
        // Every key sorts after the empty text but '' itself; '' is taken
        // first from the start.
        let found = match after {
            Some(after) => self
                .conn
                .prepare_cached(
                    "SELECT flow_key, task_id FROM tasks \
                     WHERE op = ?1 AND status = 'pending' AND run_at IS NULL AND flow_key > ?2 \
                     ORDER BY flow_key, priority DESC, created_at, task_id LIMIT 1",
                )?
                .query_row(params![op, after], row)
                .optional()?,
            None => self
                .conn
                .prepare_cached(
                    "SELECT flow_key, task_id FROM tasks \
                     WHERE op = ?1 AND status = 'pending' AND run_at IS NULL AND flow_key IS NOT NULL \
                     ORDER BY flow_key, priority DESC, created_at, task_id LIMIT 1",
                )?
                .query_row([op], row)
                .optional()?,
        };
        found
            .map(|(key, id)| Ok((key, task_id_from(id)?)))
            .transpose()
    }
}

/// When `tasks` were created (what a rate's start record needs of them).
pub(crate) fn created_times(tasks: &[Task]) -> Vec<Timestamp> {
    tasks.iter().map(|task| task.created_at).collect()
}
