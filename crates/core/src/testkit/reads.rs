//! Single-caller contract checks of reads, storage fidelity, leases and
//! wake-ups (deletes, purges and sweeps are in `retention.rs`).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Harness, assert_row_and_tape_agree, lease, new_task, progress, row, running_task};
use crate::event::EventBody;
use crate::model::{ErrorInfo, NewTask, Outcome, Status, TaskId};
use crate::store::{AppendAck, Cursor, ListQuery};
use crate::time::Timestamp;

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
            ..ListQuery::default()
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

/// `tape_bytes` is the sum of the stored events' JSON, 0 for an unknown task.
pub async fn tape_bytes_sums_the_stored_events(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    for current in 1..=5 {
        store.append(task_id, progress(current)).await.unwrap();
    }
    store
        .append(
            task_id,
            EventBody::Log {
                level: "info".into(),
                message: "é".repeat(300),
            },
        )
        .await
        .unwrap();
    let page = store.events(task_id, 0, 100).await.unwrap().unwrap();
    let stored: usize = page.events.iter().map(|event| event.json.len()).sum();
    assert_eq!(store.tape_bytes(task_id).await.unwrap(), stored as u64);
    assert_eq!(store.tape_bytes(TaskId::new()).await.unwrap(), 0);
}

/// `create_many` answers one `Created` per task in order: new ones
/// created and pending, a key in use finding its task.
pub async fn create_many_answers_each_task_in_order(h: Harness) {
    let store = &*h.store;
    let mut keyed = new_task("echo");
    keyed.idempotency_key = Some("many-1".into());
    let existing = store.create(keyed).await.unwrap().task.task_id;
    let mut again = new_task("echo");
    again.idempotency_key = Some("many-1".into());
    let mut fresh_key = new_task("other");
    fresh_key.idempotency_key = Some("many-2".into());
    let mut delayed = new_task("echo");
    delayed.run_at = Some(Timestamp::from_millis(
        Timestamp::now().as_millis() + 60_000,
    ));
    let tasks = vec![new_task("echo"), again, fresh_key, delayed];
    let ids: Vec<TaskId> = tasks.iter().map(|task| task.task_id).collect();
    let pending = async || {
        let counts = store.counts().await.unwrap();
        counts.get(&Status::Pending).copied().unwrap_or(0)
    };
    let pending_before = pending().await;
    let created = store.create_many(tasks).await.unwrap();
    // Counted once per task made, not for the key in use.
    assert_eq!(pending().await, pending_before + 3);
    let answers: Vec<(TaskId, bool)> = created
        .iter()
        .map(|made| (made.task.task_id, made.created))
        .collect();
    assert_eq!(
        answers,
        vec![
            (ids[0], true),
            (existing, false),
            (ids[2], true),
            (ids[3], true)
        ]
    );
    for made in &created {
        let stored = row(store, made.task.task_id).await;
        assert_eq!(stored.status, Status::Pending);
        assert_eq!(stored.op, made.task.op);
    }
    assert!(row(store, ids[3]).await.run_at.is_some());
    assert!(store.get(ids[1]).await.unwrap().is_none(), "no second row");
    assert!(store.create_many(Vec::new()).await.unwrap().is_empty());
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

/// Leases renew, expire (never the excluded owner's) and leftovers are found
/// per owner; `pending_ops` counts the pending tasks per op, delayed ones too.
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
    store.create(new_task("test")).await.unwrap();

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
    // A store may write leases by its own clock (the database's): close to
    // what was asked.
    let until = row(store, peer).await.lease_until.unwrap().as_millis();
    let asked = now.add_millis(60_000).as_millis();
    assert!(
        (until - asked).abs() < 1000,
        "lease until {until}, asked {asked}"
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
    // Ops with pending tasks (due now or delayed), counted.
    let mut delayed = super::new_task("later");
    delayed.run_at = Some(Timestamp::now().add_millis(60_000));
    store.create(delayed).await.unwrap();
    let mut ops = store.pending_ops().await.unwrap();
    ops.sort();
    assert_eq!(ops, vec![("later".to_owned(), 1), ("test".to_owned(), 1)]);
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

/// Queued appends commit in call order, each with the time it was given,
/// and a finish after them lands after them.
pub async fn queued_appends_commit_in_order_before_finish(h: Harness) {
    let store = &*h.store;
    let task_id = running_task(store).await;
    let ack = std::sync::Arc::new(AppendAck::default());
    let mut times = Vec::new();
    for current in 1..=500 {
        let at = Timestamp::now();
        times.push(at);
        store
            .append_queued(task_id, &progress(current), at, ack.clone())
            .await
            .unwrap();
        if current % 100 == 0 {
            // Times that differ from the commits' (the writer batches).
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    store
        .finish(task_id, Outcome::Succeeded(Value::Null))
        .await
        .unwrap();
    let (_, events) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(events.len(), 502);
    for (index, event) in events[1..501].iter().enumerate() {
        assert_eq!(event.body, progress(index as u64 + 1));
        assert_eq!(
            event.ts, times[index],
            "an event's ts is the time it was queued with"
        );
    }
    assert_eq!(ack.last_seq(), 501);
    assert!(!ack.dropped());
    store
        .append_queued(task_id, &progress(501), Timestamp::now(), ack.clone())
        .await
        .unwrap();
    store.last_seq(task_id).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ack.dropped() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(ack.dropped(), "an append after final is reported dropped");
}
