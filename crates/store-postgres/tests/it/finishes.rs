//! The writer's set-based finishes (`finish_tasks`): many finishes queued
//! together are written in one statement, each caller told its own exact
//! outcome, one `final` per tape, the counters exact; a row that fails the
//! statement fails alone.
//!
//! On one thread: every call is queued before the store's writer runs, so
//! they are written as one batch (the set-based path, not the fallbacks).

use std::collections::HashMap;

use serde_json::json;
use tasktape_core::model::Retry;
use tasktape_core::store::prelude::*;
use tasktape_core::store::{FinishOutcome, Store};
use tasktape_core::testkit::{assert_row_and_tape_agree, lease, new_task};
use tasktape_core::{ErrorInfo, Outcome, Status, TaskId, Timestamp};

use crate::support::{open_schema, refuse_rows, unique_schema};

async fn claimed(store: &dyn Store, op: &str, owner: &str, count: usize) -> Vec<TaskId> {
    for _ in 0..count {
        store.create(new_task(op)).await.unwrap();
    }
    let tasks = store
        .claim(op, count, lease(owner), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(tasks.len(), count);
    tasks.into_iter().map(|task| task.task_id).collect()
}

/// Finishes queued together, racing each other and a cancel: plain ones,
/// a task finished twice (first wins, the other told how it ended), a
/// cancel recorded before the finish (it wins), a pending task told
/// `NotStarted`, an unknown id, a task another instance holds (fenced:
/// `NotOwner`), and a retry (requeued) — each answer exact, every tape
/// whole with one `final`, and the counters equal to the rows.
#[tokio::test]
async fn a_batch_of_finishes_answers_each_caller_exactly() {
    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    a.guard_instance("node-a").await.unwrap();
    b.guard_instance("node-b").await.unwrap();
    let plain = claimed(&*a, "work", "node-a", 40).await;
    let twice = claimed(&*a, "twice", "node-a", 1).await[0];
    let cancelled = claimed(&*a, "cancelled", "node-a", 1).await[0];
    a.request_cancel(cancelled).await.unwrap();
    let pending = a.create(new_task("pending")).await.unwrap().task.task_id;
    let foreign = claimed(&*b, "foreign", "node-b", 1).await[0];
    let retried = claimed(&*a, "retried", "node-a", 1).await[0];
    let unknown = TaskId::new();

    let mut calls: Vec<(TaskId, Outcome)> = plain
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let outcome = if n % 3 == 0 {
                Outcome::Failed(ErrorInfo::new("boom", format!("task {n}")))
            } else {
                Outcome::Succeeded(json!({"n": n}))
            };
            (*id, outcome)
        })
        .collect();
    calls.push((twice, Outcome::Succeeded(json!("first"))));
    calls.push((twice, Outcome::Failed(ErrorInfo::new("second", "too late"))));
    calls.push((cancelled, Outcome::Succeeded(json!("ignored"))));
    calls.push((pending, Outcome::Succeeded(json!(null))));
    calls.push((unknown, Outcome::Succeeded(json!(null))));
    calls.push((foreign, Outcome::Succeeded(json!(null))));
    calls.push((
        retried,
        Outcome::Retry(Box::new(Retry {
            error: ErrorInfo::new("flaky", "again"),
            retry_at: Timestamp::now().add_millis(60_000),
            started_at: None,
        })),
    ));
    let answers = futures::future::join_all(
        calls
            .iter()
            .map(|(task_id, outcome)| a.finish(*task_id, outcome.clone())),
    )
    .await;
    let answers: Vec<FinishOutcome> = answers.into_iter().map(Result::unwrap).collect();
    let by_call: Vec<(&TaskId, &Outcome, &FinishOutcome)> = calls
        .iter()
        .zip(&answers)
        .map(|((id, outcome), answer)| (id, outcome, answer))
        .collect();

    for (id, outcome, answer) in by_call.iter().take(plain.len()) {
        let status = outcome.status();
        assert_eq!(
            **answer,
            FinishOutcome::Finished { status, seq: 2 },
            "task {id}"
        );
    }
    let (first, second) = (&answers[plain.len()], &answers[plain.len() + 1]);
    assert_eq!(
        *first,
        FinishOutcome::Finished {
            status: Status::Succeeded,
            seq: 2
        }
    );
    assert_eq!(
        *second,
        FinishOutcome::AlreadyFinished {
            status: Status::Succeeded
        }
    );
    assert_eq!(
        answers[plain.len() + 2],
        FinishOutcome::Finished {
            status: Status::Cancelled,
            seq: 2
        }
    );
    assert_eq!(answers[plain.len() + 3], FinishOutcome::NotStarted);
    assert_eq!(answers[plain.len() + 4], FinishOutcome::NotFound);
    assert_eq!(answers[plain.len() + 5], FinishOutcome::NotOwner);
    assert!(
        matches!(answers[plain.len() + 6], FinishOutcome::Requeued { .. }),
        "{:?}",
        answers[plain.len() + 6]
    );

    for id in plain
        .iter()
        .chain([&twice, &cancelled, &foreign, &retried, &pending])
    {
        assert_row_and_tape_agree(&*a, *id).await;
    }
    assert_eq!(
        a.get(twice).await.unwrap().unwrap().result,
        Some(json!("first"))
    );
    assert_eq!(
        a.get(foreign).await.unwrap().unwrap().status,
        Status::Running
    );
    // The counters agree with the rows.
    let counts = a.counts().await.unwrap();
    let mut rows: HashMap<Status, u64> = HashMap::new();
    for id in plain
        .iter()
        .chain([&twice, &cancelled, &foreign, &retried, &pending])
    {
        *rows
            .entry(a.get(*id).await.unwrap().unwrap().status)
            .or_default() += 1;
    }
    for status in [
        Status::Pending,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ] {
        assert_eq!(
            counts.get(&status).copied().unwrap_or(0),
            rows.get(&status).copied().unwrap_or(0),
            "{status:?}"
        );
    }
    let minutes: u64 = a
        .finished_per_minute(Timestamp::now().add_millis(-120_000))
        .await
        .unwrap()
        .iter()
        .map(|minute| minute.count)
        .sum();
    assert_eq!(minutes, plain.len() as u64 + 2, "per-minute finish counts");
}

