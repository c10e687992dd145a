//! Retries, delays and schedules through the manager on a real SQLite
//! file: an embedder's `FnOp` retried to success, `OpError::permanent`,
//! a leftover of an idempotent op tried again after a restart (and of any
//! other op failed), and a schedule's catch-up after downtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use tasktape_core::cron::{CatchUp, Schedule};
use tasktape_core::manager::SubmitOptions;
use tasktape_core::model::{NewTask, Status};
use tasktape_core::retry::{Backoff, RetryPlan, RetryPolicy};
use tasktape_core::store::{Lease, ListQuery, StartOutcome};
use tasktape_core::{FnOp, Manager, OpError, OpRegistry, Timestamp};

use crate::support::{Rig, open, quick_config, wait_final};

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff: Backoff::Fixed,
        initial_ms: 30,
        max_ms: 30,
        jitter: false,
    }
}

/// Fails (permanently when `permanent`) until its `failures` are used up.
fn flaky(failures: u32, permanent: bool) -> FnOp {
    let runs = Arc::new(AtomicU32::new(0));
    FnOp::new("flaky", "fails, then succeeds", move |_, _| {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if run > failures {
                Ok(json!({"runs": run}))
            } else if permanent {
                Err(OpError::permanent("bad_input", "will never work"))
            } else {
                Err(OpError::new("flaky", format!("run {run} failed")))
            }
        }
    })
    .with_retry(policy(4))
}

