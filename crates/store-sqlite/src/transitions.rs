//! The writer's transitions: each checks the task's current state (from the
//! live cache or the row) and writes inside the open transaction. Only the
//! writer thread calls these.

use rusqlite::{OptionalExtension, params};
use tasktape_core::BodyExt as _;
use tasktape_core::event::{EncodedBody, EventBody};
use tasktape_core::model::{NewTask, Outcome, Retry, Status, Task, TaskId};
use tasktape_core::retry::{attempt_failed, attempt_record, attempt_started};
use tasktape_core::store::{
    AppendOutcome, CancelOutcome, Created, FinishOutcome, Lease, LostRun, StartOutcome,
};
use tasktape_core::time::Timestamp;

use crate::rows::{TASK_COLUMNS, status_from, task_from_row, task_id_from};
use crate::tail::Change;
use crate::writer::{Live, Writer};

impl Writer {
    pub(crate) fn live(&mut self, task_id: TaskId) -> rusqlite::Result<Option<Live>> {
        if let Some(live) = self.live.get(&task_id) {
            return Ok(Some(*live));
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT status, cancel_requested, \
                    COALESCE((SELECT seq FROM events WHERE task_id = ?1 ORDER BY seq DESC LIMIT 1), 0) \
             FROM tasks WHERE task_id = ?1",
        )?;
        let found = statement
            .query_row([task_id.as_bytes().as_slice()], |row| {
                Ok(Live {
                    status: status_from(&row.get::<_, String>(0)?, 0)?,
                    cancel_requested: row.get::<_, i64>(1)? != 0,
                    last_seq: row.get::<_, i64>(2)? as u64,
                })
            })
            .optional()?;
        if let Some(live) = found.filter(|live| !live.status.is_terminal()) {
            self.live.insert(task_id, live);
        }
        Ok(found)
    }

    fn insert_event(
        &mut self,
        task_id: TaskId,
        body: &EncodedBody,
        seq: u64,
        now: Timestamp,
    ) -> rusqlite::Result<()> {
        let event = body.seal(seq, now);
        let mut statement = self
            .conn
            .prepare_cached("INSERT INTO events (task_id, seq, json) VALUES (?1, ?2, ?3)")?;
        statement.execute(params![
            task_id.as_bytes().as_slice(),
            seq as i64,
            event.json
        ])?;
        let woken = self.woken.entry(task_id).or_default();
        *woken = (*woken).max(seq);
        self.staged.push(Change::Event(task_id, event));
        Ok(())
    }

