//! The task model: ids, statuses, outcomes and the task row, with the serde
//! shapes WIRE.md fixes. Owns no behaviour beyond parsing and formatting.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::time::Timestamp;

/// A task's identity: a UUID, shown as its 36-character hyphenated form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh id: a UUIDv7 (time-ordered, random below the millisecond), so
    /// that stores insert new tasks and their tapes near each other.
    pub fn new() -> Self {
        TaskId(Uuid::now_v7())
    }

    /// The id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        TaskId(Uuid::from_bytes(bytes))
    }

    /// The 16 bytes of the id; their order is the order of the text form.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// The text was not a task id.
#[derive(Debug, thiserror::Error)]
#[error("invalid task id {0:?}: want a UUID like 00000000-0000-0000-0000-000000000000")]
pub struct InvalidTaskId(pub String);

impl FromStr for TaskId {
    type Err = InvalidTaskId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(text)
            .map(TaskId)
            .map_err(|_| InvalidTaskId(text.to_owned()))
    }
}

/// Where a task is in its life: `pending → running → succeeded | failed | cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, waiting for its op to start; its tape is empty.
    Pending,
    /// Its op runs; its tape starts with `task_started` and has no `final`.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Finished because someone cancelled it.
    Cancelled,
}

impl Status {
    /// All statuses, in life order.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];

    /// Whether the task has finished (its row and tape will never change again).
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    /// The wire name (`"pending"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not a status name.
#[derive(Debug, thiserror::Error)]
#[error("invalid status {0:?}: want one of pending, running, succeeded, failed, cancelled")]
pub struct InvalidStatus(pub String);

impl FromStr for Status {
    type Err = InvalidStatus;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| InvalidStatus(text.to_owned()))
    }
}

/// A task's error: always `code` and `message`, plus any other fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable cause, e.g. `server_restart`, `op_failed`.
    pub code: String,
    /// One readable line.
    pub message: String,
    /// Other fields, flattened into the same JSON object.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ErrorInfo {
    /// An error with `code` and `message` and nothing else.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            code: code.into(),
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds one more field to the error object (`code` and `message` are
    /// fields of their own and cannot be overwritten this way).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        if key != "code" && key != "message" {
            self.extra.insert(key, value.into());
        }
        self
    }

    /// The error every leftover of a restarted instance gets; keeps dikw-core's
    /// `reason` for old clients.
    pub fn server_restart() -> Self {
        ErrorInfo::new(
            "server_restart",
            "the server restarted while the task was running",
        )
        .with("reason", "server_restart")
    }
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The op returned this result.
    Succeeded(Value),
    /// The op (or the engine on its behalf) failed.
    Failed(ErrorInfo),
    /// Someone cancelled the task.
    Cancelled,
}

impl Outcome {
    /// The terminal status this outcome gives the row.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Succeeded(_) => Status::Succeeded,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Cancelled => Status::Cancelled,
        }
    }
}

/// A task row: what the store knows of one task.
///
/// Serializes as WIRE.md's full row (`task_id, op, status, created_at,
/// started_at, finished_at, params_digest, result, error`); the other fields
/// are engine state and stay off the wire.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Task {
    /// The id.
    pub task_id: TaskId,
    /// The op's registered name.
    pub op: String,
    /// Current status.
    pub status: Status,
    /// When the task was accepted.
    pub created_at: Timestamp,
    /// When its op started, if it did.
    pub started_at: Option<Timestamp>,
    /// When it finished, if it did.
    pub finished_at: Option<Timestamp>,
    /// [`params_digest`] of the params.
    pub params_digest: String,
    /// The result, when succeeded.
    pub result: Option<Value>,
    /// The error, when failed.
    pub error: Option<ErrorInfo>,
    /// The params the op runs with (after validation and clamping).
    #[serde(skip)]
    pub params: Value,
    /// The idempotency key it was created with, if any.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// Whether a cancel was requested (a cancelled request always ends `cancelled`).
    #[serde(skip)]
    pub cancel_requested: bool,
    /// The instance running it, while running.
    #[serde(skip)]
    pub owner: Option<String>,
    /// Until when the owner's lease holds, while running.
    #[serde(skip)]
    pub lease_until: Option<Timestamp>,
    /// What links the task's run to the span that submitted it (a W3C
    /// `traceparent`), if that span was traced.
    #[serde(skip)]
    pub trace_parent: Option<String>,
}

impl Task {
    /// The summary row (the full row without `result` and `error`).
    pub fn summary(&self) -> TaskSummary<'_> {
        TaskSummary {
            task_id: self.task_id,
            op: &self.op,
            status: self.status,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            params_digest: &self.params_digest,
        }
    }
}