/// A row the statement cannot write (here a trigger refuses it) fails the
/// set-based call: the batch is written again one task at a time, so that
/// task alone gets the error and its neighbours are finished.
#[tokio::test]
async fn a_bad_row_fails_alone() {
    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    a.guard_instance("node-a").await.unwrap();
    let ids = claimed(&*a, "work", "node-a", 12).await;
    let bad = ids[5];
    refuse_rows(
        &schema,
        "UPDATE",
        &format!("NEW.task_id = '{bad}' AND NEW.status <> 'running'"),
    )
    .await;
    let answers = futures::future::join_all(
        ids.iter()
            .map(|id| a.finish(*id, Outcome::Succeeded(json!("done")))),
    )
    .await;
    for (id, answer) in ids.iter().zip(answers) {
        if *id == bad {
            let error = answer.unwrap_err();
            assert!(error.to_string().contains("refused by the test"), "{error}");
            assert_eq!(a.get(bad).await.unwrap().unwrap().status, Status::Running);
        } else {
            assert_eq!(
                answer.unwrap(),
                FinishOutcome::Finished {
                    status: Status::Succeeded,
                    seq: 2
                },
                "task {id}"
            );
        }
        assert_row_and_tape_agree(&*a, *id).await;
    }
}

/// Finishes of runs whose lease lapsed, in one batch with runs a peer has
/// reaped already and racing the peer's reaps of the others: for each task
/// exactly one of them ends it (the finish while the owner still holds the
/// row, else the reap), the loser is told so, the batch's other rows are
/// written, and each tape has one `final`.
#[tokio::test]
async fn finishes_racing_reaps_of_lapsed_leases_end_each_task_once() {
    use tasktape_core::store::{Lease, LostRun};

    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    a.guard_instance("node-a").await.unwrap();
    b.guard_instance("node-b").await.unwrap();
    for _ in 0..30 {
        a.create(new_task("work")).await.unwrap();
    }
    let short = Lease {
        owner: "node-a".into(),
        until: Timestamp::now().add_millis(50),
    };
    let ids: Vec<TaskId> = a
        .claim("work", 30, short, Timestamp::now())
        .await
        .unwrap()
        .into_iter()
        .map(|task| task.task_id)
        .collect();
    assert_eq!(ids.len(), 30);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let lost = || {
        LostRun::expired(
            ErrorInfo::new("owner_lost", "lease expired"),
            Timestamp::now(),
        )
    };
    // The odd tasks are reaped before the batch: it holds them (fenced) among
    // the others. The even ones' reaps go out on b's connections while a's
    // writer runs the batch: which one wins such a row is the database's
    // call, and either way the answers must be exact.
    let mut early = Vec::new();
    for id in ids.iter().skip(1).step_by(2) {
        early.push(b.reap(*id, lost()).await);
    }
    let (finishes, late) = futures::future::join(
        futures::future::join_all(
            ids.iter()
                .map(|id| a.finish(*id, Outcome::Succeeded(json!("done")))),
        ),
        futures::future::join_all(ids.iter().step_by(2).map(|id| b.reap(*id, lost()))),
    )
    .await;
    let (mut early, mut late) = (early.into_iter(), late.into_iter());
    let reaps: Vec<_> = (0..ids.len())
        .map(|n| {
            if n % 2 == 1 {
                early.next()
            } else {
                late.next()
            }
            .unwrap()
        })
        .collect();
    let (mut finished, mut reaped) = (0, 0);
    for ((id, finish), reap) in ids.iter().zip(finishes).zip(reaps) {
        let row = a.get(*id).await.unwrap().unwrap();
        match (finish.unwrap(), reap.unwrap()) {
            (FinishOutcome::Finished { status, seq: 2 }, None) => {
                assert_eq!((status, row.status), (Status::Succeeded, Status::Succeeded));
                finished += 1;
            }
            (
                FinishOutcome::AlreadyFinished {
                    status: Status::Failed,
                },
                Some(FinishOutcome::Finished {
                    status: Status::Failed,
                    seq: 2,
                }),
            ) => {
                assert_eq!(row.status, Status::Failed, "task {id}");
                reaped += 1;
            }
            other => panic!("task {id}: {other:?}"),
        }
        assert_row_and_tape_agree(&*a, *id).await;
    }
    eprintln!("{finished} finished by their owner, {reaped} reaped");
    assert_eq!(finished + reaped, 30);
    let counts = a.counts().await.unwrap();
    assert_eq!(counts.get(&Status::Running).copied().unwrap_or(0), 0);
    assert_eq!(
        counts.get(&Status::Succeeded).copied().unwrap_or(0) as usize,
        finished
    );
    assert_eq!(
        counts.get(&Status::Failed).copied().unwrap_or(0) as usize,
        reaped
    );
}