    fn select_task(
        &self,
        where_clause: &str,
        key: &dyn rusqlite::ToSql,
    ) -> rusqlite::Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE {where_clause}");
        let mut statement = self.conn.prepare_cached(&sql)?;
        statement.query_row([key], task_from_row).optional()
    }

    pub(crate) fn create(&mut self, task: &NewTask) -> rusqlite::Result<Created> {
        if let Some(key) = &task.idempotency_key
            && let Some(existing) = self.select_task("idempotency_key = ?1", key)?
        {
            return Ok(Created {
                task: existing,
                created: false,
            });
        }
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO tasks (task_id, op, status, created_at, params, params_digest, idempotency_key, \
             trace_parent, priority, run_at, max_attempts, retry, retry_of, metadata, flow_key) \
             VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let retry = task
            .retry
            .as_ref()
            .and_then(|plan| serde_json::to_string(plan).ok());
        statement.execute(params![
            task.task_id.as_bytes().as_slice(),
            task.op,
            task.created_at.as_millis(),
            task.params.to_string(),
            task.params_digest,
            task.idempotency_key,
            task.trace_parent,
            task.priority,
            task.run_at.map(Timestamp::as_millis),
            task.retry
                .as_ref()
                .map_or(1, |plan| plan.policy.max_attempts),
            retry,
            task.retry_of.map(|id| id.as_bytes().to_vec()),
            crate::rows::metadata_text(&task.metadata),
            task.flow_key,
        ])?;
        self.counters.added(Status::Pending);
        self.live.insert(
            task.task_id,
            Live {
                status: Status::Pending,
                last_seq: 0,
                cancel_requested: false,
            },
        );
        Ok(Created {
            task: Task::pending(task.clone()),
            created: true,
        })
    }

    pub(crate) fn start(
        &mut self,
        task_id: TaskId,
        lease: &Lease,
        now: Timestamp,
    ) -> rusqlite::Result<StartOutcome> {
        let Some(live) = self.live(task_id)? else {
            return Ok(StartOutcome::NotFound);
        };
        match live.status {
            Status::Pending => {}
            Status::Running => return Ok(StartOutcome::AlreadyRunning),
            status => return Ok(StartOutcome::AlreadyFinished { status }),
        }
        // Not `RETURNING`: SQLite gathers its rows in an ephemeral table,
        // a page cache of its own set up and torn down per statement (a
        // third of the writer's time under an echo load); the row is read
        // back by its key instead.
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE tasks SET status = 'running', started_at = COALESCE(started_at, MAX(?2, created_at)), \
                 owner = ?3, lease_until = ?4, attempt = attempt + 1, run_at = NULL \
                 WHERE task_id = ?1 AND status = 'pending'",
            )?
            .execute(params![
                task_id.as_bytes().as_slice(),
                now.as_millis(),
                lease.owner,
                lease.until.as_millis()
            ])?;
        if changed == 0 {
            return Ok(StartOutcome::NotFound);
        }
        self.counters.moved(Status::Pending, Status::Running, now);
        let task = self
            .conn
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?1"
            ))?
            .query_row([task_id.as_bytes().as_slice()], task_from_row)?;
        self.staged.push(Change::Began(task_id, live.last_seq));
        // The first attempt opens the tape; a later one says it began.
        let body = if live.last_seq == 0 {
            EventBody::TaskStarted {
                task_id,
                op: task.op.clone(),
            }
        } else {
            attempt_started(&task)
        };
        let seq = live.last_seq + 1;
        self.insert_event(task_id, &body.encode(), seq, now)?;
        self.live.insert(
            task_id,
            Live {
                status: Status::Running,
                last_seq: seq,
                ..live
            },
        );
        Ok(StartOutcome::Started(Box::new(task)))
    }

    /// Starts the due pending tasks of `op`, by priority then age, while
    /// fewer than `limit` run, at most `take` of them.
    pub(crate) fn claim(
        &mut self,
        op: &str,
        (limit, take): (usize, usize),
        keys: Option<&tasktape_core::flow::ClaimRule>,
        lease: &Lease,
        due_by: Timestamp,
        now: Timestamp,
    ) -> rusqlite::Result<Vec<Task>> {
        let running: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM tasks WHERE op = ?1 AND status = 'running'")?
            .query_row([op], |row| row.get(0))?;
        let room = (i64::try_from(limit).unwrap_or(i64::MAX) - running)
            .min(i64::try_from(take).unwrap_or(i64::MAX));
        if room <= 0 {
            return Ok(Vec::new());
        }
        // Delayed tasks that came due join the due-now order (`run_at`
        // NULL: due), so each claim reads one ordered index range instead
        // of sorting every task that came due (20,000 due at once made
        // each claim of one task sort all of them).
        self.conn
            .prepare_cached(
                "UPDATE tasks SET run_at = NULL \
                 WHERE op = ?1 AND status = 'pending' AND run_at IS NOT NULL AND run_at <= ?2",
            )?
            .execute(params![op, due_by.as_millis()])?;
        let mut room = room;
        if let Some(rate) = keys.and_then(|rule| rule.rate) {
            self.forget_starts(op, rate, now)?;
        }
        if let Some(rule) = keys {
            if rule.keyed {
                return self.claim_keyed(op, room as usize, rule, lease, now);
            }
            if let Some(rate) = rule.rate {
                room = room.min(self.rate_room(op, "", rate, now)? as i64);
                if room <= 0 {
                    return Ok(Vec::new());
                }
            }
        }
        let ids = self
            .conn
            .prepare_cached(
                "SELECT task_id FROM tasks \
                 WHERE op = ?1 AND status = 'pending' AND run_at IS NULL \
                 ORDER BY priority DESC, created_at, task_id LIMIT ?2",
            )?
            .query_map(params![op, room], |row| task_id_from(row.get(0)?))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut started = Vec::with_capacity(ids.len());
        for task_id in ids {
            if let StartOutcome::Started(task) = self.start(task_id, lease, now)? {
                started.push(*task);
            }
        }
        if keys.is_some_and(|rule| rule.rate.is_some()) {
            let created = crate::keyed::created_times(&started);
            self.note_starts(op, "", &created, now)?;
        }
        Ok(started)
    }

    pub(crate) fn append(
        &mut self,
        task_id: TaskId,
        body: &EncodedBody,
        now: Timestamp,
    ) -> rusqlite::Result<AppendOutcome> {
        let Some(live) = self.live(task_id)? else {
            return Ok(AppendOutcome::NotFound);
        };
        if live.status != Status::Running {
            return Ok(AppendOutcome::Dropped {
                last_seq: live.last_seq,
            });
        }
        let seq = live.last_seq + 1;
        self.insert_event(task_id, body, seq, now)?;
        if let Some(entry) = self.live.get_mut(&task_id) {
            entry.last_seq = seq;
        }
        Ok(AppendOutcome::Appended { seq })
    }

    pub(crate) fn finish(
        &mut self,
        task_id: TaskId,
        outcome: &Outcome,
        now: Timestamp,
    ) -> rusqlite::Result<FinishOutcome> {
        let Some(live) = self.live(task_id)? else {
            return Ok(FinishOutcome::NotFound);
        };
        if live.status.is_terminal() {
            return Ok(FinishOutcome::AlreadyFinished {
                status: live.status,
            });
        }
        if live.status == Status::Pending
            && matches!(outcome, Outcome::Succeeded(_) | Outcome::Retry(_))
        {
            return Ok(FinishOutcome::NotStarted);
        }
        let outcome = if live.cancel_requested {
            &Outcome::Cancelled
        } else {
            outcome
        };
        if let Outcome::Retry(retry) = outcome {
            return self.requeue(task_id, live, retry, now);
        }
        let (result, error) = outcome.stored_texts();
        let status = outcome.status();
        self.conn
            .prepare_cached(
                "UPDATE tasks SET status = ?2, finished_at = ?3, result = ?4, error = ?5, \
                 owner = NULL, lease_until = NULL WHERE task_id = ?1",
            )?
            .execute(params![
                task_id.as_bytes().as_slice(),
                status.as_str(),
                now.as_millis(),
                result,
                error
            ])?;
        let seq = live.last_seq + 1;
        self.insert_event(task_id, &outcome.final_body().encode(), seq, now)?;
        self.counters.moved(live.status, status, now);
        self.staged.push(Change::Status(task_id, status));
        self.live.remove(&task_id);
        Ok(FinishOutcome::Finished { seq, status })
    }

    /// A running task back to pending for another attempt (see
    /// [`Outcome::Retry`]).
    fn requeue(
        &mut self,
        task_id: TaskId,
        live: Live,
        retry: &Retry,
        now: Timestamp,
    ) -> rusqlite::Result<FinishOutcome> {
        let (attempt, history): (i64, Option<String>) = self
            .conn
            .prepare_cached("SELECT attempt, history FROM tasks WHERE task_id = ?1")?
            .query_row([task_id.as_bytes().as_slice()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        let attempt = attempt.max(1) as u32;
        let mut records: Vec<serde_json::Value> = history
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        records.push(attempt_record(attempt, &retry.error, retry.started_at, now));
        self.conn
            .prepare_cached(
                "UPDATE tasks SET status = 'pending', run_at = ?2, owner = NULL, lease_until = NULL, \
                 history = ?3 WHERE task_id = ?1",
            )?
            .execute(params![
                task_id.as_bytes().as_slice(),
                retry.retry_at.as_millis(),
                serde_json::Value::Array(records).to_string(),
            ])?;
        let seq = live.last_seq + 1;
        self.insert_event(task_id, &attempt_failed(attempt, retry).encode(), seq, now)?;
        self.counters.moved(live.status, Status::Pending, now);
        self.staged.push(Change::Status(task_id, Status::Pending));
        self.live.insert(
            task_id,
            Live {
                status: Status::Pending,
                last_seq: seq,
                ..live
            },
        );
        Ok(FinishOutcome::Requeued { seq })
    }

    /// Ends a lost run (see `Store::reap`): the running row is read here,
    /// inside the writer's transaction, and what the run becomes (failed,
    /// or another attempt) decided from it.
    pub(crate) fn reap(
        &mut self,
        task_id: TaskId,
        lost: &LostRun,
        now: Timestamp,
    ) -> rusqlite::Result<Option<FinishOutcome>> {
        let lease: Option<Option<i64>> = self
            .conn
            .prepare_cached(
                "SELECT lease_until FROM tasks WHERE task_id = ?1 AND status = 'running'",
            )?
            .query_row([task_id.as_bytes().as_slice()], |row| row.get(0))
            .optional()?;
        let Some(until) = lease else { return Ok(None) };
        if lost.expired_only && until.is_none_or(|until| until >= lost.now.as_millis()) {
            return Ok(None);
        }
        // The decision reads the whole row; one that does not decode still
        // ends, plainly failed.
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?1");
        let task = self
            .conn
            .prepare_cached(&sql)?
            .query_row([task_id.as_bytes().as_slice()], task_from_row);
        let outcome = match task {
            Ok(task) => lost.outcome(&task),
            Err(_) => Outcome::Failed(lost.error.clone()),
        };
        self.finish(task_id, &outcome, now).map(Some)
    }

    pub(crate) fn request_cancel(
        &mut self,
        task_id: TaskId,
        now: Timestamp,
    ) -> rusqlite::Result<CancelOutcome> {
        let Some(live) = self.live(task_id)? else {
            return Ok(CancelOutcome::NotFound);
        };
        match live.status {
            Status::Pending => match self.finish(task_id, &Outcome::Cancelled, now)? {
                FinishOutcome::Finished { seq, .. } => Ok(CancelOutcome::Cancelled { seq }),
                FinishOutcome::AlreadyFinished { status } => {
                    Ok(CancelOutcome::AlreadyTerminal { status })
                }
                FinishOutcome::NotFound
                | FinishOutcome::NotStarted
                | FinishOutcome::Requeued { .. }
                | FinishOutcome::NotOwner => Ok(CancelOutcome::NotFound),
            },
            Status::Running => {
                // Not `RETURNING` (see `start`).
                self.conn
                    .prepare_cached("UPDATE tasks SET cancel_requested = 1 WHERE task_id = ?1")?
                    .execute([task_id.as_bytes().as_slice()])?;
                let owner: Option<String> = self
                    .conn
                    .prepare_cached("SELECT owner FROM tasks WHERE task_id = ?1")?
                    .query_row([task_id.as_bytes().as_slice()], |row| row.get(0))?;
                if let Some(entry) = self.live.get_mut(&task_id) {
                    entry.cancel_requested = true;
                }
                Ok(CancelOutcome::Requested { owner })
            }
            status => Ok(CancelOutcome::AlreadyTerminal { status }),
        }
    }
}
