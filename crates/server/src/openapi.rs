//! `GET /openapi.json`: the OpenAPI 3.1 description of every route the
//! router has, its parameters and bodies (the wire crate's types, derived),
//! and on each the error responses it can give, all in the envelope. The
//! functions below are the description's anchors (one per route and
//! method), not handlers; a test checks the description names the route
//! table's API routes (the dashboard's pages and assets are not the API's).

#![allow(dead_code)]

mod jobs;
mod shape;
mod workers;

use axum::Json;
use axum::response::IntoResponse;
use tasktape_wire::{
    CancelAnswer, ErrorEnvelope, EventsPage, Health, OpsList, Ready, ServerInfo, Stats, Status,
    Submission, TaskHandle, TaskId, TaskPage, TaskResult, TaskRow,
};
use utoipa::OpenApi;

/// The description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tasktape",
        description = "Durable background tasks with an ordered event tape per task (dikw-core compatible /v1 API).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    servers((url = "http://127.0.0.1:8765", description = "a local server on the default address")),
    tags(
        (name = "tasks", description = "submit, read, follow, cancel and delete tasks; bulk actions"),
        (name = "ops", description = "what the server runs"),
        (name = "schedules", description = "tasks submitted on a cron schedule"),
        (name = "stats", description = "counts and throughput for the dashboard"),
        (name = "probes", description = "liveness and readiness, open without a token"),
        (name = "server", description = "the server itself: version, metrics, this description"),
        (name = "workers", description = "remote workers: the worker protocol and the workers' listing"),
    ),
    paths(
        healthz, readyz, info, list_ops, stats, list_tasks, submit_task, get_task, delete_task,
        get_result, get_events, stream_events, cancel_task, submit_named, metrics, openapi_json,
        jobs::submit_batch, jobs::bulk_cancel, jobs::bulk_retry, jobs::schedules,
        workers::register, workers::claim, workers::report, workers::heartbeat, workers::drain,
        workers::deregister, workers::signals, workers::list, workers::drain_worker,
    ),
    components(schemas(ErrorEnvelope)),
    modifiers(&BearerAuth),
)]
pub(crate) struct ApiDoc;

/// The bearer token (when the server has one: see `GET /v1/info`'s `auth_required`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The errors an API route can answer, all in the envelope.
#[derive(utoipa::IntoResponses)]
enum ApiErrors {
    /// a malformed query, body or cursor, or (`/result`) a task still live.
    #[response(
        status = 400,
        description = "a malformed query, body or cursor, or (`/result`) a task still live (`task_not_terminal`)"
    )]
    BadRequest(ErrorEnvelope),
    /// no or an unknown bearer token.
    #[response(status = 401, description = "no or an unknown bearer token")]
    Unauthorized(ErrorEnvelope),
    /// a cross-site request, or a token outside its scope.
    #[response(
        status = 403,
        description = "a cross-site request, or a token outside its scope"
    )]
    Forbidden(ErrorEnvelope),
    /// no such task, op or route.
    #[response(status = 404, description = "no such task, op or route")]
    NotFound(ErrorEnvelope),
    /// the method is not allowed on this route.
    #[response(status = 405, description = "the method is not allowed on this route")]
    MethodNotAllowed(ErrorEnvelope),
    /// a conflict (an idempotency key reused with other params).
    #[response(
        status = 409,
        description = "a conflict (an idempotency key reused with other params)"
    )]
    Conflict(ErrorEnvelope),
    /// the body is over the size limit.
    #[response(status = 413, description = "the body is over the size limit")]
    TooLarge(ErrorEnvelope),
    /// a Host this server does not answer to.
    #[response(status = 421, description = "a Host this server does not answer to")]
    Misdirected(ErrorEnvelope),
    /// an invalid field, named in the error.
    #[response(status = 422, description = "an invalid field, named in the error")]
    Invalid(ErrorEnvelope),
    /// the store is unavailable, or the server is draining.
    #[response(
        status = 503,
        description = "the store is unavailable, or the server is draining"
    )]
    Unavailable(ErrorEnvelope),
}

