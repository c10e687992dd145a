//! Following a tape: the one [`Follower`] that the HTTP long-poll, SSE,
//! [`crate::Manager::wait`] and [`crate::Manager::events`] all use. It
//! reads the store's snapshot pages from a seq, hands each event out once,
//! in order, waits on the wake hub (no polling) while the task is live,
//! and is done after `final`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::event::StoredEvent;
use crate::model::{Status, TaskId};
use crate::store::{Result, Store};
use crate::wake::Watch;

/// The longest `wait` a follower may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// WIRE.md's events page, holding the stored event texts (the server
/// splices them into its response; `tasktape-wire`'s `EventsPage` is the
/// typed shape a client reads).
#[derive(Clone, Debug)]
pub struct StoredPage {
    /// The task.
    pub task_id: TaskId,
    /// The row's status at the read.
    pub task_status: Status,
    /// Events with seq ≥ `from_seq`, ascending.
    pub events: Vec<StoredEvent>,
    /// Last returned seq + 1, or `from_seq` when none were returned.
    pub next_from_seq: u64,
    /// Whether the tape has events past this page.
    pub has_more: bool,
    /// The tape's highest seq (0 if empty).
    pub last_seq: u64,
}

/// Follows one task's tape from a seq.
pub struct Follower {
    store: Arc<dyn Store>,
    task_id: TaskId,
    next: u64,
    /// Registered before the first read that may wait, so no commit falls
    /// between a read and its wait.
    watch: Option<Watch>,
    done: bool,
}

impl Follower {
    /// A follower of `task_id`'s tape from `from_seq`.
    pub fn new(store: Arc<dyn Store>, task_id: TaskId, from_seq: u64) -> Self {
        Follower {
            store,
            task_id,
            next: from_seq,
            watch: None,
            done: false,
        }
    }

    /// Watches the task from now on (before any read), as a follower that
    /// will wait does; [`Follower::page`] does it by itself when it waits.
    pub fn watching(mut self) -> Self {
        self.watch = Some(self.store.wake_hub().watch(self.task_id));
        self
    }

    /// One events page from the next seq. With a non-zero `wait` (capped
    /// at [`MAX_WAIT`]), when the page would be empty and the task is not
    /// terminal, holds until a new event commits or the wait elapses.
    /// `None` for an unknown task. Cancel-safe: the follower moves on only
    /// when a page is returned.
    pub async fn page(&mut self, limit: usize, wait: Duration) -> Result<Option<StoredPage>> {
        if !wait.is_zero() && self.watch.is_none() {
            self.watch = Some(self.store.wake_hub().watch(self.task_id));
        }
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let from_seq = self.next;
        loop {
            let Some(tape) = self.store.events(self.task_id, from_seq, limit).await? else {
                return Ok(None);
            };
            let settled = !tape.events.is_empty() || tape.status.is_terminal();
            let page = make_page(
                self.task_id,
                from_seq,
                tape.status,
                tape.events,
                tape.last_seq,
            );
            let waiting = !settled && !wait.is_zero();
            // Any new event (a `final` below `from_seq` included) re-reads the page.
            if waiting
                && let Some(watch) = &self.watch
                && watch.wait_past(page.last_seq, deadline).await
            {
                continue;
            }
            self.next = page.next_from_seq;
            self.done = page.events.last().is_some_and(StoredEvent::is_final)
                || (page.events.is_empty() && page.task_status.is_terminal());
            return Ok(Some(page));
        }
    }

    /// The next events to hand out, waiting for them as long as the task
    /// is live (re-reading after a quiet half-minute, in case a wake-up was
    /// missed); `Ok(Some(empty))` once the tape ended, `None` for an
    /// unknown (or deleted) task.
    pub async fn next_events(&mut self, limit: usize) -> Result<Option<Vec<StoredEvent>>> {
        loop {
            if self.done {
                return Ok(Some(Vec::new()));
            }
            let Some(page) = self.page(limit, Duration::from_secs(30)).await? else {
                return Ok(None);
            };
            if !page.events.is_empty() || self.done {
                return Ok(Some(page.events));
            }
        }
    }
}

/// Reads one events page from `from_seq`, waiting up to `wait` (see
/// [`Follower::page`]). `None` for an unknown task.
#[tracing::instrument(
    name = "events_page",
    level = "debug",
    skip(store),
    err(level = "debug")
)]
pub async fn events_page(
    store: Arc<dyn Store>,
    task_id: TaskId,
    from_seq: u64,
    limit: usize,
    wait: Duration,
) -> Result<Option<StoredPage>> {
    Follower::new(store, task_id, from_seq)
        .page(limit, wait)
        .await
}

fn make_page(
    task_id: TaskId,
    from_seq: u64,
    status: Status,
    events: Vec<StoredEvent>,
    last_seq: u64,
) -> StoredPage {
    let next_from_seq = events.last().map_or(from_seq, |event| event.seq + 1);
    StoredPage {
        task_id,
        task_status: status,
        next_from_seq,
        has_more: last_seq > 0 && next_from_seq <= last_seq,
        last_seq,
        events,
    }
}
