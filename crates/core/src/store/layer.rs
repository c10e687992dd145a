//! Wrappers around a store without a copy of its contract: a
//! [`StoreLayer`] says what it adds around operations (time them, refuse
//! them for an outage, hold an answer back), and [`Layered`] forwards every
//! operation of the four store traits through it. A new store operation is
//! one line here, not one in each wrapper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    AppendAck, AppendOutcome, CancelOutcome, Coordination, Created, DeleteOutcome, FinishOutcome,
    Lease, ListPage, ListQuery, LostRun, Maintenance, MinuteCount, Reads, Result, StartOutcome,
    StatusCounts, Store, StoreSignal, TapePage, Transitions,
};
use crate::event::EventBody;
use crate::metrics::StoreOperation;
use crate::model::{NewTask, Outcome, Task, TaskId};
use crate::time::Timestamp;
use crate::wake::WakeHub;

/// What a layer learns of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An awaited append committed.
    Appended,
    /// A claim started this many tasks.
    Claimed(usize),
    /// Anything else (an error included).
    Other,
}

/// What a wrapper adds around the operations it forwards.
pub trait StoreLayer: Send + Sync + 'static {
    /// Before `operation` reaches the inner store (`ack`: a queued
    /// append's); an error answers the call instead.
    fn admit(&self, operation: StoreOperation, ack: Option<&Arc<AppendAck>>) -> Result<()> {
        let _ = (operation, ack);
        Ok(())
    }

    /// After the inner store answered `operation`, `elapsed` after it was
    /// admitted; returns how long to hold the answer back (zero: not at
    /// all).
    fn answered(&self, operation: StoreOperation, elapsed: Duration, answer: Answer) -> Duration {
        let _ = (operation, elapsed, answer);
        Duration::ZERO
    }
}

/// `inner` with `layer` around each of its operations.
pub struct Layered<L> {
    inner: Arc<dyn Store>,
    layer: L,
}

impl<L: StoreLayer> Layered<L> {
    /// Wraps `inner` in `layer`.
    pub fn wrap(inner: Arc<dyn Store>, layer: L) -> Self {
        Layered { inner, layer }
    }

    /// The layer.
    pub fn layer(&self) -> &L {
        &self.layer
    }

    async fn through<T>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.seen(operation, None, call, |_| Answer::Other).await
    }

    async fn seen<T>(
        &self,
        operation: StoreOperation,
        ack: Option<&Arc<AppendAck>>,
        call: impl Future<Output = Result<T>>,
        answer: impl FnOnce(&Result<T>) -> Answer,
    ) -> Result<T> {
        self.layer.admit(operation, ack)?;
        let started = Instant::now();
        let out = call.await;
        let hold = self
            .layer
            .answered(operation, started.elapsed(), answer(&out));
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        out
    }
}

