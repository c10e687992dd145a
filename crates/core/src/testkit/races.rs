//! Concurrent contract checks: the races a store must settle by itself.

use std::sync::Arc;

use serde_json::json;

use super::{Harness, assert_row_and_tape_agree, new_task, running_task};
use crate::event::{EventBody, EventKind};
use crate::model::{ErrorInfo, Outcome, Status};
use crate::store::{AppendOutcome, CancelOutcome, FinishOutcome, Store};

fn log(writer: usize, index: usize) -> EventBody {
    EventBody::Log {
        level: "info".into(),
        message: format!("{writer}:{index}"),
    }
}

/// 8 concurrent appenders on one task: every event lands once, seqs contiguous,
/// each appender's events in its own call order.
pub async fn eight_concurrent_appenders_get_contiguous_seqs(h: Harness) {
    let store = Arc::clone(&h.store);
    let task_id = running_task(&*store).await;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for index in 0..200 {
                    match store.append(task_id, log(writer, index)).await.unwrap() {
                        AppendOutcome::Appended { seq } => seqs.push(seq),
                        other => panic!("{other:?}"),
                    }
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for writer in writers {
        let seqs = writer.await.unwrap();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "one appender's seqs go up"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (2..=1601).collect::<Vec<u64>>());
    let (_, events) = assert_row_and_tape_agree(&*store, task_id).await;
    for writer in 0..8 {
        let mine: Vec<String> = events
            .iter()
            .filter_map(|event| match &event.body {
                EventBody::Log { message, .. } if message.starts_with(&format!("{writer}:")) => {
                    Some(message.clone())
                }
                _ => None,
            })
            .collect();
        let expected: Vec<String> = (0..200).map(|index| format!("{writer}:{index}")).collect();
        assert_eq!(mine, expected);
    }
}

/// Appends racing a finish: `final` is last and alone; every append after it was dropped.
pub async fn append_racing_finish_leaves_final_last_and_alone(h: Harness) {
    let store = Arc::clone(&h.store);
    for round in 0..20 {
        let task_id = running_task(&*store).await;
        let appenders: Vec<_> = (0..4)
            .map(|writer| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut appended = 0;
                    for index in 0..50 {
                        match store.append(task_id, log(writer, index)).await.unwrap() {
                            AppendOutcome::Appended { .. } => appended += 1,
                            AppendOutcome::Dropped { .. } => {}
                            AppendOutcome::NotFound => panic!("task vanished"),
                        }
                    }
                    appended
                })
            })
            .collect();
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        }
        let finished = store
            .finish(task_id, Outcome::Succeeded(json!(round)))
            .await
            .unwrap();
        let FinishOutcome::Finished { seq: final_seq, .. } = finished else {
            panic!("{finished:?}")
        };
        let mut appended = 0;
        for appender in appenders {
            appended += appender.await.unwrap();
        }
        let (_, events) = assert_row_and_tape_agree(&*store, task_id).await;
        assert_eq!(events.len() as u64, final_seq);
        assert_eq!(
            events.len(),
            appended + 2,
            "every appended event is on the tape, nothing else"
        );
        assert_eq!(
            events
                .iter()
                .filter(|event| event.body.kind() == EventKind::Final)
                .count(),
            1
        );
    }
}

/// Finishes racing each other: exactly one wins; the others are told its status.
pub async fn finish_racing_finish_has_one_winner(h: Harness) {
    let store = Arc::clone(&h.store);
    for _ in 0..20 {
        let task_id = running_task(&*store).await;
        let outcomes = [
            Outcome::Succeeded(json!("a")),
            Outcome::Failed(ErrorInfo::new("b", "b")),
            Outcome::Cancelled,
            Outcome::Succeeded(json!("d")),
        ];
        let racers: Vec<_> = outcomes
            .into_iter()
            .map(|outcome| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.finish(task_id, outcome).await.unwrap() })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                FinishOutcome::Finished { status, .. } => winners.push(status),
                FinishOutcome::AlreadyFinished { status } => losers.push(status),
                FinishOutcome::NotFound
                | FinishOutcome::NotStarted
                | FinishOutcome::Requeued { .. }
                | FinishOutcome::NotOwner => {
                    panic!("task vanished, never started or was requeued")
                }
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert!(losers.iter().all(|status| *status == winners[0]));
        let (task, events) = assert_row_and_tape_agree(&*store, task_id).await;
        assert_eq!(task.status, winners[0]);
        assert_eq!(events.len(), 2);
    }
}

