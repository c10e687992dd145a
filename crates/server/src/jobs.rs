//! The job-system routes and submit options: `run_at`, `priority` and
//! `retry` of a submit (read here; their rules are core's), bulk submit
//! (`POST /v1/tasks/batch`), the bulk actions (`POST /v1/tasks/cancel`,
//! `POST /v1/tasks/retry`) and `GET /v1/schedules`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tasktape_core::Timestamp;
use tasktape_core::manager::SubmitOptions;
use tasktape_wire::{
    BatchResult, BatchResults, BulkCancelAnswer, BulkRetryAnswer, ScheduleList, Submission,
    TaskFilter,
};

use crate::AppState;
use crate::error::ApiError;
use crate::params::{BatchBody, Body, refused};
use crate::routes::{OptionsIn, handle, refused_submit};

/// The body limit of `POST /v1/tasks/batch`: 10,000 submissions of up to
/// 6 KiB each (other routes keep `body_limit`).
pub const BATCH_BODY_LIMIT: usize = 64 << 20;

/// Bulk submits read and judged at once: each body may be 64 MiB, and
/// its parsed form several times that.
static BATCHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `POST /v1/tasks/batch {"tasks": [submission, …]}`: one result per
/// submission, in order (a refused one does not stop the others), all
/// written together.
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let _turn = BATCHES
        .acquire()
        .await
        .map_err(|error| ApiError::internal("bulk submit", &error))?;
    let Body(BatchBody(entries)) =
        <Body<BatchBody> as axum::extract::FromRequest<AppState>>::from_request(request, &state)
            .await?;
    let mut refusals = Vec::with_capacity(entries.len());
    let mut accepted = Vec::with_capacity(entries.len());
    for entry in entries {
        match Submission::from_value(entry) {
            Ok(submission) => {
                let options = submission_options(&submission);
                accepted.push((submission.op, submission.params, options));
                refusals.push(None);
            }
            Err(error) => refusals.push(Some(refused("body", &error))),
        }
    }
    let mut answers = state
        .manager()
        .submit_many(accepted)
        .await
        .map_err(|error| refused_submit(error, OptionsIn::Body))?
        .into_iter();
    let results = refusals
        .into_iter()
        .map(|refusal| {
            let answer = match refusal {
                Some(error) => Err(error),
                None => match answers.next() {
                    Some(Ok(submitted)) => Ok(handle(&submitted.task)),
                    Some(Err(error)) => Err(refused_submit(error, OptionsIn::Body)),
                    None => Err(ApiError::internal(
                        "bulk submit",
                        &"fewer answers than submissions",
                    )),
                },
            };
            match answer {
                Ok(handle) => BatchResult::Submitted(handle),
                Err(error) => BatchResult::Refused(error.envelope()),
            }
        })
        .collect();
    Ok(Json(BatchResults { results }).into_response())
}

/// `run_at` from its text in the query; how far ahead it may be is
/// core's rule (`SubmitOptions::check`).
fn run_at(text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse(text).ok_or_else(|| {
        ApiError::invalid(
            "query",
            "run_at",
            "datetime_parsing",
            "input should be an RFC 3339 time, e.g. 2026-12-01T03:00:00Z or 2026-12-01T04:00:00+01:00",
        )
    })
}

/// The options of a `POST /v1/tasks` body (decoded, each optional); what
/// they may be is core's rule (`SubmitOptions::check`). A priority past
/// `i32` is kept past the range, so core refuses it.
pub(crate) fn submission_options(submission: &Submission) -> SubmitOptions {
    SubmitOptions {
        idempotency_key: submission.idempotency_key.clone(),
        run_at: submission.run_at,
        priority: submission.priority.map_or(0, clamp),
        retry: submission.retry.clone(),
        retry_of: None,
        metadata: submission.metadata.clone(),
    }
}

fn clamp(priority: i64) -> i32 {
    i32::try_from(priority).unwrap_or(if priority < 0 { i32::MIN } else { i32::MAX })
}

/// The options of `POST /v1/{op}` (`?run_at=…&priority=…&meta.KEY=VALUE`).
pub(crate) fn query_options(
    query: &std::collections::HashMap<String, String>,
) -> Result<SubmitOptions, ApiError> {
    let mut options = SubmitOptions::default();
    if let Some(text) = query.get("run_at").filter(|text| !text.is_empty()) {
        options.run_at = Some(run_at(text)?);
    }
    if let Some(text) = query.get("priority").filter(|text| !text.is_empty()) {
        let value: i64 = text.trim().parse().map_err(|_| {
            ApiError::invalid(
                "query",
                "priority",
                "int_type",
                "input should be a valid integer",
            )
        })?;
        options.priority = clamp(value);
    }
    options.metadata = tasktape_wire::metadata::from_query(query).map_err(query_field)?;
    Ok(options)
}

/// A refusal of a query field.
fn query_field(error: tasktape_wire::FieldError) -> ApiError {
    ApiError::invalid("query", &error.field, error.kind, error.message)
}

/// A bulk action's filter: at least one filter.
fn filter(Body(filter): Body<TaskFilter>) -> Result<TaskFilter, ApiError> {
    filter
        .check()
        .map_err(|(field, message)| ApiError::invalid("body", field, "missing", message))?;
    Ok(filter)
}

/// `POST /v1/tasks/cancel`.
pub(crate) async fn bulk_cancel(
    State(state): State<AppState>,
    body: Body<TaskFilter>,
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
    body: Body<TaskFilter>,
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
