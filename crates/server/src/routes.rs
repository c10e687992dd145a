//! Request handlers for WIRE.md parts A and B (streaming is in `stream.rs`).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tasktape_core::follow::{MAX_WAIT, StoredPage};
use tasktape_core::manager::{Readiness, SubmitOptions};
use tasktape_core::model::{Status, Task};
use tasktape_core::op::masked_params;
use tasktape_core::store::{CancelOutcome, DeleteOutcome, ListQuery};
use tasktape_core::{SubmitError, Timestamp};
use tasktape_wire::{
    CancelAnswer, Health, Links, MinuteStats, OpInfo, OpsList, Ready, ServerInfo, Stats,
    Submission, TaskHandle, TaskPage, TaskResult,
};

use crate::AppState;
use crate::error::{ApiError, parse_task_id};
use crate::params::{Body, ListParams, Segment, int_param, json_body, query_map};

/// WIRE.md's task handle.
pub(crate) fn handle(task: &Task) -> TaskHandle {
    TaskHandle {
        task_id: task.task_id,
        op: task.op.clone(),
        status: task.status,
        created_at: task.created_at,
        links: Links::for_task(task.task_id),
    }
}

pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let unavailable = |message: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).into_response()
    };
    match state.readiness().await {
        Readiness::Ready => Json(Ready {
            status: "ready".to_owned(),
            storage_backend: state.manager().backend().to_owned(),
        })
        .into_response(),
        Readiness::Draining => unavailable(
            "this instance is draining for shutdown: it finishes its running tasks and starts no new ones"
                .to_owned(),
        ),
        // A newer tasktape migrated the store (`Store::check_schema`).
        Readiness::Outdated(error) => unavailable(format!(
            "{error}; this instance no longer claims tasks: upgrade it"
        )),
        Readiness::StoreUnavailable(error) => {
            tracing::warn!(%error, "readiness probe: store unavailable");
            unavailable("the store is not available".to_owned())
        }
        other => {
            tracing::warn!(?other, "readiness probe: not ready");
            unavailable("this instance is not ready".to_owned())
        }
    }
}

pub(crate) async fn info(State(state): State<AppState>) -> Json<ServerInfo> {
    Json(ServerInfo {
        tasktape_version: env!("CARGO_PKG_VERSION").to_owned(),
        engine_version: state.config().compat_engine_version.clone(),
        storage_backend: state.manager().backend().to_owned(),
        auth_required: state.config().token.is_some() || !state.config().tokens.is_empty(),
        engine: "tasktape".to_owned(),
        extra: serde_json::Map::new(),
    })
}

/// `GET /v1/stats?window=SECONDS` (60..=86400, default 3600): counts per
/// status and tasks ended per minute over the window, from the store's
/// counters (no scan of the tasks).
pub(crate) async fn stats(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Stats>, ApiError> {
    let query = query_map(raw.as_deref());
    let window = int_param(&query, "window", 60, 86_400, 3600)?;
    let manager = state.manager();
    let counts = manager.counts().await?;
    let now = Timestamp::now().as_millis();
    let current = now.div_euclid(60_000);
    let minutes = window / 60;
    let first = current - minutes + 1;
    let found = manager
        .finished_per_minute(Timestamp::from_millis(first * 60_000))
        .await?;
    let mut finished: Vec<MinuteStats> = (first..=current)
        .map(|minute| MinuteStats {
            minute: Timestamp::from_millis(minute * 60_000),
            succeeded: 0,
            failed: 0,
            cancelled: 0,
        })
        .collect();
    for entry in found {
        let index = entry.minute.as_millis().div_euclid(60_000) - first;
        let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|index| finished.get_mut(index))
        else {
            continue;
        };
        match entry.status {
            Status::Succeeded => slot.succeeded += entry.count,
            Status::Failed => slot.failed += entry.count,
            Status::Cancelled => slot.cancelled += entry.count,
            Status::Pending | Status::Running => {}
        }
    }
    Ok(Json(Stats {
        counts: Status::ALL
            .into_iter()
            .map(|status| (status, counts.get(&status).copied().unwrap_or(0)))
            .collect(),
        window: window as u64,
        bucket: 60,
        finished,
    }))
}

pub(crate) async fn list_ops(State(state): State<AppState>) -> Result<Json<OpsList>, ApiError> {
    let manager = state.manager();
    let ops = manager.ops();
    let serving = if ops.iter().any(|op| op.is_remote()) {
        manager.remote_op_workers().await?
    } else {
        Default::default()
    };
    let mut infos = Vec::new();
    for op in ops.iter() {
        infos.push(OpInfo {
            name: op.name().to_owned(),
            description: op.description().to_owned(),
            params_schema: op.params_schema(),
            remote: op.is_remote(),
            workers: op
                .is_remote()
                .then(|| serving.get(op.name()).copied().unwrap_or(0) as u64),
            flow: flow_info(manager, op.name()).await?,
        });
    }
    Ok(Json(OpsList { ops: infos }))
}

