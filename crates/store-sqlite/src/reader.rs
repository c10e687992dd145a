//! Readers: a small pool of read-only connections used from Tokio's blocking
//! pool. WAL lets them read in parallel with the writer; a read that needs a
//! consistent view (an events page) runs in one read transaction.

use std::sync::{Arc, Condvar, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use tasktape_core::event::StoredEvent;
use tasktape_core::model::{Status, Task, TaskId};
use tasktape_core::store::{
    ListPage, ListQuery, MinuteCount, Result, StatusCounts, StoreError, TapePage,
};
use tasktape_core::time::Timestamp;

use crate::rows::{TASK_COLUMNS, classify, status_from, task_from_row, task_id_from};

/// A connection taken from the pool; given back on drop, even if the read
/// panicked.
struct Checkout<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.put(conn);
        }
    }
}

pub(crate) struct Readers {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
    /// One permit per connection: reads wait here, asynchronously, rather
    /// than parking blocking-pool threads on the condvar.
    permits: tokio::sync::Semaphore,
    path: String,
}

impl Readers {
    pub(crate) fn new(connections: Vec<Connection>, path: String) -> Arc<Self> {
        Arc::new(Readers {
            permits: tokio::sync::Semaphore::new(connections.len()),
            idle: Mutex::new(connections),
            returned: Condvar::new(),
            path,
        })
    }

    /// Runs `read` on an idle connection in Tokio's blocking pool.
    pub(crate) async fn with<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let readers = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let mut checkout = Checkout {
                readers: &readers,
                conn: Some(readers.take()),
            };
            let conn = checkout.conn.as_mut().map(read);
            match conn {
                Some(result) => result.map_err(|error| classify(&readers.path, error)),
                None => Err(StoreError::Closed),
            }
        })
        .await;
        joined.unwrap_or_else(|join_error| {
            Err(StoreError::backend(
                format!("sqlite store at {}", self.path),
                join_error,
            ))
        })
    }

    fn take(&self) -> Connection {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        loop {
            if let Some(conn) = idle.pop() {
                return conn;
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn put(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(conn);
        self.returned.notify_one();
    }
}

fn id(task_id: &TaskId) -> &[u8] {
    task_id.as_bytes().as_slice()
}

pub(crate) fn get(conn: &mut Connection, task_id: TaskId) -> rusqlite::Result<Option<Task>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([id(&task_id)], task_from_row)
        .optional()
}

pub(crate) fn list(conn: &mut Connection, query: &ListQuery) -> rusqlite::Result<ListPage> {
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    // A metadata filter walks its first key's entries, newest first (by
    // their `at` and `task`, equal to the row's `created_at` and
    // `task_id`); every other key is a lookup of its entry.
    let mut entries = query.metadata.iter();
    let (mut sql, at, id) = match entries.next() {
        None => (
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"),
            "created_at",
            "task_id",
        ),
        Some((key, value)) => {
            values.push(Box::new(key.clone()));
            values.push(Box::new(value.clone()));
            (
                format!(
                    "SELECT {TASK_COLUMNS} FROM task_metadata CROSS JOIN tasks ON task_id = task \
                     WHERE key = ?1 AND value = ?2"
                ),
                "at",
                "task",
            )
        }
    };
    for (key, value) in entries {
        values.push(Box::new(key.clone()));
        values.push(Box::new(value.clone()));
        let (k, v) = (values.len() - 1, values.len());
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM task_metadata m WHERE m.key = ?{k} AND m.value = ?{v} \
             AND m.at = tasks.created_at AND m.task = tasks.task_id)"
        ));
    }
    let statuses = query.status_filter();
    if !statuses.is_empty() {
        let mut places = Vec::new();
        for status in statuses {
            values.push(Box::new(status.as_str()));
            places.push(format!("?{}", values.len()));
        }
        sql.push_str(&format!(" AND status IN ({})", places.join(", ")));
    }
    if let Some(after) = query.created_after {
        values.push(Box::new(after.as_millis()));
        sql.push_str(&format!(" AND {at} >= ?{}", values.len()));
    }
    if let Some(before) = query.created_before {
        values.push(Box::new(before.as_millis()));
        sql.push_str(&format!(" AND {at} < ?{}", values.len()));
    }
    if let Some(op) = &query.op {
        values.push(Box::new(op.clone()));
        sql.push_str(&format!(" AND op = ?{}", values.len()));
    }
    if let Some(cursor) = &query.after {
        values.push(Box::new(cursor.created_at.as_millis()));
        values.push(Box::new(cursor.task_id.as_bytes().to_vec()));
        // `created_at <= at` first: an index range from the cursor on, not
        // a walk from the newest row (the OR alone cannot be a range).
        let (at_value, task_value) = (values.len() - 1, values.len());
        sql.push_str(&format!(
            " AND {at} <= ?{at_value} AND ({at} < ?{at_value} OR {id} > ?{task_value})"
        ));
    }
    values.push(Box::new(
        i64::try_from(query.fetch_limit()).unwrap_or(i64::MAX),
    ));
    sql.push_str(&format!(
        " ORDER BY {at} DESC, {id} ASC LIMIT ?{}",
        values.len()
    ));
    let mut statement = conn.prepare_cached(&sql)?;
    let tasks = statement
        .query_map(rusqlite::params_from_iter(values.iter()), task_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ListPage::from_rows(tasks, query))
}

