//! Leases: recovery at start (this instance's leftovers; on a store no one
//! else runs, pending tasks of ops it lacks), and every `lease_interval`
//! renewal, reaping peers' expired leases, polling cancels recorded
//! elsewhere, finishing orphans, the schema check and a fallback claim.
//! The store decides what a lost run becomes (`Store::reap`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::Life;
use super::claimer::Claimer;
use super::runs::Runs;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::{ErrorInfo, Outcome, Status, TaskId};
use crate::op::OpRegistry;
use crate::store::{FinishOutcome, ListQuery, LostRun, Store, StoreError};

/// What the leases need to know of the config.
#[derive(Clone, Debug)]
pub(crate) struct LeaseSettings {
    pub(crate) instance_id: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) lease_interval: Duration,
}

/// Keeps this instance's leases and ends runs no one holds any more.
pub(crate) struct Leases {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ops: OpRegistry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) life: Life,
    pub(crate) runs: Arc<Runs>,
    pub(crate) claimer: Arc<Claimer>,
    pub(crate) settings: LeaseSettings,
    pub(crate) state: LeaseState,
}

/// What the leases keep between ticks.
#[derive(Default)]
pub(crate) struct LeaseState {
    /// Whether a cancel poll is running.
    polling_cancels: AtomicBool,
    /// Set once a newer tasktape migrated the store.
    outdated: std::sync::Mutex<Option<StoreError>>,
}

