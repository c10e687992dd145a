//! Deleting: a delete, purge and sweep on the store (only terminal tasks,
//! only old ones, in small batches), and retention through a manager (old
//! finished tasks go in the background, counted in the metrics; running and
//! recent ones stay).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Harness, assert_row_and_tape_agree, assert_status, new_task, progress, running_task};
use crate::model::Outcome;
use crate::store::{AppendOutcome, DeleteOutcome};
use crate::time::Timestamp;
use crate::{Manager, ManagerConfig, OpRegistry, Status};

/// With `retention` = 1 s, finished tasks are deleted (rows and tapes)
/// about a second after they end; a running task and a pending one stay.
pub async fn retention_deletes_old_finished_tasks_in_the_background(h: Harness) {
    let store = Arc::clone(&h.store);
    let config = ManagerConfig {
        retention: Some(Duration::from_secs(1)),
        retention_interval: Duration::from_millis(100),
        ..ManagerConfig::default()
    };
    let manager = Manager::start(Arc::clone(&store), OpRegistry::with_builtins(), config)
        .await
        .unwrap();
    let mut done = Vec::new();
    for _ in 0..5 {
        let submitted = manager
            .submit("echo", json!({"count": 20}), None)
            .await
            .unwrap();
        done.push(submitted.task.task_id);
    }
    let running = manager
        .submit("echo", json!({"count": 100, "delay_ms": 100}), None)
        .await
        .unwrap()
        .task
        .task_id;
    for task_id in &done {
        let row = manager
            .wait(*task_id, Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, Status::Succeeded);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for task_id in &done {
        while store.get(*task_id).await.unwrap().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "never purged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(store.events(*task_id, 0, 10).await.unwrap().is_none());
    }
    assert_eq!(manager.metrics().purged.get(), 5);
    // 5 tapes of 23 events, swept.
    while manager.metrics().swept.get() < 5 * 23 {
        assert!(tokio::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(manager.metrics().swept.get(), 5 * 23);
    let (row, _) = assert_row_and_tape_agree(&*store, running).await;
    assert_eq!(row.status, Status::Running);
    manager.shutdown(Duration::from_millis(100)).await;
}

/// Delete removes a terminal task and its tape; pending and running stay.
pub async fn delete_removes_only_terminal_tasks(h: Harness) {
    let store = &*h.store;
    let running = running_task(store).await;
    let pending = store.create(new_task("test")).await.unwrap().task.task_id;
    assert_eq!(
        store.delete(running).await.unwrap(),
        DeleteOutcome::NotTerminal {
            status: Status::Running
        }
    );
    assert_eq!(
        store.delete(pending).await.unwrap(),
        DeleteOutcome::NotTerminal {
            status: Status::Pending
        }
    );
    store
        .finish(running, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    assert_eq!(store.delete(running).await.unwrap(), DeleteOutcome::Deleted);
    assert!(store.get(running).await.unwrap().is_none());
    assert!(store.events(running, 0, 10).await.unwrap().is_none());
    assert_eq!(
        store.delete(running).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert_eq!(
        store.append(running, progress(1)).await.unwrap(),
        AppendOutcome::NotFound
    );
    assert_status(store, pending, Status::Pending).await;
}

/// Purge removes finished tasks older than the cutoff, nothing else.
pub async fn purge_removes_only_old_finished_tasks(h: Harness) {
    let store = &*h.store;
    let old = running_task(store).await;
    store
        .finish(old, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    let live = running_task(store).await;
    let pending = store.create(new_task("test")).await.unwrap().task.task_id;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = running_task(store).await;
    store.finish(fresh, Outcome::Cancelled).await.unwrap();
    assert_eq!(store.purge(cutoff, 100).await.unwrap(), 1);
    assert!(store.get(old).await.unwrap().is_none());
    assert!(store.events(old, 0, 10).await.unwrap().is_none());
    for task_id in [live, pending, fresh] {
        assert_row_and_tape_agree(store, task_id).await;
    }
    // The purged tape (task_started and final) is swept; others stay.
    assert_eq!(sweep_all(store, 1).await, 2);
    for task_id in [live, pending, fresh] {
        assert_row_and_tape_agree(store, task_id).await;
    }
}

/// Sweeps in steps of `step` events until nothing is left; the total.
async fn sweep_all(store: &dyn crate::store::Store, step: usize) -> u64 {
    let mut total = 0;
    loop {
        let swept = store.sweep(step).await.unwrap();
        assert!(swept <= step as u64, "a sweep of {step} deleted {swept}");
        if swept == 0 {
            return total;
        }
        total += swept;
    }
}

/// Purge goes in batches of at most `limit` tasks, oldest first; deleted
/// tapes (purged or deleted) are swept in steps of at most the sweep's
/// limit, every event once, and nothing else is touched.
pub async fn purge_and_sweep_go_in_small_batches(h: Harness) {
    let store = &*h.store;
    let mut finished = Vec::new();
    for events in [300u64, 5, 40] {
        let task_id = running_task(store).await;
        for current in 1..=events {
            store.append(task_id, progress(current)).await.unwrap();
        }
        store
            .finish(task_id, Outcome::Succeeded(json!(events)))
            .await
            .unwrap();
        finished.push(task_id);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let kept = running_task(store).await;
    store.append(kept, progress(1)).await.unwrap();
    let cutoff = Timestamp::now().add_millis(1);
    tokio::time::sleep(Duration::from_millis(3)).await;
    // Oldest first, two at a time.
    assert_eq!(store.purge(cutoff, 2).await.unwrap(), 2);
    assert!(store.get(finished[0]).await.unwrap().is_none());
    assert!(store.get(finished[1]).await.unwrap().is_none());
    assert_status(store, finished[2], Status::Succeeded).await;
    assert_eq!(store.purge(cutoff, 2).await.unwrap(), 1);
    assert_eq!(store.purge(cutoff, 2).await.unwrap(), 0);
    // 302 + 7 + 42 events, 64 at a time.
    assert_eq!(sweep_all(store, 64).await, 302 + 7 + 42);
    assert_eq!(store.sweep(64).await.unwrap(), 0);
    let (row, events) = assert_row_and_tape_agree(store, kept).await;
    assert_eq!((row.status, events.len()), (Status::Running, 2));
    // A deleted task's tape is swept the same way.
    store.finish(kept, Outcome::Cancelled).await.unwrap();
    assert_eq!(store.delete(kept).await.unwrap(), DeleteOutcome::Deleted);
    assert_eq!(sweep_all(store, 2).await, 3);
}
