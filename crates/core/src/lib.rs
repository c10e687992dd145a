//! tasktape's core: the task model, the event tape and its grammar, the
//! store contract, and the manager that runs ops. No web framework and no SQL
//! driver live here; stores and the server depend on this crate, never the
//! other way round.
//!
//! # Layout
//!
//! - [`time`]: millisecond UTC timestamps in the wire format.
//! - [`model`]: task ids, statuses, outcomes, rows, `params_digest`.
//! - [`event`]: event bodies, their stored JSON form, the tape grammar.
//! - [`store`]: the [`Store`] trait, its typed answers, list cursors.
//! - [`wake`]: the hub stores announce commits on and followers wait on.
//! - [`follow`]: WIRE.md's events page with long-poll waits.
//! - [`op`], [`echo`]: the op trait, the registry, the built-in `echo`.
//! - [`clock`]: where the engine's time comes from (a manual clock for tests).
//! - [`cron`]: five-field cron expressions and schedules.
//! - [`reporter`]: what a running op writes its tape through.
//! - [`retry`]: retry plans, which failures retry, backoff.
//! - [`manager`]: the public face: submit, cancel, read, wait, shut down;
//!   it composes the engine's components (`engine/`: runs, runner,
//!   claimer, leases, peers, submitter, schedules, retention).
//! - [`metrics`], [`metered`]: counters and histograms, a timing store wrapper.
//! - [`observe`]: how task runs' spans are made (and linked).
//! - `testkit` (feature `testkit`): the store contract suite.

pub mod clock;
pub mod cron;
pub mod echo;
mod engine;
pub mod event;
pub mod flow;
pub mod follow;
pub mod manager;
pub mod metered;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod op;
pub mod reporter;
pub mod retry;
pub mod store;
pub mod wake;

/// Millisecond UTC timestamps in the wire format (from `tasktape-wire`).
pub use tasktape_wire::time;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use engine::submitter::{
    MAX_DELAY_MS, MAX_KEY_LEN, PRIORITY_RANGE, SCHEDULE_KEY_PREFIX, SQL_SUBMIT_DIGEST,
};
pub use event::{BodyExt, Event, EventBody, EventKind, StoredEvent, validate_tape};
pub use manager::{
    FollowError, Manager, ManagerConfig, SubmitError, Submitted, TaskEvents, WorkerCallError,
};
pub use model::{ErrorInfo, NewTask, Outcome, Status, Task, TaskId};
pub use op::{FnOp, Op, OpError, OpRegistry, OpResult, ParamsError};
pub use reporter::{EventSink, ReportError, Reporter};
pub use store::{Store, StoreError};
pub use tasktape_wire;
pub use time::Timestamp;
pub use tokio_util::sync::CancellationToken;
pub use wake::WakeHub;
