//! The Manager: submits tasks, runs their ops under per-op concurrency
//! limits, cancels them, recovers leftovers, renews leases and shuts down.
//!
//! It holds only what runs here (tokens and queues); the store holds the
//! truth, and every transition goes through it. Call order for embedders:
//! [`Manager::start`] once, then any number of `submit`/`cancel`/reads from
//! any task, then [`Manager::shutdown`] once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::model::{ErrorInfo, NewTask, Outcome, Status, Task, TaskId};
use crate::op::{Op, OpRegistry, ParamsError};
use crate::reporter::Reporter;
use crate::store::{
    CancelOutcome, FinishOutcome, Lease, ListPage, ListQuery, StartOutcome, Store, StoreError,
};
use crate::time::Timestamp;

/// How a manager runs.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// This instance's id: the owner written on the tasks it runs. Keep it
    /// stable across restarts so leftovers are recognised as our own.
    pub instance_id: String,
    /// How long a cancelled op may take to return before it is aborted.
    pub cancel_grace: Duration,
    /// How long a lease holds without renewal.
    pub lease_ttl: Duration,
    /// How often leases are renewed and expired peers' tasks reaped.
    pub lease_interval: Duration,
    /// Concurrent runs per op unless `op_concurrency` says otherwise.
    pub default_concurrency: usize,
    /// Concurrent runs for named ops.
    pub op_concurrency: HashMap<String, usize>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            instance_id: "local".to_owned(),
            cancel_grace: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            lease_interval: Duration::from_secs(5),
            default_concurrency: 64,
            op_concurrency: HashMap::new(),
        }
    }
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CancelCause {
    User,
    Shutdown,
}

struct Running {
    token: CancellationToken,
    cause: Option<CancelCause>,
}

#[derive(Default)]
struct OpQueue {
    active: usize,
    waiting: VecDeque<TaskId>,
}

struct State {
    accepting: bool,
    shutdown_grace: Duration,
    queues: HashMap<String, OpQueue>,
    running: HashMap<TaskId, Running>,
}

