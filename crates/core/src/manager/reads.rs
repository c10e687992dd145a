//! What callers of the manager read and wait for, and the few store
//! operations they may ask for directly (delete, readiness, a retention
//! pass). The server and embedders go through these; nothing outside the
//! manager holds the store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::waiting::PAGE;
use super::{Manager, TaskEvents};
use crate::follow::{Follower, MAX_WAIT, StoredPage, events_page};
use crate::model::{Task, TaskId};
use crate::store::{DeleteOutcome, ListPage, ListQuery, StatusCounts, StoreError};
use crate::wake::Watch;
use tasktape_wire::jobs::ScheduleInfo;

/// Whether this instance should get traffic (`GET /v1/readyz`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Ready.
    Ready,
    /// Draining for shutdown: running tasks finish, no new ones start.
    Draining,
    /// A newer tasktape migrated the store: this instance claims nothing.
    Outdated(String),
    /// The store does not answer.
    StoreUnavailable(String),
}

impl Manager {
    /// One task's row.
    pub async fn get(&self, task_id: TaskId) -> Result<Option<Task>, StoreError> {
        self.inner.store.get(task_id).await
    }

    /// A page of rows.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, StoreError> {
        self.inner.store.list(query).await
    }

    /// Tasks per status, in the whole store.
    pub async fn counts(&self) -> Result<StatusCounts, StoreError> {
        self.inner.store.counts().await
    }

    /// Tasks ended per minute and status since `since` (the last 24 hours
    /// are kept).
    pub async fn finished_per_minute(
        &self,
        since: crate::time::Timestamp,
    ) -> Result<Vec<crate::store::MinuteCount>, StoreError> {
        self.inner.store.finished_per_minute(since).await
    }

    /// WIRE.md's events page, with the long-poll `wait` (see
    /// [`Follower::page`]). `None` for an unknown task.
    pub async fn events_page(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Option<StoredPage>, StoreError> {
        events_page(&*self.inner.store, task_id, from_seq, limit, wait).await
    }

    /// A follower of the task's tape from `from_seq` (what SSE streams).
    pub fn follower(&self, task_id: TaskId, from_seq: u64) -> Follower {
        Follower::new(Arc::clone(&self.inner.store), task_id, from_seq)
    }

    /// The tape's highest seq (0 when empty); `None` for an unknown task.
    pub async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>, StoreError> {
        self.inner.store.last_seq(task_id).await
    }

    /// Starts watching a task's commits. Register before reading, so that
    /// no commit falls between the read and the wait.
    pub fn watch(&self, task_id: TaskId) -> Watch {
        self.inner.store.wake_hub().watch(task_id)
    }

    /// Waits until the task is terminal or `timeout` elapses, and returns its
    /// row as it then is (check `status.is_terminal()` to tell the two
    /// apart). `None` for an unknown task.
    pub async fn wait(
        &self,
        task_id: TaskId,
        timeout: Duration,
    ) -> Result<Option<Task>, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut follower = self.follower(task_id, 1);
        loop {
            // The long-poll's own wait: returns at the next event (`final`
            // included) or when the wait elapses.
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(MAX_WAIT);
            let Some(page) = follower.page(PAGE, wait).await? else {
                return Ok(None);
            };
            if page.task_status.is_terminal() || Instant::now() >= deadline {
                return self.inner.store.get(task_id).await;
            }
        }
    }

    /// The task's tape from `from_seq` (1 = the start), followed live: each
    /// event once, in seq order, ending after `final`.
    pub fn events(&self, task_id: TaskId, from_seq: u64) -> TaskEvents {
        TaskEvents {
            follower: self.follower(task_id, from_seq.max(1)),
            task_id,
            buffered: VecDeque::new(),
            done: false,
        }
    }

    /// Deletes a finished task and its tape.
    pub async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome, StoreError> {
        let outcome = self.inner.store.delete(task_id).await?;
        if outcome == DeleteOutcome::Deleted {
            // The row is gone; its tape is swept in the background.
            self.inner.retention.sweep_wanted.notify_one();
        }
        Ok(outcome)
    }

    /// Deletes finished tasks past retention and sweeps deleted tapes, batch
    /// by batch, until none is left (or the store fails: next time then).
    pub async fn retain_once(&self) {
        self.inner.retention.once().await;
    }

    /// The schedules with their last and next slots (`GET /v1/schedules`).
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.inner.scheduler.infos().await
    }

    /// Whether this instance should get traffic: not draining, not
    /// outdated, and its store answers within `within`.
    pub async fn readiness(&self, within: Duration) -> Readiness {
        if self.is_draining() {
            return Readiness::Draining;
        }
        if let Some(outdated) = self.inner.leases.outdated() {
            return Readiness::Outdated(outdated.to_string());
        }
        match tokio::time::timeout(within, self.inner.store.ready()).await {
            Ok(Ok(())) => Readiness::Ready,
            Ok(Err(error @ StoreError::SchemaTooNew { .. })) => {
                Readiness::Outdated(error.to_string())
            }
            Ok(Err(error)) => Readiness::StoreUnavailable(error.to_string()),
            Err(_) => Readiness::StoreUnavailable(format!(
                "the store did not answer within {} s",
                within.as_secs()
            )),
        }
    }

    /// The store's kind (`sqlite`, `postgres`), for `/v1/info`.
    pub fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// How many tasks have followers waiting on this instance.
    pub fn watched_tasks(&self) -> usize {
        self.inner.store.wake_hub().watched_tasks()
    }
}
