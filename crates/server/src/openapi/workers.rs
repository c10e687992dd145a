//! The description's anchors for the worker protocol (`docs/WORKERS.md`)
//! and the workers' listing.

use tasktape_wire::worker::{
    ClaimAnswer, ClaimRequest, HeartbeatAnswer, HeartbeatRequest, Registered, Registration,
    ReportAnswer, ReportRequest, SessionBody, WorkersList,
};

use super::ApiErrors;

#[utoipa::path(
    post,
    path = "/v1/worker/register",
    tag = "workers",
    summary = "A remote worker registers its ops and opens a session",
    request_body(content = Registration, description = "the worker's id, host, pid, version, capacity and ops"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the session and the server's lease timings", body = Registered),
        ApiErrors,
    ),
)]
pub(super) fn register() {}

#[utoipa::path(
    post,
    path = "/v1/worker/claim",
    tag = "workers",
    summary = "Claims due tasks of the worker's ops (a long-poll up to wait_ms)",
    request_body(content = ClaimRequest, description = "the session, how many in all and per op, how long to wait"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the claimed tasks, each with its lease token (none when the wait ended)", body = ClaimAnswer),
        ApiErrors,
    ),
)]
pub(super) fn claim() {}

#[utoipa::path(
    post,
    path = "/v1/worker/report",
    tag = "workers",
    summary = "Events and finishes of the worker's tasks, one answer per item",
    request_body(content = ReportRequest, description = "per task: its lease token, events in order, maybe its finish"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "per item: taken, or why the worker must stop that task", body = ReportAnswer),
        ApiErrors,
    ),
)]
pub(super) fn report() {}

#[utoipa::path(
    post,
    path = "/v1/worker/heartbeat",
    tag = "workers",
    summary = "Renews the worker's session and its tasks' leases",
    request_body(content = HeartbeatRequest, description = "the session and the tasks the worker runs"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "tasks the worker no longer holds", body = HeartbeatAnswer),
        ApiErrors,
    ),
)]
pub(super) fn heartbeat() {}

#[utoipa::path(
    post,
    path = "/v1/worker/drain",
    tag = "workers",
    summary = "The worker drains: it claims nothing more",
    request_body(content = SessionBody, description = "the session"),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "draining"),
        ApiErrors,
    ),
)]
pub(super) fn drain() {}

#[utoipa::path(
    post,
    path = "/v1/worker/deregister",
    tag = "workers",
    summary = "The worker exits; tasks it still held end server_shutdown",
    request_body(content = SessionBody, description = "the session"),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "the session ended"),
        ApiErrors,
    ),
)]
pub(super) fn deregister() {}

#[utoipa::path(
    get,
    path = "/v1/worker/signals",
    tag = "workers",
    summary = "The worker's signals as Server-Sent Events: ready, cancel, stop, drain",
    params(
        ("session" = String, Query, description = "the session from the registration"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "an event stream (`event: cancel`, `data: {\"task_id\": …}`)", content_type = "text/event-stream", body = String),
        ApiErrors,
    ),
)]
pub(super) fn signals() {}

#[utoipa::path(
    get,
    path = "/v1/workers",
    tag = "workers",
    summary = "Remote workers seen in the last day: live, draining or gone",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the workers", body = WorkersList),
        ApiErrors,
    ),
)]
pub(super) fn list() {}

#[utoipa::path(
    post,
    path = "/v1/workers/{worker_id}/drain",
    tag = "workers",
    summary = "Asks a live worker to drain (it finishes what it runs and exits)",
    params(
        ("worker_id" = String, Path, description = "the worker's id"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "the worker was told"),
        ApiErrors,
    ),
)]
pub(super) fn drain_worker() {}
