//! The store's seam, by concern: [`Transitions`], [`Reads`],
//! [`Coordination`] and [`Maintenance`]; [`Store`] is all four (every
//! backend implements each; callers hold `Arc<dyn Store>` and bring the
//! traits into scope with `use tasktape_core::store::prelude::*`).

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease,
    ListPage, ListQuery, LostRun, MinuteCount, Result, StartOutcome, StatusCounts, StoreSignal,
    TapePage, outcome_after_events,
};
use crate::event::EventBody;
use crate::model::{NewTask, Outcome, Task, TaskId};
use crate::time::Timestamp;
use crate::wake::WakeHub;

/// A task store: all four concerns. Implementations:
/// `tasktape-store-sqlite`, `tasktape-store-postgres`.
///
/// Callers hold it as `Arc<dyn Store>`. Every method is one atomic step.
/// Input in the wrong state (an unknown id, a finished task, a body that
/// cannot be appended) gets a typed answer or a [`super::StoreError`];
/// the contract kit checks those answers.
pub trait Store: Transitions + Reads + Coordination + Maintenance {}

impl<T: Transitions + Reads + Coordination + Maintenance> Store for T {}

/// How a store takes part in a deployment: its name, readiness, the wake
/// hub it announces commits on, the instance guard, the schema check, and
/// what peers sharing it did (a reader: readiness is a read by default).
#[async_trait]
pub trait Coordination: Reads {
    /// The backend's name for `/v1/info` (`"sqlite"`, `"postgres"`).
    fn backend(&self) -> &'static str;

    /// Whether the store answers (a cheap round trip for readiness probes).
    async fn ready(&self) -> Result<()> {
        self.last_seq(TaskId::from_bytes([0; 16])).await.map(|_| ())
    }

    /// The hub the store wakes after each commit that adds events.
    fn wake_hub(&self) -> &Arc<WakeHub>;

    /// Reserves `instance_id` on this store for as long as the store lives
    /// (the manager calls it first): a second live instance with the same
    /// id gets [`StoreError::InstanceIdInUse`]. The default does nothing (a
    /// store one process owns needs no guard).
    async fn guard_instance(&self, instance_id: &str) -> Result<()> {
        let _ = instance_id;
        Ok(())
    }

    /// Whether the store's schema is still one this build knows:
    /// [`StoreError::SchemaTooNew`] once a newer tasktape migrated it
    /// (an instance then stops claiming: the meaning of a claim may have
    /// changed). The default (a store one process owns) is always `Ok`.
    async fn check_schema(&self) -> Result<()> {
        Ok(())
    }

    /// Whether other processes may share this store (then pending tasks can
    /// run on any of them and [`Store::signals`] tells what they did).
    fn shared(&self) -> bool {
        false
    }

    /// A stream of what other processes did; `None` for a store no one
    /// else writes.
    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<StoreSignal>> {
        None
    }

    /// Every record of `kind` (JSON texts the engine keeps for every
    /// instance on the store: remote ops' declarations, remote workers),
    /// by key.
    async fn records(&self, kind: &str) -> Result<Vec<(String, String)>>;

    /// Writes the record `kind`/`key` as `value` (`None`: deletes it) if it
    /// is `expected` now (`None`: absent), in one atomic step; whether it
    /// was (false: nothing written; read again and decide again).
    async fn swap_record(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<bool>;
}

/// The state changes: each one atomic, checking the current state inside
/// its own transaction (only the store decides a transition).
#[async_trait]
pub trait Transitions: Send + Sync + 'static {
    /// Creates a pending task. With an idempotency key already in use, writes
    /// nothing and returns the existing task (`created: false`).
    async fn create(&self, task: NewTask) -> Result<Created>;

    /// Creates many pending tasks, answering one [`Created`] per task in
    /// order, as [`Transitions::create`] would; the stores write them in
    /// one transaction (all or, on an error, none). The caller gives each
    /// idempotency key at most once.
    async fn create_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Created>> {
        let mut created = Vec::with_capacity(tasks.len());
        for task in tasks {
            created.push(self.create(task).await?);
        }
        Ok(created)
    }

    /// Pending → running, writing `task_started` as seq 1, owned under `lease`.
    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome>;

