//! The manager's background life: lease renewal, reaping peers' expired
//! leases, polling for cancels recorded elsewhere, a periodic claim, and
//! graceful shutdown.

use std::time::Duration;

use tracing::{info, warn};

use super::{CancelCause, Manager, ShutdownReport};
use crate::model::{ErrorInfo, Outcome, TaskId};
use crate::store::CancelOutcome;
use crate::time::Timestamp;

impl Manager {
    pub(super) fn lease_until(&self) -> Timestamp {
        let ttl = i64::try_from(self.inner.config.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        Timestamp::now().add_millis(ttl)
    }

    /// Every `lease_interval`: renew our leases, reap peers' expired ones,
    /// and fire the token of any task here whose cancel was recorded
    /// elsewhere (another instance, or a caller that went away).
    pub(super) async fn lease_loop(&self) {
        let interval = self
            .inner
            .config
            .lease_interval
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.inner.background.cancelled() => return,
            }
            let store = &self.inner.store;
            let owner = &self.inner.config.instance_id;
            if let Err(error) = store.renew_lease(owner, self.lease_until()).await {
                warn!(%error, "lease renewal failed");
                continue;
            }
            match store.expired(Timestamp::now(), owner).await {
                Ok(expired) => {
                    for task_id in expired {
                        let error = ErrorInfo::new(
                            "owner_lost",
                            "the instance running this task stopped renewing its lease",
                        );
                        match store.finish(task_id, Outcome::Failed(error)).await {
                            Ok(outcome) => {
                                warn!(%task_id, ?outcome, "reaped task whose owner's lease expired");
                                if let crate::store::FinishOutcome::Finished { status, .. } =
                                    outcome
                                {
                                    self.count_finished(task_id, status).await;
                                }
                            }
                            Err(error) => warn!(%task_id, %error, "could not reap task"),
                        }
                    }
                }
                Err(error) => warn!(%error, "could not list expired leases"),
            }
            self.poll_cancels().await;
            // A fallback for missed signals: claim whatever waits.
            self.kick_all();
        }
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

    /// Graceful shutdown: take no new work, fire every running task's cancel
    /// token, give the ops up to `deadline` to return (then abort them), and
    /// finish them `failed` with `server_shutdown` (an op that returns a
    /// result in time keeps it). Tasks still pending stay pending in the
    /// store and run after the next start.
    #[tracing::instrument(name = "manager.shutdown", skip(self))]
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
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
        self.inner.stopping.cancel();
        self.inner.tracker.close();
        let in_time = tokio::time::timeout(deadline, self.inner.tracker.wait())
            .await
            .is_ok();
        let mut unfinished = 0;
        if !in_time {
            // Abort what is left and give the runs a moment to write their finals.
            self.inner.hard_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(2), self.inner.tracker.wait())
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
        if let Some(handle) = lease_task {
            let _ = handle.await;
        }
        let signal_task = self
            .inner
            .signal_task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(handle) = signal_task {
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
