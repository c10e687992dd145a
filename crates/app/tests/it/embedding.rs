//! The in-process API embedders use: `Manager::wait`, `Manager::events`,
//! `FnOp` with a schema, a prepare step, a timeout, and `?` on any error.

use std::time::Duration;

use serde_json::{Value, json};
use tasktape_app::{Builder, Config};
use tasktape_core::{EventBody, FnOp, ParamsError, Status, SubmitError};

async fn app_with(op: FnOp) -> (tasktape_app::App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.listen = Some("127.0.0.1:0".into());
    config.data_dir = Some(dir.path().to_path_buf());
    (Builder::new(config).op(op).start().await.unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fn_ops_validate_time_out_and_convert_errors() {
    let op = FnOp::new(
        "read",
        "reads a file",
        |params: Value, reporter| async move {
            reporter.log("info", "reading").await?;
            if params["path"] == "sleep" {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            let text = tokio::fs::read_to_string(params["path"].as_str().unwrap()).await?;
            Ok(json!({"bytes": text.len()}))
        },
    )
    .with_schema(json!({"type": "object", "required": ["path"]}))
    .with_prepare(|params| match params.get("path") {
        Some(Value::String(_)) => Ok(params),
        _ => Err(ParamsError::new("path", "missing", "field required")),
    })
    .with_timeout(Duration::from_millis(300))
    .with_cancel_grace(Duration::from_millis(100));
    let (app, _dir) = app_with(op).await;
    let manager = app.manager().clone();
    let ops = manager.ops();
    assert_eq!(
        ops.get("read").unwrap().params_schema()["required"],
        json!(["path"])
    );

    let refused = manager.submit("read", json!({}), None).await.unwrap_err();
    assert!(
        matches!(refused, SubmitError::InvalidParams(ref e) if e.field == "path"),
        "{refused}"
    );

    let missing = manager
        .submit("read", json!({"path": "/no/such/file"}), None)
        .await
        .unwrap()
        .task;
    let row = manager
        .wait(missing.task_id, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Failed);
    let error = row.error.unwrap();
    assert_eq!(error.code, "op_error");
    assert!(error.message.contains("No such file"), "{}", error.message);

    let slow = manager
        .submit("read", json!({"path": "sleep"}), None)
        .await
        .unwrap()
        .task;
    let row = manager
        .wait(slow.task_id, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.unwrap().code, "timeout");

    // wait returns the live row when its timeout elapses first.
    let live = manager
        .submit("read", json!({"path": "sleep"}), None)
        .await
        .unwrap()
        .task;
    let row = manager
        .wait(live.task_id, Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    assert!(!row.status.is_terminal());
    assert!(
        manager
            .wait(tasktape_core::TaskId::new(), Duration::from_millis(10))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_tape_live_to_its_final_event_and_resume_from_a_seq() {
    let (app, _dir) = app_with(FnOp::new("noop", "nothing", |_, _| async {
        Ok(json!(null))
    }))
    .await;
    let manager = app.manager().clone();
    let task = manager
        .submit("echo", json!({"count": 4, "delay_ms": 30}), None)
        .await
        .unwrap()
        .task;
    let mut events = manager.events(task.task_id, 1);
    let mut seqs = Vec::new();
    let mut kinds = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        seqs.push(event.seq);
        kinds.push(event.body.kind().as_str());
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());
    assert_eq!(kinds.first(), Some(&"task_started"));
    assert_eq!(kinds.last(), Some(&"final"));
    // From the middle, after the end: the rest, then nothing.
    let mut rest = manager.events(task.task_id, 6);
    let sixth = rest.next().await.unwrap().unwrap();
    assert_eq!(sixth.seq, 6);
    assert!(matches!(
        rest.next().await.unwrap().unwrap().body,
        EventBody::Final { .. }
    ));
    assert!(rest.next().await.is_none());
    let mut past = manager.events(task.task_id, 100);
    assert!(past.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_returning_after_its_timeout_still_ends_timeout() {
    let op = FnOp::new("late", "returns past its limit", |_, _| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(json!("too late"))
    })
    .with_timeout(Duration::from_millis(100))
    .with_cancel_grace(Duration::from_secs(5));
    let (app, _dir) = app_with(op).await;
    let manager = app.manager().clone();
    let task = manager.submit("late", json!({}), None).await.unwrap().task;
    let row = manager
        .wait(task.task_id, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.unwrap().code, "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_reporting_past_the_tape_cap_is_stopped_and_ends_tape_full() {
    let chatty = FnOp::new("chatty", "reports without end", |_, reporter| async move {
        let mut written = 0_u64;
        loop {
            match reporter.log("info", format!("line {written}")).await {
                Ok(()) => written += 1,
                // The cap: stop (a well-behaved op); the task ends tape_full.
                Err(tasktape_core::ReportError::TapeFull { limit }) => {
                    return Ok(json!({"written": written, "limit": limit}));
                }
                Err(error) => return Err(error.into()),
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.listen = Some("127.0.0.1:0".into());
    config.data_dir = Some(dir.path().to_path_buf());
    config.max_events_per_task = Some(10);
    let app = Builder::new(config).op(chatty).start().await.unwrap();
    let manager = app.manager().clone();
    let task = manager
        .submit("chatty", json!({}), None)
        .await
        .unwrap()
        .task;
    let row = manager
        .wait(task.task_id, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Failed);
    let error = row.error.unwrap();
    assert_eq!(error.code, "tape_full");
    assert!(
        error.message.contains("max_events_per_task"),
        "{}",
        error.message
    );
    // task_started, 9 logs (the tape holds 10), then the final past the cap.
    let mut events = manager.events(task.task_id, 1);
    let mut kinds = Vec::new();
    while let Some(event) = events.next().await {
        kinds.push(event.unwrap().body.kind().as_str());
    }
    assert_eq!(kinds.len(), 11, "{kinds:?}");
    assert_eq!(kinds.first(), Some(&"task_started"));
    assert_eq!(kinds.last(), Some(&"final"));
    // echo's count has a maximum of 100,000.
    let refused = manager
        .submit("echo", json!({"count": 100_001}), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SubmitError::InvalidParams(ref e) if e.field == "count"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tape_past_max_tape_bytes_ends_tape_full_counting_every_attempt() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tasktape_core::ReportError;
    use tasktape_core::retry::{Backoff, RetryPolicy};
    // Lines the second attempt wrote before the cap refused one.
    static SECOND: AtomicU64 = AtomicU64::new(0);
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let op = FnOp::new("big", "writes kilobyte lines", |_, reporter| async move {
        let first = CALLS.fetch_add(1, Ordering::SeqCst) == 0;
        let line = "x".repeat(1000);
        let mut written = 0_u64;
        loop {
            if first && written == 500 {
                return Err(tasktape_core::OpError::new("flaky", "try again"));
            }
            match reporter.log("info", line.as_str()).await {
                Ok(()) => written += 1,
                Err(ReportError::TapeTooLarge { max_bytes }) => {
                    SECOND.store(written, Ordering::SeqCst);
                    return Ok(json!({"written": written, "max_bytes": max_bytes}));
                }
                Err(error) => return Err(error.into()),
            }
        }
    })
    .with_retry(RetryPolicy {
        max_attempts: 2,
        backoff: Backoff::Fixed,
        initial_ms: 10,
        max_ms: 10,
        jitter: false,
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.listen = Some("127.0.0.1:0".into());
    config.data_dir = Some(dir.path().to_path_buf());
    config.max_tape_bytes = Some(1 << 20);
    let app = Builder::new(config).op(op).start().await.unwrap();
    let manager = app.manager().clone();
    let task = manager.submit("big", json!({}), None).await.unwrap().task;
    let row = manager
        .wait(task.task_id, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.attempt, 2, "the first attempt failed and was retried");
    let error = row.error.unwrap();
    assert_eq!(error.code, "tape_full");
    assert!(
        error.message.contains("max_tape_bytes"),
        "{}",
        error.message
    );
    assert_eq!(error.extra["max_tape_bytes"], 1 << 20);
    // The tape before its `final` holds at most the cap, and the cap was
    // reached: a line more (about 1,050 bytes) would not have fit, each
    // event counted up to 7 bytes over (`seq` taken as 7 digits).
    let mut events = manager.events(task.task_id, 1);
    let (mut bytes, mut lines, mut count) = (0, 0, 0);
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        count += 1;
        if event.body.kind().as_str() != "final" {
            bytes += serde_json::to_string(&event).unwrap().len();
        }
        if matches!(&event.body, EventBody::Log { message, .. } if message.len() == 1000) {
            lines += 1;
        }
    }
    assert!(bytes <= 1 << 20, "{bytes} bytes");
    assert!(
        bytes + 1100 + 7 * count > 1 << 20,
        "{bytes} bytes: the cap was not reached"
    );
    // The second attempt had only what the first left: fewer lines than
    // an empty tape takes.
    let second = SECOND.load(Ordering::SeqCst);
    assert_eq!(lines, 500 + second);
    assert!(second < 600, "the second attempt wrote {second} lines");
}
