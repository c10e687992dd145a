//! Scheduling by claims: a claim pass per op whenever work may be waiting
//! (a submit, a run ending, a peer's signal, the lease tick), at most one
//! pass per op in flight, and the spawning of each claimed task's run.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, warn};

use super::{CancelCause, Manager, Running};
use crate::model::{ErrorInfo, Outcome, Task, TaskId};
use crate::store::Lease;

/// Counts a claim call in flight until dropped (after its tasks are in
/// `running`, or on a panic): while any is, the lease tick judges no
/// orphans.
struct ClaimInFlight<'a>(&'a Manager);

impl<'a> ClaimInFlight<'a> {
    fn new(manager: &'a Manager) -> Self {
        manager.state().claims_in_flight += 1;
        ClaimInFlight(manager)
    }
}

impl Drop for ClaimInFlight<'_> {
    fn drop(&mut self) {
        self.0.state().claims_in_flight -= 1;
    }
}

impl Manager {
    /// Starts a claim pass for `op` unless one is in flight (then it looks
    /// again when done).
    pub(super) fn kick(&self, op: &str) {
        if !self.inner.config.worker || self.inner.ops.get(op).is_none() {
            return;
        }
        {
            let mut state = self.state();
            if !state.accepting || !state.claiming {
                return;
            }
            let claim = state.claims.entry(op.to_owned()).or_default();
            if claim.active {
                claim.again = true;
                return;
            }
            claim.active = true;
        }
        let manager = self.clone();
        let op = op.to_owned();
        self.inner
            .tracker
            .spawn(async move { manager.claim_pass(&op).await });
    }

    /// Kicks every registered op.
    pub(super) fn kick_all(&self) {
        for name in self.inner.ops.names() {
            self.kick(name);
        }
    }

    /// Claims pending tasks of `op` and runs them, until a claim finds no
    /// new work; a failing store is retried with backoff.
    async fn claim_pass(&self, op: &str) {
        let limit = self.limit(op);
        let mut backoff = Duration::from_millis(10);
        loop {
            let lease = Lease {
                owner: self.inner.config.instance_id.clone(),
                until: self.lease_until(),
            };
            let in_flight = ClaimInFlight::new(self);
            // Never dropped half-way: a claim the store carried out must reach
            // `spawn_run`, or its tasks would stay running with no one to run them.
            let claimed = self.inner.store.claim(op, limit, lease).await;
            let claimed = claimed.map(|tasks| {
                for task in tasks {
                    self.spawn_run(task);
                }
            });
            // Its tasks are in `running` now (or it started none).
            drop(in_flight);
            match claimed {
                Ok(()) => {
                    backoff = Duration::from_millis(10);
                    let mut state = self.state();
                    let accepting = state.accepting && state.claiming;
                    let claim = state.claims.entry(op.to_owned()).or_default();
                    if claim.again && accepting {
                        claim.again = false;
                        continue;
                    }
                    claim.active = false;
                    claim.again = false;
                    return;
                }
                Err(error) => {
                    warn!(op, %error, "could not claim pending tasks; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.inner.stopping.cancelled() => {
                            self.state().claims.remove(op);
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn limit(&self, op: &str) -> usize {
        let config = &self.inner.config;
        config
            .op_concurrency
            .get(op)
            .copied()
            .unwrap_or(config.default_concurrency)
            .max(1)
    }

    /// Runs a claimed (already started) task.
    fn spawn_run(&self, task: Task) {
        /// Forgets the run and kicks its op however the run ends, a panic
        /// included.
        struct Slot {
            manager: Manager,
            task_id: TaskId,
            op: String,
        }
        impl Drop for Slot {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    // The engine itself failed mid-run: do not leave the task
                    // running (its lease would be renewed forever).
                    let (store, task_id) = (Arc::clone(&self.manager.inner.store), self.task_id);
                    tokio::spawn(async move {
                        let error = ErrorInfo::new(
                            "internal_error",
                            "the engine failed while running this task",
                        );
                        let _ = store.finish(task_id, Outcome::Failed(error)).await;
                    });
                }
                self.manager.state().running.remove(&self.task_id);
                self.manager.inner.idle.notify_waiters();
                self.manager.kick(&self.op);
            }
        }
        let token = CancellationToken::new();
        {
            let mut state = self.state();
            let mut cause = None;
            if state.early_cancels.remove(&task.task_id).is_some() || task.cancel_requested {
                cause = Some(CancelCause::User);
            } else if !state.accepting {
                // Claimed as shutdown began: it started, so it ends like the
                // other runs shutdown stops.
                cause = Some(CancelCause::Shutdown);
            }
            if cause.is_some() {
                token.cancel();
            }
            state.running.insert(
                task.task_id,
                Running {
                    token: token.clone(),
                    cause,
                },
            );
        }
        let slot = Slot {
            manager: self.clone(),
            task_id: task.task_id,
            op: task.op.clone(),
        };
        let span = self.inner.config.task_tracing.run_span(&task);
        self.inner.tracker.spawn(
            async move {
                slot.manager.run(task, token).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}
