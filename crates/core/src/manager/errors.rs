//! What the manager answers besides rows: refused submits, submitted
//! tasks, and what shutdown left behind.

use crate::model::{Task, TaskId};
use crate::op::ParamsError;
use crate::store::StoreError;

/// Why a submit was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// No op of that name; `known` lists the registered ones.
    #[error("unknown op {name:?} (known: {})", known.join(", "))]
    UnknownOp {
        /// The asked name.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },
    /// A submit option broke a rule every submit obeys (see
    /// [`crate::manager::SubmitOptions::check`]).
    #[error("{field}: {message}")]
    InvalidOption {
        /// The option (`idempotency_key`, `priority`, `run_at`,
        /// `retry.max_attempts`, …).
        field: String,
        /// Pydantic-style error type (`string_length`, `range`, …).
        kind: String,
        /// What is wrong, in one line.
        message: String,
    },
    /// The op refused the params.
    #[error(transparent)]
    InvalidParams(#[from] ParamsError),
    /// The idempotency key belongs to a task with other params.
    #[error("idempotency key already used by task {task_id} with other params")]
    IdempotencyConflict {
        /// The task that holds the key.
        task_id: TaskId,
    },
    /// The manager is shutting down and takes no new work.
    #[error("shutting down, not accepting tasks")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A submitted task.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// Its row as of the submit.
    pub task: Task,
    /// False when an idempotency key gave back an existing task.
    pub created: bool,
}

/// What [`Manager::shutdown`] left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Runs that had not ended at the deadline (recovered at next start).
    pub unfinished: usize,
}

/// Why a remote worker's call was refused (`docs/WORKERS.md`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerCallError {
    /// The instance does not know the session (it ended, was replaced, or
    /// the server restarted): stop every task and register again.
    #[error("unknown worker session: register again")]
    SessionUnknown,
    /// A live process already holds the worker id.
    #[error("worker id {worker_id:?} is in use by a live worker")]
    IdInUse {
        /// The id.
        worker_id: String,
    },
    /// The worker id was registered with another token; only that token
    /// may register it again (take it over).
    #[error(
        "worker id {worker_id:?} belongs to token {token:?}: register it with that token, or use another id"
    )]
    IdOwned {
        /// The id.
        worker_id: String,
        /// The name of the token that registered it.
        token: String,
    },
    /// A live worker serves the op with another declaration (or the server
    /// runs an op of that name itself).
    #[error("{message}")]
    OpConflict {
        /// The op.
        op: String,
        /// The declaration's fields that differ.
        fields: Vec<String>,
        /// What differs, in one line.
        message: String,
    },
    /// The token may not serve this op.
    #[error("this token may not serve op {op:?}")]
    OpNotAllowed {
        /// The op.
        op: String,
    },
    /// A field the protocol refuses.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The server drains and takes no new workers.
    #[error("the server is draining; register with another instance")]
    Draining,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