/// Retries queued together are one `requeue_tasks` call: each caller told
/// its own outcome (requeued; cancelled when a cancel was recorded; fenced;
/// not started; already finished; not found), each requeued task pending
/// again with its `attempt_failed` partial and history record, the
/// counters equal to the rows, and the next attempt claimable.
#[tokio::test]
async fn a_batch_of_retries_is_requeued_in_one_statement() {
    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    a.guard_instance("node-a").await.unwrap();
    b.guard_instance("node-b").await.unwrap();
    let plain = claimed(&*a, "work", "node-a", 20).await;
    let cancelled = claimed(&*a, "cancelled", "node-a", 1).await[0];
    a.request_cancel(cancelled).await.unwrap();
    let foreign = claimed(&*b, "foreign", "node-b", 1).await[0];
    let pending = a.create(new_task("pending")).await.unwrap().task.task_id;
    let done = claimed(&*a, "done", "node-a", 1).await[0];
    a.finish(done, Outcome::Succeeded(json!(1))).await.unwrap();
    let unknown = TaskId::new();
    let retry_at = Timestamp::now().add_millis(200);
    let retry = || {
        Outcome::Retry(Box::new(Retry {
            error: ErrorInfo::new("flaky", "try again"),
            retry_at,
            started_at: None,
        }))
    };
    let ids: Vec<TaskId> = plain
        .iter()
        .copied()
        .chain([cancelled, foreign, pending, done, unknown])
        .collect();
    let answers: Vec<FinishOutcome> =
        futures::future::join_all(ids.iter().map(|id| a.finish(*id, retry())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let n = plain.len();
    for (id, answer) in plain.iter().zip(&answers) {
        assert_eq!(*answer, FinishOutcome::Requeued { seq: 2 }, "task {id}");
        let row = a.get(*id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Pending);
        let history = serde_json::to_value(&row.history).unwrap();
        assert_eq!(history[0]["attempt"], 1, "{history}");
        assert_eq!(history[0]["error"]["code"], "flaky", "{history}");
        assert!(history.get(1).is_none(), "{history}");
        let events = a.events(*id, 0, 10).await.unwrap().unwrap().events;
        assert_eq!(events.len(), 2);
        let json: serde_json::Value = serde_json::from_str(&events[1].json).unwrap();
        assert_eq!(json["kind"], "tasktape.attempt_failed", "{json}");
        assert_eq!(json["payload"]["attempt"], 1, "{json}");
    }
    assert_eq!(
        answers[n],
        FinishOutcome::Finished {
            status: Status::Cancelled,
            seq: 2
        }
    );
    assert_eq!(answers[n + 1], FinishOutcome::NotOwner);
    assert_eq!(answers[n + 2], FinishOutcome::NotStarted);
    assert_eq!(
        answers[n + 3],
        FinishOutcome::AlreadyFinished {
            status: Status::Succeeded
        }
    );
    assert_eq!(answers[n + 4], FinishOutcome::NotFound);
    for id in &ids[..ids.len() - 1] {
        assert_row_and_tape_agree(&*a, *id).await;
    }
    let counts = a.counts().await.unwrap();
    assert_eq!(counts.get(&Status::Pending).copied(), Some(n as u64 + 1));
    assert_eq!(counts.get(&Status::Running).copied(), Some(1));
    assert_eq!(counts.get(&Status::Cancelled).copied(), Some(1));
    // The next attempt starts once it is due, numbered 2.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let again = a
        .claim("work", n, lease("node-a"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(again.len(), n);
    assert!(again.iter().all(|task| task.attempt == 2));
}
