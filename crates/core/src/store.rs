//! The store contract: the operations every backend offers and the typed
//! answers they give. Only a store decides a transition; callers never read a
//! row and then write on the strength of what they read.
//!
//! Every operation here is atomic. A store enforces DESIGN.md's invariants 1
//! (row and tape agree at every commit), 2 (start and finish are single
//! transactions), 3 (terminal is immutable; the first finish wins) and 6
//! (answers come after the commit). The contract test kit
//! (`tasktape_core::testkit`, feature `testkit`) checks all of it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::event::{EventBody, StoredEvent};
use crate::model::{ErrorInfo, NewTask, Outcome, Status, Task, TaskId};
use crate::time::Timestamp;
use crate::wake::WakeHub;

mod ack;
mod error;
mod list;

pub use ack::{AppendAck, outcome_after_events};
pub use error::{StoreError, TRANSIENT_RETRY};
pub use list::{Cursor, InvalidCursor, ListPage, ListQuery};

/// The store layer's result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The answer to [`Store::create`].
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    /// The task: the new one, or the one that already had the idempotency key.
    pub task: Task,
    /// False when the idempotency key gave back an existing task.
    pub created: bool,
}

/// Who runs a task and until when that holds unless renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The owning instance's id.
    pub owner: String,
    /// The lease's expiry.
    pub until: Timestamp,
}

/// A run its owner lost, for [`Store::reap`].
#[derive(Clone, Debug, PartialEq)]
pub struct LostRun {
    /// How it ends unless another attempt follows (`owner_lost`,
    /// `server_restart`).
    pub error: ErrorInfo,
    /// The caller's now: the lease is judged by it (by stores one process
    /// owns), and the attempt's record and backoff start from it.
    pub now: Timestamp,
    /// Whether the lease must have ended before `now` (a peer's run);
    /// false for this instance's own leftovers at start-up.
    pub expired_only: bool,
}

impl LostRun {
    /// A peer's run whose lease ended before `now`.
    pub fn expired(error: ErrorInfo, now: Timestamp) -> Self {
        LostRun {
            error,
            now,
            expired_only: true,
        }
    }

    /// This instance's own run, left running by its previous life.
    pub fn leftover(error: ErrorInfo, now: Timestamp) -> Self {
        LostRun {
            error,
            now,
            expired_only: false,
        }
    }

    /// What the run of `task` (its row as the store locked it) becomes.
    pub fn outcome(&self, task: &Task) -> Outcome {
        crate::retry::attempt_outcome(task, Outcome::Failed(self.error.clone()), None, self.now)
    }
}

/// The answer to [`Store::start`].
#[derive(Clone, Debug, PartialEq)]
pub enum StartOutcome {
    /// The row is running and `task_started` is seq 1.
    Started(Box<Task>),
    /// It was already running; nothing written.
    AlreadyRunning,
    /// It already finished (e.g. cancelled while pending); nothing written.
    AlreadyFinished {
        /// Its terminal status.
        status: Status,
    },
    /// No such task.
    NotFound,
}

/// The answer to [`Store::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Committed at this seq.
    Appended {
        /// The event's seq.
        seq: u64,
    },
    /// Not written: the task is not running (pending or finished).
    Dropped {
        /// The tape's last seq.
        last_seq: u64,
    },
    /// No such task.
    NotFound,
}

/// The answer to [`Store::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The row is terminal and `final` is at `seq`. `status` is `cancelled`
    /// whenever a cancel had been requested, whatever outcome was asked for.
    Finished {
        /// The final's seq.
        seq: u64,
        /// The terminal status written.
        status: Status,
    },
    /// Another finish won; nothing written.
    AlreadyFinished {
        /// The winner's status.
        status: Status,
    },
    /// A pending task cannot succeed (it never ran) nor be retried (it is
    /// not running); nothing written.
    NotStarted,
    /// No such task.
    NotFound,
    /// The task runs again under another owner (its lease ran out, a peer
    /// took it and it started again): this caller's finish is not its to
    /// make; nothing written. (Stores several instances share fence by the
    /// owner the manager registered with [`Store::guard_instance`].)
    NotOwner,
    /// ([`Outcome::Retry`]) The running task is `pending` again, due at
    /// its `run_at`, its tape ending with the `tasktape.attempt_failed`
    /// partial at `seq`.
    Requeued {
        /// The partial's seq.
        seq: u64,
    },
}

