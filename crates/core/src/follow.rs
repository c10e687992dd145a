//! Following a tape: WIRE.md's events page, including the long-poll `wait`,
//! built on the store's snapshot reads and the wake hub (no polling).

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use crate::event::StoredEvent;
use crate::model::{Status, TaskId};
use crate::store::{Result, Store};

/// The longest `wait` a follower may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// WIRE.md's events page.
#[derive(Clone, Debug)]
pub struct EventsPage {
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

impl EventsPage {
    /// The page as WIRE.md's JSON, splicing the stored event texts in as they are.
    pub fn to_json(&self) -> String {
        let size: usize = self.events.iter().map(|event| event.json.len() + 1).sum();
        let mut out = String::with_capacity(size + 160);
        let _ = write!(
            out,
            "{{\"task_id\":\"{}\",\"task_status\":\"{}\",\"events\":[",
            self.task_id, self.task_status
        );
        for (index, event) in self.events.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&event.json);
        }
        let _ = write!(
            out,
            "],\"next_from_seq\":{},\"has_more\":{},\"last_seq\":{}}}",
            self.next_from_seq, self.has_more, self.last_seq
        );
        out
    }
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
) -> Result<Option<EventsPage>> {
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
) -> EventsPage {
    let next_from_seq = events.last().map_or(from_seq, |event| event.seq + 1);
    EventsPage {
        task_id,
        task_status: status,
        next_from_seq,
        has_more: last_seq > 0 && next_from_seq <= last_seq,
        last_seq,
        events,
    }
}
