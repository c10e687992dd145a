//! Mapping between SQLite rows and the core model, and from SQLite errors to
//! the store's typed errors (always naming the file).

use rusqlite::{ErrorCode, Row};
use serde_json::Value;
use tasktape_core::model::{ErrorInfo, Status, Task, TaskId};
use tasktape_core::store::StoreError;
use tasktape_core::time::Timestamp;

/// The columns [`task_from_row`] reads, in order.
pub(crate) const TASK_COLUMNS: &str = "task_id, op, status, created_at, started_at, finished_at, \
     params, params_digest, result, error, idempotency_key, cancel_requested, owner, lease_until, \
     trace_parent, attempt, max_attempts, run_at, priority, retry_of, retry, history, metadata, flow_key";

pub(crate) fn task_id_from(bytes: Vec<u8>) -> rusqlite::Result<TaskId> {
    let array: [u8; 16] = bytes.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "task_id".into(), rusqlite::types::Type::Blob)
    })?;
    Ok(TaskId::from_bytes(array))
}

fn conversion(
    index: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(error))
}

pub(crate) fn status_from(text: &str, index: usize) -> rusqlite::Result<Status> {
    text.parse::<Status>()
        .map_err(|error| conversion(index, error))
}

fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| serde_json::from_str(&text).map_err(|error| conversion(index, error)))
        .transpose()
}

fn time_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row
        .get::<_, Option<i64>>(index)?
        .map(Timestamp::from_millis))
}

/// A task from a row selected with [`TASK_COLUMNS`].
pub(crate) fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let error = json_column(row, 9)?
        .map(|value| {
            serde_json::from_value::<ErrorInfo>(value).map_err(|error| conversion(9, error))
        })
        .transpose()?;
    let started_at = time_column(row, 4)?;
    Ok(Task {
        task_id: task_id_from(row.get(0)?)?,
        op: row.get(1)?,
        status: status_from(&row.get::<_, String>(2)?, 2)?,
        created_at: Timestamp::from_millis(row.get(3)?),
        started_at,
        finished_at: time_column(row, 5)?,
        params: json_column(row, 6)?.unwrap_or(Value::Null),
        params_digest: row.get(7)?,
        result: json_column(row, 8)?,
        error,
        idempotency_key: row.get(10)?,
        cancel_requested: row.get::<_, i64>(11)? != 0,
        owner: row.get(12)?,
        lease_until: time_column(row, 13)?,
        trace_parent: row.get(14)?,
        // A row started before migration 6 counts its one attempt.
        attempt: (row.get::<_, i64>(15)?.max(0) as u32).max(u32::from(started_at.is_some())),
        max_attempts: row.get::<_, i64>(16)?.max(1) as u32,
        run_at: time_column(row, 17)?,
        priority: row.get::<_, i64>(18)? as i32,
        retry_of: row
            .get::<_, Option<Vec<u8>>>(19)?
            .map(task_id_from)
            .transpose()?,
        retry: json_column(row, 20)?
            .map(|value| serde_json::from_value(value).map_err(|error| conversion(20, error)))
            .transpose()?,
        history: match json_column(row, 21)? {
            Some(Value::Array(records)) => records,
            _ => Vec::new(),
        },
        metadata: json_column(row, 22)?
            .map(|value| serde_json::from_value(value).map_err(|error| conversion(22, error)))
            .transpose()?
            .unwrap_or_default(),
        flow_key: row.get(23)?,
    })
}

/// Metadata as the `metadata` column holds it: a JSON object, NULL when
/// there is none.
pub(crate) fn metadata_text(metadata: &tasktape_core::model::Metadata) -> Option<String> {
    (!metadata.is_empty()).then(|| serde_json::to_string(metadata).unwrap_or_default())
}

/// The store error for a SQLite failure on the file at `path`.
pub(crate) fn classify(path: &str, error: rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    let message = error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full { path, message },
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { path, message },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt { path, message }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::Open { path, message }
        }
        // Worth trying again: another connection held a lock, the disk hiccuped.
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable {
                message: format!("sqlite store at {path}: {message}"),
            }
        }
        _ => StoreError::backend(format!("sqlite store at {path}"), error),
    }
}
