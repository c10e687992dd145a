//! Task ids, statuses and the error object: the values every wire body is
//! made of. Owns no behaviour beyond parsing and formatting.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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

/// In the OpenAPI description a task id is a UUID string.
#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for TaskId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::Custom("uuid".into())))
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for TaskId {}

#[cfg(test)]
mod tests {
    use super::*;

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
}
