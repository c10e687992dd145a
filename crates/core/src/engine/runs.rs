//! The runs on this instance: each run's [`RunControl`] (its cancel token
//! and why it fired), registered while the run lives, and cancels that
//! arrive before their run is registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::model::TaskId;

/// Why a run was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CancelCause {
    /// Someone cancelled the task.
    User,
    /// The instance shuts down.
    Shutdown,
    /// The op ran past its [`crate::Op::timeout`] (this one).
    Timeout(Duration),
    /// The op reported past one of its tape's caps.
    TapeFull(TapeCap),
}

/// A tape's cap that a run reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TapeCap {
    /// `max_events_per_task`: this many events.
    Events(u64),
    /// `max_tape_bytes`: this many bytes of event JSON.
    Bytes(u64),
}

/// One run's stop: the token its op watches and the cause, set once by
/// whoever stops it first (a cancel, a timeout, a full tape, a shutdown).
#[derive(Debug, Default)]
pub(crate) struct RunControl {
    token: CancellationToken,
    cause: Mutex<Option<CancelCause>>,
}

impl RunControl {
    /// Records `cause` (unless one is set already) and fires the token.
    pub(crate) fn stop(&self, cause: CancelCause) {
        lock(&self.cause).get_or_insert(cause);
        self.token.cancel();
    }

    /// Why the run was stopped, if it was.
    pub(crate) fn cause(&self) -> Option<CancelCause> {
        *lock(&self.cause)
    }

    /// The token the op watches.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[derive(Default)]
struct State {
    /// False once shutdown began: runs registered later start stopped.
    stopping: bool,
    running: HashMap<TaskId, Arc<RunControl>>,
    /// Cancels for tasks this instance claimed whose run is not registered
    /// yet (the claim's answer was on its way), with when they came.
    early_cancels: HashMap<TaskId, Instant>,
}

/// The runs registered here.
#[derive(Default)]
pub(crate) struct Runs {
    state: Mutex<State>,
    /// Woken whenever a run ends.
    idle: tokio::sync::Notify,
}

impl Runs {
    /// Registers the run of `task_id`: stopped from the start when a cancel
    /// came first (`cancel_requested`, or an early cancel) or shutdown began.
    pub(crate) fn register(&self, task_id: TaskId, cancel_requested: bool) -> Arc<RunControl> {
        let control = Arc::new(RunControl::default());
        let mut state = lock(&self.state);
        if state.early_cancels.remove(&task_id).is_some() || cancel_requested {
            control.stop(CancelCause::User);
        } else if state.stopping {
            // Claimed as shutdown began: it started, so it ends like the
            // other runs shutdown stops.
            control.stop(CancelCause::Shutdown);
        }
        state.running.insert(task_id, Arc::clone(&control));
        control
    }

    /// Forgets an ended run.
    pub(crate) fn forget(&self, task_id: TaskId) {
        lock(&self.state).running.remove(&task_id);
        self.idle.notify_waiters();
    }

    /// A cancel recorded for `task_id`: its run here stops; a task this
    /// instance owns (`ours`) whose run is not registered yet is stopped
    /// when it is.
    pub(crate) fn cancel(&self, task_id: TaskId, ours: bool) {
        let mut state = lock(&self.state);
        if let Some(control) = state.running.get(&task_id) {
            control.stop(CancelCause::User);
        } else if ours {
            state.early_cancels.insert(task_id, Instant::now());
        }
    }

    /// Shutdown: every run stops (and every run registered later);
    /// returns how many run.
    pub(crate) fn stop_all(&self) -> usize {
        let mut state = lock(&self.state);
        state.stopping = true;
        for control in state.running.values() {
            control.stop(CancelCause::Shutdown);
        }
        state.running.len()
    }

    /// The tasks whose runs have not been stopped.
    pub(crate) fn live(&self) -> Vec<TaskId> {
        lock(&self.state)
            .running
            .iter()
            .filter(|(_, control)| !control.token().is_cancelled())
            .map(|(task_id, _)| *task_id)
            .collect()
    }

    /// Whether a run of `task_id` is registered.
    pub(crate) fn holds(&self, task_id: TaskId) -> bool {
        lock(&self.state).running.contains_key(&task_id)
    }

    /// How many runs are registered.
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).running.len()
    }

    /// Drops early cancels older than `keep` (their claim never came: the
    /// task ended elsewhere).
    pub(crate) fn prune_early_cancels(&self, keep: Duration) {
        lock(&self.state)
            .early_cancels
            .retain(|_, since| since.elapsed() < keep);
    }

    /// Waits until no run is registered.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }
}
