//! The task model: ids, statuses, outcomes and the task row, with the serde
//! shapes WIRE.md fixes. Owns no behaviour beyond parsing and formatting.

use serde_json::Value;

use crate::retry::RetryPlan;
use crate::time::Timestamp;
pub use tasktape_wire::Metadata;
pub use tasktape_wire::model::{ErrorInfo, InvalidStatus, InvalidTaskId, Status, TaskId};
use tasktape_wire::{TaskRow, TaskSummary};

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The op returned this result.
    Succeeded(Value),
    /// The op (or the engine on its behalf) failed.
    Failed(ErrorInfo),
    /// Someone cancelled the task.
    Cancelled,
    /// Not an end: the attempt failed and the task waits, `pending`, for
    /// another one. The store writes a `tasktape.attempt_failed` partial
    /// (or, when a cancel was requested, `final` cancelled).
    Retry(Box<Retry>),
}

/// An attempt that failed and will be tried again.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// The attempt's error.
    pub error: ErrorInfo,
    /// When the next attempt is due.
    pub retry_at: Timestamp,
    /// When the attempt started, if known (for the row's history).
    pub started_at: Option<Timestamp>,
}

impl Outcome {
    /// The row's `result` and `error` columns for this outcome, as JSON
    /// texts (both `None` for a cancel).
    pub fn stored_texts(&self) -> (Option<String>, Option<String>) {
        match self {
            Outcome::Succeeded(result) => (Some(result.to_string()), None),
            Outcome::Failed(error) => (None, serde_json::to_string(error).ok()),
            Outcome::Cancelled | Outcome::Retry(_) => (None, None),
        }
    }

    /// The terminal status this outcome gives the row.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Succeeded(_) => Status::Succeeded,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Cancelled => Status::Cancelled,
            Outcome::Retry(_) => Status::Pending,
        }
    }
}

/// A task row: what the store knows of one task. [`Task::row`] and
/// [`Task::summary`] give its wire forms (`tasktape-wire`); the other
/// fields are engine state and stay off the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// The id.
    pub task_id: TaskId,
    /// The op's registered name.
    pub op: String,
    /// Current status.
    pub status: Status,
    /// When the task was accepted.
    pub created_at: Timestamp,
    /// When its op started, if it did.
    pub started_at: Option<Timestamp>,
    /// When it finished, if it did.
    pub finished_at: Option<Timestamp>,
    /// [`params_digest`] of the params.
    pub params_digest: String,
    /// The result, when succeeded.
    pub result: Option<Value>,
    /// The error, when failed.
    pub error: Option<ErrorInfo>,
    /// The params the op runs with (after validation and clamping).
    pub params: Value,
    /// The idempotency key it was created with, if any.
    pub idempotency_key: Option<String>,
    /// Whether a cancel was requested (a cancelled request always ends `cancelled`).
    pub cancel_requested: bool,
    /// The instance running it, while running.
    pub owner: Option<String>,
    /// Until when the owner's lease holds, while running.
    pub lease_until: Option<Timestamp>,
    /// What links the task's run to the span that submitted it (a W3C
    /// `traceparent`), if that span was traced.
    pub trace_parent: Option<String>,
    /// The attempt running or last run (1 for the first; 0 before it).
    pub attempt: u32,
    /// Attempts in all its retry plan allows (1: no retry).
    pub max_attempts: u32,
    /// When a pending task is due (`None`: now).
    pub run_at: Option<Timestamp>,
    /// Higher runs first.
    pub priority: i32,
    /// The task this one retries (bulk retry).
    pub retry_of: Option<TaskId>,
    /// How it is retried, if it is.
    pub retry: Option<RetryPlan>,
    /// The earlier attempts' records (`retry::attempt_record`), oldest first.
    pub history: Vec<Value>,
    /// Its metadata (empty: none).
    pub metadata: Metadata,
    /// Its flow key (`flow::Flow::key`), for an op with one.
    pub flow_key: Option<String>,
}