/// WIRE.md's summary row, borrowed from a [`Task`].
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
pub struct TaskSummary<'a> {
    pub task_id: TaskId,
    pub op: &'a str,
    pub status: Status,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub params_digest: &'a str,
}

/// A task to create.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// Its id (callers pick it so they can log it before the store answers).
    pub task_id: TaskId,
    /// The op's registered name.
    pub op: String,
    /// The op's params, already validated and clamped.
    pub params: Value,
    /// [`params_digest`] of `params`.
    pub params_digest: String,
    /// Creating twice with one key gives the first task back.
    pub idempotency_key: Option<String>,
    /// Creation time (the list order's first key).
    pub created_at: Timestamp,
    /// The submitting span's W3C `traceparent`, to link the run to it.
    pub trace_parent: Option<String>,
}

impl NewTask {
    /// A new task for `op` with `params`, created now, digest computed.
    pub fn new(op: impl Into<String>, params: Value) -> Self {
        NewTask {
            task_id: TaskId::new(),
            op: op.into(),
            params_digest: params_digest(&params),
            params,
            idempotency_key: None,
            created_at: Timestamp::now(),
            trace_parent: None,
        }
    }
}

/// WIRE.md's `params_digest`: the first 16 hex characters of the SHA-256 of
/// the params as canonical JSON (keys sorted, no spaces); `""` when there are
/// no params (`null` or `{}`).
pub fn params_digest(params: &Value) -> String {
    use sha2::{Digest, Sha256};
    match params {
        Value::Null => return String::new(),
        Value::Object(map) if map.is_empty() => return String::new(),
        _ => {}
    }
    let mut canonical = String::new();
    write_canonical(params, &mut canonical);
    let hash = Sha256::digest(canonical.as_bytes());
    hash.iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_matches_the_wire_sample() {
        assert_eq!(
            params_digest(&json!({"delay_ms":200,"count":3})),
            "9fbc57e71c2c80a0"
        );
        assert_eq!(params_digest(&json!({})), "");
        assert_eq!(params_digest(&Value::Null), "");
    }

    #[test]
    fn digest_ignores_key_order_at_every_depth() {
        let a = json!({"b":{"y":1,"x":[{"q":1,"p":2}]},"a":"é"});
        let b = json!({"a":"é","b":{"x":[{"p":2,"q":1}],"y":1}});
        assert_eq!(params_digest(&a), params_digest(&b));
    }

    #[test]
    fn status_and_id_parse_and_print() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>().unwrap(), status);
        }
        assert!("bogus".parse::<Status>().is_err());
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
        assert!("no-such-task".parse::<TaskId>().is_err());
    }

    #[test]
    fn row_serializes_as_the_wire_row() {
        let mut task = Task {
            task_id: "c664362d-18d4-4a93-b4c5-4ae747fc026a".parse().unwrap(),
            op: "echo".into(),
            status: Status::Succeeded,
            created_at: Timestamp::parse("2026-11-27T22:05:20.213Z").unwrap(),
            started_at: Timestamp::parse("2026-11-27T22:05:20.227Z"),
            finished_at: Timestamp::parse("2026-11-27T22:05:20.926Z"),
            params_digest: "9fbc57e71c2c80a0".into(),
            result: Some(json!({"echoed":3})),
            error: None,
            params: json!({"count":3,"delay_ms":200}),
            idempotency_key: None,
            cancel_requested: false,
            owner: None,
            lease_until: None,
            trace_parent: None,
        };
        assert_eq!(
            serde_json::to_string(&task).unwrap(),
            r#"{"task_id":"c664362d-18d4-4a93-b4c5-4ae747fc026a","op":"echo","status":"succeeded","created_at":"2026-11-27T22:05:20.213Z","started_at":"2026-11-27T22:05:20.227Z","finished_at":"2026-11-27T22:05:20.926Z","params_digest":"9fbc57e71c2c80a0","result":{"echoed":3},"error":null}"#
        );
        assert_eq!(
            serde_json::to_string(&task.summary()).unwrap(),
            r#"{"task_id":"c664362d-18d4-4a93-b4c5-4ae747fc026a","op":"echo","status":"succeeded","created_at":"2026-11-27T22:05:20.213Z","started_at":"2026-11-27T22:05:20.227Z","finished_at":"2026-11-27T22:05:20.926Z","params_digest":"9fbc57e71c2c80a0"}"#
        );
        task.error = Some(ErrorInfo::server_restart());
        let row: Value = serde_json::to_value(&task).unwrap();
        assert_eq!(row["error"]["code"], "server_restart");
        assert_eq!(row["error"]["reason"], "server_restart");
    }
}