fn registry(op: FnOp) -> OpRegistry {
    let mut ops = OpRegistry::with_builtins();
    ops.register(op);
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_op_is_retried_to_success_and_a_permanent_error_is_not() {
    let rig = Rig::new(registry(flaky(2, false)), quick_config()).await;
    let task_id = rig.submit("flaky", json!({})).await;
    let (task, events) = wait_final(&rig.store, task_id).await;
    assert_eq!(task.status, Status::Succeeded);
    assert_eq!((task.attempt, task.max_attempts), (3, 4));
    assert_eq!(task.result, Some(json!({"runs": 3})));
    assert_eq!(task.history.len(), 2);
    tasktape_core::validate_tape(task.status, &events).unwrap();

    let rig = Rig::new(registry(flaky(2, true)), quick_config()).await;
    let task_id = rig.submit("flaky", json!({})).await;
    let (task, events) = wait_final(&rig.store, task_id).await;
    assert_eq!((task.status, task.attempt), (Status::Failed, 1));
    assert_eq!(task.error.unwrap().code, "bad_input");
    assert_eq!(events.len(), 2, "task_started, final");
}

/// `max_events_per_task` caps the tape, not each attempt: a retried task
/// that reaches it ends `tape_full` (never retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tape_cap_counts_every_attempt() {
    let op = FnOp::new(
        "chatty",
        "three steps, then fails",
        |_, reporter| async move {
            for step in 1..=3 {
                reporter.progress("work", step, 3, None).await?;
            }
            Err(OpError::new("flaky", "failed after its steps"))
        },
    )
    .with_retry(policy(5));
    let config = tasktape_core::ManagerConfig {
        max_events_per_task: 8,
        ..quick_config()
    };
    let rig = Rig::new(registry(op), config).await;
    let task_id = rig.submit("chatty", json!({})).await;
    let (task, events) = wait_final(&rig.store, task_id).await;
    assert_eq!(task.status, Status::Failed);
    assert_eq!(
        task.error.as_ref().unwrap().code,
        "tape_full",
        "{events:#?}"
    );
    assert_eq!(task.attempt, 2, "the second attempt hit the cap");
    assert!(
        events.len() <= 9,
        "{} events: the cap is 8 plus final",
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_submit_waits_and_priority_is_kept() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let run_at = Timestamp::now().add_millis(300);
    let submitted = rig
        .manager
        .submit_with(
            "echo",
            json!({"count": 1}),
            SubmitOptions {
                run_at: Some(run_at),
                priority: 4,
                ..SubmitOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(submitted.task.status, Status::Pending);
    let (task, _) = wait_final(&rig.store, submitted.task.task_id).await;
    assert_eq!((task.status, task.priority), (Status::Succeeded, 4));
    let late = task.started_at.unwrap().as_millis() - run_at.as_millis();
    assert!((0..100).contains(&late), "started {late} ms after run_at");
}

/// A task left running by a dead process: tried again for an idempotent
/// op, failed `server_restart` for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_retries_an_idempotent_ops_leftover_and_fails_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let plan = |idempotent| RetryPlan {
        policy: policy(3),
        idempotent,
    };
    let (retried, failed) = {
        let store = open(dir.path());
        let mut ids = Vec::new();
        for idempotent in [true, false] {
            let mut task = NewTask::new("echo", json!({"count": 1, "delay_ms": 0}));
            task.retry = Some(plan(idempotent));
            let id = store.create(task).await.unwrap().task.task_id;
            let lease = Lease {
                owner: "local".into(),
                until: Timestamp::now().add_millis(60_000),
            };
            assert!(matches!(
                store.start(id, lease).await.unwrap(),
                StartOutcome::Started(_)
            ));
            ids.push(id);
        }
        (ids[0], ids[1])
    };
    let store = open(dir.path());
    let manager = Manager::start(store.clone(), OpRegistry::with_builtins(), quick_config())
        .await
        .unwrap();
    let (task, events) = wait_final(&store, retried).await;
    assert_eq!((task.status, task.attempt), (Status::Succeeded, 2));
    assert_eq!(task.history[0]["error"]["code"], "server_restart");
    tasktape_core::validate_tape(task.status, &events).unwrap();
    let (task, _) = wait_final(&store, failed).await;
    assert_eq!(task.status, Status::Failed);
    assert_eq!(task.error.unwrap().code, "server_restart");
    manager.shutdown(Duration::from_secs(1)).await;
}

/// The slots of a schedule keyed as `schedule:tick:<slot>` in the store.
async fn slot_keys(store: &Arc<dyn tasktape_core::Store>) -> Vec<String> {
    let page = store
        .list(ListQuery {
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let mut keys: Vec<String> = page
        .tasks
        .into_iter()
        .filter_map(|task| task.idempotency_key)
        .collect();
    keys.sort();
    keys
}

/// After downtime a schedule makes the slots it missed: every one
/// (`all`), the latest (`last`) or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_catches_up_on_missed_slots_as_configured() {
    for catch_up in [CatchUp::All, CatchUp::Last, CatchUp::None] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let schedule = Schedule::new(
            "tick",
            "echo",
            "* * * * *",
            "UTC",
            json!({"count": 1, "delay_ms": 0}),
            catch_up,
        )
        .unwrap();
        let minute = Timestamp::now().as_millis() / 60_000 * 60_000;
        let last = Timestamp::from_millis(minute - 5 * 60_000);
        let mut seed = NewTask::new("echo", json!({"count": 1, "delay_ms": 0}));
        seed.idempotency_key = Some(schedule.key(last));
        store.create(seed).await.unwrap();
        let config = tasktape_core::ManagerConfig {
            schedules: vec![schedule.clone()],
            ..quick_config()
        };
        let manager = Manager::start(store.clone(), OpRegistry::with_builtins(), config)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let keys = slot_keys(&store).await;
        // Slots after the last one up to now (a minute may turn meanwhile).
        let now_minute = Timestamp::now().as_millis() / 60_000 * 60_000;
        let missed: Vec<String> = (1..)
            .map(|n| last.as_millis() + n * 60_000)
            .take_while(|slot| *slot <= now_minute)
            .map(|slot| schedule.key(Timestamp::from_millis(slot)))
            .collect();
        let mut expected = vec![schedule.key(last)];
        match catch_up {
            CatchUp::All => expected.extend(missed.iter().cloned()),
            CatchUp::Last => expected.push(missed.last().unwrap().clone()),
            CatchUp::None => {}
        }
        expected.sort();
        if now_minute != minute {
            // The minute turned during the test: the new slot ran on time.
            expected.push(schedule.key(Timestamp::from_millis(now_minute)));
            expected.sort();
            expected.dedup();
        }
        assert_eq!(keys, expected, "{catch_up:?}");
        let listed = manager.schedules().await.unwrap();
        assert_eq!(listed[0].last_slot, schedule.slot_of(keys.last().unwrap()));
        manager.shutdown(Duration::from_secs(1)).await;
    }
}
