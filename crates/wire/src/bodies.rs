//! The HTTP API's bodies (WIRE.md parts A and B), serialisable both ways:
//! the server renders them, the client reads them, so the two cannot drift.
//! (The events page's server side splices stored event texts for speed; its
//! shape is [`EventsPage`], and the client tests read every page into it.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::model::{ErrorInfo, Status, TaskId};
use crate::time::Timestamp;

/// What a submit answers: the new (or, for a repeated idempotency key, the
/// original) task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
    /// The attempt running or last run (1 for the first; 0 before it).
    #[serde(default)]
    pub attempt: u32,
    /// Attempts in all its retry policy allows (1: no retry).
    #[serde(default)]
    pub max_attempts: u32,
    /// When a pending task is due (a delayed task, or the next attempt of
    /// a retried one); `null` when due now.
    #[serde(default)]
    pub run_at: Option<Timestamp>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// The task this one retries (`POST /v1/tasks/retry`).
    #[serde(default)]
    pub retry_of: Option<TaskId>,
    /// Its metadata (absent when it has none).
    #[serde(default, skip_serializing_if = "crate::Metadata::is_empty")]
    pub metadata: crate::Metadata,
    /// The task's params with every secret one (`writeOnly` in the op's
    /// params schema) shown as `"•••"`; absent when the op is not
    /// registered on the answering instance (it cannot tell which are
    /// secret). Only `GET /v1/tasks/{id}` carries it, never list rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

/// A summary row of a list page (a task's row without result and error).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[allow(missing_docs)]
pub struct TaskSummary {
    pub task_id: TaskId,
    pub op: String,
    pub status: Status,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub params_digest: String,
    /// The attempt running or last run (1 for the first; 0 before it).
    #[serde(default)]
    pub attempt: u32,
    /// Attempts in all its retry policy allows (1: no retry).
    #[serde(default)]
    pub max_attempts: u32,
    /// When a pending task is due (a delayed task, or the next attempt of
    /// a retried one); `null` when due now.
    #[serde(default)]
    pub run_at: Option<Timestamp>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// The task this one retries (`POST /v1/tasks/retry`).
    #[serde(default)]
    pub retry_of: Option<TaskId>,
    /// Its metadata (absent when it has none).
    #[serde(default, skip_serializing_if = "crate::Metadata::is_empty")]
    pub metadata: crate::Metadata,
}

/// One page of `GET /v1/tasks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<TaskSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Whether more pages follow.
    pub has_more: bool,
}

/// A terminal task's outcome (`GET /v1/tasks/{id}/result`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct OpInfo {
    /// Its name (`POST /v1/{name}`).
    pub name: String,
    /// One line about it.
    pub description: String,
    /// A JSON Schema of its params.
    pub params_schema: Value,
    /// Whether remote workers run it (absent: the server does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    /// For a remote op: how many live workers serve it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
    /// Its flow control (`[flow.OPNAME]`), when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowInfo>,
}

/// An op's flow control and its rate's state now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FlowInfo {
    /// The key template, e.g. `{customer}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// At most this many tasks of one key run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// Each key's share of the claims (others: 1).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub weights: std::collections::BTreeMap<String, u32>,
    /// At most this many starts in any window, e.g. `100/min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Whether the rate holds per key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rate_per_key: bool,
    /// Starts in the rate's current window (every key's), across instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_used: Option<u64>,
    /// When the op's own rate is used up: when the next start may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_free_at: Option<crate::Timestamp>,
}

/// `GET /v1/info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ServerInfo {
    /// tasktape's version.
    #[serde(default)]
    pub tasktape_version: String,
    /// Sent only when the server's config sets `compat_engine_version`:
    /// dikw-core's client compares it with its own version and refuses a
    /// mismatch, and skips the check when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// `sqlite`, `postgres`, …
    pub storage_backend: String,
    /// Whether requests need a token.
    pub auth_required: bool,
    /// The engine's name (`tasktape`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine: String,
    /// Everything else the server says.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Links {
    /// The routes of task `task_id`.
    pub fn for_task(task_id: TaskId) -> Links {
        let this = format!("/v1/tasks/{task_id}");
        Links {
            events: format!("{this}/events"),
            result: format!("{this}/result"),
            cancel: format!("{this}/cancel"),
            this,
        }
    }
}

/// `GET /v1/stats`: tasks per status now, and tasks ended per minute over
/// the window (oldest first, one entry per minute, zeros included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Stats {
    /// Tasks per status in the whole store (every status present).
    pub counts: std::collections::BTreeMap<Status, u64>,
    /// The window asked for, in seconds.
    pub window: u64,
    /// The width of one entry of `finished`, in seconds (60).
    pub bucket: u64,
    /// Per minute, oldest first; the last one is the current minute.
    pub finished: Vec<MinuteStats>,
}

/// Tasks that ended in one minute, by terminal status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MinuteStats {
    /// The minute's start.
    pub minute: Timestamp,
    /// Ended `succeeded`.
    pub succeeded: u64,
    /// Ended `failed`.
    pub failed: u64,
    /// Ended `cancelled`.
    pub cancelled: u64,
}

/// `GET /v1/ops`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct OpsList {
    /// Every op the server runs, by name.
    pub ops: Vec<OpInfo>,
}

/// The error envelope every error answers with: `{"error": {…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The inside of the error envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable (`invalid_request`, `not_found`, …).
    pub code: String,
    /// One readable line.
    pub message: String,
    /// More, per code (the offending field of a 422, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_the_task_routes() {
        let id: TaskId = "c664362d-18d4-4a93-b4c5-4ae747fc026a".parse().unwrap();
        let text = serde_json::to_string(&Links::for_task(id)).unwrap();
        assert_eq!(
            text,
            r#"{"self":"/v1/tasks/c664362d-18d4-4a93-b4c5-4ae747fc026a","events":"/v1/tasks/c664362d-18d4-4a93-b4c5-4ae747fc026a/events","result":"/v1/tasks/c664362d-18d4-4a93-b4c5-4ae747fc026a/result","cancel":"/v1/tasks/c664362d-18d4-4a93-b4c5-4ae747fc026a/cancel"}"#
        );
    }
}
