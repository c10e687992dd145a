//! The Manager: submits tasks, runs their ops under per-op concurrency
//! limits, cancels them, recovers leftovers, renews leases and shuts down.
//!
//! It holds only what runs here (tokens and queues); the store holds the
//! truth, and every transition goes through it. The run of one task (start,
//! op, finish) is in [`runner`]. Call order for embedders:
//! [`Manager::start`] once, then any number of `submit`/`cancel`/reads from
//! any task, then [`Manager::shutdown`] once.

mod lifecycle;
mod runner;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::model::{ErrorInfo, NewTask, Outcome, Task, TaskId};
use crate::op::{OpRegistry, ParamsError};
use crate::store::{CancelOutcome, ListPage, ListQuery, Store, StoreError};

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
    queues: HashMap<String, OpQueue>,
    running: HashMap<TaskId, Running>,
}

struct Inner {
    store: Arc<dyn Store>,
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
                    queues: HashMap::new(),
                    running: HashMap::new(),
                }),
                stopping: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                background: CancellationToken::new(),
                tracker: TaskTracker::new(),
                lease_task: Mutex::new(None),
            }),
        };
        let pending = manager.recover().await?;
        // Only once recovery has fully succeeded does anything start running.
        for task in pending {
            manager.enqueue(task.task_id, &task.op);
        }
        let lease_loop = manager.clone();
        let handle = tokio::spawn(async move { lease_loop.lease_loop().await });
        *manager
            .inner
            .lease_task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(handle);
        Ok(manager)
    }

    /// Finishes own leftovers and tasks of unknown ops; returns the pending
    /// tasks to queue, oldest first.
    async fn recover(&self) -> Result<Vec<Task>, StoreError> {
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
        let mut runnable = Vec::new();
        for task in store.pending().await? {
            if self.inner.ops.get(&task.op).is_some() {
                runnable.push(task);
            } else {
                let error = ErrorInfo::new(
                    "op_not_found",
                    format!("op {:?} is not registered on this server", task.op),
                );
                store.finish(task.task_id, Outcome::Failed(error)).await?;
            }
        }
        if !runnable.is_empty() {
            info!(
                queued = runnable.len(),
                "queued pending tasks from the store"
            );
        }
        Ok(runnable)
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
    ///
    /// Cancel-safe: once called, the task is created and scheduled even if
    /// the caller stops waiting (say, an HTTP client hangs up).
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
        let manager = self.clone();
        let created = tokio::spawn(async move {
            let created = manager.inner.store.create(new_task).await?;
            if created.created {
                manager.enqueue(created.task.task_id, &created.task.op);
            }
            Ok::<_, StoreError>(created)
        });
        let created = match created.await {
            Ok(created) => created?,
            Err(join_error) => {
                return Err(SubmitError::Store(StoreError::Backend {
                    context: "submit".into(),
                    source: Box::new(join_error),
                }));
            }
        };
        if !created.created && (created.task.params_digest != digest || created.task.op != op) {
            return Err(SubmitError::IdempotencyConflict {
                task_id: created.task.task_id,
            });
        }
        debug!(task_id = %created.task.task_id, created = created.created, "submitted");
        Ok(Submitted {
            created: created.created,
            task: created.task,
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
        /// Gives the slot back and forgets the run however the run ends,
        /// a panic included.
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
                self.manager.release_slot(&self.op);
            }
        }
        let slot = Slot {
            manager: self.clone(),
            task_id,
            op,
        };
        self.inner.tracker.spawn(async move {
            slot.manager.run(slot.task_id, &slot.op).await;
            drop(slot);
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

    /// Requests a cancel. A pending task ends `cancelled` at once and never
    /// runs; a running one here gets its token fired (and is aborted after
    /// the grace period if it ignores it). Cancel-safe like `submit`.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn cancel(&self, task_id: TaskId) -> Result<CancelOutcome, StoreError> {
        let manager = self.clone();
        let cancelled = tokio::spawn(async move {
            let outcome = manager.inner.store.request_cancel(task_id).await?;
            manager.apply_cancel(task_id, &outcome);
            Ok(outcome)
        });
        cancelled.await.unwrap_or_else(|join_error| {
            Err(StoreError::Backend {
                context: "cancel".into(),
                source: Box::new(join_error),
            })
        })
    }

    fn apply_cancel(&self, task_id: TaskId, outcome: &CancelOutcome) {
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
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
