//! A [`Store`] wrapper that times every operation into [`Metrics`] and
//! counts appended events. The manager wraps the store it is given, so the
//! server's reads are timed too.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::event::EventBody;
use crate::metrics::{Metrics, StoreOperation};
use crate::model::{NewTask, Outcome, Task, TaskId};
use crate::store::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease,
    ListPage, ListQuery, LostRun, MinuteCount, Result, StartOutcome, StatusCounts, Store,
    StoreSignal, TapePage,
};
use crate::time::Timestamp;
use crate::wake::WakeHub;

/// Times `inner`'s operations into `metrics`.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    async fn timed<T>(&self, operation: StoreOperation, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.metrics.store[operation as usize].observe(started.elapsed());
        out
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ready(&self) -> Result<()> {
        self.timed(StoreOperation::Ready, self.inner.ready()).await
    }

    fn wake_hub(&self) -> &Arc<WakeHub> {
        self.inner.wake_hub()
    }

    async fn guard_instance(&self, instance_id: &str) -> Result<()> {
        self.inner.guard_instance(instance_id).await
    }

    async fn create(&self, task: NewTask) -> Result<Created> {
        self.timed(StoreOperation::Create, self.inner.create(task))
            .await
    }

    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome> {
        self.timed(StoreOperation::Start, self.inner.start(task_id, lease))
            .await
    }

    async fn claim(
        &self,
        op: &str,
        limit: usize,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>> {
        self.timed(
            StoreOperation::Claim,
            self.inner.claim(op, limit, lease, now),
        )
        .await
    }

    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome> {
        let outcome = self
            .timed(StoreOperation::Append, self.inner.append(task_id, body))
            .await;
        if let Ok(AppendOutcome::Appended { .. }) = outcome {
            self.metrics.events_appended.inc();
        }
        outcome
    }

    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        // Counted when it lands, not when it is queued.
        ack.count_into(&self.metrics.events_appended);
        self.timed(
            StoreOperation::AppendQueued,
            self.inner.append_queued(task_id, body, at, ack),
        )
        .await
    }

    async fn finish(&self, task_id: TaskId, outcome: Outcome) -> Result<FinishOutcome> {
        self.timed(StoreOperation::Finish, self.inner.finish(task_id, outcome))
            .await
    }

    async fn finish_reported(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Result<FinishOutcome> {
        self.timed(
            StoreOperation::Finish,
            self.inner.finish_reported(task_id, outcome, ack),
        )
        .await
    }

    async fn reap(&self, task_id: TaskId, lost: LostRun) -> Result<Option<FinishOutcome>> {
        self.timed(StoreOperation::Reap, self.inner.reap(task_id, lost))
            .await
    }

    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome> {
        self.timed(
            StoreOperation::RequestCancel,
            self.inner.request_cancel(task_id),
        )
        .await
    }

    async fn get(&self, task_id: TaskId) -> Result<Option<Task>> {
        self.timed(StoreOperation::Get, self.inner.get(task_id))
            .await
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage> {
        self.timed(StoreOperation::List, self.inner.list(query))
            .await
    }

    async fn counts(&self) -> Result<StatusCounts> {
        self.timed(StoreOperation::Counts, self.inner.counts())
            .await
    }

    async fn finished_per_minute(&self, since: Timestamp) -> Result<Vec<MinuteCount>> {
        self.timed(
            StoreOperation::FinishedPerMinute,
            self.inner.finished_per_minute(since),
        )
        .await
    }

    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>> {
        self.timed(
            StoreOperation::Events,
            self.inner.events(task_id, from_seq, limit),
        )
        .await
    }

    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>> {
        self.timed(StoreOperation::LastSeq, self.inner.last_seq(task_id))
            .await
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn signals(&self) -> Option<broadcast::Receiver<StoreSignal>> {
        self.inner.signals()
    }

    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64> {
        self.timed(
            StoreOperation::RenewLease,
            self.inner.renew_lease(owner, until),
        )
        .await
    }

    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>> {
        self.timed(
            StoreOperation::Expired,
            self.inner.expired(now, exclude_owner),
        )
        .await
    }

    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>> {
        self.timed(StoreOperation::Leftovers, self.inner.leftovers(owner))
            .await
    }

    async fn pending_ops(&self) -> Result<Vec<(String, u64)>> {
        self.timed(StoreOperation::Pending, self.inner.pending_ops())
            .await
    }

    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome> {
        self.timed(StoreOperation::Delete, self.inner.delete(task_id))
            .await
    }

    async fn purge(&self, finished_before: Timestamp, limit: usize) -> Result<u64> {
        self.timed(
            StoreOperation::Purge,
            self.inner.purge(finished_before, limit),
        )
        .await
    }

    async fn sweep(&self, limit: usize) -> Result<u64> {
        self.timed(StoreOperation::Sweep, self.inner.sweep(limit))
            .await
    }

    async fn next_due(&self, op: &str, after: Timestamp) -> Result<Option<Timestamp>> {
        self.timed(StoreOperation::NextDue, self.inner.next_due(op, after))
            .await
    }

    async fn latest_key(&self, prefix: &str) -> Result<Option<String>> {
        self.timed(StoreOperation::LatestKey, self.inner.latest_key(prefix))
            .await
    }

    async fn check_schema(&self) -> Result<()> {
        self.timed(StoreOperation::CheckSchema, self.inner.check_schema())
            .await
    }
}