/// The answer to [`Store::request_cancel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task was pending and is now `cancelled`, its tape just `final`.
    Cancelled {
        /// The final's seq (1).
        seq: u64,
    },
    /// The task is running; the request is recorded and the task will end
    /// `cancelled` (its owner must fire the op's cancel token).
    Requested {
        /// The owning instance.
        owner: Option<String>,
    },
    /// The task had already finished; nothing written.
    AlreadyTerminal {
        /// Its status.
        status: Status,
    },
    /// No such task.
    NotFound,
}

/// The answer to [`Store::delete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The task and its tape are gone.
    Deleted,
    /// Pending or running tasks are not deleted.
    NotTerminal {
        /// Its status.
        status: Status,
    },
    /// No such task.
    NotFound,
}

/// A slice of one task's tape, read in one snapshot with its row status.
#[derive(Clone, Debug)]
pub struct TapePage {
    /// The row's status at the snapshot.
    pub status: Status,
    /// Events with seq ≥ the asked `from_seq`, ascending, at most `limit`.
    pub events: Vec<StoredEvent>,
    /// The tape's highest seq at the snapshot (0 if empty).
    pub last_seq: u64,
}

/// What other processes sharing a store did, as the store learns it (for
/// PostgreSQL: by LISTEN/NOTIFY). The manager claims, cancels and catches up
/// on these; they are hints; the store stays the truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSignal {
    /// A task of `op` was created: pending work to claim.
    Pending {
        /// The op.
        op: String,
    },
    /// A pending task of `op` is due at `at` (a delayed task, or the next
    /// attempt of a retried one): claim then.
    Due {
        /// The op.
        op: String,
        /// When it is due.
        at: Timestamp,
    },
    /// A task of `op` ended: a concurrency slot may be free.
    Finished {
        /// The op.
        op: String,
    },
    /// A cancel was recorded for a running task held by `owner`.
    CancelRequested {
        /// The task.
        task_id: TaskId,
        /// The instance running it.
        owner: String,
    },
    /// Signals may have been missed (the listener reconnected): re-check
    /// everything.
    Resync,
}

/// Tasks per status.
pub type StatusCounts = HashMap<Status, u64>;

/// How many tasks ended with `status` in the minute starting at `minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: Timestamp,
    /// A terminal status.
    pub status: Status,
    /// Tasks.
    pub count: u64,
}

/// How long stores keep per-minute finish counts, in minutes.
pub const FINISHED_MINUTES_KEPT: i64 = 24 * 60;

/// `Err(NotAppendable)` for bodies only the store itself writes
/// (`task_started`, `final`) and for `heartbeat`; what every store's
/// `append` checks first.
pub fn check_appendable(body: &EventBody) -> Result<()> {
    if body.is_appendable() {
        Ok(())
    } else {
        Err(StoreError::NotAppendable {
            kind: body.kind().as_str(),
        })
    }
}

