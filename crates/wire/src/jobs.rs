//! Bodies of the job-system routes: retry policies, bulk actions and
//! schedules (`POST /v1/tasks/cancel`, `POST /v1/tasks/retry`,
//! `GET /v1/schedules`), and the reserved partial that marks a failed
//! attempt on a tape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Status, TaskId};
use crate::time::Timestamp;

/// The `kind` of the `partial` event that ends a failed attempt of a task
/// that will be tried again; its payload is [`AttemptFailed`].
pub const ATTEMPT_FAILED: &str = "tasktape.attempt_failed";

/// The payload of a `tasktape.attempt_failed` partial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AttemptFailed {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// Its error.
    pub error: crate::model::ErrorInfo,
    /// When the next attempt is due.
    pub retry_at: Timestamp,
}

/// How the wait between attempts grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `initial_ms`, then twice as long each time, up to `max_ms`.
    #[default]
    Exponential,
    /// `initial_ms` every time.
    Fixed,
}

/// How a failed task is tried again (`"retry": {…}` in `POST /v1/tasks`,
/// `retries = {…}` of an op in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry; at most 100).
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 100))]
    pub max_attempts: u32,
    /// `exponential` (the default) or `fixed`.
    #[serde(default)]
    pub backoff: Backoff,
    /// The first wait, in ms (default 1000; at most 7 days).
    #[serde(default = "default_initial_ms")]
    #[cfg_attr(feature = "utoipa", schema(maximum = 604_800_000))]
    pub initial_ms: u64,
    /// The longest wait, in ms (default 300000; at least `initial_ms`, at
    /// most 7 days).
    #[serde(default = "default_max_ms")]
    #[cfg_attr(feature = "utoipa", schema(maximum = 604_800_000))]
    pub max_ms: u64,
    /// Whether each wait is moved by up to ±20 % at random (default true).
    #[serde(default = "default_jitter")]
    pub jitter: bool,
}

fn default_initial_ms() -> u64 {
    1000
}

fn default_max_ms() -> u64 {
    300_000
}

fn default_jitter() -> bool {
    true
}

/// The most attempts a policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// The longest wait a policy may ask for between attempts (7 days), in ms.
pub const MAX_BACKOFF_MS: u64 = 7 * 24 * 3600 * 1000;

impl RetryPolicy {
    /// No retry: one attempt.
    pub fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            jitter: true,
        }
    }

    /// What is wrong with the policy, as `(field, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err((
                "max_attempts",
                format!("must be 1 to {MAX_ATTEMPTS} (attempts in all, the first included)"),
            ));
        }
        if self.initial_ms > MAX_BACKOFF_MS {
            return Err((
                "initial_ms",
                format!("must be at most {MAX_BACKOFF_MS} (7 days)"),
            ));
        }
        if self.max_ms > MAX_BACKOFF_MS {
            return Err((
                "max_ms",
                format!("must be at most {MAX_BACKOFF_MS} (7 days)"),
            ));
        }
        if self.max_ms < self.initial_ms {
            return Err(("max_ms", "must be at least initial_ms".to_owned()));
        }
        Ok(())
    }
}

/// Which tasks a bulk action acts on (`POST /v1/tasks/cancel`,
/// `POST /v1/tasks/retry`): every given filter must hold; at least one is
/// required.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    /// These tasks (at least one when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(min_items = 1))]
    pub ids: Option<Vec<TaskId>>,
    /// One status or a list of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusFilter>,
    /// Tasks of this op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// Created at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<Timestamp>,
    /// Created before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<Timestamp>,
    /// Tasks whose metadata holds every one of these.
    #[serde(default, skip_serializing_if = "crate::Metadata::is_empty")]
    pub metadata: crate::Metadata,
}

impl TaskFilter {
    /// A filter from a decoded JSON body: anything but an object is refused
    /// (`model_type`), one that does not decode names the body
    /// (`value_error`).
    pub fn from_value(body: serde_json::Value) -> Result<TaskFilter, crate::FieldError> {
        if !body.is_object() {
            return Err(crate::FieldError::new(
                "body",
                "model_type",
                "body must be an object of filters: ids, status, op, created_after, created_before, metadata",
            ));
        }
        let filter: TaskFilter = serde_json::from_value(body)
            .map_err(|error| crate::FieldError::new("body", "value_error", error.to_string()))?;
        crate::metadata::check(&filter.metadata)?;
        Ok(filter)
    }

