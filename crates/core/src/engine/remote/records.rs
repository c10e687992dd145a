//! What the store keeps of remote workers, for every instance: each op's
//! declaration (kind `op`) and each worker (kind `worker`), as JSON texts
//! written by compare-and-swap.

use serde::{Deserialize, Serialize};
use tasktape_wire::worker::{WorkerInfo, WorkerOp, WorkerState};

use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// The records' kinds.
pub(crate) const OP: &str = "op";
pub(crate) const WORKER: &str = "worker";
/// An op an instance runs itself, and its retry plan (for `submit()` in SQL).
pub(crate) const SERVED: &str = "served";

/// A worker as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkerRecord {
    pub(crate) worker_id: String,
    /// Its current session (a new registration writes a new one).
    pub(crate) session: String,
    /// The instance holding the session.
    pub(crate) instance: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) version: String,
    pub(crate) ops: Vec<String>,
    pub(crate) capacity: u32,
    pub(crate) running: u64,
    pub(crate) last_heartbeat: Timestamp,
    pub(crate) registered_at: Timestamp,
    pub(crate) state: WorkerState,
    /// Whether its signal stream is open.
    pub(crate) connected: bool,
    /// The name of the token it registered with (none without tokens);
    /// only that token may register the id again.
    #[serde(default)]
    pub(crate) token: Option<String>,
}

impl WorkerRecord {
    /// Whether it counts as a live process at `now`: not gone, heartbeats
    /// on time.
    pub(crate) fn alive(&self, now: Timestamp, ttl_ms: i64) -> bool {
        self.state != WorkerState::Gone
            && now
                .as_millis()
                .saturating_sub(self.last_heartbeat.as_millis())
                <= ttl_ms
    }

    pub(crate) fn info(&self, now: Timestamp, ttl_ms: i64) -> WorkerInfo {
        WorkerInfo {
            worker_id: self.worker_id.clone(),
            host: self.host.clone(),
            pid: self.pid,
            version: self.version.clone(),
            ops: self.ops.clone(),
            capacity: self.capacity,
            running: if self.alive(now, ttl_ms) {
                self.running
            } else {
                0
            },
            last_heartbeat: self.last_heartbeat,
            registered_at: self.registered_at,
            state: if self.alive(now, ttl_ms) {
                self.state
            } else {
                WorkerState::Gone
            },
        }
    }
}

fn text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Every record of `kind` decoded (undecodable ones skipped: a newer
/// build's).
pub(crate) async fn all<T: for<'de> Deserialize<'de>>(
    store: &dyn Store,
    kind: &str,
) -> Result<Vec<(T, String)>, StoreError> {
    Ok(store
        .records(kind)
        .await?
        .into_iter()
        .filter_map(|(_, text)| Some((serde_json::from_str(&text).ok()?, text)))
        .collect())
}

/// One record of `kind` with its text.
pub(crate) async fn one<T: for<'de> Deserialize<'de>>(
    store: &dyn Store,
    kind: &str,
    key: &str,
) -> Result<Option<(T, String)>, StoreError> {
    // Records are few (ops, workers): a read of the kind is cheap.
    Ok(store
        .records(kind)
        .await?
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, text)| Some((serde_json::from_str(&text).ok()?, text))))
}

/// Writes `value` over `expected`; whether it was still `expected`.
pub(crate) async fn swap<T: Serialize>(
    store: &dyn Store,
    kind: &str,
    key: &str,
    expected: Option<&str>,
    value: &T,
) -> Result<Option<String>, StoreError> {
    let text = text(value);
    Ok(store
        .swap_record(kind, key, expected, Some(&text))
        .await?
        .then_some(text))
}

/// The live workers (other than `except`) serving `op`.
pub(crate) fn serving<'a>(
    workers: &'a [(WorkerRecord, String)],
    op: &'a str,
    except: &'a str,
    now: Timestamp,
    ttl_ms: i64,
) -> impl Iterator<Item = &'a WorkerRecord> + 'a {
    workers
        .iter()
        .map(|(worker, _)| worker)
        .filter(move |worker| {
            worker.worker_id != except
                && worker.alive(now, ttl_ms)
                && worker.ops.iter().any(|name| name == op)
        })
}

/// A declaration as stored.
pub(crate) type OpRecord = WorkerOp;
