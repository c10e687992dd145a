//! The store contract: the operations every backend offers and the typed
//! answers they give. Only a store decides a transition; callers never read a
//! row and then write on the strength of what they read.
//!
//! Every operation here is atomic. A store enforces DESIGN.md's invariants 1
//! (row and tape agree at every commit), 2 (start and finish are single
//! transactions), 3 (terminal is immutable; the first finish wins) and 6
//! (answers come after the commit). The contract test kit
//! (`tasktape_core::testkit`, feature `testkit`) checks all of it.

use crate::event::{EventBody, StoredEvent};
use crate::model::{ErrorInfo, Outcome, Status, Task, TaskId};
use crate::time::Timestamp;
use std::collections::HashMap;

mod ack;
mod error;
pub mod layer;
mod list;
mod traits;

pub use ack::{AppendAck, outcome_after_events};
pub use error::{StoreError, TRANSIENT_RETRY};
pub use list::{Cursor, InvalidCursor, ListPage, ListQuery};
pub use traits::{Coordination, Maintenance, Reads, Store, Transitions};

/// The store's traits, for calling a store's operations:
/// `use tasktape_core::store::prelude::*`.
pub mod prelude {
    pub use super::{Coordination as _, Maintenance as _, Reads as _, Store, Transitions as _};
}

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
    /// A record (`Coordination::swap_record`) was written by instance
    /// `by`: a worker's session taken over or drained elsewhere.
    RecordChanged {
        /// The record's kind.
        kind: String,
        /// Its key.
        key: String,
        /// The instance that wrote it (empty when unknown).
        by: String,
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