impl Leases {
    /// The error that made this instance stop claiming, if a newer
    /// tasktape migrated the store.
    pub(crate) fn outdated(&self) -> Option<StoreError> {
        self.state
            .outdated
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Ends own leftovers (`server_restart`, or another attempt where the
    /// task's plan retries it) and, on a store no one else runs, pending
    /// tasks of ops not registered here (no one could ever run them).
    pub(crate) async fn recover(&self) -> Result<(), StoreError> {
        let store = &self.store;
        let leftovers = store.leftovers(&self.settings.instance_id).await?;
        for task_id in &leftovers {
            let lost = LostRun::leftover(ErrorInfo::server_restart(), self.clock.now());
            let outcome = store.reap(*task_id, lost).await?;
            debug!(%task_id, ?outcome, "finished leftover");
            match outcome {
                Some(FinishOutcome::Finished { status, .. }) => {
                    count_finished(&*self.store, &self.metrics, *task_id, status).await;
                }
                Some(FinishOutcome::Requeued { .. }) => {
                    info!(%task_id, "a task left running by a previous run will be tried again");
                }
                _ => {}
            }
        }
        if !leftovers.is_empty() {
            warn!(
                count = leftovers.len(),
                "ended the attempts left running by a previous run as server_restart"
            );
        }
        if store.shared() {
            // A peer may run ops this instance does not have.
            return Ok(());
        }
        let mut runnable = 0;
        for (op, count) in store.pending_ops().await? {
            if self.ops.get(&op).is_some() {
                runnable += count;
                continue;
            }
            let error = ErrorInfo::new(
                "op_not_found",
                format!("op {op:?} is not registered on this server"),
            );
            // A page at a time; finished ones drop out of the next page.
            loop {
                let page = store
                    .list(ListQuery {
                        status: Some(Status::Pending),
                        op: Some(op.clone()),
                        limit: 500,
                        ..ListQuery::default()
                    })
                    .await?;
                if page.tasks.is_empty() {
                    break;
                }
                for task in page.tasks {
                    store
                        .finish(task.task_id, Outcome::Failed(error.clone()))
                        .await?;
                }
            }
        }
        if runnable > 0 {
            info!(
                pending = runnable,
                "pending tasks in the store will be claimed"
            );
        }
        Ok(())
    }

    /// Every `lease_interval`: renew our leases, reap peers' expired ones,
    /// fire the token of any task here whose cancel was recorded elsewhere
    /// (another instance, or a caller that went away), finish tasks this
    /// instance holds but no longer runs, and claim whatever waits.
    pub(crate) async fn run(self: Arc<Self>) {
        let interval = self.settings.lease_interval.max(Duration::from_millis(10));
        // After our renewals failed (the store was out), peers' probably did
        // too: reap nobody until they have had a full lease to renew.
        let mut reap_from = self.clock.now();
        let mut renewal_failed = false;
        // Tasks held here but not running here at the last tick.
        let mut orphans = HashSet::new();
        // The first tick comes at once, each next one an interval after the
        // one before began (a late tick delays the ones after it).
        let mut next_tick = self.clock.now();
        loop {
            if !Life::unless(&self.life.background, self.clock.sleep_until(next_tick)).await {
                return;
            }
            next_tick = self.clock.now().add_millis(crate::clock::millis(interval));
            let owner = &self.settings.instance_id;
            if let Err(error) = self
                .store
                .renew_lease(owner, self.claimer.lease_until())
                .await
            {
                warn!(%error, "lease renewal failed");
                renewal_failed = true;
                continue;
            }
            if std::mem::take(&mut renewal_failed) {
                reap_from = self.claimer.lease_until();
            }
            if self.clock.now() >= reap_from {
                self.reap_expired().await;
            }
            self.check_schema().await;
            Arc::clone(&self).spawn_cancel_poll();
            orphans = self.finish_orphans(orphans).await;
            self.runs.prune_early_cancels(self.settings.lease_ttl);
            // A fallback for missed signals: claim whatever waits.
            self.claimer.kick_all();
        }
    }

    /// Ends peers' runs whose lease is over (`owner_lost`, or another
    /// attempt: the store decides from the row it locks, and checks the
    /// lease again, so an owner that just renewed keeps its task).
    async fn reap_expired(&self) {
        let store = &self.store;
        let now = self.clock.now();
        let expired = match store.expired(now, &self.settings.instance_id).await {
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
            match store.reap(task_id, LostRun::expired(error, now)).await {
                Ok(Some(FinishOutcome::Finished { status, .. })) => {
                    warn!(%task_id, "reaped a task whose owner's lease expired");
                    count_finished(&*self.store, &self.metrics, task_id, status).await;
                }
                Ok(Some(FinishOutcome::Requeued { .. })) => {
                    warn!(%task_id, "a task whose owner's lease expired will be tried again");
                    if let Err(error) = self.claimer.arm_requeued(task_id).await {
                        warn!(%task_id, %error, "could not read when the reaped task is due");
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
        let store = &self.store;
        let held = match store.leftovers(&self.settings.instance_id).await {
            Ok(held) => held,
            Err(_) => return previous,
        };
        // A claim not answered yet (a slow store) may hold tasks it
        // started in the store before the read that are not running here
        // yet: they are not orphans. Look again at the next tick.
        if self.claimer.claims_in_flight() {
            return previous;
        }
        let orphans: Vec<TaskId> = held
            .into_iter()
            .filter(|task_id| !self.runs.holds(*task_id))
            .collect();
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
                    count_finished(&*self.store, &self.metrics, task_id, status).await;
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
        let Err(error @ StoreError::SchemaTooNew { .. }) = self.store.check_schema().await else {
            return;
        };
        let mut outdated = self
            .state
            .outdated
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if outdated.is_none() {
            tracing::error!(%error, "a newer tasktape migrated the store: this instance stops claiming tasks (running ones go on); upgrade it");
            self.claimer.stop_claiming();
            *outdated = Some(error);
        }
    }

    /// Polls cancels aside (at most one poll at a time), so slow reads do
    /// not hold up lease renewal.
    pub(crate) fn spawn_cancel_poll(self: Arc<Self>) {
        if self.state.polling_cancels.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            for task_id in self.runs.live() {
                if let Ok(Some(task)) = self.store.get(task_id).await
                    && task.cancel_requested
                {
                    let ours = task.owner.as_deref() == Some(&*self.settings.instance_id);
                    self.runs.cancel(task_id, ours);
                }
            }
            self.state.polling_cancels.store(false, Ordering::Release);
        });
    }
}

/// Counts a task this instance finished outside a run (a cancelled
/// pending task, a reaped or leftover one); its op comes from the row.
pub(crate) async fn count_finished(
    store: &dyn Store,
    metrics: &Metrics,
    task_id: TaskId,
    status: Status,
) {
    if let Ok(Some(task)) = store.get(task_id).await {
        metrics.finished.with(&[&task.op, status.as_str()]).inc();
    }
}
