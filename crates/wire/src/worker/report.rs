//! What a worker reports (`POST /v1/worker/report`) and its heartbeat
//! (`POST /v1/worker/heartbeat`), and their answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{MAX_BATCH, MAX_CAPACITY, from_value};
use crate::event::EventBody;
use crate::model::TaskId;
use crate::requests::FieldError;
use crate::time::Timestamp;

/// An event a worker reports, with its own time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkerEvent {
    /// A `progress`, `log` or `partial` body.
    #[serde(flatten)]
    pub body: EventBody,
    /// When the worker saw it (clamped between the tape's last time and
    /// the server's now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
}

/// An error that ends a worker's attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkerError {
    /// Machine-readable cause.
    pub code: String,
    /// One line.
    pub message: String,
    /// Anything more (a traceback…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// Whether no retry may fix it.
    #[serde(default)]
    pub permanent: bool,
}

/// How a worker's run ended: a result or an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkerFinish {
    /// The result, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WorkerError>,
}

/// One task's events and finish in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ReportItem {
    /// The task.
    pub task_id: TaskId,
    /// Its run's lease token (from the claim).
    pub lease: String,
    /// The number of this item's first event among the run's events, as
    /// the worker counts them from 0. With it, a report sent again after
    /// its answer was lost writes nothing twice: the server skips the
    /// events it already wrote. Without it, every event is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Events, in order.
    #[serde(default)]
    pub events: Vec<WorkerEvent>,
    /// The end of the run, after the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<WorkerFinish>,
}

/// `POST /v1/worker/report`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ReportRequest {
    /// The session.
    pub session: String,
    /// Per task: events, then maybe the finish.
    #[cfg_attr(feature = "utoipa", schema(max_items = 1000))]
    pub items: Vec<ReportItem>,
}

impl ReportRequest {
    /// Reads and checks a whole report before anything is written.
    pub fn from_value(body: Value) -> Result<Self, FieldError> {
        // A finish says what ended the run: `{"result": …}` (null is a
        // result) or `{"error": …}`; one with neither is a mistake.
        if let Some(items) = body.get("items").and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                if let Some(finish) = item.get("finish").and_then(Value::as_object)
                    && !finish.contains_key("result")
                    && !finish.contains_key("error")
                {
                    return Err(FieldError::new(
                        format!("items[{i}].finish"),
                        "missing",
                        "must hold a result or an error",
                    ));
                }
            }
        }
        let report: ReportRequest = from_value(body)?;
        if report.items.len() > MAX_BATCH {
            return Err(FieldError::new(
                "items",
                "too_long",
                format!("must hold at most {MAX_BATCH} items"),
            ));
        }
        let events: usize = report.items.iter().map(|item| item.events.len()).sum();
        if events > MAX_BATCH {
            return Err(FieldError::new(
                "items",
                "too_long",
                format!("must hold at most {MAX_BATCH} events in all ({events} given)"),
            ));
        }
        for (i, item) in report.items.iter().enumerate() {
            for (j, event) in item.events.iter().enumerate() {
                if !matches!(
                    event.body,
                    EventBody::Progress { .. } | EventBody::Log { .. } | EventBody::Partial { .. }
                ) {
                    return Err(FieldError::new(
                        format!("items[{i}].events[{j}].type"),
                        "literal_error",
                        "must be progress, log or partial",
                    ));
                }
            }
            if let Some(finish) = &item.finish {
                match (&finish.result, &finish.error) {
                    (Some(_), Some(_)) => {
                        return Err(FieldError::new(
                            format!("items[{i}].finish"),
                            "value_error",
                            "must hold a result or an error, not both",
                        ));
                    }
                    (_, Some(error)) if error.code.is_empty() || error.code.len() > 128 => {
                        return Err(FieldError::new(
                            format!("items[{i}].finish.error.code"),
                            "string_length",
                            "must be 1 to 128 characters",
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(report)
    }
}

/// What became of one item of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ItemAnswer {
    /// The task.
    pub task_id: TaskId,
    /// Whether it was taken; `false`: stop the task and send nothing more.
    pub ok: bool,
    /// Why not (`lease_lost`, `task_ended`, `unknown_task`, `tape_full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why not, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ItemAnswer {
    /// Taken.
    pub fn ok(task_id: TaskId) -> Self {
        ItemAnswer {
            task_id,
            ok: true,
            code: None,
            message: None,
        }
    }

    /// Refused: the worker stops the task.
    pub fn stop(task_id: TaskId, code: &str, message: impl Into<String>) -> Self {
        ItemAnswer {
            task_id,
            ok: false,
            code: Some(code.to_owned()),
            message: Some(message.into()),
        }
    }
}

/// The answer to a report: one per item, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ReportAnswer {
    /// Per item.
    pub items: Vec<ItemAnswer>,
}

/// `POST /v1/worker/heartbeat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    /// The session.
    pub session: String,
    /// The tasks the worker runs.
    #[serde(default)]
    pub tasks: Vec<TaskId>,
}

impl HeartbeatRequest {
    /// Reads and checks a heartbeat.
    pub fn from_value(body: Value) -> Result<Self, FieldError> {
        let heartbeat: HeartbeatRequest = from_value(body)?;
        if heartbeat.tasks.len() > MAX_CAPACITY as usize {
            return Err(FieldError::new(
                "tasks",
                "too_long",
                format!("must hold at most {MAX_CAPACITY} ids"),
            ));
        }
        Ok(heartbeat)
    }
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct HeartbeatAnswer {
    /// Tasks the worker named that it no longer holds: stop them.
    pub stop: Vec<TaskId>,
}
