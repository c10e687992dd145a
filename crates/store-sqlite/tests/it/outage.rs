//! A store outage while a task runs: its events and its result wait for the
//! store and land, in order, with the times the op reported them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tasktape_core::testkit::FlakyStore;
use tasktape_core::{EventBody, FnOp, Manager, OpRegistry, Status, Store};
use tokio::sync::Semaphore;

use crate::support::{open, quick_config, wait_final};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_outage_delays_events_and_result_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(FlakyStore::new(open(dir.path())));
    let gate = Arc::new(Semaphore::new(0));
    let mut ops = OpRegistry::with_builtins();
    ops.register({
        let gate = Arc::clone(&gate);
        FnOp::new(
            "steps",
            "two steps around the test's gate",
            move |_: Value, reporter| {
                let gate = Arc::clone(&gate);
                async move {
                    reporter.progress("step", 1, 2, None).await?;
                    gate.acquire().await.unwrap().forget();
                    reporter.progress("step", 2, 2, None).await?;
                    reporter.partial("half", json!({"rows": 2})).await?;
                    Ok(json!({"done": true}))
                }
            },
        )
    });
    let store: Arc<dyn Store> = flaky.clone();
    let manager = Manager::start(Arc::clone(&store), ops, quick_config())
        .await
        .unwrap();
    let task_id = manager
        .submit("steps", json!({}), None)
        .await
        .unwrap()
        .task
        .task_id;
    // The first step is stored; then the store goes away for 2 s while the
    // op reports its second step and its partial and returns its result.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.last_seq(task_id).await.unwrap() < Some(2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first step never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let outage = Duration::from_secs(2);
    flaky.fail_for(outage);
    let went_down = tasktape_core::Timestamp::now();
    gate.add_permits(1);

    let (task, events) = wait_final(&store, task_id).await;
    assert!(flaky.refused() > 0, "the outage refused some writes");
    assert_eq!(task.status, Status::Succeeded, "{:?}", task.error);
    assert_eq!(task.result, Some(json!({"done": true})));
    let kinds: Vec<&str> = events.iter().map(|e| e.body.kind().as_str()).collect();
    assert_eq!(
        kinds,
        ["task_started", "progress", "progress", "partial", "final"]
    );
    assert!(matches!(
        &events[2].body,
        EventBody::Progress { current: 2, .. }
    ));
    // The second step keeps the time the op reported it (during the outage),
    // not when the store took it; the final came after the outage.
    let reported = events[2].ts.as_millis() - went_down.as_millis();
    assert!(
        (0..1000).contains(&reported),
        "step 2 stamped {reported} ms after the outage began"
    );
    let finished = events[4].ts.as_millis() - went_down.as_millis();
    assert!(
        finished >= outage.as_millis() as i64 - 20,
        "final stamped {finished} ms after the outage began"
    );
    for pair in events.windows(2) {
        assert!(pair[0].ts <= pair[1].ts, "times never decrease: {pair:?}");
    }
    manager.shutdown(Duration::from_secs(5)).await;
}

/// A claim whose answer comes back several lease ticks after the store
/// started its task (a slow database): the task is the claim's, not an
/// orphan; it runs and succeeds instead of being finished `orphaned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_answered_late_is_not_taken_for_an_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(FlakyStore::new(open(dir.path())));
    // Six lease ticks (50 ms each) between the start and its answer.
    flaky.delay_claim_answers(Duration::from_millis(300));
    let store: Arc<dyn Store> = flaky.clone();
    let manager = Manager::start(
        Arc::clone(&store),
        OpRegistry::with_builtins(),
        quick_config(),
    )
    .await
    .unwrap();
    let task_id = manager
        .submit("echo", json!({"count": 2}), None)
        .await
        .unwrap()
        .task
        .task_id;
    let (task, _) = wait_final(&store, task_id).await;
    assert_eq!(task.status, Status::Succeeded, "{:?}", task.error);
    manager.shutdown(Duration::from_secs(5)).await;
}