/// A task store. Implementations: `tasktape-store-sqlite`, `tasktape-store-postgres`.
///
/// Callers hold it as `Arc<dyn Store>`. Every method is one atomic step.
/// Input in the wrong state (an unknown id, a finished task, a body that
/// cannot be appended) gets a typed answer or a [`StoreError`]; the contract
/// kit checks those answers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name for `/v1/info` (`"sqlite"`, `"postgres"`).
    fn backend(&self) -> &'static str;

    /// Whether the store answers (a cheap round trip for readiness probes).
    async fn ready(&self) -> Result<()> {
        self.last_seq(TaskId::from_bytes([0; 16])).await.map(|_| ())
    }

    /// The hub the store wakes after each commit that adds events.
    fn wake_hub(&self) -> &Arc<WakeHub>;

    /// Reserves `instance_id` on this store for as long as the store lives
    /// (the manager calls it first): a second live instance with the same
    /// id gets [`StoreError::InstanceIdInUse`]. The default does nothing (a
    /// store one process owns needs no guard).
    async fn guard_instance(&self, instance_id: &str) -> Result<()> {
        let _ = instance_id;
        Ok(())
    }

    /// Creates a pending task. With an idempotency key already in use, writes
    /// nothing and returns the existing task (`created: false`).
    async fn create(&self, task: NewTask) -> Result<Created>;

    /// Pending → running, writing `task_started` as seq 1, owned under `lease`.
    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome>;

    /// Appends a `progress`, `log` or `partial` event to a running task and
    /// answers after the commit. Other types: [`StoreError::NotAppendable`].
    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome>;

    /// Queues an append of `body` (borrowed: a caller that retries keeps it)
    /// and returns before it commits; the outcome goes to
    /// `ack`. The event's `ts` is `at` (when the op reported it; the caller
    /// never passes a time earlier than the last it passed for the task).
    /// Queued appends and later calls from the same caller commit in call
    /// order, so a `finish` issued after them lands after them. A write that
    /// fails transiently ([`StoreError::is_transient`]) is retried in order
    /// for [`TRANSIENT_RETRY`] before its error goes to `ack`. The default
    /// awaits [`Store::append`] (stamped when it commits, moments after
    /// `at`); stores with a writer queue override it.
    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        let _ = at;
        let outcome = self.append(task_id, body.clone()).await;
        ack.record(&outcome);
        outcome.map(|_| ())
    }

    /// Makes the task terminal and writes `final`, in one transaction. From
    /// pending the tape is just `final` (or, between attempts of a retried
    /// task, gets its `final`). A task with a cancel request ends
    /// `cancelled` whatever `outcome` says.
    ///
    /// [`Outcome::Retry`] instead makes a running task `pending` again: it
    /// appends the `tasktape.attempt_failed` partial (payload: the row's
    /// `attempt`, the error, `retry_at`), adds the attempt to the row's
    /// history, sets `run_at`, and drops owner and lease
    /// ([`FinishOutcome::Requeued`]). A task that is not running answers
    /// [`FinishOutcome::NotStarted`] (pending) or as for any finish.
    async fn finish(&self, task_id: TaskId, outcome: Outcome) -> Result<FinishOutcome>;

    /// Like [`Store::finish`] for a task whose events were queued through
    /// `ack`: checked after every one of them was processed, a `Succeeded`
    /// outcome becomes `Failed` with `store_error` when one failed to store,
    /// so a task with a hole in its tape never ends `succeeded`. The default
    /// suits stores whose queued appends are awaited.
    async fn finish_reported(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Result<FinishOutcome> {
        self.finish(task_id, outcome_after_events(outcome, &ack))
            .await
    }

    /// Ends a run its owner lost, deciding inside the transition, from the
    /// row it locks, what it becomes: `failed` with `lost.error`, or
    /// another attempt ([`Outcome::Retry`], as [`crate::retry::attempt_outcome`]
    /// says) when the task's retry plan retries it (an idempotent op).
    /// A reap of a peer's run ([`LostRun::expired`]) checks the lease
    /// again inside the transaction. `None` when the task is not running
    /// (or its owner renewed the lease meanwhile).
    async fn reap(&self, task_id: TaskId, lost: LostRun) -> Result<Option<FinishOutcome>>;

    /// Records a cancel request; a pending task is finished `cancelled` at once.
    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome>;

    /// One row.
    async fn get(&self, task_id: TaskId) -> Result<Option<Task>>;

    /// One page of rows in `(created_at DESC, task_id ASC)` order.
    async fn list(&self, query: ListQuery) -> Result<ListPage>;

    /// Tasks per status, from counters the store keeps in the same
    /// transactions as the rows (no scan of the tasks).
    async fn counts(&self) -> Result<StatusCounts>;

    /// Tasks that ended per minute and terminal status, for the minutes
    /// starting at or after `since` (the store keeps the last 24 hours).
    async fn finished_per_minute(&self, since: Timestamp) -> Result<Vec<MinuteCount>>;

    /// Events with seq ≥ `from_seq`, at most `limit`, with the row status and
    /// last seq of the same snapshot; `None` for an unknown task.
    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>>;

    /// The tape's highest seq (0 when empty); `None` for an unknown task.
    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>>;

    /// Starts the due pending tasks of `op` (`run_at` unset or not after
    /// the caller's now), highest `priority` first, FIFO by `created_at`
    /// then id within a priority, as long as fewer than `limit` tasks of
    /// `op` run in the whole store, each like [`Store::start`] with `lease`;
    /// returns the started rows. Concurrent claims never start more than
    /// `limit` in all, and never start one task twice.
    ///
    /// Starting a task whose tape is not empty (a retried task's next
    /// attempt) writes no second `task_started`: it appends a `log` line
    /// `attempt N of M started`; `attempt` counts up, `run_at` is cleared.
    ///
    /// `now` is the caller's clock: what is due is judged by it.
    async fn claim(
        &self,
        op: &str,
        limit: usize,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>>;

    /// The earliest `run_at` after `after` of a pending task of `op`;
    /// `None` when there is none. The manager sleeps until then (tasks due
    /// already are the claim's).
    async fn next_due(&self, op: &str, after: Timestamp) -> Result<Option<Timestamp>>;

    /// The greatest idempotency key starting with `prefix`, if any (the
    /// schedules' last slot: `schedule:<name>:<slot>`).
    async fn latest_key(&self, prefix: &str) -> Result<Option<String>>;

    /// Whether the store's schema is still one this build knows:
    /// [`StoreError::SchemaTooNew`] once a newer tasktape migrated it
    /// (an instance then stops claiming: the meaning of a claim may have
    /// changed). The default (a store one process owns) is always `Ok`.
    async fn check_schema(&self) -> Result<()> {
        Ok(())
    }

    /// Whether other processes may share this store (then pending tasks can
    /// run on any of them and [`Store::signals`] tells what they did).
    fn shared(&self) -> bool {
        false
    }

    /// A stream of what other processes did; `None` for a store no one
    /// else writes.
    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<StoreSignal>> {
        None
    }

    /// Extends the lease of every running task `owner` holds; returns how many.
    ///
    /// Lease times: a store that several machines share judges leases by
    /// one clock of its own (PostgreSQL: the database's), reading a lease's
    /// `until` as "`until` minus the caller's now, from the store's now" and
    /// ignoring the `now` given to [`Store::expired`] and [`Store::reap`];
    /// so an instance whose clock is off neither loses its tasks nor reaps
    /// its peers'. A store one process owns (SQLite) uses the times given.
    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64>;

    /// Running tasks whose lease ended before `now`, except `exclude_owner`'s.
    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>>;

    /// Running tasks held by `owner` (an instance's leftovers at start-up).
    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>>;

    /// The ops that have pending tasks, with how many (from indexes: no
    /// row is read, so a start-up with many pending tasks stays cheap).
    async fn pending_ops(&self) -> Result<Vec<(String, u64)>>;

    /// Deletes a terminal task: its row at once (it is gone from every
    /// read), its tape by [`Store::sweep`] later, so that deleting a tape of
    /// millions of events never holds other writes up.
    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome>;

    /// Deletes up to `limit` terminal tasks that finished before
    /// `finished_before` (oldest first) like [`Store::delete`]; returns how
    /// many. Retention calls it in small batches.
    async fn purge(&self, finished_before: Timestamp, limit: usize) -> Result<u64>;

    /// Deletes up to `limit` events of deleted tasks' tapes, in one short
    /// transaction; returns how many (0: nothing is left to sweep).
    async fn sweep(&self, limit: usize) -> Result<u64>;
}