/// A cancel racing a success: one `final`, matching the row, and the cancel's
/// answer tells the truth (`Requested` ⇒ cancelled; `AlreadyTerminal` ⇒ the success stood).
pub async fn cancel_racing_success_leaves_one_final_matching_the_row(h: Harness) {
    let store: Arc<dyn Store> = Arc::clone(&h.store);
    for round in 0..40 {
        let task_id = if round % 4 == 0 {
            store.create(new_task("test")).await.unwrap().task.task_id
        } else {
            running_task(&*store).await
        };
        // A pending task can only fail or be cancelled; a running one succeeds.
        let outcome = if round % 4 == 0 {
            Outcome::Failed(ErrorInfo::server_restart())
        } else {
            Outcome::Succeeded(json!({"saved": true}))
        };
        let finisher = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.finish(task_id, outcome).await.unwrap() })
        };
        let canceller = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.request_cancel(task_id).await.unwrap() })
        };
        let finished = finisher.await.unwrap();
        let cancel = canceller.await.unwrap();
        let (task, events) = assert_row_and_tape_agree(&*store, task_id).await;
        assert_eq!(
            events
                .iter()
                .filter(|event| event.body.kind() == EventKind::Final)
                .count(),
            1
        );
        match cancel {
            CancelOutcome::Requested { .. } | CancelOutcome::Cancelled { .. } => {
                assert_eq!(
                    task.status,
                    Status::Cancelled,
                    "a cancel answered as accepted must end cancelled"
                );
            }
            CancelOutcome::AlreadyTerminal { status } => {
                assert_ne!(status, Status::Cancelled);
                assert_eq!(task.status, status);
            }
            CancelOutcome::NotFound => panic!("task vanished"),
        }
        match finished {
            FinishOutcome::Finished { status, .. } | FinishOutcome::AlreadyFinished { status } => {
                assert_eq!(
                    status, task.status,
                    "finish's answer names the row's status"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Under write load, an op's events carry the times it reported them (not
/// when a batch was flushed): steps 50 ms apart are stamped 50 ms apart, and
/// no time decreases along the tape.
pub async fn event_times_are_report_times_under_write_load(h: Harness) {
    use std::time::Duration;

    use crate::{FnOp, Manager, ManagerConfig, OpRegistry};

    let store = Arc::clone(&h.store);
    let mut ops = OpRegistry::new();
    ops.register(FnOp::new(
        "ticks",
        "eight steps 50 ms apart",
        |_, reporter| async move {
            for step in 1..=8 {
                reporter.progress("tick", step, 8, None).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(json!(null))
        },
    ));
    let manager = Manager::start(Arc::clone(&store), ops, ManagerConfig::default())
        .await
        .unwrap();
    // Write load: four appenders keep the store's writer busy meanwhile.
    let stop = tokio_util::sync::CancellationToken::new();
    let load_task = running_task(&*store).await;
    let loaders: Vec<_> = (0..4)
        .map(|writer| {
            let (store, stop) = (Arc::clone(&store), stop.clone());
            tokio::spawn(async move {
                let mut index = 0;
                while !stop.is_cancelled() {
                    store.append(load_task, log(writer, index)).await.unwrap();
                    index += 1;
                }
                index
            })
        })
        .collect();
    let task_id = manager
        .submit("ticks", json!({}), None)
        .await
        .unwrap()
        .task
        .task_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !super::row(&*store, task_id).await.status.is_terminal() {
        assert!(tokio::time::Instant::now() < deadline, "ticks never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let mut load = 0;
    for loader in loaders {
        load += loader.await.unwrap();
    }
    assert!(load > 100, "the load wrote only {load} events");
    let (_, events) = assert_row_and_tape_agree(&*store, task_id).await;
    for pair in events.windows(2) {
        assert!(pair[0].ts <= pair[1].ts, "times never decrease: {pair:?}");
    }
    let steps: Vec<i64> = events
        .iter()
        .filter(|event| event.body.kind() == EventKind::Progress)
        .map(|event| event.ts.as_millis())
        .collect();
    assert_eq!(steps.len(), 8);
    for gap in steps.windows(2).map(|pair| pair[1] - pair[0]) {
        assert!(
            (50..150).contains(&gap),
            "steps reported 50 ms apart were stamped {gap} ms apart ({steps:?})"
        );
    }
    manager.shutdown(Duration::from_secs(2)).await;
}

/// `request_cancels` judges each task as `request_cancel` does, in one
/// write, answering in the order asked: pending ends `cancelled` with its
/// `final`, running is asked to stop (its owner named), finished and
/// unknown are left alone.
pub async fn request_cancels_answers_each_task_in_order(h: Harness) {
    let store = &*h.store;
    let pending = store.create(new_task("test")).await.unwrap().task.task_id;
    let running = running_task(store).await;
    let finished = running_task(store).await;
    store
        .finish(finished, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    let unknown = crate::model::TaskId::new();
    let outcomes = store
        .request_cancels(vec![running, unknown, pending, finished])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            CancelOutcome::Requested {
                owner: Some("owner-a".into())
            },
            CancelOutcome::NotFound,
            CancelOutcome::Cancelled { seq: 1 },
            CancelOutcome::AlreadyTerminal {
                status: Status::Succeeded
            },
        ]
    );
    let (row, _) = assert_row_and_tape_agree(store, pending).await;
    assert_eq!(row.status, Status::Cancelled);
    assert_eq!(
        store.get(running).await.unwrap().unwrap().status,
        Status::Running
    );
    assert!(store.request_cancels(Vec::new()).await.unwrap().is_empty());
}
