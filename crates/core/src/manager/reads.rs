//! What callers of the manager read and the few store operations they may
//! ask for directly (delete, readiness). The server and embedders go
//! through these; nothing outside the manager holds the store.

use std::time::Duration;

use super::Manager;
use crate::follow::{StoredPage, events_page};
use crate::model::{Task, TaskId};
use crate::store::{DeleteOutcome, ListPage, ListQuery, StatusCounts, StoreError, TapePage};
use crate::wake::Watch;

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
    /// [`crate::follow::events_page`]). `None` for an unknown task.
    pub async fn events_page(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Option<StoredPage>, StoreError> {
        events_page(&*self.inner.store, task_id, from_seq, limit, wait).await
    }

    /// Up to `limit` events from `from_seq`, with the row's status and the
    /// tape's last seq, from one snapshot. `None` for an unknown task.
    pub async fn tape(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>, StoreError> {
        self.inner.store.events(task_id, from_seq, limit).await
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

    /// Deletes a finished task and its tape.
    pub async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome, StoreError> {
        let outcome = self.inner.store.delete(task_id).await?;
        if outcome == DeleteOutcome::Deleted {
            // The row is gone; its tape is swept in the background.
            self.inner.sweep_wanted.notify_one();
        }
        Ok(outcome)
    }

    /// Whether the store answers (the readiness probe).
    pub async fn ready(&self) -> Result<(), StoreError> {
        if let Some(outdated) = self.state().outdated.clone() {
            return Err(outdated);
        }
        self.inner.store.ready().await
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
