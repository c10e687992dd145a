//! Mapping between PostgreSQL rows and the core model, and from driver
//! errors to the store's typed errors (an unreachable database is
//! `Unavailable`, so the server answers 503).

use serde_json::Value;
use tasktape_core::model::{ErrorInfo, Status, Task, TaskId};
use tasktape_core::store::StoreError;
use tasktape_core::time::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// The columns [`task_from_row`] reads, in order.
pub(crate) const TASK_COLUMNS: &str = "task_id, op, status, created_at, started_at, finished_at, \
     params, params_digest, result, error, idempotency_key, cancel_requested, owner, lease_until, \
     trace_parent, attempt, max_attempts, run_at, priority, retry_of, retry, history, metadata, flow_key";

pub(crate) fn uuid(task_id: TaskId) -> Uuid {
    Uuid::from_bytes(*task_id.as_bytes())
}

pub(crate) fn task_id(uuid: Uuid) -> TaskId {
    TaskId::from_bytes(*uuid.as_bytes())
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!("reading {what}"), detail.to_string())
}

pub(crate) fn status(text: &str) -> Result<Status, StoreError> {
    text.parse::<Status>()
        .map_err(|error| corrupt("a status", error))
}

fn json(text: Option<String>, what: &str) -> Result<Option<Value>, StoreError> {
    text.map(|text| serde_json::from_str(&text).map_err(|error| corrupt(what, error)))
        .transpose()
}

fn time(millis: Option<i64>) -> Option<Timestamp> {
    millis.map(Timestamp::from_millis)
}

/// Metadata as the `metadata` column holds it: a JSON object, NULL when
/// there is none.
pub(crate) fn metadata_text(metadata: &tasktape_core::model::Metadata) -> Option<String> {
    (!metadata.is_empty()).then(|| serde_json::to_string(metadata).unwrap_or_default())
}

/// A task from a row selected with [`TASK_COLUMNS`].
pub(crate) fn task_from_row(row: &Row) -> Result<Task, StoreError> {
    let error = json(row.try_get(9).map_err(driver("a row"))?, "an error")?
        .map(|value| serde_json::from_value::<ErrorInfo>(value).map_err(|e| corrupt("an error", e)))
        .transpose()?;
    let get = driver("a row");
    let started_at = time(row.try_get(4).map_err(&get)?);
    Ok(Task {
        task_id: task_id(row.try_get(0).map_err(&get)?),
        op: row.try_get(1).map_err(&get)?,
        status: status(row.try_get(2).map_err(&get)?)?,
        created_at: Timestamp::from_millis(row.try_get(3).map_err(&get)?),
        started_at,
        finished_at: time(row.try_get(5).map_err(&get)?),
        params: json(row.try_get(6).map_err(&get)?, "params")?.unwrap_or(Value::Null),
        params_digest: row.try_get(7).map_err(&get)?,
        result: json(row.try_get(8).map_err(&get)?, "a result")?,
        error,
        idempotency_key: row.try_get(10).map_err(&get)?,
        cancel_requested: row.try_get(11).map_err(&get)?,
        owner: row.try_get(12).map_err(&get)?,
        lease_until: time(row.try_get(13).map_err(&get)?),
        trace_parent: row.try_get(14).map_err(&get)?,
        // A row started before migration 5 counts its one attempt.
        attempt: (row.try_get::<_, i32>(15).map_err(&get)?.max(0) as u32)
            .max(u32::from(started_at.is_some())),
        max_attempts: row.try_get::<_, i32>(16).map_err(&get)?.max(1) as u32,
        run_at: time(row.try_get(17).map_err(&get)?),
        priority: row.try_get(18).map_err(&get)?,
        retry_of: row
            .try_get::<_, Option<Uuid>>(19)
            .map_err(&get)?
            .map(task_id),
        retry: json(row.try_get(20).map_err(&get)?, "a retry plan")?
            .map(|value| serde_json::from_value(value).map_err(|e| corrupt("a retry plan", e)))
            .transpose()?,
        history: match json(row.try_get(21).map_err(&get)?, "a retry history")? {
            Some(Value::Array(records)) => records,
            _ => Vec::new(),
        },
        metadata: json(row.try_get(22).map_err(&get)?, "metadata")?
            .map(|value| serde_json::from_value(value).map_err(|e| corrupt("metadata", e)))
            .transpose()?
            .unwrap_or_default(),
        flow_key: row.try_get(23).map_err(&get)?,
    })
}

/// Classifies a driver error for `context`.
pub(crate) fn driver(context: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |error| classify(context, error)
}

pub(crate) fn classify(context: &str, error: tokio_postgres::Error) -> StoreError {
    let unreachable = match error.code() {
        // Connection exceptions, shutdowns, too many connections.
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No server answer at all: the connection is closed or broke.
        None => {
            error.is_closed()
                || std::error::Error::source(&error).is_some_and(|s| s.is::<std::io::Error>())
        }
    };
    if unreachable {
        StoreError::Unavailable {
            message: format!("{context}: {}", with_causes(&error)),
        }
    } else {
        // The server's own message (`db error` alone says nothing).
        StoreError::backend(context.to_owned(), with_causes(&error))
    }
}

/// `error` and its causes, `: `-joined (a TLS failure says why).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Classifies a pool error (no connection could be had).
pub(crate) fn pool(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => classify("connecting", error),
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        other => StoreError::Unavailable {
            message: format!("no database connection: {other}"),
        },
    }
}
