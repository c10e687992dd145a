//! The Manager: submits tasks, runs their ops under per-op concurrency
//! limits, cancels them, recovers leftovers, renews leases and shuts down.
//!
//! It holds only what runs here (cancel tokens); the store holds the truth,
//! and every transition goes through it. Scheduling is a claim: when work
//! may be waiting (a submit, a run ending, a peer's signal, the lease tick)
//! the manager asks the store to start the oldest pending tasks of an op
//! while fewer than its limit run (`Store::claim`), so the limit and the
//! FIFO order hold across every instance sharing the store (`schedule.rs`).
//! The run of one task (op, cancel, finish) is in `runner.rs`; the lease
//! loop and shutdown in `lifecycle.rs`; reads in `reads.rs` and `waiting.rs`. Call order for embedders:
//! [`Manager::start`] once, then any number of `submit`/`cancel`/reads from
//! any task, then [`Manager::shutdown`] once.

mod bulk;
mod config;
mod due;
mod errors;
mod lifecycle;
mod reads;
mod retention;
mod runner;
mod schedule;
mod slots;
mod submit;
mod waiting;

pub use config::ManagerConfig;
pub use errors::{ShutdownReport, SubmitError, Submitted};
pub use submit::SubmitOptions;
pub use waiting::{FollowError, TaskEvents};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metered::MeteredStore;
use crate::metrics::Metrics;
use crate::model::{ErrorInfo, Outcome, TaskId};
use crate::op::OpRegistry;
use crate::store::{CancelOutcome, Store, StoreError, StoreSignal};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CancelCause {
    User,
    Shutdown,
    /// The op ran past its [`crate::Op::timeout`] (this one).
    Timeout(Duration),
    /// The op reported past `max_events_per_task` (this many).
    TapeFull(u64),
}

struct Running {
    token: CancellationToken,
    cause: Option<CancelCause>,
}

/// Whether a claim pass for an op is in flight, and whether it must look
/// again when done (work may have arrived meanwhile).
#[derive(Default)]
struct ClaimState {
    active: bool,
    again: bool,
}

struct State {
    accepting: bool,
    /// False once a drain began: running tasks go on, no new ones start here.
    claiming: bool,
    claims: HashMap<String, ClaimState>,
    /// Claim calls whose answer has not been handled yet: a task a claim
    /// started in the store is not running here until its claim's answer
    /// is handled (see `finish_orphans`).
    claims_in_flight: usize,
    running: HashMap<TaskId, Running>,
    /// Cancels recorded for tasks this instance claimed but has not yet
    /// registered in `running` (the claim's answer was still on its way),
    /// with when they came; the lease tick drops old ones.
    early_cancels: HashMap<TaskId, std::time::Instant>,
    /// The earliest `run_at` a timer is armed for, per op.
    due: HashMap<String, crate::time::Timestamp>,
    /// Set once a newer tasktape migrated the store: this instance no
    /// longer claims, and is not ready.
    outdated: Option<StoreError>,
}

struct Inner {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    ops: OpRegistry,
    config: ManagerConfig,
    state: Mutex<State>,
    /// Fired when shutdown begins: no new starts, runs wind down.
    stopping: CancellationToken,
    /// Fired at shutdown's deadline: ops still running are aborted.
    hard_stop: CancellationToken,
    /// Fired when shutdown ends: background loops and retries stop.
    background: CancellationToken,
    tracker: TaskTracker,
    lease_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    signal_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether a cancel poll is running.
    polling_cancels: std::sync::atomic::AtomicBool,
    /// Woken whenever a run ends (see [`Manager::idle`]).
    idle: tokio::sync::Notify,
    /// Woken when a delete left a tape to sweep.
    sweep_wanted: tokio::sync::Notify,
}