    /// Starts the due pending tasks of `op` (`run_at` unset or not after
    /// the caller's now), highest `priority` first, FIFO by `created_at`
    /// then id within a priority, as long as fewer than `limit` tasks of
    /// `op` run in the whole store, each like [`Store::start`] with `lease`;
    /// returns the started rows. Concurrent claims never start more than
    /// `limit` in all, and never start one task twice.
    ///
    /// Starting a task whose tape is not empty (a retried task's next
    /// attempt) writes no second `task_started`: it appends a `log` line
    /// `attempt N of M started`; `attempt` counts up, `run_at` is cleared.
    ///
    /// `now` is the caller's clock: what is due is judged by it.
    async fn claim(
        &self,
        op: &str,
        limit: usize,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>> {
        self.claim_some(op, limit, usize::MAX, None, lease, now)
            .await
    }

    /// Like [`Store::claim`], starting at most `take` tasks (a caller with
    /// that many free slots: a task is never running before something
    /// runs it). With `keys` (an op with a flow key) the tasks are taken by
    /// [`ClaimRule`](crate::flow::ClaimRule): keys in turns, from where the
    /// op's last claim left off, within each key by priority then age,
    /// never more than its `key_concurrency` of one key running; a task
    /// without a key is taken when it heads the op's queue. With a rate, no
    /// more starts than its window has room for.
    async fn claim_some(
        &self,
        op: &str,
        limit: usize,
        take: usize,
        keys: Option<&crate::flow::ClaimRule>,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>>;

    /// Appends a `progress`, `log` or `partial` event to a running task and
    /// answers after the commit. Other types: [`StoreError::NotAppendable`].
    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome>;

    /// Queues an append of `body` (borrowed: a caller that retries keeps it)
    /// and returns before it commits; the outcome goes to
    /// `ack`. The event's `ts` is `at` (when the op reported it; the caller
    /// never passes a time earlier than the last it passed for the task).
    /// Queued appends and later calls from the same caller commit in call
    /// order, so a `finish` issued after them lands after them. A write that
    /// fails transiently ([`StoreError::is_transient`]) is retried in order
    /// for [`TRANSIENT_RETRY`] before its error goes to `ack`. The default
    /// awaits [`Store::append`] (stamped when it commits, moments after
    /// `at`); stores with a writer queue override it.
    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        let _ = at;
        let outcome = self.append(task_id, body.clone()).await;
        ack.record(&outcome);
        outcome.map(|_| ())
    }

    /// Makes the task terminal and writes `final`, in one transaction. From
    /// pending the tape is just `final` (or, between attempts of a retried
    /// task, gets its `final`). A task with a cancel request ends
    /// `cancelled` whatever `outcome` says.
    ///
    /// [`Outcome::Retry`] instead makes a running task `pending` again: it
    /// appends the `tasktape.attempt_failed` partial (payload: the row's
    /// `attempt`, the error, `retry_at`), adds the attempt to the row's
    /// history, sets `run_at`, and drops owner and lease
    /// ([`FinishOutcome::Requeued`]). A task that is not running answers
    /// [`FinishOutcome::NotStarted`] (pending) or as for any finish.
    async fn finish(&self, task_id: TaskId, outcome: Outcome) -> Result<FinishOutcome>;

    /// Like [`Store::finish`] for a task whose events were queued through
    /// `ack`: checked after every one of them was processed, a `Succeeded`
    /// outcome becomes `Failed` with `store_error` when one failed to store,
    /// so a task with a hole in its tape never ends `succeeded`. The default
    /// suits stores whose queued appends are awaited.
    async fn finish_reported(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Result<FinishOutcome> {
        self.finish(task_id, outcome_after_events(outcome, &ack))
            .await
    }

    /// Ends a run its owner lost, deciding inside the transition, from the
    /// row it locks, what it becomes: `failed` with `lost.error`, or
    /// another attempt ([`Outcome::Retry`], as [`crate::retry::attempt_outcome`]
    /// says) when the task's retry plan retries it (an idempotent op).
    /// A reap of a peer's run ([`LostRun::expired`]) checks the lease
    /// again inside the transaction. `None` when the task is not running
    /// (or its owner renewed the lease meanwhile).
    async fn reap(&self, task_id: TaskId, lost: LostRun) -> Result<Option<FinishOutcome>>;

    /// Records a cancel request; a pending task is finished `cancelled` at once.
    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome>;

    /// [`Transitions::request_cancel`] for many tasks, written together
    /// (the stores: one transaction); one outcome per id, in order.
    async fn request_cancels(&self, ids: Vec<TaskId>) -> Result<Vec<CancelOutcome>> {
        let mut outcomes = Vec::with_capacity(ids.len());
        for task_id in ids {
            outcomes.push(self.request_cancel(task_id).await?);
        }
        Ok(outcomes)
    }

    /// Extends the lease of every running task `owner` holds; returns how many.
    ///
    /// Lease times: a store that several machines share judges leases by
    /// one clock of its own (PostgreSQL: the database's), reading a lease's
    /// `until` as "`until` minus the caller's now, from the store's now" and
    /// ignoring the `now` given to [`Store::expired`] and [`Store::reap`];
    /// so an instance whose clock is off neither loses its tasks nor reaps
    /// its peers'. A store one process owns (SQLite) uses the times given.
    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64>;

    /// Deletes a terminal task: its row at once (it is gone from every
    /// read), its tape by [`Store::sweep`] later, so that deleting a tape of
    /// millions of events never holds other writes up.
    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome>;
}

/// What callers read: rows, pages, counters, tapes, and what the engine
/// looks up to schedule (due times, keys, leases, pending ops).
#[async_trait]
pub trait Reads: Send + Sync + 'static {
    /// One row.
    async fn get(&self, task_id: TaskId) -> Result<Option<Task>>;

    /// One page of rows in `(created_at DESC, task_id ASC)` order.
    async fn list(&self, query: ListQuery) -> Result<ListPage>;

    /// Tasks per status, from counters the store keeps in the same
    /// transactions as the rows (no scan of the tasks).
    async fn counts(&self) -> Result<StatusCounts>;

    /// Tasks that ended per minute and terminal status, for the minutes
    /// starting at or after `since` (the store keeps the last 24 hours).
    async fn finished_per_minute(&self, since: Timestamp) -> Result<Vec<MinuteCount>>;

    /// Events with seq ≥ `from_seq`, at most `limit`, with the row status and
    /// last seq of the same snapshot; `None` for an unknown task.
    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>>;

    /// The tape's highest seq (0 when empty); `None` for an unknown task.
    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>>;

    /// Bytes of the JSON of the tape's events (0 for an unknown task). Read
    /// when a retried task starts again, since a tape's size cap counts
    /// every attempt's events; reads the tape in pages.
    async fn tape_bytes(&self, task_id: TaskId) -> Result<u64> {
        let (mut from, mut bytes) = (1, 0);
        while let Some(page) = self.events(task_id, from, 1000).await? {
            let Some(last) = page.events.last() else {
                break;
            };
            from = last.seq + 1;
            bytes += page
                .events
                .iter()
                .map(|event| event.json.len() as u64)
                .sum::<u64>();
        }
        Ok(bytes)
    }

    /// The earliest `run_at` after `after` of a pending task of `op`;
    /// `None` when there is none. The manager sleeps until then (tasks due
    /// already are the claim's).
    async fn next_due(&self, op: &str, after: Timestamp) -> Result<Option<Timestamp>>;

    /// The starts recorded for `op`'s rate (flow control; every key's)
    /// after `since`: how many, and the oldest.
    async fn rate_window(&self, op: &str, since: Timestamp) -> Result<(u64, Option<Timestamp>)>;

    /// The greatest idempotency key starting with `prefix`, if any (the
    /// schedules' last slot: `schedule:<name>:<slot>`).
    async fn latest_key(&self, prefix: &str) -> Result<Option<String>>;

    /// Running tasks whose lease ended before `now`, except `exclude_owner`'s.
    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>>;

    /// Running tasks held by `owner` (an instance's leftovers at start-up).
    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>>;

    /// The ops that have pending tasks, with how many (from indexes: no
    /// row is read, so a start-up with many pending tasks stays cheap).
    async fn pending_ops(&self) -> Result<Vec<(String, u64)>>;
}

/// Deleting old finished tasks and sweeping deleted tapes, in small
/// batches.
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Deletes up to `limit` terminal tasks that finished before
    /// `finished_before` (oldest first) like [`Store::delete`]; returns how
    /// many. Retention calls it in small batches.
    async fn purge(&self, finished_before: Timestamp, limit: usize) -> Result<u64>;

    /// Deletes up to `limit` events of deleted tasks' tapes, in one short
    /// transaction; returns how many (0: nothing is left to sweep).
    async fn sweep(&self, limit: usize) -> Result<u64>;
}
