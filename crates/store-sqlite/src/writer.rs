//! The one writer: a thread that owns the read-write connection, takes
//! commands from a queue, and group-commits every command waiting in the
//! queue in one transaction. Each caller is answered only after the commit
//! that holds its write; wake-ups go out after the commit too.
//!
//! The writer is the only thing that writes the file (the directory lock
//! keeps other processes out), so it caches each live task's status and last
//! seq; a failed transaction clears the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use rusqlite::{Connection, OptionalExtension, params};
use tasktape_core::event::{EncodedBody, EventBody};
use tasktape_core::model::{NewTask, Outcome, Status, Task, TaskId};
use tasktape_core::store::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease, Result,
    StartOutcome, StoreError,
};
use tasktape_core::time::Timestamp;
use tasktape_core::wake::WakeHub;
use tokio::sync::{mpsc, oneshot};

use crate::checkpointer::{RESTART_FRAMES, checkpoint};
use crate::rows::{TASK_COLUMNS, classify, duplicate, status_from, task_from_row};

/// Where a command's answer goes: a caller awaiting the commit.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// Where an append's answer goes.
pub(crate) enum AppendReply {
    /// A caller awaiting the commit.
    Wait(Reply<AppendOutcome>),
    /// A queued append's ack (the Reporter's pipeline).
    Ack(Arc<AppendAck>),
}

/// One write.
pub(crate) enum Command {
    Create(Box<NewTask>, Reply<Created>),
    Start(TaskId, Lease, Reply<StartOutcome>),
    Append(TaskId, EncodedBody, AppendReply),
    Finish(TaskId, Outcome, Reply<FinishOutcome>),
    RequestCancel(TaskId, Reply<CancelOutcome>),
    RenewLease(String, Timestamp, Reply<u64>),
    Delete(TaskId, Reply<DeleteOutcome>),
    Purge(Timestamp, Reply<u64>),
}

/// A command's answer, held until the commit.
enum Answer {
    Created(Reply<Created>, Box<Created>),
    Start(Reply<StartOutcome>, StartOutcome),
    Append(AppendReply, AppendOutcome),
    Finish(Reply<FinishOutcome>, FinishOutcome),
    Cancel(Reply<CancelOutcome>, CancelOutcome),
    Count(Reply<u64>, u64),
    Delete(Reply<DeleteOutcome>, DeleteOutcome),
}

#[derive(Clone, Copy)]
struct Live {
    status: Status,
    last_seq: u64,
    cancel_requested: bool,
}

pub(crate) struct Writer {
    conn: Connection,
    path: String,
    hub: Arc<WakeHub>,
    batch_max: usize,
    /// Frames in the WAL after the last commit (set by the WAL hook).
    wal_frames: Arc<AtomicI32>,
    live: HashMap<TaskId, Live>,
    woken: HashMap<TaskId, u64>,
}