struct Inner {
    store: Arc<dyn Store>,
    ops: OpRegistry,
    config: ManagerConfig,
    state: Mutex<State>,
    background: CancellationToken,
    tracker: TaskTracker,
    lease_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Runs tasks against a store. Cheap to clone; all clones are one manager.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl Manager {
    /// Starts a manager: finishes this instance's leftovers `failed` with
    /// `server_restart`, queues the pending tasks (oldest first), and starts
    /// lease renewal. Must be called inside a Tokio runtime.
    pub async fn start(
        store: Arc<dyn Store>,
        ops: OpRegistry,
        config: ManagerConfig,
    ) -> Result<Manager, StoreError> {
        let manager = Manager {
            inner: Arc::new(Inner {
                store,
                ops,
                config,
                state: Mutex::new(State {
                    accepting: true,
                    shutdown_grace: Duration::ZERO,
                    queues: HashMap::new(),
                    running: HashMap::new(),
                }),
                background: CancellationToken::new(),
                tracker: TaskTracker::new(),
                lease_task: Mutex::new(None),
            }),
        };
        manager.recover().await?;
        let lease_loop = manager.clone();
        let handle = tokio::spawn(async move { lease_loop.lease_loop().await });
        *manager
            .inner
            .lease_task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(handle);
        Ok(manager)
    }

    async fn recover(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let leftovers = store.leftovers(&self.inner.config.instance_id).await?;
        for task_id in &leftovers {
            let outcome = store
                .finish(*task_id, Outcome::Failed(ErrorInfo::server_restart()))
                .await?;
            debug!(%task_id, ?outcome, "finished leftover");
        }
        if !leftovers.is_empty() {
            warn!(
                count = leftovers.len(),
                "finished tasks left running by a previous run as server_restart"
            );
        }
        let mut queued = 0;
        for task in store.pending().await? {
            if self.inner.ops.get(&task.op).is_some() {
                self.enqueue(task.task_id, &task.op);
                queued += 1;
            } else {
                let error = ErrorInfo::new(
                    "op_not_found",
                    format!("op {:?} is not registered on this server", task.op),
                );
                store.finish(task.task_id, Outcome::Failed(error)).await?;
            }
        }
        if queued > 0 {
            info!(queued, "queued pending tasks from the store");
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The store this manager writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The registered ops.
    pub fn ops(&self) -> &OpRegistry {
        &self.inner.ops
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// Creates a task for `op` and schedules it. The params are checked and
    /// normalized by the op; the same idempotency key with the same params
    /// returns the first task, with other params a conflict.
    #[tracing::instrument(skip_all, fields(op = %op), err(level = "debug"))]
    pub async fn submit(
        &self,
        op: &str,
        params: Value,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        if !self.state().accepting {
            return Err(SubmitError::ShuttingDown);
        }
        let Some(handler) = self.inner.ops.get(op) else {
            return Err(SubmitError::UnknownOp {
                name: op.to_owned(),
                known: self
                    .inner
                    .ops
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            });
        };
        let params = handler.prepare(params)?;
        let mut new_task = NewTask::new(op, params);
        new_task.idempotency_key = idempotency_key;
        let digest = new_task.params_digest.clone();
        let created = self.inner.store.create(new_task).await?;
        if !created.created {
            if created.task.params_digest != digest || created.task.op != op {
                return Err(SubmitError::IdempotencyConflict {
                    task_id: created.task.task_id,
                });
            }
            return Ok(Submitted {
                task: created.task,
                created: false,
            });
        }
        debug!(task_id = %created.task.task_id, "submitted");
        self.enqueue(created.task.task_id, op);
        Ok(Submitted {
            task: created.task,
            created: true,
        })
    }

    fn enqueue(&self, task_id: TaskId, op: &str) {
        let limit = self.limit(op);
        let mut state = self.state();
        let queue = state.queues.entry(op.to_owned()).or_default();
        if queue.active < limit {
            queue.active += 1;
            drop(state);
            self.spawn_run(task_id, op.to_owned());
        } else {
            queue.waiting.push_back(task_id);
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

    fn spawn_run(&self, task_id: TaskId, op: String) {
        let manager = self.clone();
        self.inner.tracker.spawn(async move {
            manager.run(task_id, &op).await;
            manager.release_slot(&op);
        });
    }

    fn release_slot(&self, op: &str) {
        let next = {
            let mut state = self.state();
            let accepting = state.accepting;
            let Some(queue) = state.queues.get_mut(op) else {
                return;
            };
            match queue.waiting.pop_front() {
                Some(next) if accepting => Some(next),
                _ => {
                    queue.active = queue.active.saturating_sub(1);
                    None
                }
            }
        };
        if let Some(next) = next {
            self.spawn_run(next, op.to_owned());
        }
    }

    async fn run(&self, task_id: TaskId, op_name: &str) {
        let token = CancellationToken::new();
        {
            let mut state = self.state();
            if !state.accepting {
                return; // stays pending; runs after the next start
            }
            state.running.insert(
                task_id,
                Running {
                    token: token.clone(),
                    cause: None,
                },
            );
        }
        self.run_registered(task_id, op_name, token).await;
        self.state().running.remove(&task_id);
    }

    async fn run_registered(&self, task_id: TaskId, op_name: &str, token: CancellationToken) {
        let Some(op) = self.inner.ops.get(op_name).cloned() else {
            return;
        };
        let store = &self.inner.store;
        let lease = Lease {
            owner: self.inner.config.instance_id.clone(),
            until: self.lease_until(),
        };
        let task = match store.start(task_id, lease).await {
            Ok(StartOutcome::Started(task)) => *task,
            Ok(other) => {
                debug!(%task_id, ?other, "not started");
                return;
            }
            Err(error) => {
                // Still pending in the store; it will be queued again at the next start.
                error!(%task_id, %error, "could not start task");
                return;
            }
        };
        let reporter = Reporter::new(Arc::clone(store), task_id, token.clone());
        let outcome = self
            .drive(op, task.params, reporter.clone(), &token, task_id)
            .await;
        reporter.close();
        self.finish_until_written(task_id, outcome, reporter.store_error())
            .await;
    }

    async fn drive(
        &self,
        op: Arc<dyn Op>,
        params: Value,
        reporter: Reporter,
        token: &CancellationToken,
        task_id: TaskId,
    ) -> Outcome {
        let mut handle = tokio::spawn(async move { op.run(params, reporter).await });
        let joined = tokio::select! {
            joined = &mut handle => Some(joined),
            () = token.cancelled() => None,
        };
        let joined = match joined {
            Some(joined) => joined,
            None => {
                let grace = self.grace_for(task_id);
                match tokio::time::timeout(grace, &mut handle).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        warn!(%task_id, ?grace, "op ignored its cancel token; aborting it");
                        handle.abort();
                        return self.cancel_outcome(task_id);
                    }
                }
            }
        };
        let cancelled = token.is_cancelled();
        match joined {
            Ok(Ok(result)) => Outcome::Succeeded(result),
            Ok(Err(_)) if cancelled => self.cancel_outcome(task_id),
            Ok(Err(op_error)) => Outcome::Failed(op_error.0),
            Err(join_error) if join_error.is_panic() => {
                let panic = join_error.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "op panicked".to_owned());
                error!(%task_id, %message, "op panicked");
                Outcome::Failed(ErrorInfo::new("op_panicked", message))
            }
            Err(_) => self.cancel_outcome(task_id),
        }
    }

    fn grace_for(&self, task_id: TaskId) -> Duration {
        let state = self.state();
        match state
            .running
            .get(&task_id)
            .and_then(|running| running.cause)
        {
            Some(CancelCause::Shutdown) => state.shutdown_grace,
            _ => self.inner.config.cancel_grace,
        }
    }

    fn cancel_outcome(&self, task_id: TaskId) -> Outcome {
        match self
            .state()
            .running
            .get(&task_id)
            .and_then(|running| running.cause)
        {
            Some(CancelCause::Shutdown) => Outcome::Failed(ErrorInfo::new(
                "server_shutdown",
                "the server shut down while the task was running",
            )),
            _ => Outcome::Cancelled,
        }
    }

    /// Finishes the task, retrying a failing store with backoff until it
    /// answers or shutdown's deadline ends the run (then the next start
    /// finishes it `server_restart`).
    async fn finish_until_written(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        event_error: Option<String>,
    ) {
        let outcome = match (outcome, event_error) {
            (Outcome::Succeeded(_), Some(message)) => Outcome::Failed(
                ErrorInfo::new("store_error", "an event of this task could not be stored")
                    .with("detail", message),
            ),
            (outcome, _) => outcome,
        };
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.inner.store.finish(task_id, outcome.clone()).await {
                Ok(FinishOutcome::Finished { status, .. }) => {
                    debug!(%task_id, %status, "finished");
                    return;
                }
                Ok(other) => {
                    debug!(%task_id, ?other, "finish lost to an earlier one");
                    return;
                }
                Err(error) => {
                    error!(%task_id, %error, "could not finish task; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.inner.background.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Requests a cancel. A pending task ends `cancelled` at once and never
    /// runs; a running one here gets its token fired (and is aborted after
    /// the grace period if it ignores it).
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn cancel(&self, task_id: TaskId) -> Result<CancelOutcome, StoreError> {
        let outcome = self.inner.store.request_cancel(task_id).await?;
        let mut state = self.state();
        match outcome {
            CancelOutcome::Requested { .. } => {
                if let Some(running) = state.running.get_mut(&task_id) {
                    running.cause.get_or_insert(CancelCause::User);
                    running.token.cancel();
                }
            }
            CancelOutcome::Cancelled { .. } => {
                for queue in state.queues.values_mut() {
                    queue.waiting.retain(|waiting| *waiting != task_id);
                }
            }
            CancelOutcome::AlreadyTerminal { .. } | CancelOutcome::NotFound => {}
        }
        Ok(outcome)
    }

    /// One task's row.
    pub async fn get(&self, task_id: TaskId) -> Result<Option<Task>, StoreError> {
        self.inner.store.get(task_id).await
    }

    /// A page of rows.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, StoreError> {
        self.inner.store.list(query).await
    }

    /// How many tasks run here now, and how many wait here for a slot.
    pub fn load(&self) -> (usize, usize) {
        let state = self.state();
        (
            state.running.len(),
            state.queues.values().map(|queue| queue.waiting.len()).sum(),
        )
    }

    fn lease_until(&self) -> Timestamp {
        let ttl = i64::try_from(self.inner.config.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        Timestamp::now().add_millis(ttl)
    }

    async fn lease_loop(&self) {
        let mut ticker = tokio::time::interval(self.inner.config.lease_interval);
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
                                warn!(%task_id, ?outcome, "reaped task whose owner's lease expired")
                            }
                            Err(error) => warn!(%task_id, %error, "could not reap task"),
                        }
                    }
                }
                Err(error) => warn!(%error, "could not list expired leases"),
            }
        }
    }

    /// Graceful shutdown: take no new work, fire every running task's cancel
    /// token, give the ops up to `deadline` to return (then abort them), and
    /// finish them `failed` with `server_shutdown` (an op that completes in
    /// time keeps its result). Tasks still pending stay pending in the store
    /// and run after the next start.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let running = {
            let mut state = self.state();
            state.accepting = false;
            state.shutdown_grace = deadline.mul_f64(0.8);
            for running in state.running.values_mut() {
                running.cause.get_or_insert(CancelCause::Shutdown);
                running.token.cancel();
            }
            state.running.len()
        };
        info!(running, ?deadline, "shutting down");
        self.inner.tracker.close();
        // Lease renewal goes on until the runs have written their finals.
        let finished = tokio::time::timeout(deadline, self.inner.tracker.wait()).await;
        self.inner.background.cancel();
        let unfinished = if finished.is_ok() {
            0
        } else {
            self.state().running.len()
        };
        let lease_task = self
            .inner
            .lease_task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(handle) = lease_task {
            let _ = handle.await;
        }
        if unfinished > 0 {
            warn!(
                unfinished,
                "shutdown deadline passed with tasks still running; the next start finishes them"
            );
        }
        ShutdownReport { unfinished }
    }

    /// The status of `task_id` as the store has it, for callers that only need that.
    pub async fn status(&self, task_id: TaskId) -> Result<Option<Status>, StoreError> {
        Ok(self.inner.store.get(task_id).await?.map(|task| task.status))
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
