//! The Reporter: how a running op writes its tape and learns of a cancel.
//!
//! Calls queue the event at the store in call order and return once queued
//! (they may return before the commit); followers only ever see committed
//! events, and the manager's `finish` is queued after every event the op
//! queued, so `final` stays last. An event's `ts` is the time of the call
//! (never earlier than the one before). A store that refuses to queue for
//! a moment (transiently unavailable) is retried, in order, for as long as
//! the task's lease lasts: the call returns late, nothing is lost. Once the
//! task has finished, every call answers [`ReportError::Dropped`] and
//! writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::engine::Life;
use crate::engine::runs::{CancelCause, RunControl, TapeCap};
use crate::event::EventBody;
use crate::model::TaskId;
use crate::store::{AppendAck, Store, TRANSIENT_RETRY};
use crate::time::Timestamp;

/// Why a report was not written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The task already finished (cancelled, or its op returned); nothing written.
    #[error("task already finished, event dropped")]
    Dropped,
    /// The store failed to write an event of this task.
    #[error("store error: {0}")]
    Store(String),
    /// The task's tape reached its cap (`max_events_per_task`): nothing
    /// written, and the task ends `failed` with code `tape_full`.
    #[error("the task's tape is full ({limit} events); nothing more is written")]
    TapeFull {
        /// The cap.
        limit: u64,
    },
    /// The task's tape reached its size cap (`max_tape_bytes`, counting
    /// the events' JSON): nothing written, and the task ends `failed` with
    /// code `tape_full`.
    #[error("the task's tape is full ({max_bytes} bytes); nothing more is written")]
    TapeTooLarge {
        /// The cap, in bytes.
        max_bytes: u64,
    },
}

/// Room left on a run's tape, and its caps: (room, cap) in events and in
/// bytes of event JSON.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TapeRoom {
    pub(crate) events: (u64, u64),
    pub(crate) bytes: (u64, u64),
}

impl TapeRoom {
    /// No cap (a bare reporter's).
    const UNLIMITED: TapeRoom = TapeRoom {
        events: (u64::MAX, u64::MAX),
        bytes: (u64::MAX, u64::MAX),
    };
}

/// What `seq` and `ts` add to a body's JSON when it is stored
/// (`,"seq":N,"ts":"2026-12-07T11:00:00.000Z"`, for seqs of up to 7 digits).
const SEAL_BYTES: u64 = 46;

/// Bytes of `body`'s JSON, counted without building it.
fn json_len(body: &EventBody) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting cannot fail; a body that cannot be encoded is refused by the store.
    let _ = serde_json::to_writer(&mut count, body);
    count.0 + SEAL_BYTES
}

/// Where a reporter's events go when not to a store: a remote worker's
/// batcher (`tasktape worker` sends them to the server). Same contract as
/// [`crate::store::Transitions::append_queued`]: queued in call order,
/// outcomes recorded on `ack`.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Queues `body` for `task_id`, reported at `at`.
    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<(), crate::store::StoreError>;
}

/// A reporter's destination.
enum Sink {
    Store(Arc<dyn Store>),
    Other(Arc<dyn EventSink>),
}

/// The op's handle on its task: `progress`, `log`, `partial` and the cancel token.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    task_id: TaskId,
    sink: Sink,
    token: CancellationToken,
    /// Fires when the server begins shutting down (the token fires too).
    stopping: CancellationToken,
    /// Fires at the shutdown deadline.
    hard_stop: CancellationToken,
    /// Room and caps of the tape (the final event is written past them).
    room: TapeRoom,
    /// The run this reporter belongs to (none for a bare reporter).
    run: Option<Arc<RunControl>>,
    /// Events this reporter queued.
    reported: std::sync::atomic::AtomicU64,
    /// Bytes of event JSON this reporter queued.
    bytes: std::sync::atomic::AtomicU64,
    /// The cap reached, once one was.
    full: std::sync::OnceLock<TapeCap>,
    ack: Arc<AppendAck>,
    closed: AtomicBool,
    /// The last event's time (ms); held while an event is stamped and
    /// queued, so times never decrease along the tape.
    last_ts: tokio::sync::Mutex<i64>,
    /// How long a transiently failing store is retried (the lease's length).
    retry_for: Duration,
}

