//! The Manager: the public face of the engine for embedders and the
//! server. It composes the engine's components (`crate::engine`: runs,
//! runner, claimer, leases, peers, submitter, schedules, retention), starts
//! them in order and stops them at shutdown; its own methods are thin.
//!
//! It holds only what runs here (cancel tokens); the store holds the truth,
//! and every transition goes through it. Scheduling is a claim: when work
//! may be waiting (a submit, a run ending, a peer's signal, the lease tick)
//! the claimer asks the store to start the oldest pending tasks of an op
//! while fewer than its limit run (`Store::claim`), so the limit and the
//! FIFO order hold across every instance sharing the store. Call order
//! for embedders: [`Manager::start`] once, then any number of
//! `submit`/`cancel`/reads from any task, then [`Manager::shutdown`] once.
//!
//! `Manager`'s methods live in four files: this one (start, cancel,
//! drain, shutdown), `submit.rs`, `reads.rs` (reads and waits) and
//! `bulk.rs`.

mod bulk;
mod config;
mod errors;
mod reads;
mod submit;
mod waiting;
mod workers;

pub use bulk::BulkCount;
pub use config::ManagerConfig;
pub use errors::{ShutdownReport, SubmitError, Submitted, WorkerCallError};
pub use reads::Readiness;
pub use submit::SubmitOptions;
pub use waiting::{FollowError, TaskEvents};
pub use workers::{Signal, SignalStream};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::engine::Life;
use crate::engine::claimer::{ClaimSettings, Claimer};
use crate::engine::leases::{LeaseSettings, LeaseState, Leases, count_finished};
use crate::engine::remote::{Remote, RemoteSettings};
use crate::engine::retention::Retention;
use crate::engine::runner::{RunSettings, Runner};
use crate::engine::runs::Runs;
use crate::engine::schedules::Scheduler;
use crate::engine::submitter::Submitter;
use crate::metered::MeteredStore;
use crate::metrics::Metrics;
use crate::model::{Status, TaskId};
use crate::op::OpRegistry;
use crate::store::{CancelOutcome, Store, StoreError};

