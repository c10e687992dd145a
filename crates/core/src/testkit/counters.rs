//! Contract checks of the status counters and the per-minute finish
//! counts (`Store::counts`, `Store::finished_per_minute`).

use serde_json::Value;

use super::{Harness, lease, new_task, running_task};
use crate::model::{ErrorInfo, Outcome, Status};
use crate::store::ListQuery;
use crate::time::Timestamp;

/// Counts per status cover every status.
pub async fn counts_by_status(h: Harness) {
    let store = &*h.store;
    let running = running_task(store).await;
    running_task(store).await;
    store.create(new_task("test")).await.unwrap();
    store
        .finish(running, Outcome::Failed(ErrorInfo::new("x", "y")))
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&Status::Pending], 1);
    assert_eq!(counts[&Status::Running], 1);
    assert_eq!(counts[&Status::Failed], 1);
    assert_eq!(counts[&Status::Succeeded], 0);
    assert_eq!(counts[&Status::Cancelled], 0);
}

/// The counters follow every transition (create, start, claim, finish,
/// reap, retry, cancel, delete, purge) and agree with a listing; per-minute finish
/// counts add up to the tasks that ended.
pub async fn counters_follow_every_transition(h: Harness) {
    let store = &*h.store;
    let since = Timestamp::now().add_millis(-60_000);
    let succeeded = running_task(store).await;
    store
        .finish(succeeded, Outcome::Succeeded(Value::Null))
        .await
        .unwrap();
    let failed = running_task(store).await;
    store
        .finish(failed, Outcome::Failed(ErrorInfo::new("x", "y")))
        .await
        .unwrap();
    let pending = store.create(new_task("test")).await.unwrap().task.task_id;
    store.request_cancel(pending).await.unwrap();
    let cancelled_running = running_task(store).await;
    store.request_cancel(cancelled_running).await.unwrap();
    store
        .finish(cancelled_running, Outcome::Succeeded(Value::Null))
        .await
        .unwrap();
    store.create(new_task("claimed")).await.unwrap();
    store
        .claim("claimed", 5, lease("owner-a"), Timestamp::now())
        .await
        .unwrap();
    store.create(new_task("test")).await.unwrap();
    store.delete(failed).await.unwrap();
    // A reaped task (its lease ran out) ends failed.
    let reaped = store.create(new_task("test")).await.unwrap().task.task_id;
    let lapsed = crate::store::Lease {
        owner: "owner-gone".into(),
        until: Timestamp::now().add_millis(-1_000),
    };
    store.start(reaped, lapsed).await.unwrap();
    let outcome = store
        .reap(
            reaped,
            crate::store::LostRun::expired(
                ErrorInfo::new("owner_lost", "lease expired"),
                Timestamp::now(),
            ),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, Some(crate::store::FinishOutcome::Finished { .. })),
        "{outcome:?}"
    );
    // A failed attempt that will be retried is pending again, not ended.
    let retried = running_task(store).await;
    let retry = crate::model::Retry {
        error: ErrorInfo::new("flaky", "try again"),
        retry_at: Timestamp::now().add_millis(3_600_000),
        started_at: None,
    };
    store
        .finish(retried, Outcome::Retry(Box::new(retry)))
        .await
        .unwrap();
    // What a listing says, status by status.
    let all = store
        .list(ListQuery {
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    for status in Status::ALL {
        let listed = all
            .tasks
            .iter()
            .filter(|task| task.status == status)
            .count() as u64;
        assert_eq!(counts[&status], listed, "{status}");
    }
    assert_eq!(counts[&Status::Pending], 2);
    assert_eq!(counts[&Status::Running], 1);
    assert_eq!(counts[&Status::Succeeded], 1);
    assert_eq!(counts[&Status::Cancelled], 2);
    assert_eq!(counts[&Status::Failed], 1);
    // Finishes are counted when they happen (a deleted task's stays).
    let minutes = store.finished_per_minute(since).await.unwrap();
    let total = |status: Status| -> u64 {
        minutes
            .iter()
            .filter(|minute| minute.status == status)
            .map(|minute| minute.count)
            .sum()
    };
    assert_eq!(total(Status::Succeeded), 1);
    assert_eq!(total(Status::Failed), 2);
    assert_eq!(total(Status::Cancelled), 2);
    assert!(
        minutes
            .iter()
            .all(|minute| minute.minute.as_millis() % 60_000 == 0)
    );
    assert!(
        minutes
            .iter()
            .all(|minute| minute.minute
                >= Timestamp::from_millis(since.as_millis() / 60_000 * 60_000))
    );
    let later = store
        .finished_per_minute(Timestamp::now().add_millis(120_000))
        .await
        .unwrap();
    assert!(later.is_empty(), "{later:?}");
    // Purging finished tasks takes them off the counters too.
    store
        .purge(Timestamp::now().add_millis(60_000), usize::MAX)
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        counts[&Status::Succeeded] + counts[&Status::Cancelled] + counts[&Status::Failed],
        0
    );
    assert_eq!(counts[&Status::Pending], 2);
    assert_eq!(counts[&Status::Running], 1);
}