/// `op`'s flow control for `GET /v1/ops`, with its rate's window now.
async fn flow_info(
    manager: &tasktape_core::Manager,
    op: &str,
) -> Result<Option<tasktape_wire::FlowInfo>, ApiError> {
    let Some(flow) = manager.flow(op) else {
        return Ok(None);
    };
    let mut info = tasktape_wire::FlowInfo {
        key: flow.key.as_ref().map(|key| key.as_str().to_owned()),
        key_concurrency: flow.key_concurrency,
        weights: flow.weights.clone(),
        rate: flow.rate.map(|rate| rate.to_string()),
        rate_per_key: flow.rate_per_key,
        ..Default::default()
    };
    if let Some(rate) = flow.rate {
        // The listing stays up when the store does not answer: only the
        // rate's state is left out then.
        let now = manager.now();
        match manager
            .rate_window(op, now.add_millis(-rate.window_ms))
            .await
        {
            Ok((used, oldest)) => {
                info.rate_used = Some(used);
                if !flow.rate_per_key && used >= u64::from(rate.count) {
                    info.rate_free_at = oldest.map(|at| at.add_millis(rate.window_ms));
                }
            }
            Err(error) => tracing::warn!(op, %error, "could not read the op's rate window"),
        }
    }
    Ok(Some(info))
}

/// Where a submit's options came from: `query` for `run_at` and
/// `priority` of `POST /v1/{op}`, else the body.
#[derive(Clone, Copy)]
pub(crate) enum OptionsIn {
    Body,
    Query,
}

async fn submit(
    state: &AppState,
    op: &str,
    params: Value,
    options: SubmitOptions,
    options_in: OptionsIn,
) -> Result<Response, ApiError> {
    match state.manager().submit_with(op, params, options).await {
        Ok(submitted) => {
            let mut response = Json(handle(&submitted.task)).into_response();
            response
                .extensions_mut()
                .insert(crate::auth::AuditTask(submitted.task.task_id));
            Ok(response)
        }
        Err(error) => Err(refused_submit(error, options_in)),
    }
}

/// A refused submit in the envelope.
pub(crate) fn refused_submit(error: SubmitError, options_in: OptionsIn) -> ApiError {
    match error {
        SubmitError::UnknownOp { name, known } => ApiError::new(
            StatusCode::NOT_FOUND,
            "op_not_found",
            format!(
                "op '{name}' is not registered; known ops: {}",
                known.join(", ")
            ),
        )
        .with_detail(json!({"op": name, "known": known})),
        // The rules every submit obeys, from core.
        SubmitError::InvalidOption {
            field,
            kind,
            message,
        } => {
            let location = match (options_in, field.as_str()) {
                (OptionsIn::Query, "run_at" | "priority") => "query",
                _ => "body",
            };
            ApiError::invalid(location, &field, &kind, message)
        }
        SubmitError::InvalidParams(error) => {
            let field = if error.field.is_empty() {
                "params".to_owned()
            } else {
                error.field
            };
            ApiError::invalid("body", &field, &error.kind, error.message)
        }
        SubmitError::IdempotencyConflict { task_id } => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_conflict",
            format!("idempotency key already used by task {task_id} with other params"),
        )
        .with_detail(json!({"task_id": task_id})),
        SubmitError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down",
        ),
        SubmitError::Store(error) => error.into(),
        other => ApiError::internal("submit failed", &other),
    }
}

/// `POST /v1/{op}` with the params as the body (`POST /v1/echo` is dikw-core's).
pub(crate) async fn submit_named(
    State(state): State<AppState>,
    Segment(op): Segment,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut options = crate::jobs::query_options(&query_map(raw.as_deref()))?;
    // The query's options are judged before the body is read, as always
    // (the manager judges them again, with the key).
    options
        .check(Timestamp::now())
        .map_err(|error| refused_submit(error, OptionsIn::Query))?;
    let params = json_body(body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
            ApiError::invalid(
                "header",
                "Idempotency-Key",
                "string_type",
                "must be visible ASCII",
            )
        })?),
    };
    options.idempotency_key = key;
    submit(&state, &op, params, options, OptionsIn::Query).await
}

/// `POST /v1/tasks {op, params, idempotency_key?, run_at?, priority?, retry?}`.
pub(crate) async fn submit_task(
    State(state): State<AppState>,
    Body(submission): Body<Submission>,
) -> Result<Response, ApiError> {
    let options = crate::jobs::submission_options(&submission);
    submit(
        &state,
        &submission.op,
        submission.params,
        options,
        OptionsIn::Body,
    )
    .await
}

