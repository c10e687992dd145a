//! Waiting in-process: [`Manager::wait`] for a task's end and
//! [`Manager::events`], a typed, resumable read of its tape that follows it
//! live until `final`. Both are built on the store's snapshot reads and the
//! wake hub, like the HTTP long-poll; no HTTP involved.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Manager;
use crate::event::Event;
use crate::follow::{MAX_WAIT, events_page};
use crate::model::{Task, TaskId};
use crate::store::{Store, StoreError};

/// Events read per page by [`TaskEvents`].
const PAGE: usize = 1000;

impl Manager {
    /// Waits until the task is terminal or `timeout` elapses, and returns its
    /// row as it then is (check `status.is_terminal()` to tell the two
    /// apart). `None` for an unknown task.
    pub async fn wait(
        &self,
        task_id: TaskId,
        timeout: Duration,
    ) -> Result<Option<Task>, StoreError> {
        let store = &*self.inner.store;
        let deadline = Instant::now() + timeout;
        let mut from_seq = 1;
        loop {
            let now = Instant::now();
            // The long-poll's own wait: returns at the next event (`final`
            // included) or when the wait elapses.
            let wait = deadline.saturating_duration_since(now).min(MAX_WAIT);
            let Some(page) = events_page(store, task_id, from_seq, PAGE, wait).await? else {
                return Ok(None);
            };
            from_seq = page.next_from_seq;
            if page.task_status.is_terminal() || Instant::now() >= deadline {
                return store.get(task_id).await;
            }
        }
    }

    /// The task's tape from `from_seq` (1 = the start), followed live: each
    /// event once, in seq order, ending after `final`.
    pub fn events(&self, task_id: TaskId, from_seq: u64) -> TaskEvents {
        TaskEvents {
            store: Arc::clone(&self.inner.store),
            task_id,
            next_seq: from_seq.max(1),
            buffered: VecDeque::new(),
            done: false,
        }
    }
}

/// A task's tape as typed events, from [`Manager::events`].
pub struct TaskEvents {
    store: Arc<dyn Store>,
    task_id: TaskId,
    next_seq: u64,
    buffered: VecDeque<Event>,
    done: bool,
}

/// Why [`TaskEvents::next`] could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// No such task (or it was deleted while followed).
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The store failed; calling `next` again retries from the same seq.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event did not decode.
    #[error("event {seq} of task {task_id} is not valid JSON: {message}")]
    Corrupt {
        /// The task.
        task_id: TaskId,
        /// The event's seq.
        seq: u64,
        /// What the decoder said.
        message: String,
    },
}

impl TaskEvents {
    /// The next event, waiting for it if the task is still live; `None`
    /// after `final` has been handed out.
    pub async fn next(&mut self) -> Option<Result<Event, FollowError>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                if event.body.kind() == crate::event::EventKind::Final {
                    self.done = true;
                    self.buffered.clear();
                }
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let page = match events_page(&*self.store, self.task_id, self.next_seq, PAGE, MAX_WAIT)
                .await
            {
                Ok(Some(page)) => page,
                Ok(None) => {
                    self.done = true;
                    return Some(Err(FollowError::NotFound(self.task_id)));
                }
                Err(error) => return Some(Err(error.into())),
            };
            for stored in &page.events {
                match stored.decode() {
                    Ok(event) => self.buffered.push_back(event),
                    Err(error) => {
                        return Some(Err(FollowError::Corrupt {
                            task_id: self.task_id,
                            seq: stored.seq,
                            message: error.to_string(),
                        }));
                    }
                }
            }
            self.next_seq = page.next_from_seq;
            if page.events.is_empty() && page.task_status.is_terminal() {
                // Started past the final event: nothing more will come.
                self.done = true;
            }
        }
    }
}
