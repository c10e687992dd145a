//! A PostgreSQL restart while a task reports: its events and its result
//! wait for the database and land, in order; the task still succeeds.

use std::time::Duration;

use tasktape_core::{EventBody, Status};

use crate::multi::{PrivatePg, echo, instance, schema, tape, test_url, wait_row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stopped_for_3_5_s_delays_the_tape_and_loses_nothing() {
    test_url();
    let pg = PrivatePg::start();
    let a = instance(&pg.url(), "a", &schema(), "");
    let task = a.client.submit(&echo(2, 1500)).await.unwrap().task_id;
    // Its first step is stored; the second, the partial and the result all
    // come while the database is down.
    wait_row(&a.client, task, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tape(&a.client, task).await.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no first step");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = tasktape_core::Timestamp::now();
    pg.pg_ctl(&["stop", "-m", "fast"]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    pg.pg_ctl(&["start"]);

    let row = wait_row(&a.client, task, Duration::from_secs(30), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Succeeded, "{:?}", row.error);
    let events = tape(&a.client, task).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.body.kind().as_str()).collect();
    assert_eq!(
        kinds,
        ["task_started", "progress", "progress", "partial", "final"]
    );
    // Step 2 keeps the time it was reported (inside the outage, 1.5 s after
    // step 1), not the time the database took it back.
    let step = events[2].ts.as_millis() - events[1].ts.as_millis();
    assert!((1450..2500).contains(&step), "steps {step} ms apart");
    assert!(events[2].ts.as_millis() - stopped.as_millis() < 3000);
    assert!(matches!(events[4].body, EventBody::Final { .. }));
}

/// A restart while 400 tasks are in flight, so that the writer's batches
/// of appends and finishes and the set-based claims are cut mid-way: every
/// task still succeeds, every tape is whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_during_batched_writes_loses_nothing() {
    test_url();
    let pg = PrivatePg::start();
    let a = instance(&pg.url(), "a", &schema(), "");
    let batch: Vec<_> = (0..400).map(|n| echo(3, 100 + n % 7 * 30)).collect();
    let ids: Vec<_> = a
        .client
        .submit_batch(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(|result| match result {
            tasktape_client::BatchResult::Submitted(handle) => handle.task_id,
            tasktape_client::BatchResult::Refused(error) => panic!("{error:?}"),
        })
        .collect();
    // Some have finished, many are mid-way, the rest wait.
    wait_row(&a.client, ids[0], Duration::from_secs(10), |row| {
        row.status.is_terminal()
    })
    .await;
    pg.pg_ctl(&["stop", "-m", "fast"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    pg.pg_ctl(&["start"]);
    for task in &ids {
        let row = wait_row(&a.client, *task, Duration::from_secs(60), |row| {
            row.status.is_terminal()
        })
        .await;
        assert_eq!(row.status, Status::Succeeded, "{task}: {:?}", row.error);
        let events = tape(&a.client, *task).await;
        tasktape_core::event::validate_tape(row.status, &events)
            .unwrap_or_else(|error| panic!("task {task}: {error}: {events:?}"));
        assert_eq!(events.len(), 3 + 3, "{task}: {events:?}");
    }
}
