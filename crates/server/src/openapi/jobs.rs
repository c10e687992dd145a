//! The description's anchors for the job-system routes: bulk cancel and
//! retry, and the schedules.

use tasktape_wire::{BulkCancelAnswer, BulkRetryAnswer, ScheduleList, TaskFilter};

use super::ApiErrors;

#[utoipa::path(
    post,
    path = "/v1/tasks/cancel",
    tag = "tasks",
    summary = "Cancels every pending or running task a filter matches",
    request_body(content = TaskFilter, description = "filters, all of which must hold; at least one"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "how many matched and were cancelled", body = BulkCancelAnswer),
        ApiErrors,
    ),
)]
pub(super) fn bulk_cancel() {}

#[utoipa::path(
    post,
    path = "/v1/tasks/retry",
    tag = "tasks",
    summary = "Makes a new task (linked by retry_of) for every finished task a filter matches",
    request_body(content = TaskFilter, description = "filters, all of which must hold; at least one"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "how many matched and were retried", body = BulkRetryAnswer),
        ApiErrors,
    ),
)]
pub(super) fn bulk_retry() {}

#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    summary = "The configured schedules with their last and next slots",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "every schedule", body = ScheduleList),
        ApiErrors,
    ),
)]
pub(super) fn schedules() {}
