//! The worker protocol (`docs/WORKERS.md`): `/v1/worker/…` for remote
//! workers (scope `worker` or `admin`), `GET /v1/workers` and
//! `POST /v1/workers/{worker_id}/drain` for people.

use std::convert::Infallible;

use axum::Extension;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};
use tasktape_core::WorkerCallError;
use tasktape_core::manager::{Signal, SignalStream};
use tasktape_core::tasktape_wire::FieldError;
use tasktape_core::tasktape_wire::worker::{
    ClaimAnswer, ClaimRequest, HeartbeatAnswer, HeartbeatRequest, Registration, ReportAnswer,
    ReportRequest, SessionBody, WorkersList, check_worker_id, from_value,
};

use crate::AppState;
use crate::auth::{Caller, WorkerOps};
use crate::error::ApiError;
use crate::params::{Body, BodyType, Segment, query_map, refused};
use crate::slots::StreamSlot;

impl BodyType for Registration {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        let registration = Registration::from_value(body)?;
        let reserved = crate::table::reserved_op_names();
        for (i, op) in registration.ops.iter().enumerate() {
            if reserved.contains(&op.name.as_str()) {
                return Err(FieldError::new(
                    format!("ops[{i}].name"),
                    "value_error",
                    format!(
                        "{:?} is the name of a server route (/v1/{}); reserved: {}",
                        op.name,
                        op.name,
                        reserved.join(", ")
                    ),
                ));
            }
        }
        Ok(registration)
    }
}

impl BodyType for ClaimRequest {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        ClaimRequest::from_value(body)
    }
}

impl BodyType for ReportRequest {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        ReportRequest::from_value(body)
    }
}

impl BodyType for HeartbeatRequest {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        HeartbeatRequest::from_value(body)
    }
}

impl BodyType for SessionBody {
    fn from_value(body: Value) -> Result<Self, FieldError> {
        from_value(body)
    }
}

impl From<WorkerCallError> for ApiError {
    fn from(error: WorkerCallError) -> Self {
        let message = error.to_string();
        match error {
            WorkerCallError::SessionUnknown => {
                ApiError::new(StatusCode::CONFLICT, "session_unknown", message)
            }
            WorkerCallError::IdInUse { worker_id } => {
                ApiError::new(StatusCode::CONFLICT, "worker_id_in_use", message)
                    .with_detail(json!({"worker_id": worker_id}))
            }
            WorkerCallError::OpConflict { op, fields, .. } => {
                ApiError::new(StatusCode::CONFLICT, "op_conflict", message)
                    .with_detail(json!({"op": op, "fields": fields}))
            }
            WorkerCallError::IdOwned { worker_id, token } => {
                ApiError::new(StatusCode::FORBIDDEN, "worker_id_taken", message)
                    .with_detail(json!({"worker_id": worker_id, "token": token}))
            }
            WorkerCallError::OpNotAllowed { op } => {
                ApiError::new(StatusCode::FORBIDDEN, "op_not_allowed", message)
                    .with_detail(json!({"op": op}))
            }
            WorkerCallError::Invalid { field, message } => {
                refused("body", &FieldError::new(field, "value_error", message))
            }
            WorkerCallError::Draining => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", message)
            }
            WorkerCallError::Store(error) => error.into(),
            _ => ApiError::internal("worker call", &message),
        }
    }
}

pub(crate) async fn register(
    State(state): State<AppState>,
    ops: Option<Extension<WorkerOps>>,
    caller: Option<Extension<Caller>>,
    Body(registration): Body<Registration>,
) -> Result<Response, ApiError> {
    let allowed = ops.and_then(|Extension(WorkerOps(ops))| ops);
    let token = caller.as_ref().and_then(|Extension(caller)| caller.name());
    let registered = state
        .manager()
        .register_worker_as(registration, allowed.as_deref(), token)
        .await?;
    Ok(Json(registered).into_response())
}

pub(crate) async fn claim(
    State(state): State<AppState>,
    StreamSlot(_slot): StreamSlot,
    Body(request): Body<ClaimRequest>,
) -> Result<Response, ApiError> {
    let tasks = state.manager().worker_claim(request).await?;
    Ok(Json(ClaimAnswer { tasks }).into_response())
}

pub(crate) async fn report(
    State(state): State<AppState>,
    Body(request): Body<ReportRequest>,
) -> Result<Response, ApiError> {
    let items = state.manager().worker_report(request).await?;
    Ok(Json(ReportAnswer { items }).into_response())
}

pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Body(request): Body<HeartbeatRequest>,
) -> Result<Response, ApiError> {
    let stop = state.manager().worker_heartbeat(request).await?;
    Ok(Json(HeartbeatAnswer { stop }).into_response())
}

pub(crate) async fn drain(
    State(state): State<AppState>,
    Body(body): Body<SessionBody>,
) -> Result<Response, ApiError> {
    state.manager().worker_drain(&body.session).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn deregister(
    State(state): State<AppState>,
    Body(body): Body<SessionBody>,
) -> Result<Response, ApiError> {
    state.manager().worker_deregister(&body.session).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn signals(
    State(state): State<AppState>,
    StreamSlot(slot): StreamSlot,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = query_map(raw.as_deref());
    let Some(session) = query.get("session").filter(|session| !session.is_empty()) else {
        return Err(ApiError::invalid(
            "query",
            "session",
            "missing",
            "the session from the registration is required",
        ));
    };
    let stream = state.manager().worker_signals(session)?;
    let keep_alive = KeepAlive::new()
        .interval(
            state
                .config()
                .heartbeat
                .min(std::time::Duration::from_secs(15)),
        )
        .text("ping");
    Ok(Sse::new(signal_events(stream, state, slot))
        .keep_alive(keep_alive)
        .into_response())
}

/// The signal stream's events. At the server's shutdown it goes on for
/// [`crate::WIND_DOWN`]: the manager then stops the worker's runs, and
/// those cancels must still reach it.
fn signal_events(
    stream: SignalStream,
    state: AppState,
    slot: crate::slots::Slot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (stream, state, slot, None),
        |(mut stream, state, slot, mut closing): (_, _, _, Option<tokio::time::Instant>)| async move {
            let signal = loop {
                match closing {
                    None => tokio::select! {
                        signal = stream.next() => break signal?,
                        () = state.shutdown().cancelled() => {
                            closing = Some(tokio::time::Instant::now() + crate::WIND_DOWN);
                        }
                    },
                    Some(until) => {
                        break tokio::time::timeout_at(until, stream.next()).await.ok()??;
                    }
                }
            };
            let (name, data) = match signal {
                Signal::Ready => ("ready", json!({})),
                Signal::Cancel(task_id) => ("cancel", json!({"task_id": task_id})),
                Signal::Stop(task_id, code) => ("stop", json!({"task_id": task_id, "code": code})),
                Signal::Drain => ("drain", json!({})),
                _ => ("unknown", json!({})),
            };
            let event = Event::default().event(name).data(data.to_string());
            Some((Ok(event), (stream, state, slot, closing)))
        },
    )
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let workers = state.manager().workers().await?;
    Ok(Json(WorkersList { workers }).into_response())
}

pub(crate) async fn drain_worker(
    State(state): State<AppState>,
    Segment(worker_id): Segment,
) -> Result<Response, ApiError> {
    check_worker_id("worker_id", &worker_id).map_err(|error| refused("path", &error))?;
    if !state.manager().drain_worker(&worker_id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no live worker has the id {worker_id:?}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
