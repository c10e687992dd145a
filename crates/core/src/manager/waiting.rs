//! [`TaskEvents`]: a typed, resumable read of a tape that follows it live
//! until `final` ([`super::Manager::events`]), on the core [`Follower`].

use std::collections::VecDeque;

use crate::event::{Event, EventKind};
use crate::follow::Follower;
use crate::model::TaskId;
use crate::store::StoreError;

/// Events read per page by [`TaskEvents`].
pub(super) const PAGE: usize = 1000;

/// A task's tape as typed events, from [`super::Manager::events`].
pub struct TaskEvents {
    pub(super) follower: Follower,
    pub(super) task_id: TaskId,
    pub(super) buffered: VecDeque<Event>,
    pub(super) done: bool,
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
                if event.body.kind() == EventKind::Final {
                    self.done = true;
                    self.buffered.clear();
                }
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let events = match self.follower.next_events(PAGE).await {
                Ok(Some(events)) => events,
                Ok(None) => {
                    self.done = true;
                    return Some(Err(FollowError::NotFound(self.task_id)));
                }
                Err(error) => return Some(Err(error.into())),
            };
            if events.is_empty() {
                // Started past the final event: nothing more will come.
                self.done = true;
            }
            for stored in &events {
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
        }
    }
}
