//! WIRE.md's response bodies as typed values (the tape's event types come
//! from `tasktape-core`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasktape_core::{ErrorInfo, Event, Status, TaskId, Timestamp};

/// What a submit answers: the new (or, for a repeated idempotency key, the
/// original) task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskHandle {
    /// The task.
    pub task_id: TaskId,
    /// Its op.
    pub op: String,
    /// Its status when the server answered.
    pub status: Status,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// Paths of the task's routes.
    pub links: Links,
}

/// The routes of one task, as paths on the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    pub result: String,
    pub cancel: String,
}

/// A task's full row (`GET /v1/tasks/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    /// The task.
    pub task_id: TaskId,
    /// Its op.
    pub op: String,
    /// Current status.
    pub status: Status,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When its op started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The digest of its params (`""` when it has none).
    pub params_digest: String,
    /// The result, when succeeded.
    #[serde(default)]
    pub result: Option<Value>,
    /// The error, when failed.
    #[serde(default)]
    pub error: Option<ErrorInfo>,
}

/// A summary row of a list page (a [`TaskRow`] without result and error).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TaskSummary {
    pub task_id: TaskId,
    pub op: String,
    pub status: Status,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub params_digest: String,
}

/// One page of `GET /v1/tasks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<TaskSummary>,
    /// Pass to [`ListQuery::cursor`] for the next page; `None` on the last.
    pub next_cursor: Option<String>,
    /// Whether more pages follow.
    pub has_more: bool,
}

/// A terminal task's outcome (`GET /v1/tasks/{id}/result`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TaskResult {
    pub task_id: TaskId,
    pub status: Status,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub result: Option<Value>,
    pub error: Option<ErrorInfo>,
}

/// One page of a task's tape (`GET /v1/tasks/{id}/events`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    /// The task.
    pub task_id: TaskId,
    /// Its status when the page was read.
    pub task_status: Status,
    /// Events with seq ≥ the asked `from_seq`, ascending.
    pub events: Vec<Event>,
    /// Where the next page starts.
    pub next_from_seq: u64,
    /// Whether the tape holds events past this page.
    pub has_more: bool,
    /// The tape's highest seq (0 when empty).
    pub last_seq: u64,
}

/// What `POST /v1/tasks/{id}/cancel` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelAnswer {
    /// The task.
    pub task_id: TaskId,
    /// Whether the task is (or will be) cancelled.
    pub cancelled: bool,
    /// Whether it had already ended.
    pub already_terminal: bool,
}

/// An op the server runs (`GET /v1/ops`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpInfo {
    /// Its name (`POST /v1/{name}`).
    pub name: String,
    /// One line about it.
    pub description: String,
    /// A JSON Schema of its params.
    pub params_schema: Value,
}

/// `GET /v1/info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's version.
    pub engine_version: String,
    /// `sqlite`, `postgres`, …
    pub storage_backend: String,
    /// Whether requests need a token.
    pub auth_required: bool,
    /// Everything else the server says.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The filters and paging of a list call; `Default` is the server's first
/// page of 100.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only tasks in this status.
    pub status: Option<Status>,
    /// Only tasks of this op.
    pub op: Option<String>,
    /// Page size, 1..=1000.
    pub limit: Option<u32>,
    /// Where to continue ([`TaskPage::next_cursor`]).
    pub cursor: Option<String>,
}

/// What to submit: an op, its params, and optionally an idempotency key.
#[derive(Clone, Debug, Serialize)]
pub struct Submission {
    /// The op's name.
    pub op: String,
    /// Its params (an object).
    pub params: Value,
    /// Submitting twice with one key (and the same params) gives the first
    /// task back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl Submission {
    /// `op` with `params` and no key.
    pub fn new(op: impl Into<String>, params: Value) -> Self {
        Submission {
            op: op.into(),
            params,
            idempotency_key: None,
        }
    }

    /// The same with an idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}