struct Inner {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    ops: OpRegistry,
    config: ManagerConfig,
    life: Life,
    runs: Arc<Runs>,
    claimer: Arc<Claimer>,
    leases: Arc<Leases>,
    submitter: Arc<Submitter>,
    scheduler: Arc<Scheduler>,
    retention: Arc<Retention>,
    remote: Arc<Remote>,
    /// Whether a drain began.
    draining: AtomicBool,
    /// The lease and signal loops, aborted (not awaited) at shutdown.
    loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
        let clock = Arc::clone(&config.clock);
        let life = Life::default();
        let runs = Arc::new(Runs::default());
        let remote = Remote::new(
            Arc::clone(&store),
            ops.shared(),
            Arc::clone(&clock),
            life.clone(),
            RemoteSettings {
                instance_id: config.instance_id.clone(),
                lease_ttl: config.lease_ttl,
                lease_interval: config.lease_interval,
                cancel_grace: config.cancel_grace,
            },
        );
        let runner = Runner {
            store: Arc::clone(&store),
            ops: ops.shared(),
            metrics: Arc::clone(&metrics),
            clock: Arc::clone(&clock),
            life: life.clone(),
            settings: RunSettings {
                max_events_per_task: config.max_events_per_task,
                max_tape_bytes: config.max_tape_bytes,
                cancel_grace: config.cancel_grace,
                lease_ttl: config.lease_ttl,
            },
        };
        let claimer = Claimer::new(
            runner,
            Arc::clone(&runs),
            Arc::clone(&remote),
            Arc::clone(&config.task_tracing),
            ClaimSettings {
                instance_id: config.instance_id.clone(),
                worker: config.worker,
                lease_ttl: config.lease_ttl,
                default_concurrency: config.default_concurrency,
                op_concurrency: config.op_concurrency.clone(),
                flows: config.flows.clone(),
            },
        );
        remote.set_claimer(&claimer);
        let leases = Arc::new(Leases {
            store: Arc::clone(&store),
            ops: ops.shared(),
            metrics: Arc::clone(&metrics),
            clock: Arc::clone(&clock),
            life: life.clone(),
            runs: Arc::clone(&runs),
            claimer: Arc::clone(&claimer),
            settings: LeaseSettings {
                instance_id: config.instance_id.clone(),
                lease_ttl: config.lease_ttl,
                lease_interval: config.lease_interval,
            },
            state: LeaseState::default(),
        });
        let submitter = Arc::new(Submitter {
            store: Arc::clone(&store),
            ops: ops.shared(),
            metrics: Arc::clone(&metrics),
            clock: Arc::clone(&clock),
            life: life.clone(),
            claimer: Arc::clone(&claimer),
            tracing: Arc::clone(&config.task_tracing),
            retries: config.retries.clone(),
            flows: config.flows.clone(),
            digest_key: std::sync::OnceLock::new(),
        });
        let scheduler = Arc::new(Scheduler {
            submitter: Arc::clone(&submitter),
            schedules: config.schedules.clone(),
        });
        let retention = Arc::new(Retention {
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
            clock,
            life: life.clone(),
            retention: config.retention,
            interval: config.retention_interval,
            sweep_wanted: tokio::sync::Notify::new(),
        });
        store.guard_instance(&config.instance_id).await?;
        let key = crate::engine::submitter::digest_key(&*store).await?;
        let _ = submitter.digest_key.set(key);
        // Remote ops first: their pending tasks are not ops this server lacks.
        remote.load().await?;
        submitter.record_served().await?;
        leases.recover().await?;
        // Only once recovery has fully succeeded does anything start running.
        claimer.kick_all();
        claimer.rearm_all();
        scheduler.start();
        let mut loops = vec![
            tokio::spawn(Arc::clone(&leases).run()),
            tokio::spawn(Arc::clone(&remote).run_ticks()),
        ];
        tokio::spawn(Arc::clone(&retention).run());
        if let Some(signals) = store.signals() {
            loops.push(tokio::spawn(crate::engine::peers::follow(
                Arc::clone(&leases),
                signals,
            )));
        }
        Ok(Manager {
            inner: Arc::new(Inner {
                store,
                metrics,
                ops,
                config,
                life,
                runs,
                claimer,
                leases,
                submitter,
                scheduler,
                retention,
                remote,
                draining: AtomicBool::new(false),
                loops: Mutex::new(loops),
            }),
        })
    }

    /// What this manager counted (render with [`Metrics::render`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The registered ops.
    pub fn ops(&self) -> &OpRegistry {
        &self.inner.ops
    }

    /// `op`'s flow control: the config's, else the op's own.
    pub fn flow(&self, op: &str) -> Option<crate::flow::Flow> {
        match self.inner.config.flows.get(op) {
            Some(flow) => Some(flow.clone()),
            None => self.inner.ops.get(op)?.flow(),
        }
    }

    /// The time by the manager's clock.
    pub fn now(&self) -> crate::time::Timestamp {
        self.inner.config.clock.now()
    }

    /// The starts recorded for `op`'s rate after `since`: how many, and
    /// the oldest.
    pub async fn rate_window(
        &self,
        op: &str,
        since: crate::time::Timestamp,
    ) -> Result<(u64, Option<crate::time::Timestamp>), StoreError> {
        self.inner.store.rate_window(op, since).await
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
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
            let inner = &manager.inner;
            let outcome = inner.store.request_cancel(task_id).await?;
            match &outcome {
                CancelOutcome::Requested { owner } => {
                    let ours = owner.as_deref() == Some(&*inner.config.instance_id);
                    inner.runs.cancel(task_id, ours);
                }
                CancelOutcome::Cancelled { .. } => {
                    count_finished(&*inner.store, &inner.metrics, task_id, Status::Cancelled).await;
                }
                _ => {}
            }
            Ok(outcome)
        });
        cancelled
            .await
            .unwrap_or_else(|join_error| Err(StoreError::backend("cancel", join_error)))
    }

    /// How many tasks run on this instance now.
    pub fn running_here(&self) -> usize {
        self.inner.runs.len()
    }

    /// Begins a drain: this instance starts no more tasks (submits are still
    /// taken: the tasks wait, pending, for a peer or the next start) while
    /// the running ones go on. [`Manager::idle`] tells when they are done;
    /// [`Manager::shutdown`] then ends the rest.
    pub fn drain(&self) {
        if self.inner.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.claimer.stop_claiming();
        self.inner.remote.drain_all();
        info!(
            running = self.running_here(),
            "draining: no new tasks start here; running ones finish"
        );
    }

    /// Whether a drain (or a shutdown) began.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire) || self.inner.life.is_stopping()
    }

    /// Waits until no task runs here (use after [`Manager::drain`]).
    pub async fn idle(&self) {
        self.inner.runs.idle().await;
    }

    /// Graceful shutdown: take no new work, fire every running task's cancel
    /// token, give the ops up to `deadline` to return (then abort them), and
    /// finish them `failed` with `server_shutdown` (an op that returns a
    /// result in time keeps it). Tasks still pending stay pending in the
    /// store and run after the next start.
    #[tracing::instrument(name = "manager.shutdown", skip(self))]
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let life = &self.inner.life;
        // Before any token fires: an op woken by its token must already see
        // that this is a shutdown (exec ops then wait for the deadline).
        life.stopping.cancel();
        let running = self.inner.runs.stop_all();
        info!(running, ?deadline, "shutting down");
        life.tracker.close();
        let in_time = tokio::time::timeout(deadline, life.tracker.wait())
            .await
            .is_ok();
        let mut unfinished = 0;
        if !in_time {
            // Abort what is left and give the runs a moment to write their finals.
            life.hard_stop.cancel();
            if tokio::time::timeout(Duration::from_millis(300), life.tracker.wait())
                .await
                .is_err()
            {
                unfinished = self.running_here();
            }
        }
        // Lease renewal ran until now, so no peer reaped our tasks meanwhile.
        life.background.cancel();
        let loops = std::mem::take(
            &mut *self
                .inner
                .loops
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
        // Aborted, not awaited: a call hung on a dead database must not
        // hold the shutdown up.
        for handle in loops {
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

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
