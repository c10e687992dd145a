//! The engine's rules of time on a manual clock: delays, retry backoff,
//! op time limits and grace, lease expiry and cron slots are each checked
//! in milliseconds of real time, the clock moved by hand (never slept).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tasktape_core::clock::{Clock, ManualClock};
use tasktape_core::cron::{CatchUp, Schedule};
use tasktape_core::manager::SubmitOptions;
use tasktape_core::model::Status;
use tasktape_core::retry::{Backoff, RetryPolicy};
use tasktape_core::store::ListQuery;
use tasktape_core::{FnOp, ManagerConfig, OpError, OpRegistry, Timestamp};

use crate::support::{Rig, started_by, wait_status};

const HOUR: Duration = Duration::from_secs(3600);

/// A manager on a manual clock standing at the system's now.
async fn rig(ops: OpRegistry, adjust: impl FnOnce(&mut ManagerConfig)) -> (Rig, ManualClock) {
    let clock = ManualClock::starting_now();
    let mut config = ManagerConfig {
        clock: Arc::new(clock.clone()),
        ..ManagerConfig::default()
    };
    adjust(&mut config);
    (Rig::new(ops, config).await, clock)
}

/// Gives the engine a moment of real time to act (or not) on what the
/// clock says.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn status(rig: &Rig, task_id: tasktape_core::TaskId) -> Status {
    rig.store.get(task_id).await.unwrap().unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_runs_when_the_clock_reaches_its_run_at_and_not_before() {
    let (rig, clock) = rig(OpRegistry::with_builtins(), |_| {}).await;
    let options = SubmitOptions {
        run_at: Some(clock.now().add_millis(3_600_000)),
        ..SubmitOptions::default()
    };
    let task = rig
        .manager
        .submit_with("echo", json!({"count": 1}), options)
        .await
        .unwrap()
        .task
        .task_id;
    clock.advance(HOUR - Duration::from_secs(1));
    settle().await;
    assert_eq!(status(&rig, task).await, Status::Pending);
    clock.advance(Duration::from_secs(1));
    wait_status(&rig.store, task, Status::Succeeded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_waits_its_backoff_on_the_clock() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut ops = OpRegistry::new();
    ops.register(
        FnOp::new("flaky", "", move |_params, _reporter| {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err(OpError::new("flaky", "the first call fails"))
                } else {
                    Ok(Value::from("done"))
                }
            }
        })
        .with_retry(RetryPolicy {
            max_attempts: 2,
            backoff: Backoff::Fixed,
            initial_ms: 60_000,
            max_ms: 60_000,
            jitter: false,
        }),
    );
    let (rig, clock) = rig(ops, |_| {}).await;
    let task = rig.submit("flaky", json!({})).await;
    let started = clock.now();
    // The first attempt failed: pending again, due a minute later by the clock.
    let mut row = rig.store.get(task).await.unwrap().unwrap();
    while row.run_at.is_none() {
        settle().await;
        row = rig.store.get(task).await.unwrap().unwrap();
    }
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.run_at, Some(started.add_millis(60_000)));
    clock.advance(Duration::from_secs(59));
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(1));
    wait_status(&rig.store, task, Status::Succeeded).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_past_its_time_limit_is_stopped_then_aborted_after_its_grace() {
    let mut ops = OpRegistry::new();
    let began = Arc::new(tokio::sync::Notify::new());
    let begins = Arc::clone(&began);
    ops.register(
        FnOp::new("stubborn", "", move |_params, _reporter| {
            let begins = Arc::clone(&begins);
            async move {
                begins.notify_one();
                // Ignores its token: only the abort ends it.
                std::future::pending::<()>().await;
                Ok(Value::Null)
            }
        })
        .with_timeout(Duration::from_secs(600))
        .with_cancel_grace(Duration::from_secs(30)),
    );
    let (rig, clock) = rig(ops, |_| {}).await;
    let task = rig.submit("stubborn", json!({})).await;
    wait_status(&rig.store, task, Status::Running).await;
    // The op runs (so its time limit counts): only now may the clock move.
    began.notified().await;
    clock.advance(Duration::from_secs(599));
    settle().await;
    assert_eq!(status(&rig, task).await, Status::Running);
    clock.advance(Duration::from_secs(1));
    settle().await;
    // Stopped, and given its grace (30 s of the clock) before the abort.
    assert_eq!(status(&rig, task).await, Status::Running);
    let mut waited = Duration::ZERO;
    while status(&rig, task).await == Status::Running {
        assert!(
            waited < Duration::from_secs(40),
            "not aborted after its grace"
        );
        clock.advance(Duration::from_secs(1));
        waited += Duration::from_secs(1);
        settle().await;
    }
    assert!(
        waited >= Duration::from_secs(29),
        "aborted after {waited:?}"
    );
    let row = rig.store.get(task).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.unwrap().code, "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_run_is_reaped_once_its_lease_is_over_by_the_clock() {
    let (rig, clock) = rig(OpRegistry::with_builtins(), |config| {
        config.lease_interval = Duration::from_secs(5);
    })
    .await;
    let ghost = started_by(&rig.store, "ghost", 30_000).await;
    clock.advance(Duration::from_secs(25));
    settle().await;
    assert_eq!(status(&rig, ghost).await, Status::Running);
    // Two ticks past the lease (the first may have been waiting already).
    for _ in 0..2 {
        clock.advance(Duration::from_secs(6));
        settle().await;
    }
    wait_status(&rig.store, ghost, Status::Failed).await;
    let row = rig.store.get(ghost).await.unwrap().unwrap();
    assert_eq!(row.error.unwrap().code, "owner_lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_submits_one_task_per_slot_as_the_clock_passes_them() {
    let schedule = Schedule::new(
        "minutely",
        "echo",
        "* * * * *",
        "UTC",
        json!({"count": 1}),
        CatchUp::None,
    )
    .unwrap();
    let (rig, clock) = rig(OpRegistry::with_builtins(), |config| {
        config.schedules = vec![schedule.clone()];
    })
    .await;
    let slots = || async {
        let query = ListQuery {
            limit: 100,
            ..ListQuery::default()
        };
        let page = rig.store.list(query).await.unwrap();
        page.tasks
            .iter()
            .filter_map(|task| task.idempotency_key.clone())
            .collect::<Vec<_>>()
    };
    settle().await;
    assert!(slots().await.is_empty());
    let first = schedule.next_after(clock.now()).unwrap();
    for minute in 1..=3 {
        clock.advance(Duration::from_secs(60));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while slots().await.len() < minute {
            assert!(
                tokio::time::Instant::now() < deadline,
                "slot {minute} never came"
            );
            settle().await;
        }
    }
    let mut keys = slots().await;
    keys.sort();
    let expected: Vec<String> = (0..3)
        .map(|minute| schedule.key(Timestamp::from_millis(first.as_millis() + minute * 60_000)))
        .collect();
    assert_eq!(keys, expected);
}