/// Runs tasks against a store. Cheap to clone; all clones are one manager.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl Manager {
    /// Starts a manager: finishes this instance's leftovers `failed` with
    /// `server_restart`, claims pending tasks (oldest first), and starts
    /// lease renewal (and, on a shared store, listening to peers' signals).
    /// Must be called inside a Tokio runtime.
    #[tracing::instrument(name = "manager.start", skip_all, fields(instance = %config.instance_id), err)]
    pub async fn start(
        store: Arc<dyn Store>,
        ops: OpRegistry,
        config: ManagerConfig,
    ) -> Result<Manager, StoreError> {
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, Arc::clone(&metrics)));
        let manager = Manager {
            inner: Arc::new(Inner {
                store,
                metrics,
                ops,
                config,
                state: Mutex::new(State {
                    accepting: true,
                    claiming: true,
                    claims: HashMap::new(),
                    claims_in_flight: 0,
                    running: HashMap::new(),
                    early_cancels: HashMap::new(),
                    due: HashMap::new(),
                    outdated: None,
                }),
                stopping: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                background: CancellationToken::new(),
                tracker: TaskTracker::new(),
                lease_task: Mutex::new(None),
                signal_task: Mutex::new(None),
                polling_cancels: std::sync::atomic::AtomicBool::new(false),
                idle: tokio::sync::Notify::new(),
                sweep_wanted: tokio::sync::Notify::new(),
            }),
        };
        manager
            .inner
            .store
            .guard_instance(&manager.inner.config.instance_id)
            .await?;
        manager.recover().await?;
        // Only once recovery has fully succeeded does anything start running.
        manager.kick_all();
        manager.rearm_all();
        manager.start_schedules();
        let lease_loop = manager.clone();
        let handle = tokio::spawn(async move { lease_loop.lease_loop().await });
        *manager
            .inner
            .lease_task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(handle);
        let retention = manager.clone();
        tokio::spawn(async move { retention.retention_loop().await });
        if let Some(signals) = manager.inner.store.signals() {
            let listener = manager.clone();
            let handle = tokio::spawn(async move { listener.signal_loop(signals).await });
            *manager
                .inner
                .signal_task
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()) = Some(handle);
        }
        Ok(manager)
    }

    /// Finishes own leftovers and, on a store no one else runs, pending
    /// tasks of ops not registered here (no one could ever run them).
    async fn recover(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let leftovers = store.leftovers(&self.inner.config.instance_id).await?;
        for task_id in &leftovers {
            let ending = self
                .lost_run_outcome(*task_id, ErrorInfo::server_restart())
                .await;
            let outcome = store.finish(*task_id, ending).await?;
            debug!(%task_id, ?outcome, "finished leftover");
            if let crate::store::FinishOutcome::Finished { status, .. } = outcome {
                self.count_finished(*task_id, status).await;
            }
            if let crate::store::FinishOutcome::Requeued { .. } = outcome {
                info!(%task_id, "a task left running by a previous run will be tried again");
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
            if self.inner.ops.get(&op).is_some() {
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
                    .list(crate::store::ListQuery {
                        status: Some(crate::model::Status::Pending),
                        op: Some(op.clone()),
                        limit: 500,
                        ..crate::store::ListQuery::default()
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

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// What this manager counted (render with [`Metrics::render`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The registered ops.
    pub fn ops(&self) -> &OpRegistry {
        &self.inner.ops
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// Reacts to what peers sharing the store did.
    async fn signal_loop(&self, mut signals: tokio::sync::broadcast::Receiver<StoreSignal>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let signal = tokio::select! {
                signal = signals.recv() => signal,
                () = self.inner.background.cancelled() => return,
            };
            match signal {
                Ok(StoreSignal::Pending { op } | StoreSignal::Finished { op }) => self.kick(&op),
                Ok(StoreSignal::Due { op, at }) => self.arm_due(&op, at),
                Ok(StoreSignal::CancelRequested { task_id, owner }) => {
                    if owner == self.inner.config.instance_id {
                        self.apply_cancel(
                            task_id,
                            &CancelOutcome::Requested { owner: Some(owner) },
                        );
                    }
                }
                Ok(StoreSignal::Resync) | Err(RecvError::Lagged(_)) => {
                    self.kick_all();
                    self.rearm_all();
                    // Polled aside, so signals keep flowing meanwhile.
                    self.spawn_cancel_poll();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Requests a cancel. A pending task ends `cancelled` at once and never
    /// runs; a running one here gets its token fired (and is aborted after
    /// the grace period if it ignores it). Cancel-safe like `submit`.
    #[tracing::instrument(
        name = "manager.cancel",
        level = "debug",
        skip(self),
        err(level = "debug")
    )]
    pub async fn cancel(&self, task_id: TaskId) -> Result<CancelOutcome, StoreError> {
        let manager = self.clone();
        let cancelled = tokio::spawn(async move {
            let outcome = manager.inner.store.request_cancel(task_id).await?;
            manager.apply_cancel(task_id, &outcome);
            if let CancelOutcome::Cancelled { .. } = outcome {
                manager
                    .count_finished(task_id, crate::model::Status::Cancelled)
                    .await;
            }
            Ok(outcome)
        });
        cancelled
            .await
            .unwrap_or_else(|join_error| Err(StoreError::backend("cancel", join_error)))
    }

    fn apply_cancel(&self, task_id: TaskId, outcome: &CancelOutcome) {
        let mut state = self.state();
        if let CancelOutcome::Requested { owner } = outcome {
            if let Some(running) = state.running.get_mut(&task_id) {
                running.cause.get_or_insert(CancelCause::User);
                running.token.cancel();
            } else if owner.as_deref() == Some(self.inner.config.instance_id.as_str()) {
                // Ours, but the claim that started it has not registered it yet.
                state
                    .early_cancels
                    .insert(task_id, std::time::Instant::now());
            }
        }
    }

    /// Counts a task this instance finished outside a run (a cancelled
    /// pending task, a reaped or leftover one); its op comes from the row.
    async fn count_finished(&self, task_id: TaskId, status: crate::model::Status) {
        if let Ok(Some(task)) = self.inner.store.get(task_id).await {
            self.inner
                .metrics
                .finished
                .with(&[&task.op, status.as_str()])
                .inc();
        }
    }

    /// How many tasks run on this instance now.
    pub fn running_here(&self) -> usize {
        self.state().running.len()
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
