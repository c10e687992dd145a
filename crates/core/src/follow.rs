//! Following a tape: WIRE.md's events page, including the long-poll `wait`,
//! built on the store's snapshot reads and the wake hub (no polling).

use std::time::Duration;

use tokio::time::Instant;

use crate::event::StoredEvent;
use crate::model::{Status, TaskId};
use crate::store::{Result, Store};

/// The longest `wait` a follower may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// WIRE.md's events page, holding the stored event texts (the server
/// splices them into its response; `tasktape-wire`'s `StoredPage` is the
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

/// Reads one events page. With a non-zero `wait` (capped at [`MAX_WAIT`]),
/// when the page would be empty and the task is not terminal, holds until a
/// new event commits or the wait elapses. `None` for an unknown task.
#[tracing::instrument(
    name = "events_page",
    level = "debug",
    skip(store),
    err(level = "debug")
)]
pub async fn events_page(
    store: &dyn Store,
    task_id: TaskId,
    from_seq: u64,
    limit: usize,
    wait: Duration,
) -> Result<Option<StoredPage>> {
    let watch = (!wait.is_zero()).then(|| store.wake_hub().watch(task_id));
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    loop {
        let Some(tape) = store.events(task_id, from_seq, limit).await? else {
            return Ok(None);
        };
        let settled = !tape.events.is_empty() || tape.status.is_terminal();
        let page = make_page(task_id, from_seq, tape.status, tape.events, tape.last_seq);
        let Some(watch) = watch.as_ref().filter(|_| !settled) else {
            return Ok(Some(page));
        };
        // Any new event (a `final` below `from_seq` included) re-reads the page.
        if !watch.wait_past(page.last_seq, deadline).await {
            return Ok(Some(page));
        }
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
