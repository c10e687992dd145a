//! The worker protocol's bodies (`/v1/worker/…`, `GET /v1/workers`; see
//! `docs/WORKERS.md`): what a remote worker sends and what it is answered.
//! Each request is read with [`from_value`], whose refusal names the field
//! by its path (`items[2].events[0].type`), then checked for its limits.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jobs::RetryPolicy;
use crate::model::TaskId;
use crate::requests::FieldError;
use crate::time::Timestamp;

/// Most ops one worker declares.
pub const MAX_WORKER_OPS: usize = 100;
/// Most items, and most events in all, in one report; most tasks a claim
/// takes.
pub const MAX_BATCH: usize = 1000;
/// The longest a claim waits, in ms.
pub const MAX_CLAIM_WAIT_MS: u64 = 30_000;
/// The most a worker's capacity or an op's cap may be.
pub const MAX_CAPACITY: u32 = 10_000;

/// Reads a request body as `T`; a refusal names the field by its path.
pub fn from_value<T: DeserializeOwned>(body: Value) -> Result<T, FieldError> {
    if !body.is_object() {
        return Err(FieldError::new(
            "body",
            "model_attributes_type",
            "must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(body).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let mut field = if path == "." { "body".to_owned() } else { path };
        // An event's body is told apart by its `type`: name it.
        if message.starts_with("unknown variant") || message.starts_with("missing field `type`") {
            field.push_str(".type");
        }
        let kind = if message.starts_with("missing field") {
            "missing"
        } else {
            "value_error"
        };
        FieldError::new(field, kind, message)
    })
}

/// Checks a worker id: 1–128 bytes of `[A-Za-z0-9_.:@-]`.
pub fn check_worker_id(field: &str, id: &str) -> Result<(), FieldError> {
    let fine = |c: char| c.is_ascii_alphanumeric() || "_.:@-".contains(c);
    if id.is_empty() || id.len() > 128 || !id.chars().all(fine) {
        return Err(FieldError::new(
            field,
            "string_pattern_mismatch",
            "must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ -",
        ));
    }
    Ok(())
}

/// Checks an op name as every op is named: 1–64 bytes of `[a-z0-9_-]`.
pub fn check_op_name(field: &str, name: &str) -> Result<(), FieldError> {
    let fine = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 64 || !name.chars().all(fine) {
        return Err(FieldError::new(
            field,
            "string_pattern_mismatch",
            "must be 1 to 64 characters of a-z 0-9 _ -",
        ));
    }
    Ok(())
}

fn check_cap(field: &str, value: u32) -> Result<(), FieldError> {
    if !(1..=MAX_CAPACITY).contains(&value) {
        return Err(FieldError::new(
            field,
            "range",
            format!("must be 1 to {MAX_CAPACITY}"),
        ));
    }
    Ok(())
}

/// One op a worker serves (`POST /v1/worker/register`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkerOp {
    /// The op's name (`POST /v1/{name}` submits it).
    pub name: String,
    /// One line about it.
    #[serde(default)]
    pub description: String,
    /// A JSON Schema (2020-12) of its params; submits are validated
    /// against it.
    #[serde(default = "any_object")]
    pub params_schema: Value,
    /// The most this worker runs at once (its own cap; the op's global
    /// limit is the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 10000))]
    pub concurrency: Option<u32>,
    /// How a failed task is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Whether running it again after a lost run is safe.
    #[serde(default)]
    pub idempotent: bool,
    /// A time limit per run, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1))]
    pub timeout_ms: Option<u64>,
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

/// `POST /v1/worker/register`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Registration {
    /// Stable across the worker's restarts.
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:@-]+$")
    )]
    pub worker_id: String,
    /// Its host name.
    #[serde(default)]
    pub host: String,
    /// Its process id.
    #[serde(default)]
    pub pid: u32,
    /// Its software and version.
    #[serde(default)]
    pub version: String,
    /// The most tasks it runs at once.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 10000))]
    pub capacity: u32,
    /// The ops it serves.
    #[cfg_attr(feature = "utoipa", schema(min_items = 1, max_items = 100))]
    pub ops: Vec<WorkerOp>,
}

impl Registration {
    /// Reads and checks a registration.
    pub fn from_value(body: Value) -> Result<Self, FieldError> {
        let registration: Registration = from_value(body)?;
        check_worker_id("worker_id", &registration.worker_id)?;
        check_cap("capacity", registration.capacity)?;
        if registration.host.len() > 256 || registration.version.len() > 256 {
            let field = if registration.host.len() > 256 {
                "host"
            } else {
                "version"
            };
            return Err(FieldError::new(
                field,
                "string_too_long",
                "must be at most 256 characters",
            ));
        }
        if registration.ops.is_empty() || registration.ops.len() > MAX_WORKER_OPS {
            return Err(FieldError::new(
                "ops",
                "too_long",
                format!("must list 1 to {MAX_WORKER_OPS} ops"),
            ));
        }
        for (i, op) in registration.ops.iter().enumerate() {
            check_op_name(&format!("ops[{i}].name"), &op.name)?;
            if registration.ops[..i]
                .iter()
                .any(|other| other.name == op.name)
            {
                return Err(FieldError::new(
                    format!("ops[{i}].name"),
                    "value_error",
                    format!("op {:?} is listed twice", op.name),
                ));
            }
            if op.description.len() > 1024 {
                return Err(FieldError::new(
                    format!("ops[{i}].description"),
                    "string_too_long",
                    "must be at most 1024 characters",
                ));
            }
            if !op.params_schema.is_object() {
                return Err(FieldError::new(
                    format!("ops[{i}].params_schema"),
                    "dict_type",
                    "must be a JSON Schema object",
                ));
            }
            if let Some(cap) = op.concurrency {
                check_cap(&format!("ops[{i}].concurrency"), cap)?;
            }
            if op.timeout_ms == Some(0) {
                return Err(FieldError::new(
                    format!("ops[{i}].timeout_ms"),
                    "range",
                    "must be at least 1",
                ));
            }
            if let Some(policy) = &op.retry
                && let Err((field, message)) = policy.check()
            {
                return Err(FieldError::new(
                    format!("ops[{i}].retry.{field}"),
                    "value_error",
                    message,
                ));
            }
        }
        Ok(registration)
    }
}

