//! The in-memory tail answers every events read exactly as the database
//! does: a seeded random run of starts, appends, finishes, retries, cancels,
//! deletes and purges over several tasks, with every task's page compared
//! after each step against a read of the file through a connection of the
//! test's own.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};
use serde_json::json;
use tasktape_core::event::StoredEvent;
use tasktape_core::model::{NewTask, Outcome, Retry, Status, TaskId};
use tasktape_core::store::{Lease, Store, TapePage};
use tasktape_core::{EventBody, Timestamp};
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

use crate::support::Rng;

/// The page as the file holds it (one read transaction).
fn from_file(
    conn: &mut Connection,
    task_id: TaskId,
    from_seq: u64,
    limit: usize,
) -> Option<TapePage> {
    let tx = conn.transaction().unwrap();
    let status: Option<String> = tx
        .query_row(
            "SELECT status FROM tasks WHERE task_id = ?1",
            [task_id.as_bytes().as_slice()],
            |row| row.get(0),
        )
        .optional()
        .unwrap();
    let status = match status?.as_str() {
        "pending" => Status::Pending,
        "running" => Status::Running,
        "succeeded" => Status::Succeeded,
        "failed" => Status::Failed,
        "cancelled" => Status::Cancelled,
        other => panic!("status {other}"),
    };
    let last_seq: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE task_id = ?1",
            [task_id.as_bytes().as_slice()],
            |row| row.get(0),
        )
        .unwrap();
    let mut statement = tx
        .prepare(
            "SELECT seq, json FROM events WHERE task_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .unwrap();
    let events = statement
        .query_map(
            rusqlite::params![task_id.as_bytes().as_slice(), from_seq as i64, limit as i64],
            |row| {
                Ok(StoredEvent {
                    seq: row.get::<_, i64>(0)? as u64,
                    json: row.get(1)?,
                })
            },
        )
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    Some(TapePage {
        status,
        events,
        last_seq: last_seq as u64,
    })
}

fn same(a: &Option<TapePage>, b: &Option<TapePage>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.status == b.status && a.last_seq == b.last_seq && a.events == b.events
        }
        _ => false,
    }
}

#[tokio::test]
async fn tail_reads_match_the_file_through_every_transition() {
    for seed in 1..=2u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasktape.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::new(&path)).unwrap());
        let mut file = Connection::open(&path).unwrap();
        let mut rng = Rng::new(seed);
        let lease = Lease {
            owner: "tail-test".into(),
            until: Timestamp::now().add_millis(3_600_000),
        };
        let mut tasks: Vec<TaskId> = Vec::new();
        let mut checked = 0usize;
        for step in 0..250 {
            let pick =
                |rng: &mut Rng, tasks: &[TaskId]| tasks[rng.below(tasks.len() as u64) as usize];
            match rng.below(20) {
                0..=1 => {
                    let created = store
                        .create(NewTask::new("tail", json!({"step": step})))
                        .await
                        .unwrap();
                    tasks.push(created.task.task_id);
                }
                _ if tasks.is_empty() => continue,
                2..=3 => {
                    let _ = store
                        .start(pick(&mut rng, &tasks), lease.clone())
                        .await
                        .unwrap();
                }
                4..=12 => {
                    // Events big and small, so tails also drop their oldest.
                    let size = if rng.below(8) == 0 { 6_000 } else { 20 };
                    let body = EventBody::Log {
                        level: "info".into(),
                        message: "x".repeat(size),
                    };
                    let _ = store.append(pick(&mut rng, &tasks), body).await.unwrap();
                }
                13 => {
                    let outcome = Outcome::Succeeded(json!({"step": step}));
                    let _ = store.finish(pick(&mut rng, &tasks), outcome).await.unwrap();
                }
                14 => {
                    let outcome = Outcome::Retry(Box::new(Retry {
                        error: tasktape_core::ErrorInfo::new("flaky", "try again"),
                        retry_at: Timestamp::now(),
                        started_at: None,
                    }));
                    let _ = store.finish(pick(&mut rng, &tasks), outcome).await.unwrap();
                }
                15 => {
                    let _ = store.request_cancel(pick(&mut rng, &tasks)).await.unwrap();
                }
                16 => {
                    let outcome = Outcome::Cancelled;
                    let _ = store.finish(pick(&mut rng, &tasks), outcome).await.unwrap();
                }
                17 => {
                    let _ = store.delete(pick(&mut rng, &tasks)).await.unwrap();
                }
                18 => {
                    let _ = store
                        .purge(Timestamp::now().add_millis(1), 2)
                        .await
                        .unwrap();
                }
                _ => {
                    let _ = store
                        .finish(
                            pick(&mut rng, &tasks),
                            Outcome::Failed(tasktape_core::ErrorInfo::new("boom", "failed")),
                        )
                        .await
                        .unwrap();
                }
            }
            for &task_id in &tasks {
                let last = store.last_seq(task_id).await.unwrap().unwrap_or(0);
                for from_seq in [
                    0,
                    1,
                    last / 2,
                    last.saturating_sub(1),
                    last,
                    last + 1,
                    last + 5,
                ] {
                    for limit in [2, 1000] {
                        let ours = store.events(task_id, from_seq, limit).await.unwrap();
                        let truth = from_file(&mut file, task_id, from_seq, limit);
                        assert!(
                            same(&ours, &truth),
                            "seed {seed} step {step} task {task_id} from {from_seq} limit {limit}:\n store {ours:?}\n file {truth:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(
            checked > 10_000,
            "seed {seed}: only {checked} reads compared"
        );
    }
}

/// The reads above would also match with no tail at all: this one shows
/// the tail answers. The test removes a running task's events from the
/// file behind the store's back; the store still serves the newest ones,
/// and reads older than its tail holds go to the file.
#[tokio::test]
async fn a_live_tasks_newest_events_come_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::new(&path)).unwrap());
    let task_id = store
        .create(NewTask::new("tail", json!({})))
        .await
        .unwrap()
        .task
        .task_id;
    let lease = Lease {
        owner: "tail-test".into(),
        until: Timestamp::now().add_millis(3_600_000),
    };
    store.start(task_id, lease).await.unwrap();
    // Enough text that the tail keeps only the newest events.
    for index in 0..40 {
        let body = EventBody::Log {
            level: "info".into(),
            message: format!("{index} {}", "y".repeat(1_000)),
        };
        store.append(task_id, body).await.unwrap();
    }
    let file = Connection::open(&path).unwrap();
    file.execute(
        "DELETE FROM events WHERE task_id = ?1",
        [task_id.as_bytes().as_slice()],
    )
    .unwrap();
    let newest = store.events(task_id, 41, 10).await.unwrap().unwrap();
    assert_eq!(newest.status, Status::Running);
    assert_eq!(newest.last_seq, 41);
    assert_eq!(newest.events.len(), 1);
    assert!(newest.events[0].json.contains("\"message\":\"39 "));
    let waiting = store.events(task_id, 42, 10).await.unwrap().unwrap();
    assert!(waiting.events.is_empty());
    assert_eq!(waiting.last_seq, 41);
    // Seq 1 is older than the tail keeps: the file answers, and holds nothing now.
    let oldest = store.events(task_id, 1, 10).await.unwrap().unwrap();
    assert!(oldest.events.is_empty());
}
