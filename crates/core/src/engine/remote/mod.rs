//! Remote workers (`docs/WORKERS.md`): their sessions with this instance,
//! their claims, reports, heartbeats and signals. A worker's task is
//! claimed, leased and finished by this instance like any other; its run
//! is a [`op::RemoteOp`] relaying what the worker reports, so every
//! invariant of the tape holds for it unchanged. The session is the
//! worker's lease with this instance: heartbeats renew it; when they stop
//! for the lease's length its runs end `owner_lost` (retried when the op is
//! idempotent).

mod claims;
mod op;
pub(crate) mod records;
mod register;
mod sessions;
mod tick;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tasktape_wire::worker::{ItemAnswer, WorkerEvent, WorkerFinish};
use tokio::sync::{Notify, mpsc, oneshot};

pub(crate) use self::op::RemoteOp;
pub(crate) use self::records::WorkerRecord;
pub use self::sessions::SignalStream;
use super::Life;
use super::claimer::Claimer;
use crate::clock::{Clock, millis};
use crate::model::TaskId;
use crate::op::OpRegistry;
use crate::store::Store;
use crate::time::Timestamp;

/// What the remote side needs of the config.
#[derive(Clone, Debug)]
pub(crate) struct RemoteSettings {
    pub(crate) instance_id: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) lease_interval: Duration,
    pub(crate) cancel_grace: Duration,
}

/// A push to a worker on its signal stream.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Signal {
    /// The stream is open.
    Ready,
    /// Stop this task (a cancel, its time limit, a shutdown).
    Cancel(TaskId),
    /// This task ended on the server's side: stop it, report nothing more.
    Stop(TaskId, String),
    /// Claim nothing more; finish what runs; exit.
    Drain,
}

/// What the report route hands a run.
pub(crate) enum Msg {
    /// Events, then maybe the finish; the answer goes back to the worker.
    Item {
        offset: Option<u64>,
        events: Vec<WorkerEvent>,
        finish: Option<WorkerFinish>,
        answer: oneshot::Sender<ItemAnswer>,
    },
    /// The session ended: the run ends with this code and message.
    Lost(&'static str, String),
}

/// A task handed to a worker.
struct Run {
    session: String,
    lease: String,
    op: String,
    /// The task's attempt this run is (a later attempt is another run).
    attempt: u32,
    /// Heartbeats in a row that did not name it, once acknowledged.
    missed: u8,
    /// What the report route sends the run.
    outbox: mpsc::UnboundedSender<Msg>,
    /// The run's end of it, until its run starts.
    inbox: Option<mpsc::UnboundedReceiver<Msg>>,
    /// Whether the worker showed it has it (a report or a heartbeat).
    acked: bool,
    claimed_at: Timestamp,
    /// Whether a cancel was pushed (pushed again on a new stream).
    cancel_pushed: bool,
}

/// A worker's session with this instance.
struct Session {
    record: WorkerRecord,
    /// The record's text as last written (the expected value of the next swap).
    written: Option<String>,
    /// Per op: the worker's own cap.
    caps: BTreeMap<String, Option<u32>>,
    /// The open signal stream, by generation.
    stream: Option<(u64, mpsc::UnboundedSender<Signal>)>,
    /// Wakes its claim when work may wait (or it must answer at once).
    wake: Arc<Notify>,
    /// Whether its claim is parked, waiting for work.
    waiting: bool,
    /// The ops its parked claim has room for.
    wanted: Vec<String>,
    /// Last heartbeat, by the engine's clock.
    last_heartbeat: Timestamp,
}

impl Session {
    fn connected(&self) -> bool {
        self.stream.as_ref().is_some_and(|(_, tx)| !tx.is_closed())
    }