pub(crate) async fn list_tasks(
    State(state): State<AppState>,
    ListParams(query, after): ListParams,
) -> Result<Response, ApiError> {
    let page = state
        .manager()
        .list(ListQuery {
            status: query.status,
            op: query.op,
            limit: query.limit.map_or(100, |limit| limit as usize),
            after,
            created_after: query.created_after,
            created_before: query.created_before,
            metadata: query.metadata,
            ..ListQuery::default()
        })
        .await?;
    let response = TaskPage {
        tasks: page.tasks.iter().map(Task::summary).collect(),
        next_cursor: page
            .next_cursor
            .filter(|_| page.has_more)
            .map(|cursor| cursor.encode()),
        has_more: page.has_more,
    };
    Ok(Json(response).into_response())
}

async fn load(state: &AppState, task_id: &str) -> Result<Task, ApiError> {
    let id = parse_task_id(task_id)?;
    state
        .manager()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::task_not_found(task_id))
}

pub(crate) async fn get_task(
    State(state): State<AppState>,
    Segment(task_id): Segment,
) -> Result<Response, ApiError> {
    let task = load(&state, &task_id).await?;
    let mut row = task.row();
    // Secrets masked by the op's own schema; an op this instance does not
    // know could have any secret, so its params are not shown.
    row.params = state
        .manager()
        .ops()
        .get(&task.op)
        .map(|op| masked_params(&op.params_schema(), &task.params));
    Ok(Json(row).into_response())
}

pub(crate) async fn get_result(
    State(state): State<AppState>,
    Segment(task_id): Segment,
) -> Result<Response, ApiError> {
    let task = load(&state, &task_id).await?;
    if !task.status.is_terminal() {
        return Err(task_not_terminal(
            &task,
            "subscribe to /events to wait for the final state",
        ));
    }
    Ok(Json(TaskResult {
        task_id: task.task_id,
        status: task.status,
        started_at: task.started_at,
        finished_at: task.finished_at,
        result: task.result,
        error: task.error,
    })
    .into_response())
}

fn task_not_terminal(task: &Task, hint: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "task_not_terminal",
        format!("task '{}' is still {}; {hint}", task.task_id, task.status),
    )
    .with_detail(json!({"current_status": task.status}))
}

pub(crate) async fn get_events(
    State(state): State<AppState>,
    crate::slots::StreamSlot(_slot): crate::slots::StreamSlot,
    Segment(task_id): Segment,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = query_map(raw.as_deref());
    let from_seq = int_param(&query, "from_seq", 0, i64::MAX, 0)? as u64;
    let limit = int_param(&query, "limit", 1, 1000, 100)? as usize;
    let wait = int_param(&query, "wait", 0, MAX_WAIT.as_secs() as i64, 0)? as u64;
    let id = parse_task_id(&task_id)?;
    let manager = state.manager();
    let _follower = (wait > 0).then(|| state.metrics().follower("long_poll"));
    let page = tokio::select! {
        page = manager.events_page(id, from_seq, limit, Duration::from_secs(wait)) => page?,
        () = state.shutdown().cancelled() => manager.events_page(id, from_seq, limit, Duration::ZERO).await?,
    };
    let page = page.ok_or_else(|| ApiError::task_not_found(&task_id))?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        events_page_json(&page),
    )
        .into_response())
}

/// WIRE.md's events page (`tasktape_wire::EventsPage`'s shape), splicing
/// the stored event texts in as they are: replay copies bytes.
fn events_page_json(page: &StoredPage) -> String {
    use std::fmt::Write as _;
    let size: usize = page.events.iter().map(|event| event.json.len() + 1).sum();
    let mut out = String::with_capacity(size + 160);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{{\"task_id\":\"{}\",\"task_status\":\"{}\",\"events\":[",
        page.task_id, page.task_status
    );
    for (index, event) in page.events.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&event.json);
    }
    let _ = write!(
        out,
        "],\"next_from_seq\":{},\"has_more\":{},\"last_seq\":{}}}",
        page.next_from_seq, page.has_more, page.last_seq
    );
    out
}

pub(crate) async fn cancel_task(
    State(state): State<AppState>,
    Segment(task_id): Segment,
) -> Result<Response, ApiError> {
    let id = parse_task_id(&task_id)?;
    let (cancelled, already_terminal) = match state.manager().cancel(id).await? {
        CancelOutcome::Cancelled { .. } | CancelOutcome::Requested { .. } => (true, false),
        CancelOutcome::AlreadyTerminal { .. } => (false, true),
        CancelOutcome::NotFound => return Err(ApiError::task_not_found(&task_id)),
    };
    Ok(Json(CancelAnswer {
        task_id: id,
        cancelled,
        already_terminal,
    })
    .into_response())
}

pub(crate) async fn delete_task(
    State(state): State<AppState>,
    Segment(task_id): Segment,
) -> Result<Response, ApiError> {
    let id = parse_task_id(&task_id)?;
    match state.manager().delete(id).await? {
        DeleteOutcome::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        DeleteOutcome::NotTerminal { status } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_not_terminal",
            format!(
                "task '{task_id}' is still {status}; cancel it and wait for its final event first"
            ),
        )
        .with_detail(json!({"current_status": status}))),
        DeleteOutcome::NotFound => Err(ApiError::task_not_found(&task_id)),
    }
}
