//! What only the Postgres store does: migrations and schemas, peers' signals
//! through LISTEN/NOTIFY, typed errors for a bad URL or an unreachable
//! database.

use std::time::Duration;

use tasktape_core::Timestamp;
use tasktape_core::store::{CancelOutcome, Store, StoreError, StoreSignal};
use tasktape_core::testkit::{lease, new_task};
use tasktape_store_postgres::{PostgresConfig, PostgresStore};

use crate::support::{open_schema, test_url, unique_schema, wait_listening};
use tasktape_core::store::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_schema_migrate_once_and_see_each_other() {
    let schema = unique_schema();
    let ((a, _guard), (b, _other)) = tokio::join!(open_schema(&schema), open_schema(&schema));
    let created = a.create(new_task("work")).await.unwrap();
    assert_eq!(
        b.get(created.task.task_id).await.unwrap().unwrap().status,
        tasktape_core::Status::Pending
    );
    // Reopening an up-to-date schema changes nothing.
    let (again, _third) = open_schema(&schema).await;
    assert!(again.get(created.task.task_id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_hear_pending_work_cancels_finishes_and_events() {
    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    let mut heard = b.signals().expect("a shared store has signals");
    // The listener connects in the background; wait for it.
    wait_listening(&[&b]).await;
    let mut next = async || loop {
        match tokio::time::timeout(Duration::from_secs(10), heard.recv()).await {
            Ok(Ok(StoreSignal::Resync)) => continue,
            Ok(Ok(signal)) => return signal,
            other => panic!("no signal: {other:?}"),
        }
    };
    let task = a.create(new_task("work")).await.unwrap().task;
    assert_eq!(next().await, StoreSignal::Pending { op: "work".into() });

    // A follower on b is woken by a's commits.
    let watch = b.wake_hub().watch(task.task_id);
    let claimed = a
        .claim("work", 1, lease("node-a"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        watch
            .wait_past(0, tokio::time::Instant::now() + Duration::from_secs(10))
            .await,
        "task_started woke the peer"
    );
    assert!(matches!(
        b.request_cancel(task.task_id).await.unwrap(),
        CancelOutcome::Requested { .. }
    ));
    assert_eq!(
        next().await,
        StoreSignal::CancelRequested {
            task_id: task.task_id,
            owner: "node-a".into()
        }
    );
    a.finish(task.task_id, tasktape_core::Outcome::Cancelled)
        .await
        .unwrap();
    assert_eq!(next().await, StoreSignal::Finished { op: "work".into() });
    assert!(watch.announced() >= 2, "final woke the peer");
}

#[tokio::test]
async fn bad_urls_schemas_and_unreachable_databases_are_typed() {
    let error = PostgresStore::open(PostgresConfig::new("postgres://a b c:::"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error}");

    let mut config = PostgresConfig::new(test_url());
    config.schema = "Bad-Name".into();
    let error = PostgresStore::open(config).await.unwrap_err();
    assert!(error.to_string().contains("invalid schema name"), "{error}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config =
        PostgresConfig::new(format!("postgres://tasktape:secret@127.0.0.1:{port}/none"));
    config.connect_timeout = Duration::from_secs(1);
    let error = PostgresStore::open(config).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, StoreError::Open { .. }), "{text}");
    assert!(
        text.contains(&port.to_string()) && !text.contains("secret"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_write_after_its_lease_was_reaped() {
    use tasktape_core::store::{AppendOutcome, FinishOutcome, Lease};
    use tasktape_core::testkit::progress;
    use tasktape_core::{ErrorInfo, Outcome, Status, Timestamp};

    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    a.create(new_task("work")).await.unwrap();
    let short = Lease {
        owner: "node-a".into(),
        until: Timestamp::now().add_millis(50),
    };
    let task = a
        .claim("work", 1, short, Timestamp::now())
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // node-b sees the expired lease (never its own) and reaps it.
    assert_eq!(
        b.expired(Timestamp::now(), "node-b").await.unwrap(),
        [task.task_id]
    );
    assert!(
        b.expired(Timestamp::now(), "node-a")
            .await
            .unwrap()
            .is_empty()
    );
    let lost = ErrorInfo::new("owner_lost", "lease expired");
    assert!(matches!(
        b.finish(task.task_id, Outcome::Failed(lost)).await.unwrap(),
        FinishOutcome::Finished {
            status: Status::Failed,
            ..
        }
    ));
    // node-a comes back: it can neither renew, append nor finish.
    let later = Timestamp::now().add_millis(60_000);
    assert_eq!(a.renew_lease("node-a", later).await.unwrap(), 0);
    assert!(matches!(
        a.append(task.task_id, progress(1)).await.unwrap(),
        AppendOutcome::Dropped { last_seq: 2 }
    ));
    assert_eq!(
        a.finish(task.task_id, Outcome::Succeeded(serde_json::json!(1)))
            .await
            .unwrap(),
        FinishOutcome::AlreadyFinished {
            status: Status::Failed
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_lost_its_connection_reconnects_and_catches_up() {
    use tasktape_core::testkit::progress;

    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    a.create(new_task("work")).await.unwrap();
    let task = a
        .claim("work", 1, lease("node-a"), Timestamp::now())
        .await
        .unwrap()
        .remove(0);
    let watch = b.wake_hub().watch(task.task_id);
    wait_listening(&[&a, &b]).await;
    // Cut every listener of this schema, as a database restart would, and
    // commit while they are away.
    let (admin, connection) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("tasktape listener {schema}")],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 2, "both listeners were cut");
    for step in 1..=3 {
        a.append(task.task_id, progress(step)).await.unwrap();
    }
    // B never heard those NOTIFYs; its catch-up after reconnecting announces seq 4.
    assert!(
        watch
            .wait_past(3, tokio::time::Instant::now() + Duration::from_secs(10))
            .await,
        "the watcher was caught up (announced {})",
        watch.announced()
    );
    assert_eq!(watch.announced(), 4);
    wait_listening(&[&b]).await;
}

/// A task whose lease ran out is requeued for another attempt (an
/// idempotent op) and runs again on another instance: the old owner's late
/// events are dropped and its finish (or retry) is refused, so the new
/// attempt's tape stays its own. An earlier release's `claim` starts
/// nothing on this schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_write_into_the_next_attempt() {
    use tasktape_core::model::Retry;
    use tasktape_core::retry::{Backoff, RetryPlan, RetryPolicy};
    use tasktape_core::store::{AppendOutcome, FinishOutcome, Lease, LostRun};
    use tasktape_core::testkit::{assert_row_and_tape_agree, progress};
    use tasktape_core::{ErrorInfo, Outcome, Status, Timestamp};

    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    a.guard_instance("node-a").await.unwrap();
    b.guard_instance("node-b").await.unwrap();
    let mut new = new_task("work");
    // An idempotent op's plan: a lost run is tried again at once.
    new.retry = Some(RetryPlan {
        policy: RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Fixed,
            initial_ms: 0,
            max_ms: 0,
            jitter: false,
        },
        idempotent: true,
    });
    let task_id = a.create(new).await.unwrap().task.task_id;
    let short = Lease {
        owner: "node-a".into(),
        until: Timestamp::now().add_millis(50),
    };
    a.claim("work", 1, short, Timestamp::now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let retry = |millis| {
        Outcome::Retry(Box::new(Retry {
            error: ErrorInfo::new("owner_lost", "lease expired"),
            retry_at: Timestamp::now().add_millis(millis),
            started_at: None,
        }))
    };
    assert!(matches!(
        b.reap(
            task_id,
            LostRun::expired(
                ErrorInfo::new("owner_lost", "lease expired"),
                Timestamp::now()
            )
        )
        .await
        .unwrap(),
        Some(FinishOutcome::Requeued { seq: 2 })
    ));
    let again = b
        .claim("work", 1, lease("node-b"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!((again.len(), again[0].attempt), (1, 2));
    // node-a comes back with a late event, its finish and its own retry.
    assert!(matches!(
        a.append(task_id, progress(1)).await.unwrap(),
        AppendOutcome::Dropped { last_seq: 3 }
    ));
    assert_eq!(
        a.finish(task_id, Outcome::Succeeded(serde_json::json!(1)))
            .await
            .unwrap(),
        FinishOutcome::NotOwner
    );
    assert_eq!(
        a.finish(task_id, retry(1000)).await.unwrap(),
        FinishOutcome::NotOwner
    );
    // node-b's attempt goes on and ends it.
    assert!(matches!(
        b.append(task_id, progress(2)).await.unwrap(),
        AppendOutcome::Appended { seq: 4 }
    ));
    assert!(matches!(
        b.finish(task_id, Outcome::Succeeded(serde_json::json!(2)))
            .await
            .unwrap(),
        FinishOutcome::Finished {
            status: Status::Succeeded,
            seq: 5
        }
    ));
    assert_row_and_tape_agree(&*b, task_id).await;

    // An earlier release's claim function starts nothing here.
    a.create(new_task("old")).await.unwrap();
    let (db, connection) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let started = db
        .query(
            &format!("SELECT * FROM \"{schema}\".claim('old', 4, 'old-release', 0, 0, 'x')"),
            &[],
        )
        .await
        .unwrap();
    assert!(started.is_empty());
}

/// Appends to several tasks sent together, so that they usually share the
/// writer's batches (the writer numbers each event within its task and
/// maps the per-task answers back; the function itself is checked on a
/// mixed batch below): a running task's events take the next seqs in queue
/// order, a finished task's are dropped with its last seq, an unknown
/// task's are not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_append_batch_answers_each_event_by_its_task() {
    use tasktape_core::model::Outcome;
    use tasktape_core::store::AppendOutcome;
    use tasktape_core::testkit::tape;
    use tasktape_core::{Status, TaskId};
    let schema = unique_schema();
    let (store, _guard) = open_schema(&schema).await;
    let mut running = Vec::new();
    for _ in 0..2 {
        let task_id = store.create(new_task("work")).await.unwrap().task.task_id;
        store.start(task_id, lease("me")).await.unwrap();
        running.push(task_id);
    }
    let done = store.create(new_task("work")).await.unwrap().task.task_id;
    store.start(done, lease("me")).await.unwrap();
    store.finish(done, Outcome::Cancelled).await.unwrap();
    let unknown = TaskId::new();
    let (a, b) = (running[0], running[1]);
    // Sent in this order without waiting, so they share batches.
    let order = [a, b, a, done, unknown, b, a, a];
    let answers = append_together(&*store, &order).await;
    let (mut next_a, mut next_b) = (2, 2);
    for (task_id, answer) in order.iter().zip(answers) {
        let expected = if *task_id == a {
            next_a += 1;
            AppendOutcome::Appended { seq: next_a - 1 }
        } else if *task_id == b {
            next_b += 1;
            AppendOutcome::Appended { seq: next_b - 1 }
        } else if *task_id == done {
            AppendOutcome::Dropped { last_seq: 2 }
        } else {
            AppendOutcome::NotFound
        };
        assert_eq!(answer, expected, "task {task_id}");
    }
    let tape_a = tape(&*store, a).await;
    assert_eq!(
        tape_a.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // In queue order: the progress steps were numbered 0, 2, 6, 7 for a.
    let steps: Vec<u64> = tape_a[1..]
        .iter()
        .map(|event| match &event.body {
            tasktape_core::EventBody::Progress { current, .. } => *current,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(steps, [0, 2, 6, 7]);
    assert_eq!(tape(&*store, b).await.len(), 3);
    assert_eq!(tape(&*store, done).await.len(), 2);
    assert_eq!(
        store.get(done).await.unwrap().unwrap().status,
        Status::Cancelled
    );
}

/// Appends `order`'s tasks a progress step each (numbered by position),
/// all sent before any is awaited (each sends its write on its first poll,
/// and `join_all` polls them in order).
async fn append_together(
    store: &dyn Store,
    order: &[tasktape_core::TaskId],
) -> Vec<tasktape_core::store::AppendOutcome> {
    let calls = order.iter().enumerate().map(|(index, task_id)| {
        store.append(
            *task_id,
            tasktape_core::EventBody::Progress {
                phase: "p".into(),
                current: index as u64,
                total: 10,
                detail: None,
            },
        )
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// `append_task_events` called directly with one mixed batch (sorted by
/// task, numbered within each task): one answer per task — appended from
/// its base, dropped for a finished task or another instance's, not found —
/// and a batch whose numbers are not 1..n fails whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_task_events_answers_a_mixed_batch_per_task() {
    use tasktape_core::TaskId;
    use tasktape_core::model::Outcome;
    use tasktape_core::testkit::tape;
    let schema = unique_schema();
    let (store, _guard) = open_schema(&schema).await;
    let started = async |owner: &str| {
        let task_id = store.create(new_task("work")).await.unwrap().task.task_id;
        store.start(task_id, lease(owner)).await.unwrap();
        task_id
    };
    let (a, b, theirs, done) = (
        started("me").await,
        started("me").await,
        started("other").await,
        started("me").await,
    );
    store.finish(done, Outcome::Cancelled).await.unwrap();
    let unknown = TaskId::new();
    let mut batch = vec![
        (a, 1),
        (a, 2),
        (a, 3),
        (b, 1),
        (theirs, 1),
        (done, 1),
        (unknown, 1),
    ];
    batch.sort_by_key(|(task_id, _)| *task_id);
    let call = async |batch: &[(TaskId, i32)]| {
        let (db, connection) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let ids: Vec<uuid::Uuid> = batch
            .iter()
            .map(|(id, _)| uuid::Uuid::from_bytes(*id.as_bytes()))
            .collect();
        let ks: Vec<i32> = batch.iter().map(|(_, k)| *k).collect();
        let bodies: Vec<String> = batch
            .iter()
            .map(|(_, k)| format!("{{\"type\":\"log\",\"level\":\"info\",\"message\":\"{k}\""))
            .collect();
        let times = vec!["2026-11-29T00:00:00.000Z".to_owned(); batch.len()];
        db.query(
            &format!(
                "SELECT out_id, out_base, out_code FROM \"{schema}\".append_task_events($1, $2, $3, $4, $5)"
            ),
            &[&ids, &ks, &bodies, &times, &"me"],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    let id: uuid::Uuid = row.get(0);
                    let id = TaskId::from_bytes(*id.as_bytes());
                    (id, (id, row.get::<_, i64>(1), row.get::<_, i16>(2)))
                })
                .collect::<std::collections::HashMap<_, _>>()
        })
    };
    let answers = call(&batch).await.unwrap();
    // Codes: 0 appended (from base + 1), 1 dropped (base = last seq), 2 not found.
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert_eq!(answers[&a], (a, 1, 0));
    assert_eq!(answers[&b], (b, 1, 0));
    assert_eq!(answers[&theirs], (theirs, 1, 1), "another instance's task");
    assert_eq!(answers[&done], (done, 2, 1));
    assert_eq!(answers[&unknown], (unknown, 0, 2));
    let messages: Vec<(u64, String)> = tape(&*store, a)
        .await
        .into_iter()
        .skip(1)
        .map(|event| match event.body {
            tasktape_core::EventBody::Log { message, .. } => (event.seq, message),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        messages,
        [
            (2, "1".to_owned()),
            (3, "2".to_owned()),
            (4, "3".to_owned())
        ]
    );
    assert_eq!(store.last_seq(a).await.unwrap(), Some(4));
    assert_eq!(store.last_seq(theirs).await.unwrap(), Some(1));

    // Numbers with a gap (1, 3) or a repeat fail the whole batch.
    for ks in [[1, 3], [1, 1]] {
        let bad = [(b, ks[0]), (b, ks[1])];
        assert!(call(&bad).await.is_err(), "{ks:?}");
        assert_eq!(store.last_seq(b).await.unwrap(), Some(2), "{ks:?}");
    }
}
