//! Retries, delays, priorities, schedule slots and list filters: claims by
//! priority then age and only when due; a failed attempt back to pending
//! (invariant 1 as amended: its tape ends with `tasktape.attempt_failed`);
//! the next attempt's log line; cancels between attempts; reaps into a
//! retry; one task per schedule slot with racing creators.

use std::sync::Arc;

use super::{Harness, assert_row_and_tape_agree, assert_status, lease, new_task, tape};
use crate::event::EventBody;
use crate::model::{ErrorInfo, Outcome, Retry, Status, TaskId};
use crate::retry::{ATTEMPT_FAILED, Backoff, RetryPlan, RetryPolicy};
use crate::store::{CancelOutcome, FinishOutcome, ListQuery, LostRun, Store};
use crate::time::Timestamp;

fn plan(max_attempts: u32) -> RetryPlan {
    RetryPlan {
        policy: RetryPolicy {
            max_attempts,
            backoff: Backoff::Fixed,
            initial_ms: 50,
            max_ms: 50,
            jitter: false,
        },
        idempotent: true,
    }
}

fn retry_in(millis: i64) -> Outcome {
    Outcome::Retry(Box::new(Retry {
        error: ErrorInfo::new("op_error", "flaky"),
        retry_at: Timestamp::now().add_millis(millis),
        started_at: Some(Timestamp::now()),
    }))
}

/// Creates a task of `op` with `priority`, due at `run_at`, `offset` ms
/// after `base`.
async fn create(
    store: &dyn Store,
    op: &str,
    priority: i32,
    run_at: Option<Timestamp>,
    base: i64,
    offset: i64,
) -> TaskId {
    let mut task = new_task(op);
    task.priority = priority;
    task.run_at = run_at;
    task.created_at = Timestamp::from_millis(base + offset);
    store.create(task).await.expect("create").task.task_id
}

