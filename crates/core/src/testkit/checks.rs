//! Single-caller contract checks: every operation's answers and effects.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Harness, assert_row_and_tape_agree, assert_status, lease, new_task, row, running_task, tape,
};
use crate::event::{EventBody, EventKind};
use crate::model::{ErrorInfo, NewTask, Outcome, Status, TaskId};
use crate::store::{
    AppendAck, AppendOutcome, CancelOutcome, Cursor, DeleteOutcome, FinishOutcome, ListQuery,
    StartOutcome, StoreError,
};
use crate::time::Timestamp;

fn progress(current: u64) -> EventBody {
    EventBody::Progress {
        phase: "work".into(),
        current,
        total: 10,
        detail: Some(json!({"step": current})),
    }
}

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
    assert_eq!(task.lease_until, Some(lease.until));
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
        EventBody::final_for(&Outcome::Cancelled),
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

async fn create_at(h: &Harness, op: &str, created_at: i64) -> TaskId {
    let mut task = new_task(op);
    task.created_at = Timestamp::from_millis(created_at);
    h.store.create(task).await.unwrap().task.task_id
}

/// List order is `created_at DESC, task_id ASC`; filters and pages work.
pub async fn list_orders_filters_and_pages(h: Harness) {
    let store = &*h.store;
    let mut ids = Vec::new();
    for index in 0..7 {
        ids.push(
            create_at(
                &h,
                if index % 2 == 0 { "even" } else { "odd" },
                1_000 + index,
            )
            .await,
        );
    }
    store.request_cancel(ids[2]).await.unwrap();
    let page = store
        .list(ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let listed: Vec<TaskId> = page.tasks.iter().map(|task| task.task_id).collect();
    let expected: Vec<TaskId> = ids.iter().rev().copied().collect();
    assert_eq!(listed, expected);
    assert!(!page.has_more);
    assert_eq!(page.next_cursor, None);

    let odd = store
        .list(ListQuery {
            op: Some("odd".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(odd.tasks.len(), 3);
    assert!(odd.tasks.iter().all(|task| task.op == "odd"));
    let cancelled = store
        .list(ListQuery {
            status: Some(Status::Cancelled),
            op: Some("even".into()),
            limit: 5,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(
        cancelled
            .tasks
            .iter()
            .map(|task| task.task_id)
            .collect::<Vec<_>>(),
        vec![ids[2]]
    );

    let first = store
        .list(ListQuery {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(first.has_more);
    assert_eq!(first.tasks.len(), 3);
    let cursor = first.next_cursor.unwrap();
    assert_eq!(cursor.task_id, ids[4]);
    let second = store
        .list(ListQuery {
            limit: 3,
            after: Some(cursor),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(second.tasks[0].task_id, ids[3]);
    let third = store
        .list(ListQuery {
            limit: 3,
            after: second.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        third
            .tasks
            .iter()
            .map(|task| task.task_id)
            .collect::<Vec<_>>(),
        vec![ids[0]]
    );
    assert!(!third.has_more);
}

/// Rows that share `created_at` are each listed once when walking pages.
pub async fn cursor_walk_over_equal_created_at_yields_each_row_once(h: Harness) {
    let store = &*h.store;
    let mut ids = Vec::new();
    for index in 0..25 {
        ids.push(create_at(&h, "same", 5_000 + index / 10).await);
    }
    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    for _ in 0..100 {
        let page = store
            .list(ListQuery {
                limit: 4,
                after,
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(
            page.tasks
                .iter()
                .map(|task| (task.created_at, task.task_id)),
        );
        assert_eq!(page.has_more, page.next_cursor.is_some());
        let Some(cursor) = page.next_cursor else {
            break;
        };
        // The cursor survives its text form.
        after = Some(Cursor::decode(&cursor.encode()).unwrap());
    }
    let mut expected: Vec<(Timestamp, TaskId)> = Vec::new();
    for task_id in &ids {
        expected.push((row(store, *task_id).await.created_at, *task_id));
    }
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(seen, expected);
}

/// Events pages honour `from_seq` and `limit` and report the last seq.
pub async fn events_pages_by_from_seq_and_limit(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    for current in 1..=9 {
        store.append(task_id, progress(current)).await.unwrap();
    }
    let page = store.events(task_id, 0, 4).await.unwrap().unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!((page.status, page.last_seq), (Status::Running, 10));
    let page = store.events(task_id, 8, 100).await.unwrap().unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    let page = store.events(task_id, 99, 100).await.unwrap().unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.last_seq, 10);
    for event in store.events(task_id, 0, 100).await.unwrap().unwrap().events {
        assert_eq!(event.decode().unwrap().seq, event.seq);
    }
}

/// A 1 MB result is stored and read back whole, in the row and in `final`.
pub async fn one_megabyte_result_round_trips(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    let big = json!({"blob": "x".repeat(1 << 20), "n": [1, 2, 3]});
    store
        .append(
            task_id,
            EventBody::Partial {
                kind: "big".into(),
                payload: big.clone(),
            },
        )
        .await
        .unwrap();
    store
        .finish(task_id, Outcome::Succeeded(big.clone()))
        .await
        .unwrap();
    let (task, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(task.result, Some(big.clone()));
    assert_eq!(
        events[1].body,
        EventBody::Partial {
            kind: "big".into(),
            payload: big
        }
    );
}

/// Unicode, escapes, NUL, deep nesting and extreme numbers survive storage.
pub async fn unicode_and_odd_json_round_trip(h: Harness) {
    let store = &*h.store;
    let odd = json!({
        "emoji": "🦀 tape ✓", "rtl": "שלום", "nul": "a\u{0000}b", "quotes": "\"'\\\n\t",
        "control": "\u{0001}\u{001f}", "surrogate_pair": "𝄞",
        "numbers": [0, -1, 9007199254740993u64, -9223372036854775808i64, 1.5e300, 0.1],
        "nested": [[[[{"a": [null, true, false, {}]}]]]],
        "": "empty key", "key with spaces": {"ключ": "значение"}
    });
    let mut new = NewTask::new("ünïcødé-op", odd.clone());
    new.idempotency_key = Some("ключ-🔑".into());
    let task_id = store.create(new.clone()).await.unwrap().task.task_id;
    assert_eq!(row(store, task_id).await.params, odd);
    assert_eq!(row(store, task_id).await.op, "ünïcødé-op");
    store.start(task_id, lease("ownér")).await.unwrap();
    store
        .append(
            task_id,
            EventBody::Log {
                level: "info".into(),
                message: "läuft 🚀\u{0000}".into(),
            },
        )
        .await
        .unwrap();
    store
        .append(
            task_id,
            EventBody::Partial {
                kind: "odd".into(),
                payload: odd.clone(),
            },
        )
        .await
        .unwrap();
    store
        .append(
            task_id,
            EventBody::Progress {
                phase: "ß".into(),
                current: u64::MAX,
                total: 0,
                detail: None,
            },
        )
        .await
        .unwrap();
    let error = ErrorInfo::new("bad\u{0000}code", "message ✗").with("detail", odd.clone());
    store
        .finish(task_id, Outcome::Failed(error.clone()))
        .await
        .unwrap();
    let (task, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(task.error, Some(error));
    assert_eq!(
        events[2].body,
        EventBody::Partial {
            kind: "odd".into(),
            payload: odd.clone()
        }
    );
    assert_eq!(
        events[3].body,
        EventBody::Progress {
            phase: "ß".into(),
            current: u64::MAX,
            total: 0,
            detail: None
        }
    );
    let again = store.create(new).await.unwrap();
    assert_eq!((again.created, again.task.task_id), (false, task_id));
}

/// Leases renew, expire (never the excluded owner's) and leftovers are found per owner.
pub async fn leases_renew_expire_and_leftovers(h: Harness) {
    let store = &*h.store;
    let now = Timestamp::now();
    let mine = running_task(store).await;
    let created = store.create(new_task("test")).await.unwrap();
    let peer = created.task.task_id;
    let short = crate::store::Lease {
        owner: "owner-b".into(),
        until: now.add_millis(-10),
    };
    store.start(peer, short).await.unwrap();
    let pending = store.create(new_task("test")).await.unwrap().task.task_id;

    assert_eq!(store.expired(now, "owner-a").await.unwrap(), vec![peer]);
    assert!(
        store.expired(now, "owner-b").await.unwrap().is_empty(),
        "own tasks are never listed"
    );
    assert_eq!(store.leftovers("owner-a").await.unwrap(), vec![mine]);
    assert_eq!(store.leftovers("owner-b").await.unwrap(), vec![peer]);
    assert!(store.leftovers("owner-c").await.unwrap().is_empty());

    assert_eq!(
        store
            .renew_lease("owner-b", now.add_millis(60_000))
            .await
            .unwrap(),
        1
    );
    assert!(store.expired(now, "owner-a").await.unwrap().is_empty());
    assert_eq!(
        row(store, peer).await.lease_until,
        Some(now.add_millis(60_000))
    );
    store.finish(peer, Outcome::Cancelled).await.unwrap();
    assert_eq!(
        store
            .renew_lease("owner-b", now.add_millis(90_000))
            .await
            .unwrap(),
        0
    );
    assert!(store.leftovers("owner-b").await.unwrap().is_empty());
    let pending_ids: Vec<TaskId> = store
        .pending()
        .await
        .unwrap()
        .iter()
        .map(|task| task.task_id)
        .collect();
    assert_eq!(pending_ids, vec![pending]);
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
    assert_eq!(store.purge(cutoff).await.unwrap(), 1);
    assert!(store.get(old).await.unwrap().is_none());
    assert!(store.events(old, 0, 10).await.unwrap().is_none());
    for task_id in [live, pending, fresh] {
        assert_row_and_tape_agree(store, task_id).await;
    }
}

/// Every commit that adds events wakes the task's watchers with its seq.
pub async fn commits_wake_watchers(h: Harness) {
    let store = &*h.store;
    let created = store.create(new_task("test")).await.unwrap();
    let task_id = created.task.task_id;
    let watch = store.wake_hub().watch(task_id);
    let soon = || tokio::time::Instant::now() + Duration::from_secs(10);
    store.start(task_id, lease("owner-a")).await.unwrap();
    assert!(watch.wait_past(0, soon()).await);
    store.append(task_id, progress(1)).await.unwrap();
    assert!(watch.wait_past(1, soon()).await);
    store.finish(task_id, Outcome::Cancelled).await.unwrap();
    assert!(watch.wait_past(2, soon()).await);
    assert_eq!(watch.announced(), 3);
    let pending = store.create(new_task("test")).await.unwrap().task.task_id;
    let watch = store.wake_hub().watch(pending);
    store.request_cancel(pending).await.unwrap();
    assert!(
        watch.wait_past(0, soon()).await,
        "cancel of a pending task writes final and wakes"
    );
}

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

/// Queued appends commit in call order, and a finish after them lands after them.
pub async fn queued_appends_commit_in_order_before_finish(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    let ack = std::sync::Arc::new(AppendAck::default());
    for current in 1..=500 {
        store
            .append_queued(task_id, progress(current), ack.clone())
            .await
            .unwrap();
    }
    store
        .finish(task_id, Outcome::Succeeded(Value::Null))
        .await
        .unwrap();
    let (_, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(events.len(), 502);
    for (index, event) in events[1..501].iter().enumerate() {
        assert_eq!(event.body, progress(index as u64 + 1));
    }
    assert_eq!(ack.last_seq(), 501);
    assert!(!ack.dropped());
    store
        .append_queued(task_id, progress(501), ack.clone())
        .await
        .unwrap();
    store.last_seq(task_id).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ack.dropped() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(ack.dropped(), "an append after final is reported dropped");
}
