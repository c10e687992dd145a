//! The one writer: a thread that owns the read-write connection, takes
//! commands from a queue, and group-commits every command waiting in the
//! queue in one transaction. Each caller is answered only after the commit
//! that holds its write; wake-ups go out after the commit too.
//!
//! A command whose statement fails is answered with the error, and the rest
//! of its batch is applied again without it: one task's oversized write
//! never fails another's. A transient failure (a lock, an I/O error) fails
//! the batch's other commands at once but holds its appends and
//! finishes, in order, and retries them with backoff for
//! [`TRANSIENT_RETRY`]: running tasks' events and results wait out the
//! fault instead of being lost. The writer is the only thing that writes the file
//! (the lock file keeps other processes out), so it caches each live task's
//! status and last seq; a rolled-back transaction clears the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use rusqlite::{Connection, params};
use tasktape_core::event::EncodedBody;
use tasktape_core::model::{NewTask, Outcome, Status, Task, TaskId};
use tasktape_core::store::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease, LostRun,
    Result, StartOutcome, StoreError, TRANSIENT_RETRY, outcome_after_events,
};
use tasktape_core::time::Timestamp;
use tasktape_core::wake::WakeHub;
use tokio::sync::{mpsc, oneshot};

use crate::checkpointer::{RESTART_BYTES, checkpoint};
use crate::counters::Counters;
use crate::rows::classify;
use crate::tail::{Change, Tails};

/// Where a command's answer goes: a caller awaiting the commit.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// Where an append's answer goes.
pub(crate) enum AppendReply {
    /// A caller awaiting the commit.
    Wait(Reply<AppendOutcome>),
    /// A queued append's ack (the Reporter's pipeline).
    Ack(Arc<AppendAck>),
}

/// One write. A `Finish` with an ack is checked against it in queue order.
pub(crate) enum Command {
    Create(Box<NewTask>, Reply<Created>),
    CreateMany(Vec<NewTask>, Reply<Vec<Created>>),
    Start(TaskId, Lease, Reply<StartOutcome>),
    /// op, limit, take, lease, due by.
    Claim(
        String,
        usize,
        (usize, Option<tasktape_core::flow::ClaimRule>),
        Lease,
        Timestamp,
        Reply<Vec<Task>>,
    ),
    /// An event and when it was reported (its `ts`).
    Append(TaskId, EncodedBody, Timestamp, AppendReply),
    Finish(
        TaskId,
        Outcome,
        Option<Arc<AppendAck>>,
        Reply<FinishOutcome>,
    ),
    RequestCancel(TaskId, Reply<CancelOutcome>),
    CancelMany(Vec<TaskId>, Reply<Vec<CancelOutcome>>),
    RenewLease(String, Timestamp, Reply<u64>),
    Reap(TaskId, LostRun, Reply<Option<FinishOutcome>>),
    Delete(TaskId, Reply<DeleteOutcome>),
    Purge(Timestamp, usize, Reply<u64>),
    Sweep(usize, Reply<u64>),
    /// kind, key, expected, value.
    SwapRecord(String, String, Option<String>, Option<String>, Reply<bool>),
}

/// A command's result inside the transaction, sent once it commits.
enum Done {
    Created(Box<Created>),
    CreatedMany(Vec<Created>),
    Start(StartOutcome),
    Claimed(Vec<Task>),
    Append(AppendOutcome),
    Finish(FinishOutcome),
    Cancel(CancelOutcome),
    CancelledMany(Vec<CancelOutcome>),
    Count(u64),
    Delete(DeleteOutcome),
    Reaped(Option<FinishOutcome>),
    Swapped(bool),
}

#[derive(Clone, Copy)]
pub(crate) struct Live {
    pub(crate) status: Status,
    pub(crate) last_seq: u64,
    pub(crate) cancel_requested: bool,
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    path: String,
    hub: Arc<WakeHub>,
    batch_max: usize,
    /// Frames in the WAL after the last commit (set by the WAL hook).
    wal_frames: Arc<AtomicI32>,
    /// [`RESTART_BYTES`] in frames of this file's page size.
    restart_frames: i32,
    pub(crate) live: HashMap<TaskId, Live>,
    /// Highest seq written per task in the open transaction.
    pub(crate) woken: HashMap<TaskId, u64>,
    /// The tails (see `tail.rs`), and what the open transaction does to them.
    tails: Arc<Tails>,
    pub(crate) staged: Vec<Change>,
    /// The open transaction's counter changes, written before its COMMIT.
    pub(crate) counters: Counters,
    /// Appends and finishes held after a transient failure, in queue order.
    held: Vec<Command>,
    /// When the current run of transient failures began.
    failing_since: Option<std::time::Instant>,
    /// The pause before the held commands are tried again.
    backoff: std::time::Duration,
}

/// The first pause before held commands are tried again (doubling to a second).
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(10);