#[async_trait]
impl<L: StoreLayer> Coordination for Layered<L> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ready(&self) -> Result<()> {
        self.through(StoreOperation::Ready, self.inner.ready())
            .await
    }

    fn wake_hub(&self) -> &Arc<WakeHub> {
        self.inner.wake_hub()
    }

    async fn guard_instance(&self, instance_id: &str) -> Result<()> {
        self.inner.guard_instance(instance_id).await
    }

    async fn check_schema(&self) -> Result<()> {
        let call = self.inner.check_schema();
        self.through(StoreOperation::CheckSchema, call).await
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    async fn records(&self, kind: &str) -> Result<Vec<(String, String)>> {
        self.inner.records(kind).await
    }

    async fn swap_record(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<bool> {
        self.inner.swap_record(kind, key, expected, value).await
    }

    fn signals(&self) -> Option<broadcast::Receiver<StoreSignal>> {
        self.inner.signals()
    }
}

#[async_trait]
impl<L: StoreLayer> Transitions for Layered<L> {
    async fn create(&self, task: NewTask) -> Result<Created> {
        self.through(StoreOperation::Create, self.inner.create(task))
            .await
    }

    async fn request_cancels(&self, ids: Vec<TaskId>) -> Result<Vec<CancelOutcome>> {
        self.through(
            StoreOperation::RequestCancel,
            self.inner.request_cancels(ids),
        )
        .await
    }

    async fn create_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Created>> {
        self.through(StoreOperation::Create, self.inner.create_many(tasks))
            .await
    }

    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome> {
        let call = self.inner.start(task_id, lease);
        self.through(StoreOperation::Start, call).await
    }

    async fn claim_some(
        &self,
        op: &str,
        limit: usize,
        take: usize,
        keys: Option<&crate::flow::ClaimRule>,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>> {
        let call = self.inner.claim_some(op, limit, take, keys, lease, now);
        self.seen(StoreOperation::Claim, None, call, |claimed| {
            Answer::Claimed(claimed.as_ref().map_or(0, Vec::len))
        })
        .await
    }

    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome> {
        let call = self.inner.append(task_id, body);
        self.seen(
            StoreOperation::Append,
            None,
            call,
            |outcome| match outcome {
                Ok(AppendOutcome::Appended { .. }) => Answer::Appended,
                _ => Answer::Other,
            },
        )
        .await
    }

    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        let admitted = Arc::clone(&ack);
        let call = self.inner.append_queued(task_id, body, at, ack);
        self.seen(StoreOperation::AppendQueued, Some(&admitted), call, |_| {
            Answer::Other
        })
        .await
    }

    async fn finish(&self, task_id: TaskId, outcome: Outcome) -> Result<FinishOutcome> {
        let call = self.inner.finish(task_id, outcome);
        self.through(StoreOperation::Finish, call).await
    }

    async fn finish_reported(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Result<FinishOutcome> {
        let call = self.inner.finish_reported(task_id, outcome, ack);
        self.through(StoreOperation::Finish, call).await
    }

    async fn reap(&self, task_id: TaskId, lost: LostRun) -> Result<Option<FinishOutcome>> {
        self.through(StoreOperation::Reap, self.inner.reap(task_id, lost))
            .await
    }

    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome> {
        let call = self.inner.request_cancel(task_id);
        self.through(StoreOperation::RequestCancel, call).await
    }

    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64> {
        let call = self.inner.renew_lease(owner, until);
        self.through(StoreOperation::RenewLease, call).await
    }

    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome> {
        self.through(StoreOperation::Delete, self.inner.delete(task_id))
            .await
    }
}

#[async_trait]
impl<L: StoreLayer> Reads for Layered<L> {
    async fn get(&self, task_id: TaskId) -> Result<Option<Task>> {
        self.through(StoreOperation::Get, self.inner.get(task_id))
            .await
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage> {
        self.through(StoreOperation::List, self.inner.list(query))
            .await
    }

    async fn counts(&self) -> Result<StatusCounts> {
        self.through(StoreOperation::Counts, self.inner.counts())
            .await
    }

    async fn finished_per_minute(&self, since: Timestamp) -> Result<Vec<MinuteCount>> {
        let call = self.inner.finished_per_minute(since);
        self.through(StoreOperation::FinishedPerMinute, call).await
    }

    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>> {
        let call = self.inner.events(task_id, from_seq, limit);
        self.through(StoreOperation::Events, call).await
    }

    async fn tape_bytes(&self, task_id: TaskId) -> Result<u64> {
        self.through(StoreOperation::Events, self.inner.tape_bytes(task_id))
            .await
    }

    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>> {
        self.through(StoreOperation::LastSeq, self.inner.last_seq(task_id))
            .await
    }

    async fn next_due(&self, op: &str, after: Timestamp) -> Result<Option<Timestamp>> {
        let call = self.inner.next_due(op, after);
        self.through(StoreOperation::NextDue, call).await
    }

    async fn rate_window(&self, op: &str, since: Timestamp) -> Result<(u64, Option<Timestamp>)> {
        let call = self.inner.rate_window(op, since);
        self.through(StoreOperation::NextDue, call).await
    }

    async fn latest_key(&self, prefix: &str) -> Result<Option<String>> {
        let call = self.inner.latest_key(prefix);
        self.through(StoreOperation::LatestKey, call).await
    }

    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>> {
        let call = self.inner.expired(now, exclude_owner);
        self.through(StoreOperation::Expired, call).await
    }

    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>> {
        let call = self.inner.leftovers(owner);
        self.through(StoreOperation::Leftovers, call).await
    }

    async fn pending_ops(&self) -> Result<Vec<(String, u64)>> {
        self.through(StoreOperation::Pending, self.inner.pending_ops())
            .await
    }
}

#[async_trait]
impl<L: StoreLayer> Maintenance for Layered<L> {
    async fn purge(&self, finished_before: Timestamp, limit: usize) -> Result<u64> {
        let call = self.inner.purge(finished_before, limit);
        self.through(StoreOperation::Purge, call).await
    }

    async fn sweep(&self, limit: usize) -> Result<u64> {
        self.through(StoreOperation::Sweep, self.inner.sweep(limit))
            .await
    }
}