impl Reporter {
    /// A reporter for a running task. The manager makes these; embedders
    /// testing an op on their own may too.
    pub fn new(store: Arc<dyn Store>, task_id: TaskId, token: CancellationToken) -> Self {
        Self::build(
            Sink::Store(store),
            task_id,
            token,
            None,
            &Life::default(),
            TapeRoom::UNLIMITED,
            TRANSIENT_RETRY,
        )
    }

    /// A reporter writing to `sink` (a remote worker's; see [`EventSink`]).
    pub fn with_sink(sink: Arc<dyn EventSink>, task_id: TaskId, token: CancellationToken) -> Self {
        Self::build(
            Sink::Other(sink),
            task_id,
            token,
            None,
            &Life::default(),
            TapeRoom::UNLIMITED,
            TRANSIENT_RETRY,
        )
    }

    /// The reporter of a run: it stops `control` when the tape is full
    /// (past `room`) and knows the manager's shutdown.
    pub(crate) fn for_run(
        store: Arc<dyn Store>,
        task_id: TaskId,
        control: Arc<RunControl>,
        life: &Life,
        room: TapeRoom,
        retry_for: Duration,
    ) -> Self {
        let token = control.token().clone();
        Self::build(
            Sink::Store(store),
            task_id,
            token,
            Some(control),
            life,
            room,
            retry_for,
        )
    }

    fn build(
        sink: Sink,
        task_id: TaskId,
        token: CancellationToken,
        run: Option<Arc<RunControl>>,
        life: &Life,
        room: TapeRoom,
        retry_for: Duration,
    ) -> Self {
        Reporter {
            inner: Arc::new(Inner {
                task_id,
                sink,
                token,
                stopping: life.stopping.clone(),
                hard_stop: life.hard_stop.clone(),
                room,
                run,
                reported: std::sync::atomic::AtomicU64::new(0),
                bytes: std::sync::atomic::AtomicU64::new(0),
                full: std::sync::OnceLock::new(),
                ack: Arc::new(AppendAck::default()),
                closed: AtomicBool::new(false),
                // Never before the reporter was made (after its run's start
                // was written): a remote worker's clock may lag.
                last_ts: tokio::sync::Mutex::new(Timestamp::now().as_millis()),
                retry_for,
            }),
        }
    }

    /// The task this reporter writes to.
    pub fn task_id(&self) -> TaskId {
        self.inner.task_id
    }