/// The errors an open route (no token, no params) can answer.
#[derive(utoipa::IntoResponses)]
enum OpenErrors {
    /// a cross-site request, or a token outside its scope.
    #[response(
        status = 403,
        description = "a cross-site request, or a token outside its scope"
    )]
    Forbidden(ErrorEnvelope),
    /// the method is not allowed on this route.
    #[response(status = 405, description = "the method is not allowed on this route")]
    MethodNotAllowed(ErrorEnvelope),
    /// a Host this server does not answer to.
    #[response(status = 421, description = "a Host this server does not answer to")]
    Misdirected(ErrorEnvelope),
    /// the store is unavailable, or the server is draining.
    #[response(
        status = 503,
        description = "the store is unavailable, or the server is draining"
    )]
    Unavailable(ErrorEnvelope),
}

/// The description as served: derived, then shaped for generators
/// (`shape.rs`).
pub(crate) fn document() -> serde_json::Value {
    shape::shape(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> impl IntoResponse {
    Json(document())
}

#[utoipa::path(
    get,
    path = "/v1/healthz",
    tag = "probes",
    summary = "Liveness: the process answers",
    security(()),
    responses(
        (status = 200, description = "alive", body = Health),
        OpenErrors,
    ),
)]
fn healthz() {}

#[utoipa::path(
    get,
    path = "/v1/readyz",
    tag = "probes",
    summary = "Readiness: the store answers and the instance is not draining",
    security(()),
    responses(
        (status = 200, description = "ready", body = Ready),
        OpenErrors,
    ),
)]
fn readyz() {}

#[utoipa::path(
    get,
    path = "/v1/info",
    tag = "server",
    summary = "Server version, backend and whether a token is needed",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the server", body = ServerInfo),
        ApiErrors,
    ),
)]
fn info() {}

#[utoipa::path(
    get,
    path = "/v1/ops",
    tag = "ops",
    summary = "The registered ops and their params' JSON Schemas",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the ops", body = OpsList),
        ApiErrors,
    ),
)]
fn list_ops() {}

#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "stats",
    summary = "Tasks per status and tasks ended per minute",
    params(
        ("window" = Option<u64>, Query, nullable = false, minimum = 60, maximum = 86400, description = "seconds back, default 3600"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the counts", body = Stats),
        ApiErrors,
    ),
)]
fn stats() {}

#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    summary = "Tasks, newest first, a page at a time",
    description = "Also takes `meta.KEY=VALUE` query fields (any number): only tasks whose metadata holds every pair given.",
    params(
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1000, description = "default 100"),
        ("status" = Option<Status>, Query, nullable = false, description = "only tasks in this status"),
        ("op" = Option<String>, Query, nullable = false, description = "only this op"),
        ("cursor" = Option<String>, Query, nullable = false, description = "next_cursor of the page before"),
        ("created_after" = Option<tasktape_wire::Timestamp>, Query, nullable = false, description = "only tasks created at or after this time (RFC 3339, UTC)"),
        ("created_before" = Option<tasktape_wire::Timestamp>, Query, nullable = false, description = "only tasks created before this time (RFC 3339, UTC)"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "a page of tasks", body = TaskPage),
        ApiErrors,
    ),
)]
fn list_tasks() {}

#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "tasks",
    summary = "Submits a task: {op, params, idempotency_key?, run_at?, priority?, retry?, metadata?}",
    request_body(content = Submission, description = "the op, its params and an optional idempotency key"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the task (the existing one for a reused idempotency key)", body = TaskHandle),
        ApiErrors,
    ),
)]
fn submit_task() {}

#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}",
    tag = "tasks",
    summary = "One task's row",
    params(
        ("task_id" = TaskId, Path, description = "the task id (a UUID)"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the row", body = TaskRow),
        ApiErrors,
    ),
)]
fn get_task() {}

#[utoipa::path(
    delete,
    path = "/v1/tasks/{task_id}",
    tag = "tasks",
    summary = "Deletes a finished task and its tape",
    params(
        ("task_id" = TaskId, Path, description = "the task id (a UUID)"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "deleted"),
        ApiErrors,
    ),
)]
fn delete_task() {}

