//! Claims: FIFO order, the per-op limit over the whole store, and no task
//! started twice under concurrent claimers.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Harness, assert_row_and_tape_agree, assert_status, lease, new_task};
use crate::event::EventBody;
use crate::model::{Outcome, Status, TaskId};
use crate::store::{CancelOutcome, Store};
use crate::time::Timestamp;

/// Creates `count` pending tasks of `op`, each a millisecond newer than the
/// one before; returns their ids oldest first.
async fn pending_tasks(store: &dyn Store, op: &str, count: usize) -> Vec<TaskId> {
    let base = Timestamp::now().as_millis();
    let mut ids = Vec::new();
    for index in 0..count {
        let mut task = new_task(op);
        task.created_at = Timestamp::from_millis(base + index as i64);
        ids.push(store.create(task).await.expect("create").task.task_id);
    }
    ids
}

/// A claim starts the oldest pending tasks of its op while fewer than the
/// limit run, each like `start`; cancelled and other ops' tasks stay put.
pub async fn claim_starts_the_oldest_pending_tasks_up_to_the_limit(h: Harness) {
    let store = &*h.store;
    let ids = pending_tasks(store, "a", 6).await;
    let other = pending_tasks(store, "b", 1).await[0];
    // The oldest is cancelled: it must never be claimed.
    assert!(matches!(
        store.request_cancel(ids[0]).await.unwrap(),
        CancelOutcome::Cancelled { .. }
    ));

    let claimed = store
        .claim("a", 3, lease("owner-a"), Timestamp::now())
        .await
        .unwrap();
    let claimed_ids: Vec<_> = claimed.iter().map(|task| task.task_id).collect();
    assert_eq!(
        claimed_ids,
        ids[1..4],
        "the three oldest pending, oldest first"
    );
    for task in &claimed {
        assert_eq!(task.status, Status::Running);
        assert_eq!(task.owner.as_deref(), Some("owner-a"));
        assert_eq!(task.params, serde_json::json!({"n": 1}));
        let (_, events) = assert_row_and_tape_agree(store, task.task_id).await;
        assert!(matches!(events[0].body, EventBody::TaskStarted { .. }));
    }
    assert!(
        store
            .claim("a", 3, lease("owner-b"), Timestamp::now())
            .await
            .unwrap()
            .is_empty(),
        "at the limit"
    );

    // A run ends: one slot, the next oldest.
    store
        .finish(ids[1], Outcome::Succeeded(serde_json::json!(1)))
        .await
        .unwrap();
    let next = store
        .claim("a", 3, lease("owner-b"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(next.iter().map(|t| t.task_id).collect::<Vec<_>>(), [ids[4]]);
    assert_eq!(next[0].owner.as_deref(), Some("owner-b"));
    // A bigger limit takes the rest; then nothing is left.
    let rest = store
        .claim("a", 10, lease("owner-a"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|t| t.task_id).collect::<Vec<_>>(), [ids[5]]);
    assert!(
        store
            .claim("a", 10, lease("owner-a"), Timestamp::now())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim("nothing", 10, lease("owner-a"), Timestamp::now())
            .await
            .unwrap()
            .is_empty()
    );

    assert_status(store, other, Status::Pending).await;
    assert_status(store, ids[0], Status::Cancelled).await;
    let b = store
        .claim("b", 1, lease("owner-a"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(b.iter().map(|t| t.task_id).collect::<Vec<_>>(), [other]);
}

/// Eight claimers at once with a limit of 5: five tasks start, each once.
pub async fn concurrent_claims_never_exceed_the_limit_or_start_a_task_twice(h: Harness) {
    let store = Arc::clone(&h.store);
    pending_tasks(&*store, "a", 40).await;
    for round in 0..3 {
        let claimers: Vec<_> = (0..8)
            .map(|claimer| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let owner = format!("owner-{claimer}");
                    store
                        .claim("a", 5, lease(&owner), Timestamp::now())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut started = Vec::new();
        for claimer in claimers {
            started.extend(claimer.await.unwrap());
        }
        let distinct: HashSet<_> = started.iter().map(|task| task.task_id).collect();
        assert_eq!(
            distinct.len(),
            started.len(),
            "round {round}: a task started twice"
        );
        assert_eq!(started.len(), 5, "round {round}: the limit is 5 in all");
        for task in &started {
            let (_, events) = assert_row_and_tape_agree(&*store, task.task_id).await;
            assert_eq!(events.len(), 1, "one task_started");
            store
                .finish(task.task_id, Outcome::Cancelled)
                .await
                .unwrap();
        }
    }
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.get(&Status::Pending).copied().unwrap_or(0), 25);
    assert_eq!(counts.get(&Status::Running).copied().unwrap_or(0), 0);
}

/// `claim_some` starts at most `take` tasks (oldest first), within the
/// op's limit across the store.
pub async fn claim_some_takes_at_most_what_it_asks(h: Harness) {
    let store = &*h.store;
    let ids = pending_tasks(store, "a", 5).await;
    let first = store
        .claim_some("a", 10, 2, None, lease("owner-a"), Timestamp::now())
        .await
        .unwrap();
    let first: Vec<_> = first.iter().map(|task| task.task_id).collect();
    assert_eq!(first, ids[..2], "the two oldest");
    // The limit still counts every running task: 3 of 3 may run, 2 do.
    let second = store
        .claim_some("a", 3, 5, None, lease("owner-b"), Timestamp::now())
        .await
        .unwrap();
    let second: Vec<_> = second.iter().map(|task| task.task_id).collect();
    assert_eq!(second, ids[2..3], "one more, up to the limit");
    assert!(
        store
            .claim_some("a", 10, 0, None, lease("owner-b"), Timestamp::now())
            .await
            .unwrap()
            .is_empty(),
        "take 0 starts nothing"
    );
    for id in &ids[3..] {
        assert_status(store, *id, Status::Pending).await;
    }
}

/// Records: a compare-and-swap by kind and key (absent is `None`), read
/// back by kind in key order; a stale expectation writes nothing.
pub async fn records_swap_only_over_what_was_expected(h: Harness) {
    let store = &*h.store;
    assert!(store.records("op").await.unwrap().is_empty());
    assert!(
        store
            .swap_record("op", "b", None, Some("{\"v\":1}"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .swap_record("op", "b", None, Some("{\"v\":2}"))
            .await
            .unwrap(),
        "present: None is stale"
    );
    assert!(store.swap_record("op", "a", None, Some("α")).await.unwrap());
    assert!(
        store
            .swap_record("worker", "a", None, Some("w"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .swap_record("op", "b", Some("{\"v\":0}"), Some("x"))
            .await
            .unwrap(),
        "stale value"
    );
    assert!(
        store
            .swap_record("op", "b", Some("{\"v\":1}"), Some("{\"v\":3}"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.records("op").await.unwrap(),
        vec![
            ("a".to_owned(), "α".to_owned()),
            ("b".to_owned(), "{\"v\":3}".to_owned())
        ]
    );
    assert!(!store.swap_record("op", "a", Some("β"), None).await.unwrap());
    assert!(
        store.swap_record("op", "a", Some("α"), None).await.unwrap(),
        "deleted"
    );
    assert!(
        store.swap_record("op", "a", None, None).await.unwrap(),
        "absent, as expected"
    );
    assert_eq!(store.records("op").await.unwrap().len(), 1);
    assert_eq!(
        store.records("worker").await.unwrap(),
        vec![("a".to_owned(), "w".to_owned())]
    );
}

/// A start is never before its task's creation, even when the claim's
/// time was read before the task was made (a claim that waited on a lock)
/// or the submitting instance's clock runs ahead.
pub async fn a_start_is_never_before_the_creation(h: Harness) {
    let store = &*h.store;
    let mut task = new_task("ahead");
    task.created_at = Timestamp::from_millis(Timestamp::now().as_millis() + 60_000);
    let task_id = store.create(task).await.unwrap().task.task_id;
    let claimed = store
        .claim("ahead", 10, lease("owner-a"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let row = store.get(task_id).await.unwrap().unwrap();
    assert!(
        row.started_at.unwrap() >= row.created_at,
        "started {:?}, created {:?}",
        row.started_at,
        row.created_at
    );
}
