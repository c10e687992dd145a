//! Seeded random interleavings of submit, progress, cancel, finish and
//! shutdown over many tasks. After each run every tape parses by the
//! grammar, seqs run 1, 2, 3 … and row and tape agree.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tasktape_core::model::{Status, TaskId};
use tasktape_core::testkit::assert_row_and_tape_agree;
use tasktape_core::{FnOp, Manager, OpError, OpRegistry, Store};

use crate::support::{Rng, open, quick_config, wait_final};

/// An op whose behaviour the params script: steps, yields, sleeps, how it
/// ends, and whether it heeds its cancel token.
fn chaos_op() -> FnOp {
    FnOp::new(
        "chaos",
        "scripted behaviour for stress tests",
        |params: Value, reporter| async move {
            let steps = params["steps"].as_u64().unwrap_or(0);
            let sleep_us = params["sleep_us"].as_u64().unwrap_or(0);
            let heeds_cancel = params["heeds_cancel"].as_bool().unwrap_or(true);
            for step in 1..=steps {
                if heeds_cancel && reporter.is_cancelled() {
                    return Err(OpError::new("cancelled", "stopped"));
                }
                let sent = match step % 3 {
                    0 => reporter.log("info", format!("step {step}")).await,
                    1 => reporter.progress("chaos", step, steps, None).await,
                    _ => reporter.partial("chunk", json!({"step": step})).await,
                };
                if sent.is_err() && heeds_cancel {
                    break;
                }
                if sleep_us > 0 && step % 4 == 0 {
                    tokio::time::sleep(Duration::from_micros(sleep_us)).await;
                } else if step % 2 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            match params["end"].as_str().unwrap_or("ok") {
                "fail" => Err(OpError::new("scripted", "scripted failure")),
                "panic" => panic!("scripted panic"),
                _ => Ok(json!({"steps": steps})),
            }
        },
    )
}

async fn start(store: &Arc<dyn Store>) -> Manager {
    let mut ops = OpRegistry::with_builtins();
    ops.register(chaos_op());
    let mut config = quick_config();
    config.cancel_grace = Duration::from_millis(50);
    config.op_concurrency.insert("chaos".into(), 6);
    Manager::start(Arc::clone(store), ops, config)
        .await
        .expect("manager starts")
}

async fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut manager = start(&store).await;
    let mut ids: Vec<TaskId> = Vec::new();
    let mut cancels = Vec::new();
    for round in 0..150 {
        let end = ["ok", "ok", "ok", "fail", "panic"][rng.below(5) as usize];
        let params = json!({
            "steps": rng.below(40),
            "sleep_us": if rng.below(3) == 0 { rng.below(500) } else { 0 },
            "heeds_cancel": rng.below(5) != 0,
            "end": end,
        });
        let op = if rng.below(6) == 0 { "echo" } else { "chaos" };
        let params = if op == "echo" {
            json!({"count": rng.below(20), "delay_ms": rng.below(3)})
        } else {
            params
        };
        match manager.submit(op, params, None).await {
            Ok(submitted) => ids.push(submitted.task.task_id),
            Err(error) => panic!("submit failed: {error}"),
        }
        if !ids.is_empty() && rng.below(4) == 0 {
            let victim = ids[rng.below(ids.len() as u64) as usize];
            let (manager, delay) = (manager.clone(), Duration::from_micros(rng.below(2000)));
            cancels.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                manager
                    .cancel(victim)
                    .await
                    .map(|outcome| (victim, outcome))
            }));
        }
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_micros(rng.below(1000))).await;
        }
        if round % 50 == 49 && rng.below(2) == 0 {
            // Shut down mid-run and start again on the same store.
            manager
                .shutdown(Duration::from_millis(rng.below(200) + 10))
                .await;
            manager = start(&store).await;
        }
    }
    // However the timing went above, some cancels must land: long tasks,
    // cancelled right after submit, end cancelled whether pending or running.
    for _ in 0..3 {
        let long = json!({"steps": 1000, "sleep_us": 2000, "heeds_cancel": rng.below(2) == 0, "end": "ok"});
        let task_id = manager
            .submit("chaos", long, None)
            .await
            .unwrap()
            .task
            .task_id;
        ids.push(task_id);
        let manager = manager.clone();
        cancels.push(tokio::spawn(async move {
            manager
                .cancel(task_id)
                .await
                .map(|outcome| (task_id, outcome))
        }));
    }
    for cancel in cancels {
        let (task_id, outcome) = cancel.await.unwrap().unwrap();
        if let tasktape_core::store::CancelOutcome::Requested { .. }
        | tasktape_core::store::CancelOutcome::Cancelled { .. } = outcome
        {
            let (task, _) = wait_final(&store, task_id).await;
            assert_eq!(
                task.status,
                Status::Cancelled,
                "seed {seed}: accepted cancel of {task_id}"
            );
        }
    }
    for task_id in &ids {
        let (task, events) = wait_final(&store, *task_id).await;
        assert!(task.status.is_terminal());
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.seq, index as u64 + 1, "seed {seed}");
        }
    }
    manager.shutdown(Duration::from_secs(2)).await;
    for task_id in &ids {
        assert_row_and_tape_agree(&*store, *task_id).await;
    }
    let counts = store.counts().await.unwrap();
    assert_eq!(
        counts[&Status::Pending] + counts[&Status::Running],
        0,
        "seed {seed}: {counts:?}"
    );
    for status in [Status::Succeeded, Status::Failed, Status::Cancelled] {
        assert!(
            counts[&status] > 0,
            "seed {seed} never reached {status}: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_keep_every_tape_true() {
    for seed in 1..=4 {
        run_seed(seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_on_four_workers_keep_every_tape_true() {
    for seed in 100..=102 {
        run_seed(seed).await;
    }
}
