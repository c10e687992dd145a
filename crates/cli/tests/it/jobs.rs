//! Retries, delayed tasks, priorities and bulk actions in the real binary:
//! an exec op that fails twice then succeeds keeps one tape; backoff gaps
//! stay within the jitter bounds and a retry starts within 100 ms of its
//! `retry_at`; a delayed task waits for its `run_at`; priorities order
//! claims; bulk cancel and retry through HTTP and the CLI.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasktape_client::{
    Client, EventBody, Status, Submission, TaskFilter, TaskId, TaskRow, Timestamp,
};
use tasktape_core::validate_tape;

use crate::multi::wait_row;
use crate::support::{Server, run, serve};

/// A script that fails (exit 1) its first `failures` runs, then succeeds;
/// it counts its runs in a file beside itself.
pub fn flaky_script(dir: &Path, failures: u32) -> String {
    let path = dir.join(format!("flaky-{failures}.sh"));
    std::fs::write(
        &path,
        format!(
            "n=$(cat \"$0.count\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$0.count\"\n\
             echo \"run $n\"\nif [ $n -le {failures} ]; then echo \"boom $n\" >&2; exit 1; fi\n\
             echo \"done after $n runs\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// `tasktape serve` with `toml` as its config file.
pub fn serve_config(dir: &Path, toml: &str) -> Server {
    let config = dir.join("tasktape.toml");
    std::fs::write(&config, toml).unwrap();
    serve(dir, &["--config", config.to_str().unwrap()])
}

/// The whole tape, checked against its row.
async fn checked_tape(client: &Client, task_id: TaskId) -> (TaskRow, Vec<tasktape_client::Event>) {
    let row = client.task(task_id).await.unwrap();
    let page = client
        .events(task_id, 0, 1000, Duration::ZERO)
        .await
        .unwrap();
    validate_tape(row.status, &page.events).unwrap_or_else(|error| panic!("{error}: {page:#?}"));
    (row, page.events)
}

async fn ended(client: &Client, task_id: TaskId) -> TaskRow {
    wait_row(client, task_id, Duration::from_secs(30), |row| {
        row.status.is_terminal()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_op_that_fails_twice_then_succeeds_keeps_one_tape_and_its_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = flaky_script(dir.path(), 2);
    let server = serve_config(
        dir.path(),
        &format!(
            "[ops.flaky]\ncommand = [\"sh\", \"{flaky}\"]\n\
             retries = {{ max_attempts = 5, backoff = \"exponential\", initial_ms = 300, max_ms = 10000, jitter = true }}\n\
             [ops.refused]\ncommand = [\"sh\", \"-c\", \"exit 2\"]\n\
             retries = {{ max_attempts = 5, initial_ms = 100, permanent_exit_codes = [2] }}\n\
             [ops.hopeless]\ncommand = [\"sh\", \"-c\", \"echo no >&2; exit 1\"]\n\
             retries = {{ max_attempts = 2, backoff = \"fixed\", initial_ms = 100, jitter = false }}\n"
        ),
    );
    let client = Client::new(&server.base, None).unwrap();
    let task = client
        .submit(&Submission::new("flaky", json!({})))
        .await
        .unwrap();
    let row = ended(&client, task.task_id).await;
    assert_eq!(row.status, Status::Succeeded, "{row:?}");
    assert_eq!((row.attempt, row.max_attempts), (3, 5));
    let (_, events) = checked_tape(&client, task.task_id).await;
    let started = events
        .iter()
        .filter(|event| matches!(event.body, EventBody::TaskStarted { .. }))
        .count();
    assert_eq!(started, 1, "one task_started: {events:#?}");
    let failures: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| match &event.body {
            EventBody::Partial { kind, payload } if kind == "tasktape.attempt_failed" => {
                Some((index, payload))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{events:#?}");
    for (attempt, (index, payload)) in failures.iter().enumerate() {
        let attempt = attempt as u64 + 1;
        assert_eq!(payload["attempt"], attempt);
        assert_eq!(payload["error"]["code"], "exit_status");
        // The wait is 300 ms × 2^(attempt-1) ± 20 %.
        let base = 300.0 * 2f64.powi(attempt as i32 - 1);
        let failed_at = events[*index].ts.as_millis();
        let retry_at = Timestamp::parse(payload["retry_at"].as_str().unwrap()).unwrap();
        let wait = (retry_at.as_millis() - failed_at) as f64;
        assert!(
            wait >= base * 0.8 - 2.0 && wait <= base * 1.2 + 2.0,
            "attempt {attempt}: waited {wait} ms for a base of {base}"
        );
        // The next attempt begins with its log line, within 100 ms of retry_at.
        let next = &events[index + 1];
        match &next.body {
            EventBody::Log { message, .. } => {
                assert_eq!(*message, format!("attempt {} of 5 started", attempt + 1));
            }
            other => panic!("after the partial: {other:?}"),
        }
        let late = next.ts.as_millis() - retry_at.as_millis();
        assert!(
            (0..=100).contains(&late),
            "attempt {} started {late} ms after its retry_at",
            attempt + 1
        );
    }

    // A permanent exit code ends the task at once.
    let refused = client
        .submit(&Submission::new("refused", json!({})))
        .await
        .unwrap();
    let row = ended(&client, refused.task_id).await;
    assert_eq!((row.status, row.attempt), (Status::Failed, 1));
    let error = row.error.unwrap();
    assert_eq!(error.code, "exit_status");
    assert_eq!(error.extra["permanent"], true);
    // The last attempt's failure carries every attempt.
    let hopeless = client
        .submit(&Submission::new("hopeless", json!({})))
        .await
        .unwrap();
    let row = ended(&client, hopeless.task_id).await;
    assert_eq!((row.status, row.attempt), (Status::Failed, 2));
    let attempts = row.error.unwrap().extra["detail"]["attempts"].clone();
    assert_eq!(attempts.as_array().unwrap().len(), 2, "{attempts}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[1]["error"]["code"], "exit_status");
    // A submit's own policy overrides the op's (none for echo).
    let mut once = Submission::new("hopeless", json!({}));
    once.retry = Some(serde_json::from_value(json!({"max_attempts": 1})).unwrap());
    let row = ended(&client, client.submit(&once).await.unwrap().task_id).await;
    assert_eq!((row.attempt, row.max_attempts), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_waits_for_its_run_at_and_bad_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let http = reqwest::Client::new();
    let run_at = Timestamp::now().add_millis(1500);
    let mut delayed = Submission::new("echo", json!({"count": 1}));
    delayed.run_at = Some(run_at);
    let task = client.submit(&delayed).await.unwrap();
    let row = client.task(task.task_id).await.unwrap();
    assert_eq!((row.status, row.run_at), (Status::Pending, Some(run_at)));
    // dikw-style route: options as query parameters.
    let named: Value = http
        .post(format!(
            "{}/v1/echo?run_at={}&priority=7",
            server.base,
            Timestamp::now().add_millis(60_000)
        ))
        .json(&json!({"count": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let named_id: TaskId = named["task_id"].as_str().unwrap().parse().unwrap();
    let named_row = client.task(named_id).await.unwrap();
    assert_eq!((named_row.status, named_row.priority), (Status::Pending, 7));
    // A cancel while it waits ends it at once; its tape is just final.
    let answer = client.cancel(named_id).await.unwrap();
    assert!(answer.cancelled);
    let (row, events) = checked_tape(&client, named_id).await;
    assert_eq!((row.status, events.len()), (Status::Cancelled, 1));

    let row = ended(&client, task.task_id).await;
    let started = row.started_at.unwrap().as_millis();
    let late = started - run_at.as_millis();
    assert!(
        (0..1000).contains(&late),
        "started {late} ms after its run_at"
    );
    assert_eq!(row.run_at, None, "due runs clear run_at");

    for (body, field) in [
        (json!({"op": "echo", "run_at": "tomorrow"}), "run_at"),
        // Any offset is taken (issue 26), a malformed one is not.
        (
            json!({"op": "echo", "run_at": "2026-12-01T03:00:00+25:00"}),
            "run_at",
        ),
        (
            json!({"op": "echo", "run_at": "2999-01-01T00:00:00Z"}),
            "run_at",
        ),
        (json!({"op": "echo", "priority": "high"}), "priority"),
        (json!({"op": "echo", "priority": 10_000_000}), "priority"),
        (
            json!({"op": "echo", "retry": {"max_attempts": 0}}),
            "retry.max_attempts",
        ),
        (json!({"op": "echo", "retry": {"attempts": 3}}), "retry"),
        (
            json!({"op": "echo", "idempotency_key": "schedule:nightly:2026-12-01T03:00:00.000Z"}),
            "idempotency_key",
        ),
    ] {
        let response = http
            .post(format!("{}/v1/tasks", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["detail"]["field"], field, "{body}: {error}");
    }
    let response = http
        .post(format!("{}/v1/echo?run_at=soon", server.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    // The CLI: --in.
    let home = tempfile::tempdir().unwrap();
    let out = run(
        &server,
        home.path(),
        &["submit", "echo", "--in", "10m", "--priority", "-3"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let id: TaskId = out.stdout.trim().parse().unwrap();
    let row = client.task(id).await.unwrap();
    let ahead = row.run_at.unwrap().as_millis() - Timestamp::now().as_millis();
    assert!((590_000..=600_000).contains(&ahead), "{ahead}");
    assert_eq!(row.priority, -3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first_fifo_within_a_priority() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_config(dir.path(), "[concurrency]\necho = 1\n");
    let client = Client::new(&server.base, None).unwrap();
    let blocker = client
        .submit(&Submission::new(
            "echo",
            json!({"count": 1, "delay_ms": 10000}),
        ))
        .await
        .unwrap();
    wait_row(&client, blocker.task_id, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    let mut ids = Vec::new();
    for priority in [0, 5, 0, 5, 9] {
        // Each runs 50 ms: one at a time, their start times differ (they
        // are compared below at millisecond resolution).
        let mut submission = Submission::new("echo", json!({"count": 1, "delay_ms": 50}));
        submission.priority = Some(priority);
        ids.push((priority, client.submit(&submission).await.unwrap().task_id));
    }
    // Every one is pending behind the blocker: now let them run (not a
    // race against the blocker's own time, which a loaded machine loses).
    client.cancel(blocker.task_id).await.unwrap();
    let mut rows = Vec::new();
    for (priority, id) in &ids {
        rows.push((*priority, ended(&client, *id).await));
    }
    rows.sort_by_key(|(_, row)| row.started_at);
    let order: Vec<i64> = rows.iter().map(|(priority, _)| *priority).collect();
    assert_eq!(order, [9, 5, 5, 0, 0]);
    // FIFO within a priority.
    let fives: Vec<TaskId> = rows
        .iter()
        .filter(|(priority, _)| *priority == 5)
        .map(|(_, row)| row.task_id)
        .collect();
    assert_eq!(fives, [ids[1].1, ids[3].1]);
}

/// Submits `count` echo tasks due in an hour (pending), 32 at a time.
async fn delayed_echoes(client: &Client, count: usize) -> Vec<TaskId> {
    use futures::StreamExt as _;
    let run_at = Timestamp::now().add_millis(3_600_000);
    futures::stream::iter(0..count)
        .map(|n| {
            let client = client.clone();
            async move {
                let mut submission = Submission::new("echo", json!({"count": 1, "n": n}));
                submission.run_at = Some(run_at);
                client.submit(&submission).await.unwrap().task_id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// Cancels 10,000 pending tasks with one request while 200 of them are
/// followed (100 by SSE, 100 by long-poll): every follower sees its
/// `final`, every row ends `cancelled`. Prints how long the cancel took.
pub async fn bulk_cancel_of_ten_thousand(base: &str, store: &str) {
    let client = Client::new(base, None).unwrap();
    let ids = delayed_echoes(&client, 10_000).await;
    let mut followers = Vec::new();
    for (index, id) in ids.iter().take(200).enumerate() {
        let client = client.clone();
        let id = *id;
        followers.push(tokio::spawn(async move {
            let mode = if index % 2 == 0 {
                tasktape_client::FollowMode::Sse
            } else {
                tasktape_client::FollowMode::LongPoll
            };
            let mut follower = client.follow(id, 0, mode);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let event = tokio::time::timeout_at(deadline.into(), follower.next())
                    .await
                    .expect("the final came in time")
                    .expect("the follow goes on")
                    .expect("an event");
                if let EventBody::Final { status, .. } = event.body {
                    return status;
                }
            }
        }));
    }
    crate::support::wait_followers(base, "sse", 100).await;
    let filter = TaskFilter {
        status: Some(tasktape_client::StatusFilter::One(Status::Pending)),
        op: Some("echo".into()),
        ..TaskFilter::default()
    };
    let since = Instant::now();
    let answer = client.cancel_matching(&filter).await.unwrap();
    let took = since.elapsed();
    eprintln!(
        "bulk cancel ({store}): {} pending tasks cancelled in {:.2} s",
        answer.cancelled,
        took.as_secs_f64()
    );
    assert_eq!((answer.matched, answer.cancelled), (10_000, 10_000));
    for follower in followers {
        assert_eq!(follower.await.unwrap(), Status::Cancelled);
    }
    let stats: Value = reqwest::get(format!("{base}/v1/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["counts"]["cancelled"], 10_000, "{stats}");
    assert_eq!(stats["counts"]["pending"], 0, "{stats}");
    // A second bulk cancel matches nothing to cancel.
    let again = client.cancel_matching(&filter).await.unwrap();
    assert_eq!((again.matched, again.cancelled), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_of_ten_thousand_pending_tasks_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    bulk_cancel_of_ten_thousand(&server.base, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_need_a_filter_and_retry_makes_linked_new_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let http = reqwest::Client::new();
    for (body, status) in [
        (json!({}), 422),
        (json!({"stat": "failed"}), 422),
        (json!({"status": "sleeping"}), 422),
        (json!([1]), 422),
    ] {
        for route in ["cancel", "retry"] {
            let response = http
                .post(format!("{}/v1/tasks/{route}", server.base))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{route} {body}");
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"]["code"], "invalid_request", "{error}");
        }
    }
    // Twelve pending tasks: the CLI asks (no terminal: wants --yes), then cancels.
    let ids = delayed_echoes(&client, 12).await;
    let home = tempfile::tempdir().unwrap();
    let out = run(
        &server,
        home.path(),
        &["tasks", "cancel", "--op", "echo", "--status", "pending"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("12 tasks match; pass --yes"), "{out:?}");
    assert_eq!(client.task(ids[0]).await.unwrap().status, Status::Pending);
    let out = run(
        &server,
        home.path(),
        &[
            "tasks", "cancel", "--op", "echo", "--status", "pending", "--yes",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("cancelled 12 of 12"), "{out:?}");
    // Retry the cancelled ones from the last hour: new tasks, linked.
    let out = run(
        &server,
        home.path(),
        &[
            "tasks",
            "retry",
            "--status",
            "cancelled",
            "--since",
            "1h",
            "--yes",
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let answer: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(answer, json!({"matched": 12, "retried": 12}));
    let page = client
        .list(&tasktape_client::ListQuery {
            op: Some("echo".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let linked: std::collections::HashSet<TaskId> =
        page.tasks.iter().filter_map(|task| task.retry_of).collect();
    assert_eq!(linked, ids.iter().copied().collect());
    // Retrying by id a task still pending does nothing.
    let pending = delayed_echoes(&client, 1).await[0];
    let answer = client
        .retry_matching(&TaskFilter {
            ids: Some(vec![pending]),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!((answer.matched, answer.retried), (1, 0));
    // One id with the single-task verb still works.
    let out = run(
        &server,
        home.path(),
        &["tasks", "cancel", &pending.to_string()],
    );
    assert_eq!(out.code, 0, "{out:?}");
    // No filter at all is a usage error.
    let out = run(&server, home.path(), &["tasks", "retry", "--yes"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("at least one filter"), "{out:?}");
}