    /// Whether no filter is given (a bulk action refuses that).
    pub fn is_empty(&self) -> bool {
        self.ids.is_none()
            && self.status.is_none()
            && self.op.is_none()
            && self.created_after.is_none()
            && self.created_before.is_none()
            && self.metadata.is_empty()
    }

    /// What is wrong with a filter a bulk action was given, as
    /// `(field, message)`: none at all, or an empty list (which would read
    /// as "any").
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.is_empty() {
            return Err((
                "body",
                "give at least one filter (ids, status, op, created_after, created_before, metadata): an empty filter would match every task",
            ));
        }
        if self.ids.as_ref().is_some_and(Vec::is_empty) {
            return Err(("ids", "must list at least one task id"));
        }
        if matches!(&self.status, Some(StatusFilter::Many(list)) if list.is_empty()) {
            return Err(("status", "must name at least one status"));
        }
        Ok(())
    }

    /// The statuses asked for (empty: any).
    pub fn statuses(&self) -> Vec<Status> {
        match &self.status {
            None => Vec::new(),
            Some(StatusFilter::One(status)) => vec![*status],
            Some(StatusFilter::Many(statuses)) => statuses.clone(),
        }
    }
}

/// One status or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum StatusFilter {
    /// One status.
    One(Status),
    /// Any of these.
    Many(Vec<Status>),
}

/// What `POST /v1/tasks/cancel` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BulkCancelAnswer {
    /// Tasks the filter matched.
    pub matched: u64,
    /// Of those, tasks cancelled (pending ones) or asked to stop (running
    /// ones); finished tasks stay as they are.
    pub cancelled: u64,
}

/// What `POST /v1/tasks/retry` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BulkRetryAnswer {
    /// Tasks the filter matched.
    pub matched: u64,
    /// Of those, finished tasks a new task was made for (linked by
    /// `retry_of`); pending and running ones are left alone.
    pub retried: u64,
}

/// One schedule (`GET /v1/schedules`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ScheduleInfo {
    /// Its name in the config (`[schedules.NAME]`).
    pub name: String,
    /// The op it submits.
    pub op: String,
    /// Five-field cron.
    pub cron: String,
    /// The time zone the cron is read in.
    pub timezone: String,
    /// `none`, `last` or `all`.
    pub catch_up: String,
    /// The params each task gets.
    pub params: Value,
    /// The latest slot a task was made for, if any.
    pub last_slot: Option<Timestamp>,
    /// The next slot.
    pub next_slot: Option<Timestamp>,
}

/// `GET /v1/schedules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ScheduleList {
    /// Every schedule, by name.
    pub schedules: Vec<ScheduleInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_with_defaults_and_is_checked() {
        let policy: RetryPolicy = serde_json::from_str(r#"{"max_attempts":3}"#).unwrap();
        assert_eq!(policy.backoff, Backoff::Exponential);
        assert_eq!(
            (policy.initial_ms, policy.max_ms, policy.jitter),
            (1000, 300_000, true)
        );
        assert!(policy.check().is_ok());
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_attempts":3,"x":1}"#).is_err());
        let bad = RetryPolicy {
            max_attempts: 0,
            ..policy.clone()
        };
        assert_eq!(bad.check().unwrap_err().0, "max_attempts");
        let bad = RetryPolicy {
            initial_ms: 5000,
            max_ms: 10,
            ..policy
        };
        assert_eq!(bad.check().unwrap_err().0, "max_ms");
    }

    #[test]
    fn a_filter_takes_one_status_or_a_list() {
        let one: TaskFilter = serde_json::from_str(r#"{"status":"failed"}"#).unwrap();
        assert_eq!(one.statuses(), vec![Status::Failed]);
        let many: TaskFilter =
            serde_json::from_str(r#"{"status":["pending","running"],"op":"echo"}"#).unwrap();
        assert_eq!(many.statuses(), vec![Status::Pending, Status::Running]);
        assert!(TaskFilter::default().is_empty());
        assert_eq!(TaskFilter::default().check().unwrap_err().0, "body");
        let no_status: TaskFilter = serde_json::from_str(r#"{"status":[]}"#).unwrap();
        assert_eq!(no_status.check().unwrap_err().0, "status");
        let no_ids: TaskFilter = serde_json::from_str(r#"{"ids":[],"op":"x"}"#).unwrap();
        assert_eq!(no_ids.check().unwrap_err().0, "ids");
        assert!(many.check().is_ok());
        assert!(serde_json::from_str::<TaskFilter>(r#"{"stat":"failed"}"#).is_err());
    }
}
