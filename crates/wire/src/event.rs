//! Tape events as they travel: the body (its JSON `type` tag names the
//! variant) and the event with its `seq` and `ts`. The tape grammar and the
//! stored form are the engine's (`tasktape-core`'s `event` module).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ErrorInfo, Status, TaskId};
use crate::time::Timestamp;

/// What an event says; the JSON `type` tag names the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The op started (seq 1).
    TaskStarted {
        /// The task.
        task_id: TaskId,
        /// The op's name.
        op: String,
    },
    /// How far a phase of the op has come.
    Progress {
        /// Which phase (an op may have several).
        phase: String,
        /// Units done.
        current: u64,
        /// Units in all; 0 when unknown.
        total: u64,
        /// Anything else the op wants to say, an object or `null`.
        detail: Option<Value>,
    },
    /// A log line from the op.
    Log {
        /// `debug`, `info`, `warning`, `error`, … (free text).
        level: String,
        /// The line.
        message: String,
    },
    /// A partial result.
    Partial {
        /// What kind of partial result.
        kind: String,
        /// The partial result itself.
        payload: Value,
    },
    /// The task ended; always the last event.
    Final {
        /// The terminal status (equal to the row's).
        status: Status,
        /// The result, when succeeded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// The error, when failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// Streaming keep-alive; never stored, seq 0.
    Heartbeat {},
}

/// The event types, for matching without the bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum EventKind {
    TaskStarted,
    Progress,
    Log,
    Partial,
    Final,
    Heartbeat,
}

impl EventKind {
    /// The wire `type` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TaskStarted => "task_started",
            EventKind::Progress => "progress",
            EventKind::Log => "log",
            EventKind::Partial => "partial",
            EventKind::Final => "final",
            EventKind::Heartbeat => "heartbeat",
        }
    }
}

impl EventBody {
    /// The body's type.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::TaskStarted { .. } => EventKind::TaskStarted,
            EventBody::Progress { .. } => EventKind::Progress,
            EventBody::Log { .. } => EventKind::Log,
            EventBody::Partial { .. } => EventKind::Partial,
            EventBody::Final { .. } => EventKind::Final,
            EventBody::Heartbeat {} => EventKind::Heartbeat,
        }
    }

    /// Whether `append` may write it (`progress`, `log`, `partial`); the others
    /// belong to `start`, `finish` and the streaming layer.
    pub fn is_appendable(&self) -> bool {
        matches!(
            self.kind(),
            EventKind::Progress | EventKind::Log | EventKind::Partial
        )
    }
}

/// A typed tape event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Event {
    /// What it says.
    #[serde(flatten)]
    pub body: EventBody,
    /// Its place on the tape (0 for heartbeats).
    pub seq: u64,
    /// When it was written.
    pub ts: Timestamp,
}
