//! The job-system routes and submit options: `run_at`, `priority` and
//! `retry` of a submit, the bulk actions (`POST /v1/tasks/cancel`,
//! `POST /v1/tasks/retry`) and `GET /v1/schedules`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tasktape_core::Timestamp;
use tasktape_core::manager::SubmitOptions;
use tasktape_wire::{BulkCancelAnswer, BulkRetryAnswer, RetryPolicy, ScheduleList, TaskFilter};

use crate::AppState;
use crate::error::ApiError;
use crate::params::json_body;

/// The priorities a submit may ask for.
pub(crate) const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1_000_000..=1_000_000;

/// How far ahead `run_at` may be (10 years): further is a typo.
const MAX_DELAY_MS: i64 = 10 * 366 * 24 * 3600 * 1000;

/// `run_at` from its text (`location` is `body` or `query`).
pub(crate) fn run_at(text: &str, location: &str) -> Result<Timestamp, ApiError> {
    let at = Timestamp::parse(text).ok_or_else(|| {
        ApiError::invalid(
            location,
            "run_at",
            "datetime_parsing",
            "input should be an RFC 3339 time in UTC, e.g. 2026-12-01T03:00:00Z",
        )
    })?;
    if at.as_millis() - Timestamp::now().as_millis() > MAX_DELAY_MS {
        return Err(ApiError::invalid(
            location,
            "run_at",
            "datetime_future",
            "must be at most 10 years from now",
        ));
    }
    Ok(at)
}

/// `priority` from its number.
pub(crate) fn priority(value: Option<i64>, location: &str) -> Result<i32, ApiError> {
    let Some(value) = value else {
        return Err(ApiError::invalid(
            location,
            "priority",
            "int_type",
            "input should be a valid integer",
        ));
    };
    if !PRIORITY_RANGE.contains(&value) {
        return Err(ApiError::invalid(
            location,
            "priority",
            "range",
            format!(
                "must be {} to {}",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ),
        ));
    }
    Ok(value as i32)
}

/// The options of `POST /v1/tasks`: `run_at`, `priority`, `retry` (each
/// optional, `null` as absent), taken out of `body`.
pub(crate) fn body_options(
    body: &mut serde_json::Map<String, Value>,
) -> Result<SubmitOptions, ApiError> {
    let mut options = SubmitOptions::default();
    match body.remove("run_at") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => options.run_at = Some(run_at(&text, "body")?),
        Some(_) => {
            return Err(ApiError::invalid(
                "body",
                "run_at",
                "string_type",
                "input should be an RFC 3339 time in UTC, e.g. 2026-12-01T03:00:00Z",
            ));
        }
    }
    match body.remove("priority") {
        None | Some(Value::Null) => {}
        Some(value) => options.priority = priority(value.as_i64(), "body")?,
    }
    match body.remove("retry") {
        None | Some(Value::Null) => {}
        Some(value) => {
            let policy: RetryPolicy = serde_json::from_value(value).map_err(|error| {
                ApiError::invalid("body", "retry", "retry_policy", error.to_string())
            })?;
            policy.check().map_err(|(field, message)| {
                ApiError::invalid("body", &format!("retry.{field}"), "value_error", message)
            })?;
            options.retry = Some(policy);
        }
    }
    Ok(options)
}

/// The options of `POST /v1/{op}` (`?run_at=…&priority=…`).
pub(crate) fn query_options(
    query: &std::collections::HashMap<String, String>,
) -> Result<SubmitOptions, ApiError> {
    let mut options = SubmitOptions::default();
    if let Some(text) = query.get("run_at").filter(|text| !text.is_empty()) {
        options.run_at = Some(run_at(text, "query")?);
    }
    if let Some(text) = query.get("priority").filter(|text| !text.is_empty()) {
        options.priority = priority(text.trim().parse().ok(), "query")?;
    }
    Ok(options)
}

/// A bulk action's filter from its body: at least one filter.
fn filter(body: Result<Bytes, BytesRejection>) -> Result<TaskFilter, ApiError> {
    let value = json_body(body)?;
    if !value.is_object() {
        return Err(ApiError::invalid(
            "body",
            "body",
            "model_type",
            "body must be an object of filters: ids, status, op, created_after, created_before",
        ));
    }
    let filter: TaskFilter = serde_json::from_value(value)
        .map_err(|error| ApiError::invalid("body", "body", "value_error", error.to_string()))?;
    filter
        .check()
        .map_err(|(field, message)| ApiError::invalid("body", field, "missing", message))?;
    Ok(filter)
}

/// `POST /v1/tasks/cancel`.
pub(crate) async fn bulk_cancel(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let filter = filter(body)?;
    let count = state.manager().cancel_matching(&filter).await?;
    tracing::info!(
        matched = count.matched,
        cancelled = count.acted,
        "bulk cancel"
    );
    Ok(Json(BulkCancelAnswer {
        matched: count.matched,
        cancelled: count.acted,
    })
    .into_response())
}

/// `POST /v1/tasks/retry`.
pub(crate) async fn bulk_retry(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let filter = filter(body)?;
    let count = state.manager().retry_matching(&filter).await?;
    tracing::info!(matched = count.matched, retried = count.acted, "bulk retry");
    Ok(Json(BulkRetryAnswer {
        matched: count.matched,
        retried: count.acted,
    })
    .into_response())
}

/// `GET /v1/schedules`.
pub(crate) async fn schedules(State(state): State<AppState>) -> Result<Response, ApiError> {
    let schedules = state.manager().schedules().await?;
    Ok(Json(ScheduleList { schedules }).into_response())
}
