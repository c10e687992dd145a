//! Single-caller contract checks: every operation's answers and effects.

use serde_json::json;

use super::{
    Harness, assert_row_and_tape_agree, assert_status, lease, new_task, progress, row,
    running_task, tape,
};
use crate::event::{EventBody, EventKind};
use crate::model::{ErrorInfo, NewTask, Outcome, Status, TaskId};
use crate::store::{
    AppendOutcome, CancelOutcome, FinishOutcome, LostRun, StartOutcome, StoreError,
};
use crate::time::Timestamp;

/// A fresh task is pending, with its params and digest, and an empty tape.
pub async fn create_then_get_returns_a_pending_row_and_an_empty_tape(h: Harness) {
    let store = &*h.store;
    let new = NewTask::new("echo", json!({"count": 3, "delay_ms": 200}));
    let created = store.create(new.clone()).await.unwrap();
    assert!(created.created);
    let task = row(store, new.task_id).await;
    assert_eq!(task, created.task);
    assert_eq!(task.status, Status::Pending);
    assert_eq!(task.op, "echo");
    assert_eq!(task.params, json!({"count": 3, "delay_ms": 200}));
    assert_eq!(task.params_digest, "9fbc57e71c2c80a0");
    assert_eq!(task.created_at, new.created_at);
    assert_eq!(
        (task.started_at, task.finished_at, task.result.clone()),
        (None, None, None)
    );
    assert!(tape(store, new.task_id).await.is_empty());
    assert_eq!(store.last_seq(new.task_id).await.unwrap(), Some(0));
    assert!(store.get(TaskId::new()).await.unwrap().is_none());
    assert_eq!(store.last_seq(TaskId::new()).await.unwrap(), None);
    assert!(store.events(TaskId::new(), 0, 10).await.unwrap().is_none());
}

/// The same idempotency key gives back the first task and writes nothing.
pub async fn idempotency_key_returns_the_original_task(h: Harness) {
    let store = &*h.store;
    let mut first = new_task("test");
    first.idempotency_key = Some("key-1".into());
    let created = store.create(first.clone()).await.unwrap();
    assert!(created.created);
    let mut again = NewTask::new("test", json!({"other": true}));
    again.idempotency_key = Some("key-1".into());
    let second = store.create(again.clone()).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.task.task_id, first.task_id);
    assert_eq!(
        second.task.params_digest, first.params_digest,
        "the original's digest comes back"
    );
    assert!(
        store.get(again.task_id).await.unwrap().is_none(),
        "no second task was written"
    );
    let mut other_key = new_task("test");
    other_key.idempotency_key = Some("key-2".into());
    assert!(store.create(other_key).await.unwrap().created);
}

/// `start` makes the row running with its owner and writes `task_started` as seq 1.
pub async fn start_writes_task_started_as_seq_one(h: Harness) {
    let store = &*h.store;
    let created = store.create(new_task("test")).await.unwrap();
    let task_id = created.task.task_id;
    let lease = lease("owner-a");
    let StartOutcome::Started(task) = store.start(task_id, lease.clone()).await.unwrap() else {
        panic!("not started");
    };
    assert_eq!(task.status, Status::Running);
    assert_eq!(task.owner.as_deref(), Some("owner-a"));
    // By the store's own clock, maybe (see `Store::renew_lease`): close to it.
    let until = task.lease_until.unwrap().as_millis();
    assert!(
        (until - lease.until.as_millis()).abs() < 5000,
        "lease until {until}, asked {:?}",
        lease.until
    );
    assert_eq!(task.params, json!({"n": 1}));
    assert!(task.started_at.is_some());
    let (_, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].body,
        EventBody::TaskStarted {
            task_id,
            op: "test".into()
        }
    );
    assert_eq!(events[0].seq, 1);
}