impl Writer {
    pub(crate) fn new(
        mut conn: Connection,
        path: String,
        hub: Arc<WakeHub>,
        batch_max: usize,
    ) -> rusqlite::Result<Self> {
        let wal_frames = Arc::new(AtomicI32::new(0));
        let frames = Arc::clone(&wal_frames);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(pages, Ordering::Relaxed);
            Ok(())
        }))?;
        Ok(Writer {
            conn,
            path,
            hub,
            batch_max,
            wal_frames,
            live: HashMap::new(),
            woken: HashMap::new(),
        })
    }

    /// Runs until every sender is gone.
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        while let Some(first) = commands.blocking_recv() {
            batch.push(first);
            while batch.len() < self.batch_max {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
            if self.wal_frames.load(Ordering::Relaxed) > RESTART_FRAMES {
                // Between transactions: finish what the checkpointer copied so
                // that the next transaction starts the log from its beginning.
                if let Err(error) = checkpoint(&self.conn, "PASSIVE") {
                    tracing::warn!(path = %self.path, %error, "wal checkpoint failed");
                }
                self.wal_frames.store(0, Ordering::Relaxed);
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Command>) {
        let mut answers = Vec::with_capacity(batch.len());
        let outcome = self.apply(batch, &mut answers);
        match outcome {
            Ok(()) => {
                // Followers first: they are what the wake-up latency is about.
                for (task_id, seq) in self.woken.drain() {
                    self.hub.notify(task_id, seq);
                }
                for answer in answers {
                    answer.send();
                }
            }
            Err(error) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.live.clear();
                self.woken.clear();
                let error = classify(&self.path, error);
                tracing::error!(%error, "write transaction failed; rolled back");
                for answer in answers {
                    answer.fail(duplicate(&error));
                }
                for command in batch.drain(..) {
                    command.fail(duplicate(&error));
                }
            }
        }
        batch.clear();
        if self.live.len() > 100_000 {
            self.live.clear();
        }
    }

    /// Runs the batch in one transaction. On error the caller rolls back;
    /// commands not yet applied stay in `batch`.
    fn apply(
        &mut self,
        batch: &mut Vec<Command>,
        answers: &mut Vec<Answer>,
    ) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let mut pending = std::mem::take(batch).into_iter();
        while let Some(command) = pending.next() {
            match self.apply_one(command) {
                Ok(answer) => answers.push(answer),
                Err(failed) => {
                    let (error, command) = *failed;
                    batch.push(command);
                    batch.extend(pending);
                    return Err(error);
                }
            }
        }
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    fn apply_one(&mut self, command: Command) -> Result<Answer, Box<(rusqlite::Error, Command)>> {
        macro_rules! step {
            ($result:expr, $command:expr) => {
                match $result {
                    Ok(value) => value,
                    Err(error) => return Err(Box::new((error, $command))),
                }
            };
        }
        let now = Timestamp::now();
        Ok(match command {
            Command::Create(task, reply) => {
                let created = step!(self.create(&task), Command::Create(task, reply));
                Answer::Created(reply, Box::new(created))
            }
            Command::Start(task_id, lease, reply) => {
                let outcome = step!(
                    self.start(task_id, &lease, now),
                    Command::Start(task_id, lease, reply)
                );
                Answer::Start(reply, outcome)
            }
            Command::Append(task_id, body, reply) => {
                let outcome = step!(
                    self.append(task_id, &body, now),
                    Command::Append(task_id, body, reply)
                );
                Answer::Append(reply, outcome)
            }
            Command::Finish(task_id, outcome, reply) => {
                let finished = step!(
                    self.finish(task_id, &outcome, now),
                    Command::Finish(task_id, outcome, reply)
                );
                Answer::Finish(reply, finished)
            }
            Command::RequestCancel(task_id, reply) => {
                let outcome = step!(
                    self.request_cancel(task_id, now),
                    Command::RequestCancel(task_id, reply)
                );
                Answer::Cancel(reply, outcome)
            }
            Command::RenewLease(owner, until, reply) => {
                let renewed = step!(
                    self.conn
                        .prepare_cached("UPDATE tasks SET lease_until = ?1 WHERE owner = ?2 AND status = 'running'")
                        .and_then(|mut statement| statement.execute(params![until.as_millis(), owner])),
                    Command::RenewLease(owner, until, reply)
                );
                Answer::Count(reply, renewed as u64)
            }
            Command::Delete(task_id, reply) => {
                let outcome = step!(self.delete(task_id), Command::Delete(task_id, reply));
                Answer::Delete(reply, outcome)
            }
            Command::Purge(cutoff, reply) => {
                let purged = step!(self.purge(cutoff), Command::Purge(cutoff, reply));
                Answer::Count(reply, purged)
            }
        })
    }

    fn live(&mut self, task_id: TaskId) -> rusqlite::Result<Option<Live>> {
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

    fn create(&mut self, task: &NewTask) -> rusqlite::Result<Created> {
        if let Some(key) = &task.idempotency_key
            && let Some(existing) = self.select_task("idempotency_key = ?1", key)?
        {
            return Ok(Created {
                task: existing,
                created: false,
            });
        }
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO tasks (task_id, op, status, created_at, params, params_digest, idempotency_key) \
             VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6)",
        )?;
        statement.execute(params![
            task.task_id.as_bytes().as_slice(),
            task.op,
            task.created_at.as_millis(),
            task.params.to_string(),
            task.params_digest,
            task.idempotency_key,
        ])?;
        self.live.insert(
            task.task_id,
            Live {
                status: Status::Pending,
                last_seq: 0,
                cancel_requested: false,
            },
        );
        Ok(Created {
            task: Task {
                task_id: task.task_id,
                op: task.op.clone(),
                status: Status::Pending,
                created_at: task.created_at,
                started_at: None,
                finished_at: None,
                params_digest: task.params_digest.clone(),
                result: None,
                error: None,
                params: task.params.clone(),
                idempotency_key: task.idempotency_key.clone(),
                cancel_requested: false,
                owner: None,
                lease_until: None,
            },
            created: true,
        })
    }

    fn start(
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
        self.conn
            .prepare_cached(
                "UPDATE tasks SET status = 'running', started_at = ?2, owner = ?3, lease_until = ?4 \
                 WHERE task_id = ?1 AND status = 'pending'",
            )?
            .execute(params![task_id.as_bytes().as_slice(), now.as_millis(), lease.owner, lease.until.as_millis()])?;
        let task = self.select_task("task_id = ?1", &task_id.as_bytes().as_slice())?;
        let Some(task) = task else {
            return Ok(StartOutcome::NotFound);
        };
        let body = EventBody::TaskStarted {
            task_id,
            op: task.op.clone(),
        }
        .encode();
        self.insert_event(task_id, &body, 1, now)?;
        self.live.insert(
            task_id,
            Live {
                status: Status::Running,
                last_seq: 1,
                ..live
            },
        );
        Ok(StartOutcome::Started(Box::new(task)))
    }

    fn append(
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

    fn finish(
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
        let outcome = if live.cancel_requested {
            &Outcome::Cancelled
        } else {
            outcome
        };
        let (result, error) = match outcome {
            Outcome::Succeeded(result) => (Some(result.to_string()), None),
            Outcome::Failed(error) => {
                (None, Some(serde_json::to_string(error).unwrap_or_default()))
            }
            Outcome::Cancelled => (None, None),
        };
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
        self.insert_event(task_id, &EventBody::final_for(outcome).encode(), seq, now)?;
        self.live.remove(&task_id);
        Ok(FinishOutcome::Finished { seq, status })
    }

    fn request_cancel(
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
                FinishOutcome::NotFound => Ok(CancelOutcome::NotFound),
            },
            Status::Running => {
                let mut statement = self.conn.prepare_cached(
                    "UPDATE tasks SET cancel_requested = 1 WHERE task_id = ?1 RETURNING owner",
                )?;
                let owner: Option<String> =
                    statement.query_row([task_id.as_bytes().as_slice()], |row| row.get(0))?;
                if let Some(entry) = self.live.get_mut(&task_id) {
                    entry.cancel_requested = true;
                }
                Ok(CancelOutcome::Requested { owner })
            }
            status => Ok(CancelOutcome::AlreadyTerminal { status }),
        }
    }

    fn delete(&mut self, task_id: TaskId) -> rusqlite::Result<DeleteOutcome> {
        let Some(live) = self.live(task_id)? else {
            return Ok(DeleteOutcome::NotFound);
        };
        if !live.status.is_terminal() {
            return Ok(DeleteOutcome::NotTerminal {
                status: live.status,
            });
        }
        let id = task_id.as_bytes().as_slice();
        self.conn
            .prepare_cached("DELETE FROM events WHERE task_id = ?1")?
            .execute([id])?;
        self.conn
            .prepare_cached("DELETE FROM tasks WHERE task_id = ?1")?
            .execute([id])?;
        self.live.remove(&task_id);
        Ok(DeleteOutcome::Deleted)
    }

    fn purge(&mut self, cutoff: Timestamp) -> rusqlite::Result<u64> {
        const DONE: &str = "status IN ('succeeded', 'failed', 'cancelled') AND finished_at < ?1";
        let cutoff = cutoff.as_millis();
        self.conn.execute(
            &format!(
                "DELETE FROM events WHERE task_id IN (SELECT task_id FROM tasks WHERE {DONE})"
            ),
            [cutoff],
        )?;
        let purged = self
            .conn
            .execute(&format!("DELETE FROM tasks WHERE {DONE}"), [cutoff])?;
        Ok(purged as u64)
    }
}

