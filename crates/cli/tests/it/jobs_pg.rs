//! Retries, delays, schedules, bulk actions and the rolling-upgrade guard
//! on PostgreSQL, with several real instances on one database.

use std::time::{Duration, Instant};

use serde_json::json;
use tasktape_client::{EventBody, Status, Submission, TaskId, Timestamp};

use crate::jobs::{bulk_cancel_of_ten_thousand, flaky_script};
use crate::multi::{echo, instance, schema, test_url, wait_row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_submitted_to_an_api_only_instance_runs_on_a_worker_on_time() {
    let url = test_url();
    let schema = schema();
    let worker = instance(&url, "worker", &schema, "");
    let api = instance(&url, "api", &schema, "worker = false");
    let run_at = Timestamp::now().add_millis(1500);
    let mut delayed = echo(1, 0);
    delayed.run_at = Some(run_at);
    let task = api.client.submit(&delayed).await.unwrap();
    let row = wait_row(
        &worker.client,
        task.task_id,
        Duration::from_secs(15),
        |row| row.status.is_terminal(),
    )
    .await;
    assert_eq!(row.status, Status::Succeeded);
    let late = row.started_at.unwrap().as_millis() - run_at.as_millis();
    assert!((0..1000).contains(&late), "started {late} ms after run_at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_op_retried_across_instances_keeps_one_tape() {
    let url = test_url();
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let flaky = flaky_script(dir.path(), 2);
    let op = format!(
        "[ops.flaky]\ncommand = [\"sh\", \"{flaky}\"]\n\
         retries = {{ max_attempts = 4, backoff = \"fixed\", initial_ms = 200, jitter = false }}\n"
    );
    let a = instance(&url, "a", &schema, &op);
    let _b = instance(&url, "b", &schema, &op);
    let task = a
        .client
        .submit(&Submission::new("flaky", json!({})))
        .await
        .unwrap();
    let row = wait_row(&a.client, task.task_id, Duration::from_secs(20), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!((row.status, row.attempt), (Status::Succeeded, 3), "{row:?}");
    let page = a
        .client
        .events(task.task_id, 0, 1000, Duration::ZERO)
        .await
        .unwrap();
    tasktape_core::validate_tape(row.status, &page.events).unwrap();
    let kinds: Vec<String> = page
        .events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::Partial { kind, .. } => Some(kind.clone()),
            EventBody::Log { message, .. } if message.starts_with("attempt ") => {
                Some(message.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "tasktape.attempt_failed",
            "attempt 2 of 4 started",
            "tasktape.attempt_failed",
            "attempt 3 of 4 started"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_of_ten_thousand_pending_tasks_on_postgres() {
    let url = test_url();
    let node = instance(&url, "a", &schema(), "");
    bulk_cancel_of_ten_thousand(&node.server.base, "postgres").await;
}

/// A schedule firing every minute on three instances makes one task per
/// slot: three slots, three tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_on_three_instances_makes_one_task_per_slot() {
    let url = test_url();
    let schema = schema();
    let schedule = "[schedules.tick]\nop = \"echo\"\ncron = \"* * * * *\"\n\
                    params = { count = 1 }\ncatch_up = \"none\"\n";
    let nodes = [
        instance(&url, "a", &schema, schedule),
        instance(&url, "b", &schema, schedule),
        instance(&url, "c", &schema, schedule),
    ];
    let started = Timestamp::now();
    // The first three whole minutes after the instances started.
    let first = (started.as_millis() / 60_000 + 1) * 60_000;
    let slots: Vec<i64> = (0..3).map(|n| first + n * 60_000).collect();
    let wait = slots[2] + 5_000 - Timestamp::now().as_millis();
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let page = nodes[0]
        .client
        .list(&tasktape_client::ListQuery {
            op: Some("echo".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    // A slot that fired while the instances were starting (before
    // `started`) is outside the three watched.
    let mut created: Vec<i64> = page
        .tasks
        .iter()
        .map(|task| task.created_at.as_millis())
        .filter(|at| *at >= first)
        .collect();
    created.sort_unstable();
    assert_eq!(created.len(), 3, "one task per slot: {created:?}");
    for (slot, at) in slots.iter().zip(&created) {
        assert!(
            (*slot..slot + 2_000).contains(at),
            "slot {slot}: task created at {at}"
        );
    }
    let list = nodes[1].client.schedules().await.unwrap();
    let tick = &list.schedules[0];
    assert_eq!((tick.name.as_str(), tick.op.as_str()), ("tick", "echo"));
    assert_eq!(tick.last_slot, Some(Timestamp::from_millis(slots[2])));
    assert_eq!(
        tick.next_slot,
        Some(Timestamp::from_millis(slots[2] + 60_000))
    );
}

/// A newer tasktape migrating the schema while an older instance runs:
/// the older one notices, says so in its log and readyz, and stops
/// claiming (a task submitted then stays pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_stops_claiming_once_a_newer_schema_appears() {
    let url = test_url();
    let schema = schema();
    let mut node = instance(&url, "old", &schema, "lease_interval_ms = 200");
    let done = node.client.submit(&echo(1, 0)).await.unwrap();
    wait_row(&node.client, done.task_id, Duration::from_secs(10), |row| {
        row.status == Status::Succeeded
    })
    .await;
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    db.batch_execute(&format!(
        "INSERT INTO \"{schema}\".migrations (version) SELECT max(version) + 1 FROM \"{schema}\".migrations"
    ))
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let since = Instant::now();
    loop {
        let response = http
            .get(format!("{}/v1/readyz", node.server.base))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            let body: serde_json::Value = response.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("newer than this build"), "{message}");
            assert!(message.contains("upgrade"), "{message}");
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "readyz stayed 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parked: TaskId = node.client.submit(&echo(1, 0)).await.unwrap().task_id;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        node.client.task(parked).await.unwrap().status,
        Status::Pending,
        "an outdated instance claimed a task"
    );
    let logs = node.server.log_lines();
    assert!(
        logs.iter().any(|line| line.contains("stops claiming")),
        "{logs:#?}"
    );
}
