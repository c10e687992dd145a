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
