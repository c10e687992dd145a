//! The manager on a real SQLite file: submit, run, limits, cancel, recovery,
//! leases and shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tasktape_core::follow::events_page;
use tasktape_core::model::{NewTask, Status};
use tasktape_core::store::{CancelOutcome, Lease, StartOutcome};
use tasktape_core::{EventBody, FnOp, OpError, OpRegistry, SubmitError, Timestamp};
use tokio::sync::Semaphore;

use crate::support::{Rig, open, quick_config, started_by, wait_final, wait_status};

fn registry_with(op: FnOp) -> OpRegistry {
    let mut ops = OpRegistry::with_builtins();
    ops.register(op);
    ops
}

/// An op that holds until the test releases a permit (or its token fires).
fn gate_op(
    name: &str,
    gate: Arc<Semaphore>,
    started: Arc<Mutex<Vec<u64>>>,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> FnOp {
    FnOp::new(
        name,
        "waits for the test",
        move |params: Value, reporter| {
            let (gate, started, live, peak) =
                (gate.clone(), started.clone(), live.clone(), peak.clone());
            async move {
                started
                    .lock()
                    .unwrap()
                    .push(params["n"].as_u64().unwrap_or(0));
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::select! {
                    permit = gate.acquire() => permit.unwrap().forget(),
                    () = reporter.cancelled() => {}
                }
                live.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({"n": params["n"]}))
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_runs_to_the_wire_tape() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let submitted = rig
        .manager
        .submit("echo", json!({"count": 3, "delay_ms": 5}), None)
        .await
        .unwrap();
    assert!(submitted.created);
    assert_eq!(submitted.task.params, json!({"count": 3, "delay_ms": 5}));
    let (task, events) = wait_final(&rig.store, submitted.task.task_id).await;
    assert_eq!(task.status, Status::Succeeded);
    assert_eq!(task.result, Some(json!({"echoed": 3})));
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event.body.kind().as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "task_started",
            "progress",
            "progress",
            "progress",
            "partial",
            "final"
        ]
    );
    assert_eq!(
        events[2].body,
        EventBody::Progress {
            phase: "echo".into(),
            current: 2,
            total: 3,
            detail: Some(json!({"step": 2}))
        }
    );
    assert_eq!(
        events[4].body,
        EventBody::Partial {
            kind: "echo_done".into(),
            payload: json!({"count": 3})
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refuses_unknown_ops_and_bad_params_by_name() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    match rig.manager.submit("nope", json!({}), None).await {
        Err(SubmitError::UnknownOp { name, known }) => {
            assert_eq!(name, "nope");
            assert_eq!(known, vec!["echo".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    match rig
        .manager
        .submit("echo", json!({"delay_ms": 20000}), None)
        .await
    {
        Err(SubmitError::InvalidParams(error)) => assert_eq!(error.field, "delay_ms"),
        other => panic!("{other:?}"),
    }
    let page = rig.store.list(Default::default()).await.unwrap();
    assert!(page.tasks.is_empty(), "refused submits write nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_gives_the_first_task_or_a_conflict() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let key = Some("import-42".to_owned());
    let first = rig
        .manager
        .submit("echo", json!({"count": 2}), key.clone())
        .await
        .unwrap();
    let again = rig
        .manager
        .submit("echo", json!({"count": 2, "ignored": 1}), key.clone())
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.task.task_id, first.task.task_id);
    match rig.manager.submit("echo", json!({"count": 3}), key).await {
        Err(SubmitError::IdempotencyConflict { task_id }) => {
            assert_eq!(task_id, first.task.task_id)
        }
        other => panic!("{other:?}"),
    }
    wait_final(&rig.store, first.task.task_id).await;
    assert_eq!(
        rig.store
            .list(Default::default())
            .await
            .unwrap()
            .tasks
            .len(),
        1
    );
}

/// Pending tasks in the store.
async fn pending_count(rig: &Rig) -> u64 {
    let counts = rig.store.counts().await.unwrap();
    counts.get(&Status::Pending).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_op_limit_holds_and_pending_tasks_start_in_fifo_order() {
    let (gate, started) = (
        Arc::new(Semaphore::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (live, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let op = gate_op(
        "gate",
        gate.clone(),
        started.clone(),
        live.clone(),
        peak.clone(),
    );
    let mut config = quick_config();
    config.op_concurrency.insert("gate".into(), 2);
    let rig = Rig::new(registry_with(op), config).await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(rig.submit("gate", json!({"n": n})).await);
    }
    // Other ops are not held back by gate's limit.
    let echo = rig
        .manager
        .submit("echo", json!({"count": 1}), None)
        .await
        .unwrap();
    assert_eq!(
        wait_final(&rig.store, echo.task.task_id).await.0.status,
        Status::Succeeded
    );
    wait_status(&rig.store, ids[1], Status::Running).await;
    assert_eq!(
        rig.store.get(ids[2]).await.unwrap().unwrap().status,
        Status::Pending
    );
    // The echo run leaves `running` just after its final; wait for that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (rig.manager.running_here(), pending_count(&rig).await) != (2, 6) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "load stayed {:?}",
            rig.manager.running_here()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Free one slot at a time: the longest-waiting task takes it.
    for next in 2..8 {
        gate.add_permits(1);
        wait_status(&rig.store, ids[next], Status::Running).await;
        for later in &ids[next + 1..] {
            let status = rig.store.get(*later).await.unwrap().unwrap().status;
            assert_eq!(status, Status::Pending, "a younger task jumped the queue");
        }
    }
    gate.add_permits(2);
    for task_id in &ids {
        assert_eq!(
            wait_final(&rig.store, *task_id).await.0.status,
            Status::Succeeded
        );
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    let order = started.lock().unwrap().clone();
    assert_eq!(order.len(), 8, "every task ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_fires_the_token_and_the_task_ends_cancelled() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let task_id = rig
        .submit("echo", json!({"count": 100000, "delay_ms": 1}))
        .await;
    wait_status(&rig.store, task_id, Status::Running).await;
    let outcome = rig.manager.cancel(task_id).await.unwrap();
    assert!(
        matches!(outcome, CancelOutcome::Requested { .. }),
        "{outcome:?}"
    );
    let (task, events) = wait_final(&rig.store, task_id).await;
    assert_eq!(task.status, Status::Cancelled);
    assert!(events.len() < 100_000);
    assert_eq!(
        rig.manager.cancel(task_id).await.unwrap(),
        CancelOutcome::AlreadyTerminal {
            status: Status::Cancelled
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_ignoring_its_token_is_aborted_after_the_grace_period() {
    let runs_to_end = Arc::new(AtomicUsize::new(0));
    let counter = runs_to_end.clone();
    let started = Arc::new(Semaphore::new(0));
    let op_started = started.clone();
    let op = FnOp::new("stubborn", "ignores cancel", move |_params, _reporter| {
        let (counter, op_started) = (counter.clone(), op_started.clone());
        async move {
            op_started.add_permits(1);
            tokio::time::sleep(Duration::from_secs(60)).await;
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
    });
    let rig = Rig::new(registry_with(op), quick_config()).await;
    let task_id = rig.submit("stubborn", json!({})).await;
    wait_status(&rig.store, task_id, Status::Running).await;
    // Running in the store is not yet running the op (a cancel before the op
    // starts means it never runs): wait for the op itself.
    let _ = started.acquire().await.unwrap();
    let asked = tokio::time::Instant::now();
    rig.manager.cancel(task_id).await.unwrap();
    let (task, _) = wait_final(&rig.store, task_id).await;
    let took = asked.elapsed();
    assert_eq!(task.status, Status::Cancelled);
    assert!(
        took >= Duration::from_millis(200),
        "aborted before the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "not aborted promptly: {took:?}"
    );
    assert_eq!(runs_to_end.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_panicking_ops_end_failed_with_their_error() {
    let mut ops = OpRegistry::with_builtins();
    ops.register(FnOp::new("fails", "", |_params, reporter| async move {
        reporter.log("error", "about to fail").await.ok();
        Err(OpError::new("bad_input", "row 7 is malformed"))
    }));
    ops.register(FnOp::new("panics", "", |_params, _reporter| async move {
        if true {
            panic!("index out of range");
        }
        Ok(Value::Null)
    }));
    let rig = Rig::new(ops, quick_config()).await;
    let failing = rig.submit("fails", json!({})).await;
    let panicking = rig.submit("panics", json!({})).await;
    let (task, events) = wait_final(&rig.store, failing).await;
    assert_eq!(task.status, Status::Failed);
    assert_eq!(task.error.as_ref().unwrap().code, "bad_input");
    assert_eq!(events.len(), 3);
    let (task, _) = wait_final(&rig.store, panicking).await;
    assert_eq!(task.error.as_ref().unwrap().code, "op_panicked");
    assert_eq!(task.error.as_ref().unwrap().message, "index out of range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_finishes_own_leftovers_and_runs_pending_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (leftover, pending) = {
        let store = open(dir.path());
        let leftover = store
            .create(NewTask::new("echo", json!({"count": 1, "delay_ms": 0})))
            .await
            .unwrap()
            .task
            .task_id;
        let lease = Lease {
            owner: "local".into(),
            until: Timestamp::now().add_millis(60_000),
        };
        assert!(matches!(
            store.start(leftover, lease).await.unwrap(),
            StartOutcome::Started(_)
        ));
        let pending = store
            .create(NewTask::new("echo", json!({"count": 2, "delay_ms": 0})))
            .await
            .unwrap()
            .task
            .task_id;
        (leftover, pending)
    };
    let store = open(dir.path());
    let manager =
        tasktape_core::Manager::start(store.clone(), OpRegistry::with_builtins(), quick_config())
            .await
            .unwrap();
    let (task, events) = wait_final(&store, leftover).await;
    assert_eq!(task.status, Status::Failed);
    let error = task.error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.extra["reason"].as_str()),
        ("server_restart", Some("server_restart"))
    );
    assert_eq!(events.len(), 2);
    let (task, _) = wait_final(&store, pending).await;
    assert_eq!(
        task.status,
        Status::Succeeded,
        "a pending task survives a restart and runs"
    );
    manager.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_lease_expired_is_reaped_as_owner_lost() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let ghost = started_by(&rig.store, "ghost", 100).await;
    let live_peer = started_by(&rig.store, "healthy", 60_000).await;
    let (task, _) = wait_final(&rig.store, ghost).await;
    assert_eq!(task.error.unwrap().code, "owner_lost");
    assert_eq!(
        rig.store.get(live_peer).await.unwrap().unwrap().status,
        Status::Running,
        "a healthy peer's task is never reaped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_running_work_and_leaves_pending_tasks_pending() {
    let (gate, started) = (
        Arc::new(Semaphore::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let op = gate_op(
        "gate",
        gate,
        started.clone(),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut ops = registry_with(op);
    let stubborn_started = Arc::new(Semaphore::new(0));
    let op_started = stubborn_started.clone();
    ops.register(FnOp::new("stubborn", "", move |_params, _reporter| {
        let op_started = op_started.clone();
        async move {
            op_started.add_permits(1);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Value::Null)
        }
    }));
    let mut config = quick_config();
    config.op_concurrency.insert("gate".into(), 1);
    let rig = Rig::new(ops, config).await;
    let running = rig.submit("gate", json!({"n": 1})).await;
    let waiting = rig.submit("gate", json!({"n": 2})).await;
    let stubborn = rig.submit("stubborn", json!({})).await;
    wait_status(&rig.store, running, Status::Running).await;
    wait_status(&rig.store, stubborn, Status::Running).await;
    // Both ops themselves run (a shutdown before an op starts means it never runs).
    let _ = stubborn_started.acquire().await.unwrap();
    while started.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = rig.manager.shutdown(Duration::from_millis(1500)).await;
    assert_eq!(report.unfinished, 0);
    // The gate op returns a result when its token fires: that result stands.
    let (task, _) = wait_final(&rig.store, running).await;
    assert_eq!(
        (task.status, task.result),
        (Status::Succeeded, Some(json!({"n": 1})))
    );
    // The stubborn op is aborted and the task says why.
    let (task, _) = wait_final(&rig.store, stubborn).await;
    assert_eq!(
        (task.status, task.error.unwrap().code.as_str()),
        (Status::Failed, "server_shutdown")
    );
    assert_eq!(
        rig.store.get(waiting).await.unwrap().unwrap().status,
        Status::Pending
    );
    assert!(matches!(
        rig.manager.submit("echo", json!({}), None).await,
        Err(SubmitError::ShuttingDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_the_next_commit_and_returns_at_once_when_terminal() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let task_id = rig
        .submit("echo", json!({"count": 3, "delay_ms": 300}))
        .await;
    wait_status(&rig.store, task_id, Status::Running).await;
    let first = events_page(&*rig.store, task_id, 0, 100, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let asked = tokio::time::Instant::now();
    let next = events_page(
        &*rig.store,
        task_id,
        first.next_from_seq,
        100,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!next.events.is_empty(), "long-poll returned empty");
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(next.events[0].seq, first.next_from_seq);
    let (_, events) = wait_final(&rig.store, task_id).await;
    let asked = tokio::time::Instant::now();
    let past_end = events_page(&*rig.store, task_id, 99, 100, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "terminal tasks answer at once"
    );
    assert!(past_end.events.is_empty());
    assert_eq!(
        (past_end.next_from_seq, past_end.last_seq, past_end.has_more),
        (99, events.len() as u64, false)
    );
    assert!(
        events_page(
            &*rig.store,
            tasktape_core::TaskId::new(),
            0,
            10,
            Duration::from_secs(1)
        )
        .await
        .unwrap()
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_here_but_run_by_no_one_is_finished_as_orphaned() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    // Running under this instance's id, yet no run of this manager holds it
    // (as after a claim whose answer was lost).
    let orphan = started_by(&rig.store, "local", 60_000).await;
    let (task, _) = wait_final(&rig.store, orphan).await;
    assert_eq!(task.status, Status::Failed);
    assert_eq!(task.error.unwrap().code, "orphaned");
}