/// The answer to a registration: the session and the server's timings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Registered {
    /// The worker's id.
    pub worker_id: String,
    /// The session every later call names.
    pub session: String,
    /// How long the session (and each claimed task) lasts without a heartbeat.
    pub lease_ttl_ms: u64,
    /// How often to heartbeat.
    pub lease_interval_ms: u64,
    /// How long a cancelled task may take to finish.
    pub cancel_grace_ms: u64,
    /// The most items or events in one report, and tasks in one claim.
    pub max_batch: u64,
}

/// A body naming only the session (`drain`, `deregister`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SessionBody {
    /// The session from the registration.
    pub session: String,
}

/// `POST /v1/worker/claim`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ClaimRequest {
    /// The session.
    pub session: String,
    /// The most tasks to take in all.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1000))]
    pub max: u32,
    /// The most tasks to take per op (ops the worker registered).
    pub ops: std::collections::BTreeMap<String, u32>,
    /// How long to wait for a task, in ms (default and most 30000).
    #[serde(default = "default_wait")]
    #[cfg_attr(feature = "utoipa", schema(maximum = 30000))]
    pub wait_ms: u64,
}

fn default_wait() -> u64 {
    MAX_CLAIM_WAIT_MS
}

impl ClaimRequest {
    /// Reads and checks a claim.
    pub fn from_value(body: Value) -> Result<Self, FieldError> {
        let claim: ClaimRequest = from_value(body)?;
        if claim.max == 0 || claim.max as usize > MAX_BATCH {
            return Err(FieldError::new(
                "max",
                "range",
                format!("must be 1 to {MAX_BATCH}"),
            ));
        }
        if claim.wait_ms > MAX_CLAIM_WAIT_MS {
            return Err(FieldError::new(
                "wait_ms",
                "range",
                format!("must be 0 to {MAX_CLAIM_WAIT_MS}"),
            ));
        }
        if claim.ops.is_empty() {
            return Err(FieldError::new(
                "ops",
                "too_short",
                "must name at least one op",
            ));
        }
        Ok(claim)
    }
}

/// A task handed to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Assignment {
    /// The task.
    pub task_id: TaskId,
    /// Its op.
    pub op: String,
    /// Its params (validated against the op's schema at submit).
    pub params: Value,
    /// This run's attempt, from 1.
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// When its time limit ends, if it has one.
    pub deadline: Option<Timestamp>,
    /// The lease token every write for this run carries.
    pub lease: String,
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ClaimAnswer {
    /// The claimed tasks (none when the wait ended).
    pub tasks: Vec<Assignment>,
}

mod report;

pub use report::{
    HeartbeatAnswer, HeartbeatRequest, ItemAnswer, ReportAnswer, ReportItem, ReportRequest,
    WorkerError, WorkerEvent, WorkerFinish,
};

/// A worker's state in `GET /v1/workers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Connected, claiming.
    Live,
    /// Finishing what it runs; claims nothing more.
    Draining,
    /// Ended (deregistered, replaced, or its heartbeats stopped).
    Gone,
}

/// A worker as `GET /v1/workers` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    /// Its id.
    pub worker_id: String,
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its software and version.
    pub version: String,
    /// The ops it serves.
    pub ops: Vec<String>,
    /// The most tasks it runs at once.
    pub capacity: u32,
    /// Tasks it runs now.
    pub running: u64,
    /// When it last renewed its session.
    pub last_heartbeat: Timestamp,
    /// When it registered.
    pub registered_at: Timestamp,
    /// Live, draining or gone.
    pub state: WorkerState,
}

/// `GET /v1/workers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkersList {
    /// Every worker seen in the last day, by id.
    pub workers: Vec<WorkerInfo>,
}

/// The fields of two declarations of one op that differ.
pub fn differences(a: &WorkerOp, b: &WorkerOp) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if a.params_schema != b.params_schema {
        fields.push("params_schema");
    }
    if a.retry != b.retry {
        fields.push("retry");
    }
    if a.idempotent != b.idempotent {
        fields.push("idempotent");
    }
    if a.timeout_ms != b.timeout_ms {
        fields.push("timeout_ms");
    }
    if a.description != b.description {
        fields.push("description");
    }
    fields
}
