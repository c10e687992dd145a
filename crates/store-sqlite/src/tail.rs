//! The tail: the newest events of the tasks this store runs, kept in memory
//! so that a follower's read of a live task, the common one (from the seq
//! after the last it saw), touches no database. Without it every such read
//! was a read transaction whose page cache SQLite had to drop (the writer
//! had changed the file since) and fill again from the WAL.
//!
//! Only the writer changes it, after each commit and before the commit's
//! wake-ups, from what that transaction wrote: a task's tail begins when
//! it starts, takes every event appended after, and follows its status; a
//! delete (or purge) forgets it. A read it cannot answer whole — a seq
//! older than the tail holds, a task it does not know — goes to the
//! database, which is the truth; the tail only ever holds a committed
//! state, and while a commit that changes it is under way it answers
//! nothing (reads never go back). Bounded: per task the newest events up
//! to [`TAIL_BYTES`] (their text and a fixed overhead each); at most
//! [`MAX_TAILS`] tasks, of which the [`KEEP_FINISHED`] most recently
//! finished stay (for late followers' last page; a new task takes the
//! oldest finished one's place when full).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tasktape_core::event::StoredEvent;
use tasktape_core::model::{Status, TaskId};
use tasktape_core::store::TapePage;

/// The most JSON text a task's tail keeps (its newest events).
pub(crate) const TAIL_BYTES: usize = 16 * 1024;
/// The most tasks with a tail.
pub(crate) const MAX_TAILS: usize = 4096;
/// How many finished tasks keep their tails.
pub(crate) const KEEP_FINISHED: usize = 1024;

/// What one transaction did to the tails, applied once it commits.
pub(crate) enum Change {
    /// The task started (or began another attempt) with its tape at this
    /// seq: its tail begins here, or goes on if it had one.
    Began(TaskId, u64),
    /// An event was appended.
    Event(TaskId, StoredEvent),
    /// The task's status changed.
    Status(TaskId, Status),
    /// The task (and its tape) was deleted.
    Forget(TaskId),
}

/// What an event costs a tail beyond its text (the `StoredEvent`, the
/// string's allocation), counted against [`TAIL_BYTES`].
const EVENT_OVERHEAD: usize = 64;

/// One task's newest events: contiguous, the last one at `last_seq`.
struct Tail {
    status: Status,
    last_seq: u64,
    events: VecDeque<StoredEvent>,
    bytes: usize,
}

impl Tail {
    /// The seq from which this tail answers reads whole: its first event's,
    /// or 0 if it holds the tape from its first event.
    fn answers_from(&self) -> u64 {
        match self.events.front() {
            Some(first) if first.seq <= 1 => 0,
            Some(first) => first.seq,
            None => self.last_seq + 1,
        }
    }

    fn push(&mut self, event: StoredEvent) {
        if event.seq != self.last_seq + 1 {
            // Not contiguous (cannot happen: the writer numbers them); answer
            // nothing older than what comes next.
            self.events.clear();
            self.bytes = 0;
        }
        self.last_seq = event.seq;
        self.bytes += event.json.len() + EVENT_OVERHEAD;
        self.events.push_back(event);
        while self.bytes > TAIL_BYTES {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.json.len() + EVENT_OVERHEAD;
        }
    }
}

#[derive(Default)]
struct State {
    tails: HashMap<TaskId, Tail>,
    /// Finished tasks with a tail, oldest first.
    finished: VecDeque<TaskId>,
    /// A transaction with changes for the tails is committing: from just
    /// before its COMMIT until they are applied, reads go to the database,
    /// which may already show them (so a reader never sees the tape or
    /// status go back after a newer database read).
    committing: bool,
}

/// The tails of this store's tasks (see the module docs).
#[derive(Default)]
pub(crate) struct Tails {
    state: Mutex<State>,
}

impl Tails {
    /// A transaction that changes the tails is about to COMMIT; until
    /// [`Tails::apply`] or [`Tails::abandon`], the tails answer nothing.
    pub(crate) fn committing(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committing = true;
    }

    /// The transaction did not commit: the tails answer again, unchanged.
    pub(crate) fn abandon(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committing = false;
    }

    /// Applies one committed transaction's changes, in order.
    pub(crate) fn apply(&self, changes: impl Iterator<Item = Change>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.committing = false;
        for change in changes {
            match change {
                Change::Began(task_id, last_seq) => {
                    if let Some(tail) = state.tails.get_mut(&task_id) {
                        // Another attempt: the tape goes on.
                        tail.status = Status::Running;
                        continue;
                    }
                    if state.tails.len() >= MAX_TAILS {
                        // Make room by the oldest finished task's tail; if
                        // all run (or wait for a retry), this one reads from
                        // the database.
                        let Some(old) = state.finished.pop_front() else {
                            continue;
                        };
                        state.tails.remove(&old);
                    }
                    let tail = Tail {
                        status: Status::Running,
                        last_seq,
                        events: VecDeque::new(),
                        bytes: 0,
                    };
                    state.tails.insert(task_id, tail);
                }
                Change::Event(task_id, event) => {
                    if let Some(tail) = state.tails.get_mut(&task_id) {
                        tail.push(event);
                    }
                }
                Change::Status(task_id, status) => {
                    let Some(tail) = state.tails.get_mut(&task_id) else {
                        continue;
                    };
                    tail.status = status;
                    if status.is_terminal() {
                        state.finished.push_back(task_id);
                        while state.finished.len() > KEEP_FINISHED {
                            if let Some(old) = state.finished.pop_front() {
                                state.tails.remove(&old);
                            }
                        }
                    }
                }
                Change::Forget(task_id) => {
                    state.tails.remove(&task_id);
                    state.finished.retain(|id| *id != task_id);
                }
            }
        }
    }

    /// The page `events(task_id, from_seq, limit)` answers, if the tail
    /// holds all of it.
    pub(crate) fn page(&self, task_id: TaskId, from_seq: u64, limit: usize) -> Option<TapePage> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.committing {
            return None;
        }
        let tail = state.tails.get(&task_id)?;
        if from_seq < tail.answers_from() {
            return None;
        }
        let events = tail
            .events
            .iter()
            .skip_while(|event| event.seq < from_seq)
            .take(limit)
            .cloned()
            .collect();
        Some(TapePage {
            status: tail.status,
            events,
            last_seq: tail.last_seq,
        })
    }

    /// The task's last seq, if it has a tail.
    pub(crate) fn last_seq(&self, task_id: TaskId) -> Option<u64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.committing {
            return None;
        }
        state.tails.get(&task_id).map(|tail| tail.last_seq)
    }
}