/// `start` on a running, finished or unknown task writes nothing.
pub async fn start_answers_already_running_finished_and_not_found(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    assert_eq!(
        store.start(task_id, lease("owner-b")).await.unwrap(),
        StartOutcome::AlreadyRunning
    );
    assert_eq!(row(store, task_id).await.owner.as_deref(), Some("owner-a"));
    store.finish(task_id, Outcome::Cancelled).await.unwrap();
    assert_eq!(
        store.start(task_id, lease("owner-a")).await.unwrap(),
        StartOutcome::AlreadyFinished {
            status: Status::Cancelled
        }
    );
    assert_eq!(
        store.start(TaskId::new(), lease("owner-a")).await.unwrap(),
        StartOutcome::NotFound
    );
    assert_eq!(tape(store, task_id).await.len(), 2);
}

/// Appends get seq 2, 3, … in order, with wire-format timestamps.
pub async fn append_assigns_contiguous_seqs(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    for current in 1..=20 {
        let outcome = store.append(task_id, progress(current)).await.unwrap();
        assert_eq!(outcome, AppendOutcome::Appended { seq: current + 1 });
    }
    store
        .append(
            task_id,
            EventBody::Log {
                level: "info".into(),
                message: "hello".into(),
            },
        )
        .await
        .unwrap();
    store
        .append(
            task_id,
            EventBody::Partial {
                kind: "rows".into(),
                payload: json!([1, 2]),
            },
        )
        .await
        .unwrap();
    let (_, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(events.len(), 23);
    assert_eq!(events[5].body, progress(5));
    assert_eq!(store.last_seq(task_id).await.unwrap(), Some(23));
    let page = store.events(task_id, 2, 1).await.unwrap().unwrap();
    let text = &page.events[0].json;
    let ts = text
        .split("\"ts\":\"")
        .nth(1)
        .unwrap()
        .trim_end_matches("\"}");
    assert_eq!(ts.len(), 24, "ts {ts:?}");
    assert!(ts.ends_with('Z'));
    assert!(Timestamp::parse(ts).is_some());
}

/// Appends to a pending, unknown or finished task write nothing.
pub async fn append_to_pending_unknown_or_finished_writes_nothing(h: Harness) {
    let store = &*h.store;
    let pending = store.create(new_task("test")).await.unwrap().task.task_id;
    assert_eq!(
        store.append(pending, progress(1)).await.unwrap(),
        AppendOutcome::Dropped { last_seq: 0 }
    );
    assert_status(store, pending, Status::Pending).await;
    assert_eq!(
        store.append(TaskId::new(), progress(1)).await.unwrap(),
        AppendOutcome::NotFound
    );
    let task_id = running_task(store).await;
    store.append(task_id, progress(1)).await.unwrap();
    store
        .finish(task_id, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    assert_eq!(
        store.append(task_id, progress(2)).await.unwrap(),
        AppendOutcome::Dropped { last_seq: 3 }
    );
    assert_eq!(tape(store, task_id).await.len(), 3);
}

/// Only start, finish and streaming write `task_started`, `final` and `heartbeat`.
pub async fn append_rejects_started_final_and_heartbeat_bodies(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    let bodies = [
        EventBody::TaskStarted {
            task_id,
            op: "x".into(),
        },
        Outcome::Cancelled.final_body(),
        EventBody::Heartbeat {},
    ];
    for body in bodies {
        let error = store.append(task_id, body.clone()).await.unwrap_err();
        assert!(matches!(error, StoreError::NotAppendable { .. }), "{error}");
    }
    assert_status(store, task_id, Status::Running).await;
    assert_eq!(tape(store, task_id).await.len(), 1);
}

/// `finish` writes the row's outcome and `final` in one step, final last.
pub async fn finish_writes_final_last_and_the_row_outcome(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    store.append(task_id, progress(1)).await.unwrap();
    let finished = store
        .finish(task_id, Outcome::Succeeded(json!({"echoed": 3})))
        .await
        .unwrap();
    assert_eq!(
        finished,
        FinishOutcome::Finished {
            seq: 3,
            status: Status::Succeeded
        }
    );
    let (task, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(task.result, Some(json!({"echoed": 3})));
    assert!(task.finished_at.is_some());
    assert_eq!(task.owner, None, "a finished task has no owner");
    assert_eq!(events.last().unwrap().body.kind(), EventKind::Final);

    let failed_id = running_task(store).await;
    let error = ErrorInfo::new("boom", "it broke").with("traceback", "line 1");
    store
        .finish(failed_id, Outcome::Failed(error.clone()))
        .await
        .unwrap();
    let (task, events) = assert_row_and_tape_agree(store, failed_id).await;
    assert_eq!(task.status, Status::Failed);
    assert_eq!(task.error, Some(error.clone()));
    assert_eq!(
        events[1].body,
        EventBody::Final {
            status: Status::Failed,
            result: None,
            error: Some(error)
        }
    );
    assert_eq!(
        store
            .finish(TaskId::new(), Outcome::Cancelled)
            .await
            .unwrap(),
        FinishOutcome::NotFound
    );
}

/// A second finish writes nothing and names the first one's status.
pub async fn first_finish_wins(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    store
        .finish(task_id, Outcome::Failed(ErrorInfo::new("a", "first")))
        .await
        .unwrap();
    let again = store
        .finish(task_id, Outcome::Succeeded(json!(2)))
        .await
        .unwrap();
    assert_eq!(
        again,
        FinishOutcome::AlreadyFinished {
            status: Status::Failed
        }
    );
    let (task, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(task.error.unwrap().message, "first");
    assert_eq!(events.len(), 2);
}

/// Finishing a task that never started gives the tape `[final]`; it cannot succeed.
pub async fn finish_of_a_pending_task_gives_a_tape_of_just_final(h: Harness) {
    let store = &*h.store;
    let task_id = store.create(new_task("test")).await.unwrap().task.task_id;
    let refused = store
        .finish(task_id, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    assert_eq!(refused, FinishOutcome::NotStarted);
    assert_status(store, task_id, Status::Pending).await;
    let finished = store
        .finish(task_id, Outcome::Failed(ErrorInfo::server_restart()))
        .await
        .unwrap();
    assert_eq!(
        finished,
        FinishOutcome::Finished {
            seq: 1,
            status: Status::Failed
        }
    );
    let (task, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(task.started_at, None);
}

/// Cancel of a pending task finishes it at once; it can never start.
pub async fn cancel_of_a_pending_task_gives_final_and_it_never_starts(h: Harness) {
    let store = &*h.store;
    let task_id = store.create(new_task("test")).await.unwrap().task.task_id;
    assert_eq!(
        store.request_cancel(task_id).await.unwrap(),
        CancelOutcome::Cancelled { seq: 1 }
    );
    let (task, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(
        events[0].body,
        EventBody::Final {
            status: Status::Cancelled,
            result: None,
            error: None
        }
    );
    assert_eq!(
        store.start(task_id, lease("owner-a")).await.unwrap(),
        StartOutcome::AlreadyFinished {
            status: Status::Cancelled
        }
    );
    assert_eq!(tape(store, task_id).await.len(), 1);
}

/// Cancel of a running task is recorded; whatever finish comes next, it ends cancelled.
pub async fn cancel_of_a_running_task_is_recorded_and_wins_over_success(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    let outcome = store.request_cancel(task_id).await.unwrap();
    assert_eq!(
        outcome,
        CancelOutcome::Requested {
            owner: Some("owner-a".into())
        }
    );
    assert!(row(store, task_id).await.cancel_requested);
    assert_eq!(
        store.request_cancel(task_id).await.unwrap(),
        outcome,
        "cancel is idempotent"
    );
    assert!(matches!(
        store.append(task_id, progress(1)).await.unwrap(),
        AppendOutcome::Appended { .. }
    ));
    let finished = store
        .finish(task_id, Outcome::Succeeded(json!("done")))
        .await
        .unwrap();
    assert_eq!(
        finished,
        FinishOutcome::Finished {
            seq: 3,
            status: Status::Cancelled
        }
    );
    let (task, _) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!((task.status, task.result), (Status::Cancelled, None));
}

/// Cancel of a finished or unknown task writes nothing.
pub async fn cancel_of_terminal_or_unknown_changes_nothing(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    store
        .finish(task_id, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    let before = row(store, task_id).await;
    assert_eq!(
        store.request_cancel(task_id).await.unwrap(),
        CancelOutcome::AlreadyTerminal {
            status: Status::Succeeded
        }
    );
    assert_eq!(row(store, task_id).await, before);
    assert_eq!(
        store.request_cancel(TaskId::new()).await.unwrap(),
        CancelOutcome::NotFound
    );
}

/// No operation changes a terminal row or its tape.
pub async fn terminal_rows_never_change(h: Harness) {
    let store = &*h.store;
    for outcome in [
        Outcome::Succeeded(json!({"r": 1})),
        Outcome::Failed(ErrorInfo::new("x", "y")),
        Outcome::Cancelled,
    ] {
        let task_id = running_task(store).await;
        store.append(task_id, progress(1)).await.unwrap();
        store.finish(task_id, outcome).await.unwrap();
        let before = (
            row(store, task_id).await,
            store.events(task_id, 0, 100).await.unwrap().unwrap().events,
        );
        let _ = store.start(task_id, lease("owner-b")).await.unwrap();
        let _ = store.append(task_id, progress(2)).await.unwrap();
        let _ = store
            .finish(task_id, Outcome::Succeeded(json!(0)))
            .await
            .unwrap();
        let _ = store.finish(task_id, Outcome::Cancelled).await.unwrap();
        let _ = store.request_cancel(task_id).await.unwrap();
        store
            .renew_lease("owner-a", Timestamp::now().add_millis(1_000_000))
            .await
            .unwrap();
        let after = (
            row(store, task_id).await,
            store.events(task_id, 0, 100).await.unwrap().unwrap().events,
        );
        assert_eq!(before, after);
    }
}

/// A reap finishes only a running task whose lease is over, checked again
/// at write time: a renewed lease is kept.
pub async fn reap_checks_the_lease_again(h: Harness) {
    use crate::store::Lease;
    let store = &*h.store;
    let task_id = store.create(new_task("test")).await.unwrap().task.task_id;
    let short = Lease {
        owner: "owner-a".into(),
        until: Timestamp::now().add_millis(20),
    };
    assert!(matches!(
        store.start(task_id, short).await.unwrap(),
        StartOutcome::Started(_)
    ));
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let seen_expired_at = Timestamp::now();
    // The owner renews after the reaper saw the lease expired.
    store
        .renew_lease("owner-a", Timestamp::now().add_millis(60_000))
        .await
        .unwrap();
    let error = ErrorInfo::new("owner_lost", "lease expired");
    let lost = |now| LostRun::expired(error.clone(), now);
    assert_eq!(
        store.reap(task_id, lost(seen_expired_at)).await.unwrap(),
        None
    );
    assert_status(store, task_id, Status::Running).await;
    // Past a lease that did run out, it is reaped (a short one, waited out:
    // a store may judge by its own clock rather than the time passed in).
    store
        .renew_lease("owner-a", Timestamp::now().add_millis(20))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let later = Timestamp::now();
    assert!(matches!(
        store.reap(task_id, lost(later)).await.unwrap(),
        Some(FinishOutcome::Finished {
            status: Status::Failed,
            ..
        })
    ));
    assert_eq!(row(store, task_id).await.error.unwrap().code, "owner_lost");
    // A finished (or unknown) task is not reaped again.
    assert_eq!(store.reap(task_id, lost(later)).await.unwrap(), None);
    assert_eq!(store.reap(TaskId::new(), lost(later)).await.unwrap(), None);
    // This instance's own leftover is ended though its lease still holds.
    let leftover = super::running_task(store).await;
    let restart = LostRun::leftover(ErrorInfo::server_restart(), Timestamp::now());
    assert!(matches!(
        store.reap(leftover, restart.clone()).await.unwrap(),
        Some(FinishOutcome::Finished {
            status: Status::Failed,
            ..
        })
    ));
    assert_eq!(
        row(store, leftover).await.error.unwrap().code,
        "server_restart"
    );
    assert_eq!(store.reap(leftover, restart).await.unwrap(), None);
}