#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}/result",
    tag = "tasks",
    summary = "A task's outcome",
    params(
        ("task_id" = TaskId, Path, description = "the task id (a UUID)"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the outcome of a finished task (a live one is a 400 task_not_terminal)", body = TaskResult),
        ApiErrors,
    ),
)]
fn get_result() {}

#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}/events",
    tag = "tasks",
    summary = "A page of the tape (a long-poll with wait)",
    params(
        ("task_id" = TaskId, Path, description = "the task id (a UUID)"),
        ("from_seq" = Option<u64>, Query, nullable = false, minimum = 0, maximum = 9223372036854775807_i64, description = "first seq wanted, default 0"),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1000, description = "default 100"),
        ("wait" = Option<u32>, Query, nullable = false, minimum = 0, maximum = 60, description = "seconds to wait for new events"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "a page of events", body = EventsPage),
        ApiErrors,
    ),
)]
fn get_events() {}

#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}/events/stream",
    tag = "tasks",
    summary = "The tape as Server-Sent Events, closed after final",
    params(
        ("task_id" = TaskId, Path, description = "the task id (a UUID)"),
        ("from_seq" = Option<u64>, Query, nullable = false, minimum = 0, maximum = 9223372036854775807_i64, description = "first seq wanted, default 0"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{1,18}$", description = "resume after this seq"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "an event stream: each event's JSON in data, its seq as id", content_type = "text/event-stream", body = String),
        ApiErrors,
    ),
)]
fn stream_events() {}

#[utoipa::path(
    post,
    path = "/v1/tasks/{task_id}/cancel",
    tag = "tasks",
    summary = "Cancels a task (idempotent)",
    params(
        ("task_id" = TaskId, Path, description = "the task id (a UUID)"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "what the cancel did", body = CancelAnswer),
        ApiErrors,
    ),
)]
fn cancel_task() {}

#[utoipa::path(
    post,
    path = "/v1/{op}",
    tag = "tasks",
    summary = "Submits a task of op with the body as its params (dikw-core style)",
    description = "Also takes `meta.KEY=VALUE` query fields: the task's metadata.",
    params(
        ("op" = String, Path, description = "the op's name"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 256, pattern = "^[!-~]+$", description = "submitting again with it returns the first task"),
        ("run_at" = Option<tasktape_wire::Timestamp>, Query, nullable = false, description = "not before this time (RFC 3339, UTC, at most 10 years ahead)"),
        ("priority" = Option<i32>, Query, nullable = false, minimum = -1000000, maximum = 1000000, description = "higher runs first (default 0)"),
    ),
    request_body(content = Object, description = "the op's params"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the task", body = TaskHandle),
        ApiErrors,
    ),
)]
fn submit_named() {}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    summary = "Prometheus metrics",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the text exposition format", content_type = "text/plain", body = String),
        ApiErrors,
    ),
)]
fn metrics() {}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "server",
    summary = "This description",
    security(()),
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object),
        OpenErrors,
    ),
)]
fn openapi_json() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The description names exactly the router's routes and methods.
    #[test]
    fn every_route_is_described() {
        let doc = ApiDoc::openapi();
        let mut described: Vec<String> = doc
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                let mut methods = Vec::new();
                if item.get.is_some() {
                    methods.push(format!("GET {path}"));
                }
                if item.post.is_some() {
                    methods.push(format!("POST {path}"));
                }
                if item.delete.is_some() {
                    methods.push(format!("DELETE {path}"));
                }
                methods
            })
            .collect();
        described.sort();
        let mut routed: Vec<String> = crate::table::TABLE
            .iter()
            .filter(|route| route.access != crate::table::Access::Page)
            .map(|route| (route.method, route.path))
            .map(|(method, path)| format!("{method} {path}"))
            .collect();
        routed.sort();
        assert_eq!(described, routed);
        let text = serde_json::to_string(&doc).unwrap();
        assert!(text.contains("\"openapi\":\"3.1.0\""), "{text}");
    }
}
