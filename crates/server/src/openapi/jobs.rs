//! The description's anchors for the job-system routes: bulk cancel and
//! retry, and the schedules.

use tasktape_wire::{
    BatchResults, BatchSubmission, BulkCancelAnswer, BulkRetryAnswer, ScheduleList, TaskFilter,
};

use super::ApiErrors;

#[utoipa::path(
    post,
    path = "/v1/tasks/batch",
    tag = "tasks",
    summary = "Submits up to 10,000 tasks at once, each as POST /v1/tasks takes one",
    description = "One result per submission, in order: its task's handle, or the error POST /v1/tasks would have answered for it alone (the answer is 200 whatever the mix). An idempotency key given twice in one batch gives the first one's task. No submissions, or more than 10,000: 422, nothing written. The accepted submissions are written together (one transaction): a store error fails them all. Its body may be up to 64 MiB.",
    request_body(content = BatchSubmission, description = "the submissions"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "one result per submission, in order", body = BatchResults),
        ApiErrors,
    ),
)]
pub(super) fn submit_batch() {}

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
