//! Scheduling by claims: a claim pass per op whenever work may be waiting
//! (a submit, a run ending, a peer's signal, the lease tick, a due timer),
//! at most one pass per op in flight, each claimed task's run spawned; and
//! the due timers of pending tasks due later (delayed tasks, the next
//! attempt of a retried one): at most one per op, armed for the earliest
//! `run_at` known, which kicks a claim when it fires and then looks up the
//! next one (`Store::next_due`). No polling: an idle server claims a task
//! within milliseconds of its `run_at`. On a shared store every instance
//! arms its timer from the `Due` signal, so whichever is free claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tracing::{Instrument as _, debug, warn};

use super::remote::Remote;
use super::runner::Runner;
use super::runs::Runs;
use super::{Life, back_off};
use crate::clock::millis;
use crate::model::{ErrorInfo, Outcome, Task, TaskId};
use crate::observe::TaskTracing;
use crate::store::{Lease, StoreError};
use crate::time::Timestamp;

/// What the claimer needs to know of the config.
#[derive(Clone, Debug)]
pub(crate) struct ClaimSettings {
    /// The owner written on claimed tasks.
    pub(crate) instance_id: String,
    /// Whether this instance runs tasks at all.
    pub(crate) worker: bool,
    /// The lease a claim takes.
    pub(crate) lease_ttl: Duration,
    /// Runs per op, unless `op_concurrency` says otherwise.
    pub(crate) default_concurrency: usize,
    /// Runs for named ops.
    pub(crate) op_concurrency: HashMap<String, usize>,
    /// Flow control by op name from the config (else the op's own).
    pub(crate) flows: HashMap<String, crate::flow::Flow>,
}

/// Whether a claim pass for an op is in flight, and whether it must look
/// again when done (work may have arrived meanwhile).
#[derive(Default)]
struct Pass {
    active: bool,
    again: bool,
}

struct State {
    /// False once a drain began or a newer build migrated the store.
    claiming: bool,
    passes: HashMap<String, Pass>,
    /// Claim calls whose answer has not been handled yet: a task a claim
    /// started in the store is not registered here until its claim's
    /// answer is handled (see `Leases::finish_orphans`).
    in_flight: usize,
    /// The earliest `run_at` a timer is armed for, per op.
    due: HashMap<String, Timestamp>,
}

/// Claims pending tasks and spawns their runs (with the runner's store,
/// ops, clock and life).
pub(crate) struct Claimer {
    runs: Arc<Runs>,
    /// Remote workers' sessions: remote ops are claimed by their workers.
    remote: Arc<Remote>,
    runner: Runner,
    tracing: Arc<dyn TaskTracing>,
    settings: ClaimSettings,
    state: Mutex<State>,
    /// Itself, for the tasks it spawns.
    this: Weak<Claimer>,
}

/// Counts a claim call in flight until dropped (after its tasks are
/// registered, or on a panic): while any is, no orphans are judged.
struct InFlight<'a>(&'a Claimer);

impl<'a> InFlight<'a> {
    fn new(claimer: &'a Claimer) -> Self {
        claimer.state().in_flight += 1;
        InFlight(claimer)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.state().in_flight -= 1;
    }
}