pub(crate) fn counts(conn: &mut Connection) -> rusqlite::Result<StatusCounts> {
    let mut statement = conn.prepare_cached("SELECT status, n FROM task_counts")?;
    let rows = statement.query_map([], |row| {
        Ok((
            status_from(&row.get::<_, String>(0)?, 0)?,
            row.get::<_, i64>(1)?.max(0) as u64,
        ))
    })?;
    let mut counts: StatusCounts = Status::ALL.into_iter().map(|status| (status, 0)).collect();
    for row in rows {
        let (status, count) = row?;
        counts.insert(status, count);
    }
    Ok(counts)
}

/// Tasks ended per minute and status since `since` (from the counters).
pub(crate) fn finished_per_minute(
    conn: &mut Connection,
    since: Timestamp,
) -> rusqlite::Result<Vec<MinuteCount>> {
    let mut statement = conn.prepare_cached(
        "SELECT minute, status, n FROM finished_per_minute WHERE minute >= ?1 ORDER BY minute, status",
    )?;
    let first =
        since.as_millis().div_euclid(60_000) + i64::from(since.as_millis().rem_euclid(60_000) > 0);
    let rows = statement.query_map([first], |row| {
        Ok(MinuteCount {
            minute: Timestamp::from_millis(row.get::<_, i64>(0)? * 60_000),
            status: status_from(&row.get::<_, String>(1)?, 1)?,
            count: row.get::<_, i64>(2)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

/// The row's status and the tape's last seq in one statement (`None`: no task).
fn status_and_last_seq(
    conn: &Connection,
    task_id: &TaskId,
) -> rusqlite::Result<Option<(Status, u64)>> {
    // Not `MAX(seq)`: that form is re-prepared on every bind here.
    let mut statement = conn.prepare_cached(
        "SELECT status, \
                COALESCE((SELECT seq FROM events WHERE task_id = ?1 ORDER BY seq DESC LIMIT 1), 0) \
         FROM tasks WHERE task_id = ?1",
    )?;
    statement
        .query_row([id(task_id)], |row| {
            Ok((
                status_from(&row.get::<_, String>(0)?, 0)?,
                row.get::<_, i64>(1)?.max(0) as u64,
            ))
        })
        .optional()
}

/// Runs `read` in one read transaction (one snapshot), with cached
/// BEGIN/COMMIT statements rather than parsing them on every read.
fn snapshot<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = read(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn
        .prepare_cached(end)
        .and_then(|mut statement| statement.execute([]));
    let value = result?;
    ended?;
    Ok(value)
}

pub(crate) fn events(
    conn: &mut Connection,
    task_id: TaskId,
    from_seq: u64,
    limit: usize,
) -> rusqlite::Result<Option<TapePage>> {
    snapshot(conn, |conn| {
        let Some((status, last_seq)) = status_and_last_seq(conn, &task_id)? else {
            return Ok(None);
        };
        let mut statement = conn.prepare_cached(
            "SELECT seq, json FROM events WHERE task_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let from_seq = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let mut rows = statement.query(params![id(&task_id), from_seq, limit])?;
        // As many as the tape holds past `from_seq` (none for a follower
        // that is up to date, which may hold the page while it waits).
        let available = (last_seq as i64 + 1 - from_seq).clamp(0, limit.min(1024));
        let mut events = Vec::with_capacity(usize::try_from(available).unwrap_or(0));
        while let Some(row) = rows.next()? {
            events.push(StoredEvent {
                seq: row.get::<_, i64>(0)? as u64,
                json: row.get(1)?,
            });
        }
        Ok(Some(TapePage {
            status,
            events,
            last_seq,
        }))
    })
}

/// The earliest `run_at` after `after` among `op`'s pending tasks.
pub(crate) fn rate_window(
    conn: &mut Connection,
    op: &str,
    since: Timestamp,
) -> rusqlite::Result<(u64, Option<Timestamp>)> {
    let mut statement =
        conn.prepare_cached("SELECT count(*), min(at) FROM flow_starts WHERE op = ?1 AND at > ?2")?;
    let (count, oldest): (i64, Option<i64>) = statement
        .query_row(rusqlite::params![op, since.as_millis()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    Ok((count.max(0) as u64, oldest.map(Timestamp::from_millis)))
}

pub(crate) fn next_due(
    conn: &mut Connection,
    op: &str,
    after: Timestamp,
) -> rusqlite::Result<Option<Timestamp>> {
    let mut statement = conn.prepare_cached(
        "SELECT min(run_at) FROM tasks WHERE op = ?1 AND status = 'pending' AND run_at > ?2",
    )?;
    let at: Option<i64> =
        statement.query_row(rusqlite::params![op, after.as_millis()], |row| row.get(0))?;
    Ok(at.map(Timestamp::from_millis))
}

/// The greatest idempotency key that starts with `prefix`.
pub(crate) fn latest_key(conn: &mut Connection, prefix: &str) -> rusqlite::Result<Option<String>> {
    // Keys from `prefix` up to `prefix` + U+10FFFF (a range scan of the index).
    let upper = format!("{prefix}\u{10FFFF}");
    let mut statement = conn.prepare_cached(
        "SELECT idempotency_key FROM tasks WHERE idempotency_key >= ?1 AND idempotency_key < ?2 \
         ORDER BY idempotency_key DESC LIMIT 1",
    )?;
    statement
        .query_row([prefix, upper.as_str()], |row| row.get(0))
        .optional()
}

/// Bytes of the tape's events' JSON (`Reads::tape_bytes`).
pub(crate) fn tape_bytes(conn: &mut Connection, task_id: TaskId) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare_cached(
        "SELECT COALESCE(SUM(length(CAST(json AS BLOB))), 0) FROM events WHERE task_id = ?1",
    )?;
    let bytes: i64 = statement.query_row([task_id.as_bytes().as_slice()], |row| row.get(0))?;
    Ok(bytes.max(0) as u64)
}

pub(crate) fn last_seq(conn: &mut Connection, task_id: TaskId) -> rusqlite::Result<Option<u64>> {
    Ok(status_and_last_seq(conn, &task_id)?.map(|(_, last_seq)| last_seq))
}

fn task_ids(
    conn: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
) -> rusqlite::Result<Vec<TaskId>> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(values, |row| task_id_from(row.get(0)?))?;
    rows.collect()
}

pub(crate) fn expired(
    conn: &mut Connection,
    now: Timestamp,
    exclude_owner: &str,
) -> rusqlite::Result<Vec<TaskId>> {
    task_ids(
        conn,
        "SELECT task_id FROM tasks WHERE status = 'running' AND lease_until < ?1 \
         AND (owner IS NULL OR owner != ?2) ORDER BY lease_until",
        params![now.as_millis(), exclude_owner],
    )
}

pub(crate) fn leftovers(conn: &mut Connection, owner: &str) -> rusqlite::Result<Vec<TaskId>> {
    task_ids(
        conn,
        "SELECT task_id FROM tasks WHERE status = 'running' AND owner = ?1",
        [owner],
    )
}

/// Ops with pending tasks and how many (due now, delayed: one partial
/// index each).
pub(crate) fn pending_ops(conn: &mut Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut statement = conn.prepare_cached("SELECT op, count(*) FROM tasks WHERE status = 'pending' AND run_at IS NULL GROUP BY op UNION ALL SELECT op, count(*) FROM tasks WHERE status = 'pending' AND run_at IS NOT NULL GROUP BY op")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut ops: Vec<(String, u64)> = Vec::new();
    for row in rows {
        let (op, count) = row?;
        match ops.iter_mut().find(|(known, _)| *known == op) {
            Some((_, total)) => *total += count as u64,
            None => ops.push((op, count as u64)),
        }
    }
    Ok(ops)
}