impl Writer {
    pub(crate) fn new(
        mut conn: Connection,
        path: String,
        hub: Arc<WakeHub>,
        tails: Arc<Tails>,
        batch_max: usize,
    ) -> rusqlite::Result<Self> {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let restart_frames = i32::try_from(RESTART_BYTES / page_size.max(512)).unwrap_or(i32::MAX);
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
            restart_frames,
            live: HashMap::new(),
            woken: HashMap::new(),
            tails,
            staged: Vec::new(),
            counters: Counters::default(),
            held: Vec::new(),
            failing_since: None,
            backoff: FIRST_BACKOFF,
        })
    }

    /// Runs until every sender is gone.
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        loop {
            if self.held.is_empty() {
                let Some(first) = next_command(&mut commands) else {
                    break;
                };
                batch.push(first);
            } else {
                // Held writes go first (they were queued first), with
                // whatever came meanwhile behind them.
                std::thread::sleep(self.backoff);
                self.backoff = (self.backoff * 2).min(std::time::Duration::from_secs(1));
                batch.append(&mut self.held);
            }
            while batch.len() < self.batch_max {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
            if self.wal_frames.load(Ordering::Relaxed) > self.restart_frames {
                // Between transactions: finish what the checkpointer copied so
                // that the next transaction starts the log from its beginning.
                if let Err(error) = checkpoint(&self.conn, "PASSIVE") {
                    tracing::warn!(path = %self.path, %error, "wal checkpoint failed");
                }
                self.wal_frames.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Commits `batch` in one transaction and answers every command. A
    /// command that fails is answered with its error and the others are
    /// applied again without it; a failed COMMIT fails them all.
    fn commit_batch(&mut self, batch: &mut Vec<Command>) {
        while !batch.is_empty() {
            match self.apply(batch) {
                Ok(done) => {
                    if self.failing_since.take().is_some() {
                        tracing::info!(path = %self.path, "writes succeed again");
                    }
                    self.backoff = FIRST_BACKOFF;
                    // The tails before the wake-ups: a woken follower reads them.
                    self.tails.apply(self.staged.drain(..));
                    // Followers first: they are what the wake-up latency is about.
                    for (task_id, seq) in self.woken.drain() {
                        self.hub.notify(task_id, seq);
                    }
                    for (command, done) in batch.drain(..).zip(done) {
                        command.answer(done);
                    }
                    return;
                }
                Err((culprit, error)) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.live.clear();
                    self.woken.clear();
                    self.staged.clear();
                    let error = classify(&self.path, error);
                    if error.is_transient() {
                        let since = *self
                            .failing_since
                            .get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() < TRANSIENT_RETRY {
                            tracing::warn!(%error, "write failed; holding running tasks' writes to retry");
                            for command in batch.drain(..) {
                                if command.is_task_write() {
                                    self.held.push(command);
                                } else {
                                    command.fail(error.clone());
                                }
                            }
                            return;
                        }
                    }
                    tracing::error!(%error, "write failed; rolled back");
                    match culprit {
                        Some(index) => batch.remove(index).fail(error),
                        None => {
                            for command in batch.drain(..) {
                                command.fail(error.clone());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies every command in one open transaction and commits it. On
    /// error, names the failing command (`None`: the commit itself failed).
    fn apply(&mut self, batch: &[Command]) -> Result<Vec<Done>, (Option<usize>, rusqlite::Error)> {
        let begin = self
            .conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut begin| begin.execute([]));
        begin.map_err(|error| (None, error))?;
        self.counters.clear();
        let mut done = Vec::with_capacity(batch.len());
        for (index, command) in batch.iter().enumerate() {
            done.push(
                self.apply_one(command)
                    .map_err(|error| (Some(index), error))?,
            );
        }
        self.counters
            .write(&self.conn)
            .map_err(|error| (None, error))?;
        if !self.staged.is_empty() {
            self.tails.committing();
        }
        let commit = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]));
        if commit.is_err() {
            self.tails.abandon();
        }
        commit.map_err(|error| (None, error))?;
        Ok(done)
    }

    fn apply_one(&mut self, command: &Command) -> rusqlite::Result<Done> {
        let now = Timestamp::now();
        Ok(match command {
            Command::Create(task, _) => Done::Created(Box::new(self.create(task)?)),
            Command::CreateMany(tasks, _) => Done::CreatedMany(
                tasks
                    .iter()
                    .map(|task| self.create(task))
                    .collect::<rusqlite::Result<_>>()?,
            ),
            Command::Start(task_id, lease, _) => Done::Start(self.start(*task_id, lease, now)?),
            Command::Claim(op, limit, (take, keys), lease, due_by, _) => Done::Claimed(
                self.claim(op, (*limit, *take), keys.as_ref(), lease, *due_by, now)?,
            ),
            Command::Append(task_id, body, at, _) => {
                Done::Append(self.append(*task_id, body, *at)?)
            }
            Command::Finish(task_id, outcome, ack, _) => {
                let outcome = match ack {
                    // Every append this ack covers is ahead in the queue: settled now.
                    Some(ack) => outcome_after_events(outcome.clone(), ack),
                    None => outcome.clone(),
                };
                Done::Finish(self.finish(*task_id, &outcome, now)?)
            }
            Command::RequestCancel(task_id, _) => Done::Cancel(self.request_cancel(*task_id, now)?),
            Command::CancelMany(ids, _) => Done::CancelledMany(
                ids.iter()
                    .map(|task_id| self.request_cancel(*task_id, now))
                    .collect::<rusqlite::Result<_>>()?,
            ),
            Command::RenewLease(owner, until, _) => {
                let mut renew = self.conn.prepare_cached(
                    "UPDATE tasks SET lease_until = ?1 WHERE owner = ?2 AND status = 'running'",
                )?;
                Done::Count(renew.execute(params![until.as_millis(), owner])? as u64)
            }
            Command::Delete(task_id, _) => Done::Delete(self.delete(*task_id)?),
            Command::Reap(task_id, lost, _) => Done::Reaped(self.reap(*task_id, lost, now)?),
            Command::Purge(cutoff, limit, _) => Done::Count(self.purge(*cutoff, *limit)?),
            Command::Sweep(limit, _) => Done::Count(self.sweep(*limit)?),
            Command::SwapRecord(kind, key, expected, value, _) => {
                Done::Swapped(self.swap_record(kind, key, expected.as_deref(), value.as_deref())?)
            }
        })
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

impl Command {
    /// A running task's own write (an event, its finish): held and retried
    /// through a transient failure rather than failed.
    fn is_task_write(&self) -> bool {
        matches!(self, Command::Append(..) | Command::Finish(..))
    }

    /// Sends the committed result to the caller.
    fn answer(self, done: Done) {
        match (self, done) {
            (Command::Create(_, reply), Done::Created(created)) => drop(reply.send(Ok(*created))),
            (Command::CreateMany(_, reply), Done::CreatedMany(created)) => {
                drop(reply.send(Ok(created)))
            }
            (Command::Start(_, _, reply), Done::Start(outcome)) => drop(reply.send(Ok(outcome))),
            (Command::SwapRecord(_, _, _, _, reply), Done::Swapped(swapped)) => {
                drop(reply.send(Ok(swapped)))
            }
            (Command::Claim(_, _, _, _, _, reply), Done::Claimed(tasks)) => {
                drop(reply.send(Ok(tasks)))
            }
            (Command::Append(_, _, _, reply), Done::Append(outcome)) => reply.send(Ok(outcome)),
            (Command::Finish(_, _, _, reply), Done::Finish(outcome)) => {
                drop(reply.send(Ok(outcome)))
            }
            (Command::RequestCancel(_, reply), Done::Cancel(outcome)) => {
                drop(reply.send(Ok(outcome)))
            }
            (Command::CancelMany(_, reply), Done::CancelledMany(outcomes)) => {
                drop(reply.send(Ok(outcomes)))
            }
            (
                Command::RenewLease(_, _, reply)
                | Command::Purge(_, _, reply)
                | Command::Sweep(_, reply),
                Done::Count(count),
            ) => {
                drop(reply.send(Ok(count)));
            }
            (Command::Delete(_, reply), Done::Delete(outcome)) => drop(reply.send(Ok(outcome))),
            (Command::Reap(_, _, reply), Done::Reaped(outcome)) => drop(reply.send(Ok(outcome))),
            (command, _) => command.fail(StoreError::backend(
                "sqlite writer",
                "internal mismatch between a command and its result",
            )),
        }
    }

    /// Answers the caller with `error`.
    fn fail(self, error: StoreError) {
        match self {
            Command::Create(_, reply) => drop(reply.send(Err(error))),
            Command::CreateMany(_, reply) => drop(reply.send(Err(error))),
            Command::Start(_, _, reply) => drop(reply.send(Err(error))),
            Command::Claim(_, _, _, _, _, reply) => drop(reply.send(Err(error))),
            Command::SwapRecord(_, _, _, _, reply) => drop(reply.send(Err(error))),
            Command::Append(_, _, _, reply) => reply.send(Err(error)),
            Command::Finish(_, _, _, reply) => drop(reply.send(Err(error))),
            Command::RequestCancel(_, reply) => drop(reply.send(Err(error))),
            Command::CancelMany(_, reply) => drop(reply.send(Err(error))),
            Command::RenewLease(_, _, reply)
            | Command::Purge(_, _, reply)
            | Command::Sweep(_, reply) => drop(reply.send(Err(error))),
            Command::Delete(_, reply) => drop(reply.send(Err(error))),
            Command::Reap(_, _, reply) => drop(reply.send(Err(error))),
        }
    }
}

/// How long the writer polls its queue (yielding the CPU) before it parks.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The next command: a short poll first (a caller awaiting its answer
/// usually sends again within microseconds, and parking and waking the
/// thread costs more than that), then park until one comes.
fn next_command(commands: &mut mpsc::Receiver<Command>) -> Option<Command> {
    let spin_until = std::time::Instant::now() + SPIN;
    loop {
        match commands.try_recv() {
            Ok(command) => return Some(command),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() < spin_until => {
                std::thread::yield_now();
            }
            Err(mpsc::error::TryRecvError::Empty) => return commands.blocking_recv(),
        }
    }
}
