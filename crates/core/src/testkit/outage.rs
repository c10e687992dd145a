//! A store wrapper that plays an outage: for a set time every write of a
//! running task (its events, its finish) and every lease renewal fails with
//! [`StoreError::Unavailable`], as a restarting database would answer; all
//! else passes through. For tests of what survives a store outage. It can
//! also hold back claims' answers (a slow network or database: the claim
//! committed, its answer not yet back).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::event::EventBody;
use crate::model::{NewTask, Outcome, Task, TaskId};
use crate::store::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease,
    ListPage, ListQuery, LostRun, MinuteCount, Result, StartOutcome, StatusCounts, Store,
    StoreError, StoreSignal, TapePage,
};
use crate::time::Timestamp;
use crate::wake::WakeHub;

/// `inner`, with task writes failing while an outage lasts.
pub struct FlakyStore {
    inner: Arc<dyn Store>,
    down_until: Mutex<Option<Instant>>,
    refused: std::sync::atomic::AtomicU64,
    claim_delay: Mutex<Duration>,
}

impl FlakyStore {
    /// Wraps `inner` (up, until [`FlakyStore::fail_for`]).
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FlakyStore {
            inner,
            down_until: Mutex::new(None),
            refused: Default::default(),
            claim_delay: Mutex::new(Duration::ZERO),
        }
    }

    /// Holds back every claim's answer for `delay` after the claim was
    /// carried out in the store.
    pub fn delay_claim_answers(&self, delay: Duration) {
        *self.claim_delay.lock().unwrap() = delay;
    }

    /// Fails task writes and lease renewals from now for `outage`.
    pub fn fail_for(&self, outage: Duration) {
        *self.down_until.lock().unwrap() = Some(Instant::now() + outage);
    }

    /// How many calls the outage refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn check(&self) -> Result<()> {
        match *self.down_until.lock().unwrap() {
            Some(until) if Instant::now() < until => {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(StoreError::Unavailable {
                    message: "the test's outage".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn wake_hub(&self) -> &Arc<WakeHub> {
        self.inner.wake_hub()
    }

    async fn guard_instance(&self, instance_id: &str) -> Result<()> {
        self.inner.guard_instance(instance_id).await
    }

    async fn create(&self, task: NewTask) -> Result<Created> {
        self.inner.create(task).await
    }

    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome> {
        self.inner.start(task_id, lease).await
    }

    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome> {
        self.check()?;
        self.inner.append(task_id, body).await
    }

    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        self.check()?;
        self.inner.append_queued(task_id, body, at, ack).await
    }

    async fn finish(&self, task_id: TaskId, outcome: Outcome) -> Result<FinishOutcome> {
        self.check()?;
        self.inner.finish(task_id, outcome).await
    }

    async fn finish_reported(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Result<FinishOutcome> {
        self.check()?;
        self.inner.finish_reported(task_id, outcome, ack).await
    }

    async fn reap(&self, task_id: TaskId, lost: LostRun) -> Result<Option<FinishOutcome>> {
        self.inner.reap(task_id, lost).await
    }

    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome> {
        self.inner.request_cancel(task_id).await
    }

    async fn get(&self, task_id: TaskId) -> Result<Option<Task>> {
        self.inner.get(task_id).await
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage> {
        self.inner.list(query).await
    }

    async fn counts(&self) -> Result<StatusCounts> {
        self.inner.counts().await
    }

    async fn finished_per_minute(&self, since: Timestamp) -> Result<Vec<MinuteCount>> {
        self.inner.finished_per_minute(since).await
    }

    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>> {
        self.inner.events(task_id, from_seq, limit).await
    }

    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>> {
        self.inner.last_seq(task_id).await
    }

    async fn claim(
        &self,
        op: &str,
        limit: usize,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>> {
        let claimed = self.inner.claim(op, limit, lease, now).await;
        let delay = *self.claim_delay.lock().unwrap();
        if !delay.is_zero() && claimed.as_ref().is_ok_and(|tasks| !tasks.is_empty()) {
            tokio::time::sleep(delay).await;
        }
        claimed
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn signals(&self) -> Option<broadcast::Receiver<StoreSignal>> {
        self.inner.signals()
    }

    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64> {
        self.check()?;
        self.inner.renew_lease(owner, until).await
    }

    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>> {
        self.inner.expired(now, exclude_owner).await
    }

    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>> {
        self.inner.leftovers(owner).await
    }

    async fn pending_ops(&self) -> Result<Vec<(String, u64)>> {
        self.inner.pending_ops().await
    }

    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome> {
        self.inner.delete(task_id).await
    }

    async fn purge(&self, finished_before: Timestamp, limit: usize) -> Result<u64> {
        self.inner.purge(finished_before, limit).await
    }

    async fn sweep(&self, limit: usize) -> Result<u64> {
        self.inner.sweep(limit).await
    }

    async fn next_due(&self, op: &str, after: Timestamp) -> Result<Option<Timestamp>> {
        self.inner.next_due(op, after).await
    }

    async fn latest_key(&self, prefix: &str) -> Result<Option<String>> {
        self.inner.latest_key(prefix).await
    }

    async fn check_schema(&self) -> Result<()> {
        self.inner.check_schema().await
    }
}
