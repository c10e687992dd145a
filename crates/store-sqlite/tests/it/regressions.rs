//! One test per race dikw-core fixed, and one for the race it still has.
//! Each is named after what broke there.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tasktape_core::event::EventKind;
use tasktape_core::model::Status;
use tasktape_core::store::CancelOutcome;
use tasktape_core::{FnOp, OpRegistry, ReportError};
use tokio::sync::{Semaphore, oneshot};

use crate::support::{Rig, Rng, quick_config, wait_final, wait_status};

fn finals(events: &[tasktape_core::Event]) -> usize {
    events
        .iter()
        .filter(|event| event.body.kind() == EventKind::Final)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_progress_after_cancel_is_dropped() {
    let (late_tx, late_rx) = oneshot::channel::<Result<(), ReportError>>();
    let late_tx = Arc::new(Mutex::new(Some(late_tx)));
    let started = Arc::new(Semaphore::new(0));
    let op_started = started.clone();
    let op = FnOp::new(
        "leaky",
        "leaves a reporter behind",
        move |_params, reporter| {
            let (late_tx, op_started) = (late_tx.clone(), op_started.clone());
            async move {
                op_started.add_permits(1);
                let straggler = reporter.clone();
                tokio::spawn(async move {
                    straggler.cancelled().await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let late = straggler.progress("late", 1, 1, None).await;
                    if let Some(tx) = late_tx.lock().unwrap().take() {
                        let _ = tx.send(late);
                    }
                });
                reporter.cancelled().await;
                Ok(Value::Null)
            }
        },
    );
    let mut ops = OpRegistry::new();
    ops.register(op);
    let rig = Rig::new(ops, quick_config()).await;
    let task_id = rig.submit("leaky", json!({})).await;
    wait_status(&rig.store, task_id, Status::Running).await;
    // The op itself runs (a cancel before it starts means it never runs).
    let _ = started.acquire().await.unwrap();
    rig.manager.cancel(task_id).await.unwrap();
    let (_, before) = wait_final(&rig.store, task_id).await;
    let late = tokio::time::timeout(Duration::from_secs(10), late_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late, Err(ReportError::Dropped));
    let (task, after) = wait_final(&rig.store, task_id).await;
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(before, after, "the late progress changed the tape");
    assert_eq!(after.last().unwrap().body.kind(), EventKind::Final);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_the_runner_starts_never_runs_the_op() {
    let ran = Arc::new(Mutex::new(HashSet::new()));
    let gate = Arc::new(Semaphore::new(0));
    let mut ops = OpRegistry::new();
    let (ran_in_op, gate_in_op) = (ran.clone(), gate.clone());
    ops.register(FnOp::new("counted", "", move |params, _reporter| {
        let (ran, gate) = (ran_in_op.clone(), gate_in_op.clone());
        async move {
            ran.lock().unwrap().insert(params["n"].as_u64().unwrap());
            if params["hold"].as_bool().unwrap_or(false) {
                gate.acquire().await.unwrap().forget();
            }
            Ok(Value::Null)
        }
    }));
    let mut config = quick_config();
    config.op_concurrency.insert("counted".into(), 1);
    let rig = Rig::new(ops, config).await;
    // Slot taken: the second task waits, is cancelled, and must never run.
    let holder = rig.submit("counted", json!({"n": 0, "hold": true})).await;
    let queued = rig.submit("counted", json!({"n": 1})).await;
    wait_status(&rig.store, holder, Status::Running).await;
    assert_eq!(
        rig.manager.cancel(queued).await.unwrap(),
        CancelOutcome::Cancelled { seq: 1 }
    );
    gate.add_permits(1);
    wait_final(&rig.store, holder).await;
    let (task, events) = wait_final(&rig.store, queued).await;
    assert_eq!(
        (task.status, events.len(), task.started_at),
        (Status::Cancelled, 1, None)
    );
    // Racing the runner directly: whichever way the race goes, the answer tells the truth.
    for n in 2..60u64 {
        let task_id = rig.submit("counted", json!({"n": n})).await;
        let outcome = rig.manager.cancel(task_id).await.unwrap();
        let (task, events) = wait_final(&rig.store, task_id).await;
        match outcome {
            CancelOutcome::Cancelled { .. } => {
                assert_eq!(events.len(), 1);
                assert!(
                    !ran.lock().unwrap().contains(&n),
                    "task {n} was cancelled while pending but ran"
                );
            }
            CancelOutcome::Requested { .. } => assert_eq!(task.status, Status::Cancelled),
            CancelOutcome::AlreadyTerminal { status } => assert_eq!(status, task.status),
            CancelOutcome::NotFound => panic!("task vanished"),
        }
    }
    assert!(!ran.lock().unwrap().contains(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_landing_just_after_success_gives_no_contradictory_final() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    for _ in 0..20 {
        let task_id = rig.submit("echo", json!({"count": 1})).await;
        wait_final(&rig.store, task_id).await;
        let outcome = rig.manager.cancel(task_id).await.unwrap();
        assert_eq!(
            outcome,
            CancelOutcome::AlreadyTerminal {
                status: Status::Succeeded
            }
        );
        let (task, events) = wait_final(&rig.store, task_id).await;
        assert_eq!(task.status, Status::Succeeded);
        assert_eq!(finals(&events), 1);
    }
}

/// dikw-core writes the row before `final`: a cancel landing in between left
/// the row `succeeded` with no `final` ever, after answering `cancelled: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_a_success_is_saved_leaves_exactly_one_final_matching_the_row() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let mut rng = Rng::new(7);
    let mut cancels = Vec::new();
    for _ in 0..200 {
        let task_id = rig.submit("echo", json!({"count": 2})).await;
        let manager = rig.manager.clone();
        let delay = Duration::from_micros(rng.below(3000));
        cancels.push((
            task_id,
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                manager.cancel(task_id).await.unwrap()
            }),
        ));
    }
    let (mut cancelled, mut succeeded) = (0, 0);
    for (task_id, cancel) in cancels {
        let outcome = cancel.await.unwrap();
        let (task, events) = wait_final(&rig.store, task_id).await;
        assert_eq!(finals(&events), 1, "task {task_id}");
        match outcome {
            CancelOutcome::Cancelled { .. } | CancelOutcome::Requested { .. } => {
                assert_eq!(
                    task.status,
                    Status::Cancelled,
                    "cancel answered accepted, task {task_id} ended {}",
                    task.status
                );
                cancelled += 1;
            }
            CancelOutcome::AlreadyTerminal { status } => {
                assert_eq!(status, Status::Succeeded);
                assert_eq!(task.status, Status::Succeeded);
                succeeded += 1;
            }
            CancelOutcome::NotFound => panic!("task vanished"),
        }
    }
    assert_eq!(cancelled + succeeded, 200);
}
