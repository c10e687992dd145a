//! Retention through a manager: old finished tasks go in the background,
//! counted in the metrics; running and recent ones stay.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Harness, assert_row_and_tape_agree};
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