/// Claims take the due tasks only, highest priority first, FIFO within a
/// priority; `next_due` tells when the earliest delayed one is due.
pub async fn claims_go_by_priority_then_age_and_wait_for_run_at(h: Harness) {
    let store = &*h.store;
    let base = Timestamp::now().as_millis() - 1000;
    let later = Timestamp::now().add_millis(3_600_000);
    let low = create(store, "p", 0, None, base, 0).await;
    let high = create(store, "p", 5, None, base, 1).await;
    let high_newer = create(store, "p", 5, None, base, 2).await;
    let delayed = create(store, "p", 10, Some(later), base, 3).await;
    let was_delayed = create(store, "p", 0, Some(Timestamp::from_millis(base)), base, 4).await;
    assert_eq!(
        store
            .next_due("p", Timestamp::from_millis(0))
            .await
            .unwrap(),
        Some(Timestamp::from_millis(base))
    );
    // Past due ones are the claim's: the next one after now is the delayed one.
    assert_eq!(
        store.next_due("p", Timestamp::now()).await.unwrap(),
        Some(later)
    );
    let claimed: Vec<TaskId> = store
        .claim("p", 10, lease("owner-a"), Timestamp::now())
        .await
        .unwrap()
        .iter()
        .map(|task| task.task_id)
        .collect();
    assert_eq!(claimed, vec![high, high_newer, low, was_delayed]);
    let waiting = super::row(store, delayed).await;
    assert_eq!(
        (waiting.status, waiting.run_at, waiting.priority),
        (Status::Pending, Some(later), 10)
    );
    let now = Timestamp::now();
    assert_eq!(store.next_due("p", now).await.unwrap(), Some(later));
    assert_eq!(store.next_due("other", now).await.unwrap(), None);
    // The limit still counts every running task of the op.
    assert!(
        store
            .claim("p", 4, lease("owner-a"), Timestamp::now())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A failed attempt makes the task pending again with its tape ending in
/// the `tasktape.attempt_failed` partial; the next attempt writes a log
/// line, not a second `task_started`; the row counts attempts.
pub async fn a_failed_attempt_requeues_and_the_next_begins_with_a_log_line(h: Harness) {
    let store = &*h.store;
    let mut task = new_task("r");
    task.retry = Some(plan(3));
    let task_id = store.create(task).await.unwrap().task.task_id;
    let first = store
        .claim("r", 1, lease("owner-a"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        (first.len(), first[0].attempt, first[0].max_attempts),
        (1, 1, 3)
    );
    assert_eq!(first[0].retry, Some(plan(3)));
    store.append(task_id, super::progress(1)).await.unwrap();
    let outcome = store.finish(task_id, retry_in(80)).await.unwrap();
    assert_eq!(outcome, FinishOutcome::Requeued { seq: 3 });
    let (row, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(
        (row.status, row.attempt, row.owner.as_deref()),
        (Status::Pending, 1, None)
    );
    assert!(row.run_at.is_some());
    assert_eq!(row.history.len(), 1);
    assert_eq!(row.history[0]["attempt"], 1);
    assert_eq!(row.history[0]["error"]["code"], "op_error");
    match &events[2].body {
        EventBody::Partial { kind, payload } => {
            assert_eq!(kind, ATTEMPT_FAILED);
            assert_eq!(payload["attempt"], 1);
            assert_eq!(payload["error"]["message"], "flaky");
            assert_eq!(payload["retry_at"], serde_json::json!(row.run_at.unwrap()));
        }
        other => panic!("expected the attempt_failed partial, got {other:?}"),
    }
    // Appends and a success are refused between attempts.
    assert!(matches!(
        store.append(task_id, super::progress(2)).await.unwrap(),
        crate::store::AppendOutcome::Dropped { last_seq: 3 }
    ));
    assert_eq!(
        store
            .finish(task_id, Outcome::Succeeded(serde_json::json!(1)))
            .await
            .unwrap(),
        FinishOutcome::NotStarted
    );
    // Not due yet, then due.
    assert!(
        store
            .claim("r", 1, lease("owner-a"), Timestamp::now())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    let second = store
        .claim("r", 1, lease("owner-b"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        (second.len(), second[0].attempt, second[0].run_at),
        (1, 2, None)
    );
    let events = tape(store, task_id).await;
    assert_eq!(events.len(), 4);
    assert!(
        matches!(&events[3].body, EventBody::Log { message, .. } if message == "attempt 2 of 3 started"),
        "{:?}",
        events[3]
    );
    assert_eq!(
        events
            .iter()
            .filter(|event| matches!(event.body, EventBody::TaskStarted { .. }))
            .count(),
        1
    );
    let done = store
        .finish(task_id, Outcome::Succeeded(serde_json::json!({"ok": true})))
        .await
        .unwrap();
    assert!(matches!(
        done,
        FinishOutcome::Finished {
            seq: 5,
            status: Status::Succeeded
        }
    ));
    let (row, _) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(row.attempt, 2);
}

/// A cancel between attempts ends the task at once (no further attempt);
/// a retry of a task whose cancel was requested ends it cancelled.
pub async fn cancels_win_over_retries_at_every_point(h: Harness) {
    let store = &*h.store;
    let waiting = super::running_task(store).await;
    assert!(matches!(
        store.finish(waiting, retry_in(60_000)).await.unwrap(),
        FinishOutcome::Requeued { .. }
    ));
    assert!(matches!(
        store.request_cancel(waiting).await.unwrap(),
        CancelOutcome::Cancelled { seq: 3 }
    ));
    assert_status(store, waiting, Status::Cancelled).await;
    assert_eq!(
        store
            .next_due("test", Timestamp::from_millis(0))
            .await
            .unwrap(),
        None
    );

    let running = super::running_task(store).await;
    assert!(matches!(
        store.request_cancel(running).await.unwrap(),
        CancelOutcome::Requested { .. }
    ));
    assert!(matches!(
        store.finish(running, retry_in(10)).await.unwrap(),
        FinishOutcome::Finished {
            status: Status::Cancelled,
            seq: 2
        }
    ));
    assert_status(store, running, Status::Cancelled).await;
}

/// A reap decides from the row it locks: a lost run of a task whose plan
/// retries it (an idempotent op) goes back to pending, and a lost last
/// attempt ends `failed` carrying every attempt; the lease is checked like
/// any reap's.
pub async fn a_reap_can_requeue_a_lost_run(h: Harness) {
    let store = &*h.store;
    let mut new = new_task("test");
    new.retry = Some(plan(2));
    let task_id = store.create(new).await.unwrap().task.task_id;
    let lapsed = |owner: &str| crate::store::Lease {
        owner: owner.into(),
        until: Timestamp::now().add_millis(20),
    };
    let lost = || LostRun::expired(ErrorInfo::new("owner_lost", "gone"), Timestamp::now());
    store.start(task_id, lapsed("owner-gone")).await.unwrap();
    // Renewed meanwhile: not reaped.
    store
        .renew_lease("owner-gone", Timestamp::now().add_millis(60_000))
        .await
        .unwrap();
    assert_eq!(store.reap(task_id, lost()).await.unwrap(), None);
    store
        .renew_lease("owner-gone", Timestamp::now().add_millis(20))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let outcome = store.reap(task_id, lost()).await.unwrap();
    assert!(
        matches!(outcome, Some(FinishOutcome::Requeued { seq: 2 })),
        "{outcome:?}"
    );
    let (row, _) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!((row.status, row.owner), (Status::Pending, None));
    // Not running any more: nothing to reap.
    assert_eq!(store.reap(task_id, lost()).await.unwrap(), None);
    // The second (last) attempt is lost too: the task fails with both.
    let due = row.run_at.expect("a requeued task is due later");
    let mut claimed = Vec::new();
    while claimed.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let now = Timestamp::now().max(due);
        claimed = store
            .claim("test", 1, lapsed("owner-b"), now)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let outcome = store.reap(task_id, lost()).await.unwrap();
    assert!(
        matches!(
            outcome,
            Some(FinishOutcome::Finished {
                status: Status::Failed,
                ..
            })
        ),
        "{outcome:?}"
    );
    let (row, _) = assert_row_and_tape_agree(store, task_id).await;
    let error = row.error.expect("failed");
    assert_eq!(error.code, "owner_lost");
    assert_eq!(
        error.extra["detail"]["attempts"].as_array().map(Vec::len),
        Some(2)
    );
}

/// Tasks created with one key by racing creators (three instances making
/// a schedule's slot) are one task; `latest_key` finds the greatest key
/// with a prefix.
pub async fn one_task_per_schedule_slot_and_the_latest_slot_key(h: Harness) {
    let store = Arc::clone(&h.store);
    let key = "schedule:nightly:2026-11-30T03:00:00.000Z";
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut task = new_task("backup");
                task.idempotency_key = Some(key.to_owned());
                store.create(task).await.unwrap()
            })
        })
        .collect();
    let mut created = Vec::new();
    for racer in racers {
        created.push(racer.await.unwrap());
    }
    assert_eq!(created.iter().filter(|answer| answer.created).count(), 1);
    assert!(
        created
            .windows(2)
            .all(|pair| pair[0].task.task_id == pair[1].task.task_id)
    );
    for key in [
        "schedule:nightly:2026-11-30T04:00:00.000Z",
        "schedule:nightly:2026-11-29T03:00:00.000Z",
        "schedule:nightlyx:2026-12-31T03:00:00.000Z",
        "schedule:night:2027-01-01T00:00:00.000Z",
    ] {
        let mut task = new_task("backup");
        task.idempotency_key = Some(key.to_owned());
        store.create(task).await.unwrap();
    }
    assert_eq!(
        store
            .latest_key("schedule:nightly:")
            .await
            .unwrap()
            .as_deref(),
        Some("schedule:nightly:2026-11-30T04:00:00.000Z")
    );
    assert_eq!(store.latest_key("schedule:none:").await.unwrap(), None);
}

/// Lists filter by creation time and by several statuses.
pub async fn lists_filter_by_creation_time_and_statuses(h: Harness) {
    let store = &*h.store;
    let base = Timestamp::now().as_millis() - 10_000;
    let old = create(store, "f", 0, None, base, 0).await;
    let middle = create(store, "f", 0, None, base, 1000).await;
    let new = create(store, "f", 0, None, base, 2000).await;
    store.request_cancel(new).await.unwrap();
    let ids = |page: crate::store::ListPage| {
        page.tasks
            .iter()
            .map(|task| task.task_id)
            .collect::<Vec<_>>()
    };
    let window = store
        .list(ListQuery {
            created_after: Some(Timestamp::from_millis(base + 1000)),
            created_before: Some(Timestamp::from_millis(base + 2000)),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(window), vec![middle]);
    let both = store
        .list(ListQuery {
            statuses: vec![Status::Pending, Status::Cancelled],
            op: Some("f".into()),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(both), vec![new, middle, old]);
    let after = store
        .list(ListQuery {
            status: Some(Status::Pending),
            created_after: Some(Timestamp::from_millis(base + 1)),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(after), vec![middle]);
}
