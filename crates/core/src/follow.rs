//! Following a tape: the one [`Follower`] that the HTTP long-poll, SSE,
//! [`crate::Manager::wait`] and [`crate::Manager::events`] all use. It
//! reads the store's snapshot pages from a seq, hands each event out once,
//! in order, waits on the wake hub (no polling) while the task is live,
//! and is done after `final`.

use std::borrow::BorrowMut;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument as _;

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

/// Follows one task's tape from a seq, through a store handle `S` (the
/// manager's `Arc<dyn Store>`, or a borrowed `&dyn Store` for a one-off
/// read).
pub struct Follower<S = Arc<dyn Store>> {
    store: S,
    task_id: TaskId,
    next: u64,
    /// Registered before the first read that may wait, so no commit falls
    /// between a read and its wait.
    watch: Option<Watch>,
    done: bool,
}

impl<S: Deref<Target = dyn Store> + Send + Sync> Follower<S> {
    /// A follower of `task_id`'s tape from `from_seq`.
    pub fn new(store: S, task_id: TaskId, from_seq: u64) -> Self {
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

    /// Whether the tape ended for this follower: `final` was handed out,
    /// or it started past it.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One events page from the next seq. With a non-zero `wait` (capped
    /// at [`MAX_WAIT`]), when the page would be empty and the task is not
    /// terminal, holds until a new event commits or the wait elapses.
    /// `None` for an unknown task. Cancel-safe: the follower moves on only
    /// when a page is returned.
    pub fn page(
        &mut self,
        limit: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<StoredPage>>> + Send + '_ {
        if !wait.is_zero() && self.watch.is_none() {
            self.watch = Some(self.store.wake_hub().watch(self.task_id));
        }
        follow_step(self, limit, wait)
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
/// [`Follower::page`]): a follower of its own, moved into the read, so a
/// parked long-poll's future is the follow step alone. `None` for an
/// unknown task.
pub fn events_page(
    store: &dyn Store,
    task_id: TaskId,
    from_seq: u64,
    limit: usize,
    wait: Duration,
) -> impl Future<Output = Result<Option<StoredPage>>> + Send + '_ {
    let span = tracing::debug_span!("events_page", %task_id, from_seq, limit, ?wait);
    let mut follower = Follower::new(store, task_id, from_seq);
    if !wait.is_zero() {
        follower = follower.watching();
    }
    follow_step(follower, limit, wait).instrument(span)
}

/// The follow step every follower takes: read the page from its next seq;
/// when it is empty and the task live, wait on its watch (registered before
/// this read) for a new event, at most `wait`, and read again; then move
/// the follower past what the page holds. `F` is the follower itself or a
/// borrow of it, so no caller wraps this future in one of its own.
async fn follow_step<S, F>(
    mut follower: F,
    limit: usize,
    wait: Duration,
) -> Result<Option<StoredPage>>
where
    S: Deref<Target = dyn Store> + Send + Sync,
    F: BorrowMut<Follower<S>> + Send,
{
    let this = follower.borrow_mut();
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    loop {
        let Some(tape) = this.store.events(this.task_id, this.next, limit).await? else {
            return Ok(None);
        };
        let settled = !tape.events.is_empty() || tape.status.is_terminal();
        let (status, last_seq) = (tape.status, tape.last_seq);
        let events = match this.watch.as_ref().filter(|_| !settled && !wait.is_zero()) {
            None => tape.events,
            Some(watch) => {
                // Only the status and last seq are kept across the wait (a
                // parked follower's future stays small); any new event (a
                // `final` below the next seq included) re-reads the page.
                drop(tape);
                if watch.wait_past(last_seq, deadline).await {
                    continue;
                }
                Vec::new()
            }
        };
        let page = make_page(this.task_id, this.next, status, events, last_seq);
        this.next = page.next_from_seq;
        this.done = page.events.last().is_some_and(StoredEvent::is_final)
            || (page.events.is_empty() && page.task_status.is_terminal());
        return Ok(Some(page));
    }
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