impl AppendReply {
    fn send(self, outcome: Result<AppendOutcome>) {
        match self {
            AppendReply::Wait(reply) => {
                let _ = reply.send(outcome);
            }
            AppendReply::Ack(ack) => ack.record(&outcome),
        }
    }
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Created(reply, value) => drop(reply.send(Ok(*value))),
            Answer::Start(reply, value) => drop(reply.send(Ok(value))),
            Answer::Append(reply, value) => reply.send(Ok(value)),
            Answer::Finish(reply, value) => drop(reply.send(Ok(value))),
            Answer::Cancel(reply, value) => drop(reply.send(Ok(value))),
            Answer::Count(reply, value) => drop(reply.send(Ok(value))),
            Answer::Delete(reply, value) => drop(reply.send(Ok(value))),
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Answer::Created(reply, _) => drop(reply.send(Err(error))),
            Answer::Start(reply, _) => drop(reply.send(Err(error))),
            Answer::Append(reply, _) => reply.send(Err(error)),
            Answer::Finish(reply, _) => drop(reply.send(Err(error))),
            Answer::Cancel(reply, _) => drop(reply.send(Err(error))),
            Answer::Count(reply, _) => drop(reply.send(Err(error))),
            Answer::Delete(reply, _) => drop(reply.send(Err(error))),
        }
    }
}

impl Command {
    fn fail(self, error: StoreError) {
        match self {
            Command::Create(_, reply) => drop(reply.send(Err(error))),
            Command::Start(_, _, reply) => drop(reply.send(Err(error))),
            Command::Append(_, _, reply) => reply.send(Err(error)),
            Command::Finish(_, _, reply) => drop(reply.send(Err(error))),
            Command::RequestCancel(_, reply) => drop(reply.send(Err(error))),
            Command::RenewLease(_, _, reply) | Command::Purge(_, reply) => {
                drop(reply.send(Err(error)))
            }
            Command::Delete(_, reply) => drop(reply.send(Err(error))),
        }
    }
}