impl Task {
    /// The row a store holds right after creating `task`: pending, nothing
    /// started, no owner.
    pub fn pending(task: NewTask) -> Task {
        Task {
            task_id: task.task_id,
            op: task.op,
            status: Status::Pending,
            created_at: task.created_at,
            started_at: None,
            finished_at: None,
            params_digest: task.params_digest,
            result: None,
            error: None,
            params: task.params,
            idempotency_key: task.idempotency_key,
            cancel_requested: false,
            owner: None,
            lease_until: None,
            trace_parent: task.trace_parent,
            attempt: 0,
            max_attempts: task
                .retry
                .as_ref()
                .map_or(1, |plan| plan.policy.max_attempts),
            run_at: task.run_at,
            priority: task.priority,
            retry_of: task.retry_of,
            retry: task.retry,
            history: Vec::new(),
            metadata: task.metadata,
            flow_key: task.flow_key,
        }
    }

    /// WIRE.md's full row (`GET /v1/tasks/{id}`).
    pub fn row(&self) -> TaskRow {
        TaskRow {
            task_id: self.task_id,
            op: self.op.clone(),
            status: self.status,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            params_digest: self.params_digest.clone(),
            result: self.result.clone(),
            error: self.error.clone(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            run_at: self.run_at,
            priority: self.priority,
            retry_of: self.retry_of,
            metadata: self.metadata.clone(),
            params: None,
        }
    }

    /// WIRE.md's summary row (the full row without `result` and `error`).
    pub fn summary(&self) -> TaskSummary {
        TaskSummary {
            task_id: self.task_id,
            op: self.op.clone(),
            status: self.status,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            params_digest: self.params_digest.clone(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            run_at: self.run_at,
            priority: self.priority,
            retry_of: self.retry_of,
            metadata: self.metadata.clone(),
        }
    }
}

/// A task to create.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// Its id (callers pick it so they can log it before the store answers).
    pub task_id: TaskId,
    /// The op's registered name.
    pub op: String,
    /// The op's params, already validated and clamped.
    pub params: Value,
    /// [`params_digest`] of `params`.
    pub params_digest: String,
    /// Creating twice with one key gives the first task back.
    pub idempotency_key: Option<String>,
    /// Creation time (the list order's first key).
    pub created_at: Timestamp,
    /// The submitting span's W3C `traceparent`, to link the run to it.
    pub trace_parent: Option<String>,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Not before this time (`None`: now).
    pub run_at: Option<Timestamp>,
    /// How a failure is retried (`None`: it is not).
    pub retry: Option<RetryPlan>,
    /// The task this one retries.
    pub retry_of: Option<TaskId>,
    /// Its metadata (checked by the submit rules; empty: none).
    pub metadata: Metadata,
    /// Its flow key, for an op with one (the submitter renders it).
    pub flow_key: Option<String>,
}

impl NewTask {
    /// A new task for `op` with `params`, created now, digest computed.
    pub fn new(op: impl Into<String>, params: Value) -> Self {
        NewTask {
            task_id: TaskId::new(),
            op: op.into(),
            params_digest: params_digest(&params),
            params,
            idempotency_key: None,
            created_at: Timestamp::now(),
            trace_parent: None,
            priority: 0,
            run_at: None,
            retry: None,
            retry_of: None,
            metadata: Metadata::new(),
            flow_key: None,
        }
    }
}

/// The digest a server shows: the first 16 hex characters of an
/// HMAC-SHA256 of the params' canonical JSON under `key` (a random key the
/// store keeps, the same for every instance sharing it), `""` when there
/// are no params. It still tells equal params apart from different ones
/// (idempotency keys compare it), but reveals nothing of them: an unkeyed
/// hash of a short secret could be guessed offline.
pub fn keyed_params_digest(key: &[u8], params: &Value) -> String {
    match params {
        Value::Null => return String::new(),
        Value::Object(map) if map.is_empty() => return String::new(),
        _ => {}
    }
    let mut canonical = String::new();
    write_canonical(params, &mut canonical);
    hmac_sha256(key, canonical.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// HMAC (RFC 2104) over SHA-256, whose block is 64 bytes.
fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// WIRE.md's `params_digest`: the first 16 hex characters of the SHA-256 of
/// the params as canonical JSON (keys sorted, no spaces); `""` when there are
/// no params (`null` or `{}`).
pub fn params_digest(params: &Value) -> String {
    use sha2::{Digest, Sha256};
    match params {
        Value::Null => return String::new(),
        Value::Object(map) if map.is_empty() => return String::new(),
        _ => {}
    }
    let mut canonical = String::new();
    write_canonical(params, &mut canonical);
    let hash = Sha256::digest(canonical.as_bytes());
    hash.iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_matches_the_wire_sample() {
        assert_eq!(
            params_digest(&json!({"delay_ms":200,"count":3})),
            "9fbc57e71c2c80a0"
        );
        assert_eq!(params_digest(&json!({})), "");
        // RFC 4231's test cases 2 (a short key) and 6 (a key over a block).
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            keyed_params_digest(b"k", &json!({"b":1,"a":2})),
            keyed_params_digest(b"k", &json!({"a":2,"b":1}))
        );
        assert_ne!(
            keyed_params_digest(b"k", &json!({"a":1})),
            keyed_params_digest(b"l", &json!({"a":1}))
        );
        assert_eq!(keyed_params_digest(b"k", &json!({})), "");
        assert_eq!(params_digest(&Value::Null), "");
    }

    #[test]
    fn digest_ignores_key_order_at_every_depth() {
        let a = json!({"b":{"y":1,"x":[{"q":1,"p":2}]},"a":"é"});
        let b = json!({"a":"é","b":{"x":[{"p":2,"q":1}],"y":1}});
        assert_eq!(params_digest(&a), params_digest(&b));
    }

    #[test]
    fn row_serializes_as_the_wire_row() {
        let mut task = Task {
            task_id: "c664362d-18d4-4a93-b4c5-4ae747fc026a".parse().unwrap(),
            op: "echo".into(),
            status: Status::Succeeded,
            created_at: Timestamp::parse("2026-11-27T22:05:20.213Z").unwrap(),
            started_at: Timestamp::parse("2026-11-27T22:05:20.227Z"),
            finished_at: Timestamp::parse("2026-11-27T22:05:20.926Z"),
            params_digest: "9fbc57e71c2c80a0".into(),
            result: Some(json!({"echoed":3})),
            error: None,
            params: json!({"count":3,"delay_ms":200}),
            idempotency_key: None,
            cancel_requested: false,
            owner: None,
            lease_until: None,
            trace_parent: None,
            attempt: 1,
            max_attempts: 1,
            run_at: None,
            priority: 0,
            retry_of: None,
            retry: None,
            history: Vec::new(),
            metadata: Metadata::new(),
            flow_key: None,
        };
        assert_eq!(
            serde_json::to_string(&task.row()).unwrap(),
            r#"{"task_id":"c664362d-18d4-4a93-b4c5-4ae747fc026a","op":"echo","status":"succeeded","created_at":"2026-11-27T22:05:20.213Z","started_at":"2026-11-27T22:05:20.227Z","finished_at":"2026-11-27T22:05:20.926Z","params_digest":"9fbc57e71c2c80a0","result":{"echoed":3},"error":null,"attempt":1,"max_attempts":1,"run_at":null,"priority":0,"retry_of":null}"#
        );
        assert_eq!(
            serde_json::to_string(&task.summary()).unwrap(),
            r#"{"task_id":"c664362d-18d4-4a93-b4c5-4ae747fc026a","op":"echo","status":"succeeded","created_at":"2026-11-27T22:05:20.213Z","started_at":"2026-11-27T22:05:20.227Z","finished_at":"2026-11-27T22:05:20.926Z","params_digest":"9fbc57e71c2c80a0","attempt":1,"max_attempts":1,"run_at":null,"priority":0,"retry_of":null}"#
        );
        task.error = Some(ErrorInfo::server_restart());
        let row: Value = serde_json::to_value(task.row()).unwrap();
        assert_eq!(row["error"]["code"], "server_restart");
        assert_eq!(row["error"]["reason"], "server_restart");
    }
}
