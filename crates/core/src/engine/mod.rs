//! The engine's components, each with one job, each owning what it uses
//! (the store, its part of the config, its handles); [`crate::Manager`]
//! composes them and is their public face.
//!
//! - [`runs`]: the runs registered on this instance and their
//!   [`runs::RunControl`]s (cancel token and cause).
//! - [`runner`]: one run: the op with its Reporter, grace-then-abort on a
//!   stop, the finish written until it lands.
//! - [`claimer`]: claim passes per op (per-op limits), the spawning of each
//!   claimed run, and the due timers of delayed tasks.
//! - [`leases`]: recovery at start, lease renewal, reaping peers, orphans,
//!   cancel polls, the schema check.
//! - [`peers`]: what other instances sharing the store did (signals).
//! - [`submitter`]: the submit rules, the retry plan, creating the row.
//! - [`schedules`]: cron schedules, one loop each.
//! - [`retention`]: deleting old finished tasks and sweeping tapes.
//!
//! A new kind of owner (a remote worker) is a new component beside the
//! claimer and the runner: it claims through the store with its own lease
//! and finishes through the store's fenced transitions.

pub(crate) mod claimer;
pub(crate) mod leases;
pub(crate) mod peers;
pub(crate) mod remote;
pub(crate) mod retention;
pub(crate) mod runner;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod submitter;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The manager's life, shared by its components: when shutdown begins,
/// when its deadline passes, when it ends, and the tasks it waits for.
#[derive(Clone, Default)]
pub(crate) struct Life {
    /// Fired when shutdown begins: no new starts, runs wind down.
    pub(crate) stopping: CancellationToken,
    /// Fired at shutdown's deadline: ops still running are aborted.
    pub(crate) hard_stop: CancellationToken,
    /// Fired when shutdown ends: background loops and retries stop.
    pub(crate) background: CancellationToken,
    /// Runs and claim passes (shutdown waits for them).
    pub(crate) tracker: TaskTracker,
}

impl Life {
    /// Whether shutdown began.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Runs `wait` unless `token` fires first; true when `wait` ran out.
    pub(crate) async fn unless(token: &CancellationToken, wait: impl Future<Output = ()>) -> bool {
        tokio::select! {
            () = wait => true,
            () = token.cancelled() => false,
        }
    }
}

/// Doubles a retry pause up to `max`.
pub(crate) fn back_off(pause: &mut Duration, max: Duration) {
    *pause = (*pause * 2).min(max);
}
