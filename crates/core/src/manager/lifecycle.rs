//! The manager's background life: lease renewal, reaping peers' expired
//! leases, polling for cancels recorded elsewhere, a periodic claim, and
//! graceful shutdown.

use std::time::Duration;

use std::collections::HashSet;

use tracing::{debug, info, warn};

use super::{CancelCause, Manager, ShutdownReport};
use crate::model::{ErrorInfo, Outcome, TaskId};
use crate::store::{CancelOutcome, FinishOutcome};
use crate::time::Timestamp;

impl Manager {
    pub(super) fn lease_until(&self) -> Timestamp {
        let ttl = i64::try_from(self.inner.config.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        Timestamp::now().add_millis(ttl)
    }

    /// Every `lease_interval`: renew our leases, reap peers' expired ones,
    /// fire the token of any task here whose cancel was recorded elsewhere
    /// (another instance, or a caller that went away), finish tasks this
    /// instance holds but no longer runs, and claim whatever waits.
    pub(super) async fn lease_loop(&self) {
        let interval = self
            .inner
            .config
            .lease_interval
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After our renewals failed (the store was out), peers' probably did
        // too: reap nobody until they have had a full lease to renew.
        let mut reap_from = std::time::Instant::now();
        let mut renewal_failed = false;
        // Tasks held here but not running here at the last tick.
        let mut orphans = HashSet::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.inner.background.cancelled() => return,
            }
            let store = &self.inner.store;
            let owner = &self.inner.config.instance_id;
            if let Err(error) = store.renew_lease(owner, self.lease_until()).await {
                warn!(%error, "lease renewal failed");
                renewal_failed = true;
                continue;
            }
            if std::mem::take(&mut renewal_failed) {
                reap_from = std::time::Instant::now() + self.inner.config.lease_ttl;
            }
            if std::time::Instant::now() >= reap_from {
                self.reap_expired().await;
            }
            self.check_schema().await;
            self.spawn_cancel_poll();
            orphans = self.finish_orphans(orphans).await;
            self.prune_early_cancels();
            // A fallback for missed signals: claim whatever waits.
            self.kick_all();
        }
    }

    /// Finishes peers' tasks whose lease is over (`owner_lost`); the store
    /// checks the lease again, so an owner that just renewed keeps its task.
    async fn reap_expired(&self) {
        let store = &self.inner.store;
        let now = Timestamp::now();
        let expired = match store.expired(now, &self.inner.config.instance_id).await {
            Ok(expired) => expired,
            Err(error) => {
                warn!(%error, "could not list expired leases");
                return;
            }
        };
        for task_id in expired {
            let error = ErrorInfo::new(
                "owner_lost",
                "the instance running this task stopped renewing its lease",
            );
            let outcome = self.lost_run_outcome(task_id, error).await;
            let retry_at = match &outcome {
                Outcome::Retry(retry) => Some(retry.retry_at),
                _ => None,
            };
            match store.reap(task_id, now, outcome).await {
                Ok(Some(FinishOutcome::Finished { status, .. })) => {
                    warn!(%task_id, "reaped a task whose owner's lease expired");
                    self.count_finished(task_id, status).await;
                }
                Ok(Some(FinishOutcome::Requeued { .. })) => {
                    warn!(%task_id, "a task whose owner's lease expired will be tried again");
                    if let (Some(at), Ok(Some(task))) = (retry_at, store.get(task_id).await) {
                        self.arm_due(&task.op, at);
                    }
                }
                Ok(other) => debug!(%task_id, ?other, "not reaped"),
                Err(error) => warn!(%task_id, %error, "could not reap task"),
            }
        }
    }

    /// Tasks the store says run here but no run holds (a claim that
    /// committed while its answer was lost): finished `failed` once they
    /// were orphans at two ticks in a row, since their leases would
    /// otherwise be renewed for ever. Returns this tick's orphans. A tick
    /// while a claim call is unanswered judges nothing (that claim's tasks
    /// may be started in the store but not running here yet); an orphan
    /// then waits for a tick without one.
    async fn finish_orphans(&self, previous: HashSet<TaskId>) -> HashSet<TaskId> {
        let store = &self.inner.store;
        let held = match store.leftovers(&self.inner.config.instance_id).await {
            Ok(held) => held,
            Err(_) => return previous,
        };
        let orphans: HashSet<TaskId> = {
            let state = self.state();
            // A claim not answered yet (a slow store) may hold tasks it
            // started in the store before the read that are not running
            // here yet: they are not orphans. Look again at the next tick.
            if state.claims_in_flight > 0 {
                return previous;
            }
            held.into_iter()
                .filter(|task_id| !state.running.contains_key(task_id))
                .collect()
        };
        let mut still = HashSet::new();
        for task_id in orphans {
            if !previous.contains(&task_id) {
                still.insert(task_id);
                continue;
            }
            let error = ErrorInfo::new(
                "orphaned",
                "this instance started the task but lost track of its run",
            );
            match store.finish(task_id, Outcome::Failed(error)).await {
                Ok(FinishOutcome::Finished { status, .. }) => {
                    warn!(%task_id, "finished a task this instance held but did not run");
                    self.count_finished(task_id, status).await;
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%task_id, %error, "could not finish an orphaned task");
                    still.insert(task_id);
                }
            }
        }
        still
    }

    /// Stops claiming once a newer tasktape migrated the store: what a
    /// claim means may have changed (delays, priorities, retries), so an
    /// older instance must not go on starting tasks by its own rules.
    /// Running tasks go on; `readyz` reports it.
    async fn check_schema(&self) {
        let Err(error @ crate::store::StoreError::SchemaTooNew { .. }) =
            self.inner.store.check_schema().await
        else {
            return;
        };
        let mut state = self.state();
        if state.outdated.is_none() {
            tracing::error!(%error, "a newer tasktape migrated the store: this instance stops claiming tasks (running ones go on); upgrade it");
            state.claiming = false;
            state.outdated = Some(error);
        }
    }

    /// Early cancels whose claim never arrived (the task ended elsewhere).
    fn prune_early_cancels(&self) {
        let keep = self.inner.config.lease_ttl;
        self.state()
            .early_cancels
            .retain(|_, since| since.elapsed() < keep);
    }

    /// Polls cancels aside (at most one poll at a time), so slow reads do
    /// not hold up lease renewal.
    pub(super) fn spawn_cancel_poll(&self) {
        if self
            .inner
            .polling_cancels
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move {
            manager.poll_cancels().await;
            manager
                .inner
                .polling_cancels
                .store(false, std::sync::atomic::Ordering::Release);
        });
    }

    pub(super) async fn poll_cancels(&self) {
        let running: Vec<TaskId> = {
            let state = self.state();
            state
                .running
                .iter()
                .filter(|(_, run)| !run.token.is_cancelled())
                .map(|(id, _)| *id)
                .collect()
        };
        for task_id in running {
            if let Ok(Some(task)) = self.inner.store.get(task_id).await
                && task.cancel_requested
            {
                self.apply_cancel(task_id, &CancelOutcome::Requested { owner: task.owner });
            }
        }
    }

    /// Begins a drain: this instance starts no more tasks (submits are still
    /// taken: the tasks wait, pending, for a peer or the next start) while
    /// the running ones go on. [`Manager::idle`] tells when they are done;
    /// [`Manager::shutdown`] then ends the rest.
    pub fn drain(&self) {
        let running = {
            let mut state = self.state();
            if !std::mem::replace(&mut state.claiming, false) {
                return;
            }
            state.running.len()
        };
        info!(
            running,
            "draining: no new tasks start here; running ones finish"
        );
    }

    /// Whether a drain (or a shutdown) began.
    pub fn is_draining(&self) -> bool {
        let state = self.state();
        // An outdated instance also stops claiming; it is not draining.
        (!state.claiming && state.outdated.is_none()) || !state.accepting
    }

    /// Waits until no task runs here (use after [`Manager::drain`]).
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state().running.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Graceful shutdown: take no new work, fire every running task's cancel
    /// token, give the ops up to `deadline` to return (then abort them), and
    /// finish them `failed` with `server_shutdown` (an op that returns a
    /// result in time keeps it). Tasks still pending stay pending in the
    /// store and run after the next start.
    #[tracing::instrument(name = "manager.shutdown", skip(self))]
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        // Before any token fires: an op woken by its token must already see
        // that this is a shutdown (exec ops then wait for the deadline).
        self.inner.stopping.cancel();
        let running = {
            let mut state = self.state();
            state.accepting = false;
            for running in state.running.values_mut() {
                running.cause.get_or_insert(CancelCause::Shutdown);
                running.token.cancel();
            }
            state.running.len()
        };
        info!(running, ?deadline, "shutting down");
        self.inner.tracker.close();
        let in_time = tokio::time::timeout(deadline, self.inner.tracker.wait())
            .await
            .is_ok();
        let mut unfinished = 0;
        if !in_time {
            // Abort what is left and give the runs a moment to write their finals.
            self.inner.hard_stop.cancel();
            if tokio::time::timeout(Duration::from_millis(300), self.inner.tracker.wait())
                .await
                .is_err()
            {
                unfinished = self.state().running.len();
            }
        }
        // Lease renewal ran until now, so no peer reaped our tasks meanwhile.
        self.inner.background.cancel();
        let lease_task = self
            .inner
            .lease_task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        // Aborted, not awaited: a call hung on a dead database must not
        // hold the shutdown up.
        if let Some(handle) = lease_task {
            handle.abort();
            let _ = handle.await;
        }
        let signal_task = self
            .inner
            .signal_task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(handle) = signal_task {
            handle.abort();
            let _ = handle.await;
        }
        if unfinished > 0 {
            warn!(
                unfinished,
                "tasks still running after the shutdown deadline; the next start finishes them"
            );
        }
        ShutdownReport { unfinished }
    }
}