    fn push(&self, signal: Signal) {
        if let Some((_, tx)) = &self.stream {
            let _ = tx.send(signal);
        }
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    by_worker: HashMap<String, String>,
    runs: HashMap<TaskId, Run>,
    draining: bool,
    streams: u64,
    /// Turns the kicks take among waiting claims.
    kicks: usize,
    /// Ticks so far (the hourly purge counts them).
    ticks: u64,
}

/// Remote workers' sessions on this instance.
pub(crate) struct Remote {
    store: Arc<dyn Store>,
    ops: OpRegistry,
    clock: Arc<dyn Clock>,
    life: Life,
    settings: RemoteSettings,
    claimer: OnceLock<Weak<Claimer>>,
    state: Mutex<State>,
    this: Weak<Remote>,
}

impl Remote {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        ops: OpRegistry,
        clock: Arc<dyn Clock>,
        life: Life,
        settings: RemoteSettings,
    ) -> Arc<Remote> {
        Arc::new_cyclic(|this| Remote {
            store,
            ops,
            clock,
            life,
            settings,
            claimer: OnceLock::new(),
            state: Mutex::new(State::default()),
            this: this.clone(),
        })
    }

    pub(crate) fn set_claimer(&self, claimer: &Arc<Claimer>) {
        let _ = self.claimer.set(Arc::downgrade(claimer));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A session's lease: the store lease less one renewal interval, so a
    /// worker that stops its runs when its session lapses has stopped them
    /// before a peer may reap the tasks (the instance renews the store
    /// lease every interval).
    fn ttl_ms(&self) -> i64 {
        millis(
            self.settings
                .lease_ttl
                .saturating_sub(self.settings.lease_interval),
        )
        .max(1)
    }

    /// Wakes one parked claim of a session serving `op` (work may wait),
    /// taking turns among them.
    pub(crate) fn kick(&self, op: &str) {
        let mut state = self.state();
        let waiting: Vec<&String> = state
            .sessions
            .iter()
            .filter(|(_, session)| session.waiting && session.wanted.iter().any(|name| name == op))
            .map(|(id, _)| id)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let chosen = waiting[state.kicks % waiting.len()].clone();
        state.kicks = state.kicks.wrapping_add(1);
        if let Some(session) = state.sessions.get_mut(&chosen) {
            session.waiting = false;
            session.wake.notify_one();
        }
    }

    /// The run's inbox and attempt, taken when its run starts; `None` when
    /// its session ended before.
    fn attach(&self, task_id: TaskId) -> Option<(op::Inbox, u32)> {
        let mut state = self.state();
        let run = state.runs.get_mut(&task_id)?;
        Some((run.inbox.take()?, run.attempt))
    }

    /// Forgets attempt `attempt`'s run of `task_id` once it ended (a later
    /// attempt's run stays); `stopped`: the engine ended it before the
    /// worker finished (the worker is told to stop).
    pub(crate) fn forget(&self, task_id: TaskId, attempt: u32, stopped: bool) {
        let mut state = self.state();
        if state
            .runs
            .get(&task_id)
            .is_none_or(|run| run.attempt != attempt)
        {
            return;
        }
        let Some(run) = state.runs.remove(&task_id) else {
            return;
        };
        if stopped && let Some(session) = state.sessions.get(&run.session) {
            session.push(Signal::Stop(task_id, "task_ended".to_owned()));
        }
        if let Some(session) = state.sessions.get(&run.session) {
            // A slot freed: its claim may take more.
            session.wake.notify_one();
        }
    }

    /// Pushes `signal` to the worker running `task_id`.
    fn signal_task(&self, task_id: TaskId, signal: Signal) {
        let mut state = self.state();
        let Some(run) = state.runs.get_mut(&task_id) else {
            return;
        };
        run.cancel_pushed = true;
        let session = run.session.clone();
        if let Some(session) = state.sessions.get(&session) {
            session.push(signal);
        }
    }

    /// Stops handing out tasks (the server drains): parked claims wait out
    /// their time with nothing; runs go on to their ends. Workers are not
    /// told to drain (they would exit): when this instance is gone their
    /// calls fail and they register again, here after its restart or with
    /// another instance.
    pub(crate) fn drain_all(&self) {
        let mut state = self.state();
        state.draining = true;
        for session in state.sessions.values_mut() {
            session.wake.notify_one();
        }
    }
}