    /// Fires when the task is cancelled (or the server shuts down).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.inner.token
    }

    /// Whether the cancel token fired.
    pub fn is_cancelled(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Waits until the cancel token fires.
    pub async fn cancelled(&self) {
        self.inner.token.cancelled().await;
    }

    /// Whether the server is shutting down. The cancel token fires then too;
    /// unlike a user's cancel or a timeout, a shutdown lets the op run on
    /// until [`Reporter::shutdown_deadline`] (its result, if it returns one
    /// in time, is kept).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// Waits until the shutdown's deadline (never, without a shutdown);
    /// past it the manager aborts the op.
    pub async fn shutdown_deadline(&self) {
        self.inner.hard_stop.cancelled().await;
    }

    /// Reports progress of `phase`: `current` of `total` (0 = unknown).
    pub async fn progress(
        &self,
        phase: impl Into<String>,
        current: u64,
        total: u64,
        detail: Option<Value>,
    ) -> Result<(), ReportError> {
        self.emit(EventBody::Progress {
            phase: phase.into(),
            current,
            total,
            detail,
        })
        .await
    }

    /// Writes a log line at `level` (`debug`, `info`, `warning`, `error`).
    pub async fn log(
        &self,
        level: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<(), ReportError> {
        self.emit(EventBody::Log {
            level: level.into(),
            message: message.into(),
        })
        .await
    }

    /// Publishes a partial result of `kind`.
    pub async fn partial(
        &self,
        kind: impl Into<String>,
        payload: Value,
    ) -> Result<(), ReportError> {
        self.emit(EventBody::Partial {
            kind: kind.into(),
            payload,
        })
        .await
    }

    /// Writes a `progress`, `log` or `partial` body as it is (the other
    /// types belong to the store and are refused with a store error).
    pub async fn event(&self, body: EventBody) -> Result<(), ReportError> {
        self.emit(body).await
    }

    /// Like [`Reporter::event`], stamped `at` (a remote worker's clock)
    /// clamped between the tape's last time and now, so a tape's times
    /// never go back nor run ahead.
    pub async fn event_at(&self, body: EventBody, at: Timestamp) -> Result<(), ReportError> {
        self.emit_at(body, Some(at)).await
    }

    async fn emit(&self, body: EventBody) -> Result<(), ReportError> {
        self.emit_at(body, None).await
    }

    async fn emit_at(&self, body: EventBody, at: Option<Timestamp>) -> Result<(), ReportError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) || inner.ack.dropped() {
            return Err(ReportError::Dropped);
        }
        if let Some(error) = inner.ack.error() {
            return Err(ReportError::Store(error));
        }
        // Bodies the store would refuse never count against the cap.
        crate::store::check_appendable(&body)
            .map_err(|error| ReportError::Store(error.to_string()))?;
        // `task_started` is on the tape already: seq 1.
        let reported = inner.reported.fetch_add(1, Ordering::AcqRel);
        let (room, cap) = inner.room.events;
        if reported.saturating_add(1) >= room {
            self.fill(TapeCap::Events(cap));
            return Err(ReportError::TapeFull { limit: room });
        }
        let (room, cap) = inner.room.bytes;
        if room != u64::MAX {
            let size = json_len(&body);
            let before = inner.bytes.fetch_add(size, Ordering::AcqRel);
            if before.saturating_add(size) > room {
                self.fill(TapeCap::Bytes(cap));
                return Err(ReportError::TapeTooLarge { max_bytes: cap });
            }
        }
        let mut last_ts = inner.last_ts.lock().await;
        let now = Timestamp::now().as_millis();
        let wanted = at.map_or(now, |at| at.as_millis().min(now));
        let at = Timestamp::from_millis(wanted.max(*last_ts));
        *last_ts = at.as_millis();
        let mut backoff = Duration::from_millis(10);
        let mut failing_since = None;
        loop {
            let ack = Arc::clone(&inner.ack);
            let queued = match &inner.sink {
                Sink::Store(store) => store.append_queued(inner.task_id, &body, at, ack).await,
                Sink::Other(sink) => sink.append_queued(inner.task_id, &body, at, ack).await,
            };
            match queued {
                Err(error) if error.is_transient() => {
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= inner.retry_for || inner.hard_stop.is_cancelled() {
                        return Err(ReportError::Store(error.to_string()));
                    }
                    tracing::warn!(task_id = %inner.task_id, %error, "could not queue an event; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.hard_stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other.map_err(|error| ReportError::Store(error.to_string())),
            }
        }
    }

    /// Records the first cap reached and stops the run for it.
    fn fill(&self, cap: TapeCap) {
        let inner = &self.inner;
        if inner.full.set(cap).is_ok()
            && let Some(control) = &inner.run
        {
            control.stop(CancelCause::TapeFull(cap));
        }
    }

    /// The cap the task's tape reached, if it did.
    pub(crate) fn full_cap(&self) -> Option<TapeCap> {
        self.inner.full.get().copied()
    }

    /// Stops further writes: called by the manager before it finishes the task.
    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Where this reporter's queued events report their outcomes.
    pub(crate) fn ack(&self) -> Arc<AppendAck> {
        Arc::clone(&self.inner.ack)
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("task_id", &self.inner.task_id)
            .finish_non_exhaustive()
    }
}