impl Claimer {
    /// The remote workers' sessions.
    pub(crate) fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }

    pub(crate) fn new(
        runner: Runner,
        runs: Arc<Runs>,
        remote: Arc<Remote>,
        tracing: Arc<dyn TaskTracing>,
        settings: ClaimSettings,
    ) -> Arc<Claimer> {
        Arc::new_cyclic(|this| Claimer {
            runs,
            remote,
            runner,
            tracing,
            settings,
            state: Mutex::new(State {
                claiming: true,
                passes: HashMap::new(),
                in_flight: 0,
                due: HashMap::new(),
            }),
            this: this.clone(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn this(&self) -> Option<Arc<Claimer>> {
        self.this.upgrade()
    }

    /// Whether this instance claims tasks of `op` at all.
    fn serves(&self, op: &str) -> bool {
        self.settings.worker && self.runner.ops.get(op).is_some()
    }

    /// Stops claiming (a drain, or a store migrated by a newer build);
    /// false when it had stopped already.
    pub(crate) fn stop_claiming(&self) -> bool {
        std::mem::replace(&mut self.state().claiming, false)
    }

    /// Whether claim calls are unanswered.
    pub(crate) fn claims_in_flight(&self) -> bool {
        self.state().in_flight > 0
    }

    /// The lease a claim takes now.
    pub(crate) fn lease_until(&self) -> Timestamp {
        self.runner
            .clock
            .now()
            .add_millis(millis(self.settings.lease_ttl))
    }

    /// Starts a claim pass for `op` unless one is in flight (then it looks
    /// again when done).
    pub(crate) fn kick(&self, op: &str) {
        if self.runner.ops.get(op).is_some_and(|op| op.is_remote()) {
            // Its workers claim it: wake their claims.
            self.remote.kick(op);
            return;
        }
        if !self.serves(op) || self.runner.life.is_stopping() {
            return;
        }
        {
            let mut state = self.state();
            if !state.claiming {
                return;
            }
            let pass = state.passes.entry(op.to_owned()).or_default();
            if pass.active {
                pass.again = true;
                return;
            }
            pass.active = true;
        }
        let Some(claimer) = self.this() else { return };
        let op = op.to_owned();
        self.runner
            .life
            .tracker
            .spawn(async move { claimer.claim_pass(&op).await });
    }

    /// Kicks every registered op.
    pub(crate) fn kick_all(&self) {
        for name in self.runner.ops.names() {
            self.kick(&name);
        }
    }

    /// Claims pending tasks of `op` and runs them, until a claim finds no
    /// new work; a failing store is retried with backoff.
    async fn claim_pass(&self, op: &str) {
        let limit = self.limit(op);
        let mut backoff = Duration::from_millis(10);
        loop {
            let lease = Lease {
                owner: self.settings.instance_id.clone(),
                until: self.lease_until(),
            };
            let in_flight = InFlight::new(self);
            // Never dropped half-way: a claim the store carried out must reach
            // `spawn_run`, or its tasks would stay running with no one to run them.
            let keys = self.key_rule(op);
            let claimed = self
                .runner
                .store
                .claim_some(
                    op,
                    limit,
                    usize::MAX,
                    keys.as_ref(),
                    lease,
                    self.runner.clock.now(),
                )
                .await;
            let claimed = claimed.map(|tasks| {
                for task in tasks {
                    self.spawn_run(task);
                }
            });
            // Its tasks are registered now (or it started none).
            drop(in_flight);
            match claimed {
                Ok(()) => {
                    backoff = Duration::from_millis(10);
                    let stopping = self.runner.life.is_stopping();
                    let again = {
                        let mut state = self.state();
                        let claiming = state.claiming && !stopping;
                        let pass = state.passes.entry(op.to_owned()).or_default();
                        if pass.again && claiming {
                            pass.again = false;
                            true
                        } else {
                            *pass = Pass::default();
                            false
                        }
                    };
                    if again {
                        continue;
                    }
                    if let Some(rate) = keys.as_ref().and_then(|rule| rule.rate) {
                        self.arm_rate(op, rate).await;
                    }
                    return;
                }
                Err(error) => {
                    warn!(op, %error, "could not claim pending tasks; retrying");
                    if !Life::unless(&self.runner.life.stopping, tokio::time::sleep(backoff)).await
                    {
                        self.state().passes.remove(op);
                        return;
                    }
                    back_off(&mut backoff, Duration::from_secs(5));
                }
            }
        }
    }

    /// Claims at most `take` due tasks of `op` for a remote worker (within
    /// the op's limit across the store), hands each to `hand_out` and
    /// spawns its run. Nothing while claims are stopped (a drain).
    pub(crate) async fn claim_for(
        &self,
        op: &str,
        take: usize,
        mut hand_out: impl FnMut(&Task),
    ) -> Result<(), StoreError> {
        if !self.state().claiming || self.runner.life.is_stopping() {
            return Ok(());
        }
        let lease = Lease {
            owner: self.settings.instance_id.clone(),
            until: self.lease_until(),
        };
        let in_flight = InFlight::new(self);
        let keys = self.key_rule(op);
        let claimed = self
            .runner
            .store
            .claim_some(
                op,
                self.limit(op),
                take,
                keys.as_ref(),
                lease,
                self.runner.clock.now(),
            )
            .await?;
        for mut task in claimed {
            // A task submitted in SQL has its params checked now; a refused
            // one is not handed out (its run fails it `invalid_request`).
            if task.params_digest == crate::SQL_SUBMIT_DIGEST {
                let mut checked = task.clone();
                let params = self.runner.ops.get(&task.op).and_then(|handler| {
                    super::runner::checked_params(&*handler, &mut checked).ok()
                });
                if let Some(params) = params {
                    task.params = params;
                    task.params_digest.clear();
                    hand_out(&task);
                }
                self.spawn_run(task);
                continue;
            }
            hand_out(&task);
            self.spawn_run(task);
        }
        drop(in_flight);
        if let Some(rule) = keys.as_ref()
            && let Some(rate) = rule.rate
        {
            self.arm_rate(op, rate).await;
        }
        Ok(())
    }

    /// Arms `op`'s timer for when its rate next lets more tasks start,
    /// after a claim pass: the oldest start in the window leaving it (a task
    /// waiting on the rate starts then; with none waiting, that claim finds
    /// nothing and arms for the next oldest, so an op wakes at most once per
    /// start it made, and not at all once its window is empty).
    async fn arm_rate(&self, op: &str, rate: crate::flow::Rate) {
        let now = self.runner.clock.now();
        let since = now.add_millis(-rate.window_ms);
        match self.runner.store.rate_window(op, since).await {
            Ok((_, Some(oldest))) => {
                self.arm_due(op, oldest.add_millis(rate.window_ms + 1));
            }
            Ok(_) => {}
            Err(error) => warn!(op, %error, "could not read the op's rate window"),
        }
    }

    /// How claims of `op` share it between keys, when it has a flow key.
    fn key_rule(&self, op: &str) -> Option<crate::flow::ClaimRule> {
        match self.settings.flows.get(op) {
            Some(flow) => flow.rule(),
            None => self.runner.ops.get(op)?.flow()?.rule(),
        }
    }

    fn limit(&self, op: &str) -> usize {
        let settings = &self.settings;
        settings
            .op_concurrency
            .get(op)
            .copied()
            .unwrap_or(settings.default_concurrency)
            .max(1)
    }

    /// Runs a claimed (already started) task.
    fn spawn_run(&self, task: Task) {
        /// Forgets the run and kicks its op however the run ends, a panic
        /// included.
        struct Slot {
            claimer: Arc<Claimer>,
            task_id: TaskId,
            op: String,
            attempt: u32,
        }
        impl Drop for Slot {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    // The engine itself failed mid-run: do not leave the task
                    // running (its lease would be renewed forever).
                    let (store, task_id) = (Arc::clone(&self.claimer.runner.store), self.task_id);
                    tokio::spawn(async move {
                        let error = ErrorInfo::new(
                            "internal_error",
                            "the engine failed while running this task",
                        );
                        let _ = store.finish(task_id, Outcome::Failed(error)).await;
                    });
                }
                self.claimer.runs.forget(self.task_id);
                // A remote run whose op never started (a cancel or shutdown
                // came first) is forgotten here, and its worker told.
                self.claimer.remote.forget(self.task_id, self.attempt, true);
                self.claimer.kick(&self.op);
            }
        }
        let Some(claimer) = self.this() else { return };
        let control = self.runs.register(task.task_id, task.cancel_requested);
        let slot = Slot {
            claimer,
            task_id: task.task_id,
            op: task.op.clone(),
            attempt: task.attempt,
        };
        let span = self.tracing.run_span(&task);
        self.runner.life.tracker.spawn(
            async move {
                let op = task.op.clone();
                if let Some(at) = slot.claimer.runner.run(task, control).await {
                    slot.claimer.arm_due(&op, at);
                }
                drop(slot);
            }
            .instrument(span),
        );
    }

    /// Makes sure a claim pass for `op` runs at `at` (or earlier).
    pub(crate) fn arm_due(&self, op: &str, at: Timestamp) {
        if !self.serves(op) || self.runner.life.is_stopping() {
            return;
        }
        {
            let mut state = self.state();
            match state.due.get(op) {
                Some(armed) if *armed <= at => return,
                _ => {}
            }
            state.due.insert(op.to_owned(), at);
        }
        let Some(claimer) = self.this() else { return };
        let op = op.to_owned();
        tokio::spawn(async move {
            if !Life::unless(
                &claimer.runner.life.stopping,
                claimer.runner.clock.sleep_until(at),
            )
            .await
            {
                return;
            }
            {
                let mut state = claimer.state();
                // An earlier timer took its place; that one looks further.
                if state.due.get(&op) != Some(&at) {
                    return;
                }
                state.due.remove(&op);
            }
            debug!(op, %at, "a pending task is due");
            claimer.kick(&op);
            claimer.rearm(&op).await;
        });
    }

    /// Arms the timer for `op`'s next pending task that is due later.
    pub(crate) async fn rearm(&self, op: &str) {
        if !self.serves(op) {
            return;
        }
        // Tasks due already are the claim's (kicked now, or by the next
        // run's end when the op is at its limit): look past them.
        match self
            .runner
            .store
            .next_due(op, self.runner.clock.now())
            .await
        {
            Ok(Some(at)) => self.arm_due(op, at),
            Ok(None) => {}
            Err(error) => warn!(op, %error, "could not look up when the next task is due"),
        }
    }

    /// Arms every registered op's timer (at start, after missed signals).
    pub(crate) fn rearm_all(&self) {
        for name in self.runner.ops.names() {
            let Some(claimer) = self.this() else { return };
            let op = name.to_owned();
            tokio::spawn(async move { claimer.rearm(&op).await });
        }
    }

    /// Arms the timer for a task the store just made pending again (a
    /// reaped run's next attempt), reading its op and `run_at`.
    pub(crate) async fn arm_requeued(&self, task_id: TaskId) -> Result<(), StoreError> {
        if let Some(task) = self.runner.store.get(task_id).await?
            && let Some(at) = task.run_at
        {
            self.arm_due(&task.op, at);
        }
        Ok(())
    }
}
