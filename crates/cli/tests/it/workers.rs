//! The worker protocol against a real `tasktape serve` (SQLite, and two
//! instances on PostgreSQL): claims by the usual rules, reports fenced by
//! lease tokens, cancels pushed over the signal stream, lapsed sessions,
//! takeovers, conflicting declarations, bad batches, token scopes.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tasktape_client::protocol::{
    ClaimRequest, Registration, ReportItem, WorkerEvent, WorkerFinish, WorkerOp, WorkerState,
};
use tasktape_client::{Client, ClientError, EventBody, Status, Submission, TaskId, WorkerSignal};

use crate::multi::{instance, schema, tape, test_url, wait_row};
use crate::support::serve;

pub(crate) fn op(name: &str) -> WorkerOp {
    WorkerOp {
        name: name.to_owned(),
        description: format!("{name}, remotely"),
        params_schema: json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
            "additionalProperties": false
        }),
        concurrency: None,
        retry: None,
        idempotent: false,
        timeout_ms: None,
    }
}

pub(crate) fn registration(id: &str, ops: Vec<WorkerOp>) -> Registration {
    Registration {
        worker_id: id.to_owned(),
        host: "test-host".to_owned(),
        pid: std::process::id(),
        version: "test".to_owned(),
        capacity: 8,
        ops,
    }
}

pub(crate) fn claim(session: &str, op: &str, max: u32, wait_ms: u64) -> ClaimRequest {
    ClaimRequest {
        session: session.to_owned(),
        max,
        ops: [(op.to_owned(), max)].into_iter().collect(),
        wait_ms,
    }
}

fn item(
    task_id: TaskId,
    lease: &str,
    events: Vec<EventBody>,
    finish: Option<WorkerFinish>,
) -> ReportItem {
    ReportItem {
        task_id,
        lease: lease.to_owned(),
        offset: None,
        events: events
            .into_iter()
            .map(|body| WorkerEvent { body, ts: None })
            .collect(),
        finish,
    }
}

fn result(value: Value) -> Option<WorkerFinish> {
    Some(WorkerFinish {
        result: Some(value),
        error: None,
    })
}

fn progress(current: u64) -> EventBody {
    EventBody::Progress {
        phase: "work".to_owned(),
        current,
        total: 3,
        detail: None,
    }
}

pub(crate) async fn submit(client: &Client, op: &str, n: i64) -> TaskId {
    client
        .submit(&Submission::new(op, json!({"n": n})))
        .await
        .unwrap()
        .task_id
}

fn api_code(error: &ClientError) -> Option<(u16, String)> {
    match error {
        ClientError::Api(server) => Some((server.status, server.code.clone())),
        _ => None,
    }
}

/// A remote op end to end: validated at submit while no worker runs,
/// claimed oldest first up to what is asked, events and the finish on the
/// tape in order, later writes refused, stale tokens refused, a malformed
/// batch refused whole, the worker and the op listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_op_runs_through_the_protocol_with_a_true_tape() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let registered = client
        .register_worker(&registration("w-1", vec![op("square")]))
        .await
        .unwrap();
    let session = registered.session.clone();
    assert!(registered.lease_ttl_ms > registered.lease_interval_ms);

    // Params are judged by the declared schema (422 naming the field).
    let refused = client
        .submit(&Submission::new("square", json!({"n": "four"})))
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&refused),
        Some((422, "invalid_request".to_owned()))
    );
    assert!(refused.to_string().contains('n'), "{refused}");
    let ids = [
        submit(&client, "square", 1).await,
        submit(&client, "square", 2).await,
        submit(&client, "square", 3).await,
    ];

    let ops = client.ops().await.unwrap();
    let square = ops.iter().find(|op| op.name == "square").unwrap();
    assert!(square.remote);
    assert_eq!(square.workers, Some(1));

    let claimed = client
        .claim(&claim(&session, "square", 2, 5000))
        .await
        .unwrap();
    let claimed_ids: Vec<TaskId> = claimed.iter().map(|task| task.task_id).collect();
    assert_eq!(claimed_ids, ids[..2], "the two oldest, no more than asked");
    assert_eq!(claimed[0].params, json!({"n": 1}));
    assert_eq!(claimed[0].attempt, 1);
    for task in &claimed {
        assert_eq!(
            client.task(task.task_id).await.unwrap().status,
            Status::Running
        );
    }
    assert_eq!(client.task(ids[2]).await.unwrap().status, Status::Pending);

    // A malformed batch: refused whole, nothing written.
    let (first, second) = (&claimed[0], &claimed[1]);
    let bad = client
        .report(
            &session,
            vec![
                item(first.task_id, &first.lease, vec![progress(1)], None),
                item(
                    second.task_id,
                    &second.lease,
                    vec![EventBody::Final {
                        status: Status::Succeeded,
                        result: None,
                        error: None,
                    }],
                    None,
                ),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&bad), Some((422, "invalid_request".to_owned())));
    assert!(bad.to_string().contains("items[1].events[0].type"), "{bad}");
    assert_eq!(
        tape(&client, first.task_id).await.len(),
        1,
        "only task_started"
    );

    // Events and a finish in one item; a stale token in another.
    let answers = client
        .report(
            &session,
            vec![
                item(
                    first.task_id,
                    &first.lease,
                    vec![progress(1), progress(2)],
                    result(json!({"sq": 1})),
                ),
                item(second.task_id, "not-the-lease", vec![progress(1)], None),
            ],
        )
        .await
        .unwrap();
    assert!(answers[0].ok, "{answers:?}");
    assert!(!answers[1].ok);
    assert_eq!(answers[1].code.as_deref(), Some("lease_lost"));
    let row = wait_row(&client, first.task_id, Duration::from_secs(5), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Succeeded);
    assert_eq!(row.result, Some(json!({"sq": 1})));
    let events = tape(&client, first.task_id).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event.body.kind().as_str())
        .collect();
    assert_eq!(kinds, ["task_started", "progress", "progress", "final"]);
    assert_eq!(
        tape(&client, second.task_id).await.len(),
        1,
        "the stale token wrote nothing"
    );

    // After the end: the worker is told to stop, never a second final.
    let late = client
        .report(
            &session,
            vec![item(
                first.task_id,
                &first.lease,
                vec![progress(3)],
                result(json!(2)),
            )],
        )
        .await
        .unwrap();
    assert!(!late[0].ok);
    assert_eq!(late[0].code.as_deref(), Some("task_ended"));
    assert_eq!(tape(&client, first.task_id).await.len(), 4);
    let unknown = client
        .report(
            &session,
            vec![item(TaskId::from_bytes([7; 16]), "x", vec![], None)],
        )
        .await
        .unwrap();
    assert_eq!(unknown[0].code.as_deref(), Some("unknown_task"));

    // An error fails the attempt, with its detail.
    let failed = client
        .report(
            &session,
            vec![item(
                second.task_id,
                &second.lease,
                vec![],
                Some(WorkerFinish {
                    result: None,
                    error: Some(tasktape_client::protocol::WorkerError {
                        code: "value_error".to_owned(),
                        message: "bad n".to_owned(),
                        detail: Some(json!({"traceback": "line 1"})),
                        permanent: false,
                    }),
                }),
            )],
        )
        .await
        .unwrap();
    assert!(failed[0].ok);
    let row = wait_row(&client, second.task_id, Duration::from_secs(5), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Failed);
    let error = row.error.unwrap();
    assert_eq!(error.code, "value_error");
    assert_eq!(error.extra["detail"], json!({"traceback": "line 1"}));

    // A heartbeat names what the worker no longer holds.
    let stop = client
        .heartbeat(&session, vec![first.task_id])
        .await
        .unwrap();
    assert_eq!(stop, vec![first.task_id]);
    let workers = client.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].worker_id, "w-1");
    assert_eq!(workers[0].state, WorkerState::Live);
    assert_eq!(workers[0].ops, ["square"]);

    // Bad session: 409 session_unknown everywhere.
    let unknown = client.heartbeat("nope", vec![]).await.unwrap_err();
    assert_eq!(
        api_code(&unknown),
        Some((409, "session_unknown".to_owned()))
    );
    // A claim naming an op it did not register.
    let foreign = client
        .claim(&claim(&session, "echo", 1, 0))
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&foreign),
        Some((422, "invalid_request".to_owned()))
    );

    // Deregistering ends the session; the worker shows as gone.
    client.deregister(&session).await.unwrap();
    let workers = client.workers().await.unwrap();
    assert_eq!(workers[0].state, WorkerState::Gone);
}

/// A cancel taken by the API reaches the worker on its signal stream at
/// once; a worker that does not finish within the grace has its task end
/// `cancelled` anyway and is told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_pushed_to_the_worker_and_enforced_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.toml"), "cancel_grace_ms = 400\n").unwrap();
    let config = dir.path().join("t.toml");
    let server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let client = Client::new(&server.base, None).unwrap();
    let session = client
        .register_worker(&registration("w-cancel", vec![op("slow")]))
        .await
        .unwrap()
        .session;
    let mut signals = Box::pin(client.worker_signals(&session).await.unwrap());
    assert_eq!(signals.next().await.unwrap().unwrap(), WorkerSignal::Ready);
    let first = submit(&client, "slow", 1).await;
    let second = submit(&client, "slow", 2).await;
    let tasks = client
        .claim(&claim(&session, "slow", 2, 5000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2);

    // The worker finishes the first when told.
    let since = Instant::now();
    client.cancel(first).await.unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(2), signals.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let latency = since.elapsed();
    assert_eq!(signal, WorkerSignal::Cancel(first));
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    let answers = client
        .report(
            &session,
            vec![item(
                first,
                &tasks[0].lease,
                vec![],
                result(json!("done anyway")),
            )],
        )
        .await
        .unwrap();
    assert!(answers[0].ok);
    let row = wait_row(&client, first, Duration::from_secs(5), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(
        row.status,
        Status::Cancelled,
        "a cancel wins over the result"
    );

    // The second ignores it: cancelled after the grace, then `stop`.
    client.cancel(second).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), signals.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        WorkerSignal::Cancel(second)
    );
    let row = wait_row(&client, second, Duration::from_secs(5), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Cancelled);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), signals.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        WorkerSignal::Stop(second)
    );
    let late = client
        .report(
            &session,
            vec![item(second, &tasks[1].lease, vec![progress(1)], None)],
        )
        .await
        .unwrap();
    assert_eq!(late[0].code.as_deref(), Some("task_ended"));
    let events = tape(&client, second).await;
    assert!(matches!(
        events.last().unwrap().body,
        EventBody::Final { .. }
    ));
}

/// Heartbeats that stop end the session when the lease runs out: a task of
/// a non-idempotent op ends `owner_lost`, one of an idempotent op goes back
/// to pending for another attempt; a claim never acknowledged is not
/// stranded either. The id may then register again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_renewing_loses_its_tasks_within_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        "lease_ttl_ms = 1500\nlease_interval_ms = 300\n",
    )
    .unwrap();
    let config = dir.path().join("t.toml");
    let server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let client = Client::new(&server.base, None).unwrap();
    let mut again = op("again");
    again.idempotent = true;
    again.retry = Some(tasktape_client::RetryPolicy {
        max_attempts: 3,
        backoff: Default::default(),
        initial_ms: 10,
        max_ms: 10,
        jitter: false,
    });
    let session = client
        .register_worker(&registration("w-lost", vec![op("once"), again]))
        .await
        .unwrap()
        .session;
    let once = submit(&client, "once", 1).await;
    let retried = submit(&client, "again", 1).await;
    let mut request = claim(&session, "once", 1, 5000);
    request.ops.insert("again".to_owned(), 1);
    request.max = 2;
    let tasks = client.claim(&request).await.unwrap();
    assert_eq!(tasks.len(), 2);
    // One heartbeat acknowledges both; then nothing.
    client
        .heartbeat(&session, vec![once, retried])
        .await
        .unwrap();
    let since = Instant::now();
    let row = wait_row(&client, once, Duration::from_secs(6), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.unwrap().code, "owner_lost");
    assert!(
        since.elapsed() < Duration::from_secs(4),
        "{:?}",
        since.elapsed()
    );
    let row = wait_row(&client, retried, Duration::from_secs(6), |row| {
        row.status == Status::Pending || row.attempt >= 2
    })
    .await;
    assert!(row.attempt <= 2);
    let unknown = client.heartbeat(&session, vec![]).await.unwrap_err();
    assert_eq!(
        api_code(&unknown),
        Some((409, "session_unknown".to_owned()))
    );

    // The same id registers again and gets the retried task (attempt 2).
    let session = client
        .register_worker(&registration(
            "w-lost",
            vec![op("once"), {
                let mut again = op("again");
                again.idempotent = true;
                again.retry = Some(tasktape_client::RetryPolicy {
                    max_attempts: 3,
                    backoff: Default::default(),
                    initial_ms: 10,
                    max_ms: 10,
                    jitter: false,
                });
                again
            }],
        ))
        .await
        .unwrap()
        .session;
    let tasks = client
        .claim(&claim(&session, "again", 1, 5000))
        .await
        .unwrap();
    assert_eq!(tasks[0].task_id, retried);
    assert_eq!(tasks[0].attempt, 2);
    // This claim is never acknowledged: it ends owner_lost-retried too,
    // although the session stays alive.
    let keep = client.clone();
    let beat = session.clone();
    let beating = tokio::spawn(async move {
        loop {
            let _ = keep.heartbeat(&beat, vec![]).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Back to pending for its third attempt, its second recorded lost.
    let row = wait_row(&client, retried, Duration::from_secs(6), |row| {
        row.status == Status::Pending
    })
    .await;
    assert_eq!(row.attempt, 2, "{row:?}");
    let lost = tape(&client, retried)
        .await
        .iter()
        .filter(|event| matches!(&event.body, EventBody::Partial { kind, .. } if kind == "tasktape.attempt_failed"))
        .count();
    assert_eq!(lost, 2);
    beating.abort();
}

/// While a worker's stream is open and its heartbeats on time, its id is
/// taken; once its stream closes, registering the id again takes over and
/// its tasks end `server_restart`. Two live workers with different
/// declarations of one op: the later is refused naming what differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_taken_over_only_from_gone_processes_and_declarations_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let session = client
        .register_worker(&registration("w-a", vec![op("shared")]))
        .await
        .unwrap()
        .session;
    let signals = client.worker_signals(&session).await.unwrap();
    let task = submit(&client, "shared", 1).await;
    assert_eq!(
        client
            .claim(&claim(&session, "shared", 1, 5000))
            .await
            .unwrap()
            .len(),
        1
    );
    let in_use = client
        .register_worker(&registration("w-a", vec![op("shared")]))
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&in_use),
        Some((409, "worker_id_in_use".to_owned()))
    );

    let mut changed = op("shared");
    changed.params_schema = json!({"type": "object"});
    let conflict = client
        .register_worker(&registration("w-b", vec![changed.clone()]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&conflict), Some((409, "op_conflict".to_owned())));
    assert!(conflict.to_string().contains("params_schema"), "{conflict}");

    // The stream closes (the process died): the id is taken over.
    drop(signals);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = client
        .register_worker(&registration("w-a", vec![op("shared")]))
        .await
        .unwrap();
    assert_ne!(again.session, session);
    let row = wait_row(&client, task, Duration::from_secs(5), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.unwrap().code, "server_restart");
    let old = client.heartbeat(&session, vec![]).await.unwrap_err();
    assert_eq!(api_code(&old), Some((409, "session_unknown".to_owned())));
    // Once no live worker serves it, a new declaration replaces the old.
    client.deregister(&again.session).await.unwrap();
    client
        .register_worker(&registration("w-b", vec![changed]))
        .await
        .unwrap();
    let refused_now = client
        .submit(&Submission::new("shared", json!({"anything": true})))
        .await;
    assert!(
        refused_now.is_ok(),
        "the new schema takes any object: {refused_now:?}"
    );
}

/// With tokens: a `worker` token may use the worker routes and nothing
/// else, limited to its ops; a `submit` token may not register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_token_may_only_serve_its_ops() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        "[[tokens]]\nname = \"w\"\ntoken = \"worker-secret\"\nscope = \"worker\"\nops = [\"mine\"]\n\
         [[tokens]]\nname = \"w2\"\ntoken = \"worker-secret-2\"\nscope = \"worker\"\n\
         [[tokens]]\nname = \"s\"\ntoken = \"submit-secret\"\nscope = \"submit\"\n",
    )
    .unwrap();
    let config = dir.path().join("t.toml");
    let server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let worker = Client::new(&server.base, Some("worker-secret")).unwrap();
    let submitter = Client::new(&server.base, Some("submit-secret")).unwrap();
    let listed = worker.list(&Default::default()).await.unwrap_err();
    assert_eq!(api_code(&listed), Some((403, "forbidden".to_owned())));
    let submitted = worker
        .submit(&Submission::new("echo", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&submitted), Some((403, "forbidden".to_owned())));
    let other = worker
        .register_worker(&registration("w", vec![op("theirs")]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&other), Some((403, "op_not_allowed".to_owned())));
    let by_submitter = submitter
        .register_worker(&registration("w", vec![op("mine")]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&by_submitter), Some((403, "forbidden".to_owned())));
    let session = worker
        .register_worker(&registration("w", vec![op("mine")]))
        .await
        .unwrap()
        .session;
    let task = submit(&submitter, "mine", 5).await;
    let tasks = worker
        .claim(&claim(&session, "mine", 1, 5000))
        .await
        .unwrap();
    assert_eq!(tasks[0].task_id, task);
    assert_eq!(tasks[0].params, json!({"n": 5}));
    // The id is token w's: another worker token cannot take it over, even
    // once its process is gone; w can.
    worker.deregister(&session).await.unwrap();
    let other_token = Client::new(&server.base, Some("worker-secret-2")).unwrap();
    let taken = other_token
        .register_worker(&registration("w", vec![op("mine")]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&taken), Some((403, "worker_id_taken".to_owned())));
    assert!(taken.to_string().contains("\"w\""), "{taken}");
    worker
        .register_worker(&registration("w", vec![op("mine")]))
        .await
        .unwrap();
}

/// Two instances on PostgreSQL: a worker on each shares the op's global
/// limit; a cancel taken by one instance reaches the worker of the other
/// at once; a declaration made on one validates submits on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_workers_on_two_instances_share_limits_and_hear_cancels() {
    let url = test_url();
    let schema = schema();
    let limit = "[concurrency]\nlimited = 2\n";
    let a = instance(&url, "a", &schema, limit);
    let b = instance(&url, "b", &schema, limit);
    let on_a = a
        .client
        .register_worker(&registration("w-on-a", vec![op("limited")]))
        .await
        .unwrap()
        .session;
    // Declared on A, validated on B.
    let refused = b
        .client
        .submit(&Submission::new("limited", json!({"n": "x"})))
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&refused),
        Some((422, "invalid_request".to_owned()))
    );
    let on_b = b
        .client
        .register_worker(&registration("w-on-b", vec![op("limited")]))
        .await
        .unwrap()
        .session;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(submit(&b.client, "limited", n).await);
    }
    let got_a = a
        .client
        .claim(&claim(&on_a, "limited", 1, 5000))
        .await
        .unwrap();
    let got_b = b
        .client
        .claim(&claim(&on_b, "limited", 4, 5000))
        .await
        .unwrap();
    assert_eq!(
        got_a.len() + got_b.len(),
        2,
        "the op's limit of 2 holds across instances"
    );
    assert_eq!(got_a.len(), 1);
    let mut signals = Box::pin(a.client.worker_signals(&on_a).await.unwrap());
    assert_eq!(signals.next().await.unwrap().unwrap(), WorkerSignal::Ready);
    let since = Instant::now();
    b.client.cancel(got_a[0].task_id).await.unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(3), signals.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(signal, WorkerSignal::Cancel(got_a[0].task_id));
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "{:?}",
        since.elapsed()
    );
    a.client
        .report(
            &on_a,
            vec![item(
                got_a[0].task_id,
                &got_a[0].lease,
                vec![],
                result(json!(null)),
            )],
        )
        .await
        .unwrap();
    wait_row(&b.client, got_a[0].task_id, Duration::from_secs(5), |row| {
        row.status == Status::Cancelled
    })
    .await;
    // A slot freed: B's worker gets one more.
    let more = b
        .client
        .claim(&claim(&on_b, "limited", 4, 5000))
        .await
        .unwrap();
    assert_eq!(more.len(), 1);
    let workers = b.client.workers().await.unwrap();
    assert_eq!(workers.len(), 2);
}

/// `tasktape worker` serves a local config's exec ops for a server
/// elsewhere: progress and the result reach the tape; a cancel kills the
/// program (its process group) within the grace; SIGTERM drains (the
/// running task finishes) and the worker exits 0, listed as gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasktape_worker_serves_exec_ops_remotely() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("server"), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    let config = dir.path().join("ops.toml");
    std::fs::write(
        &config,
        format!(
            r#"cancel_grace_ms = 300
[ops.count]
description = "counts to n"
command = ["sh", "-c", "echo $$ > {pids}/$$; i=0; while [ $i -lt {{n}} ]; do i=$((i+1)); echo '{{{{\"progress\": {{{{\"phase\": \"count\", \"current\": '$i', \"total\": {{n}}}}}}}}}}'; sleep 0.1; done; echo '{{{{\"result\": {{{{\"counted\": {{n}}}}}}}}}}'"]
[ops.count.params.n]
type = "integer"
minimum = 1
default = 3
"#,
            pids = pids.display()
        ),
    )
    .unwrap();
    let mut worker = crate::support::tasktape()
        .args([
            "worker",
            "--url",
            &server.base,
            "--id",
            "exec-worker",
            "--config",
        ])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let since = Instant::now();
    while !client
        .ops()
        .await
        .unwrap()
        .iter()
        .any(|op| op.name == "count")
    {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the worker registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let task = client
        .submit(&Submission::new("count", json!({"n": 3})))
        .await
        .unwrap()
        .task_id;
    let row = wait_row(&client, task, Duration::from_secs(10), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Succeeded, "{row:?}");
    assert_eq!(row.result, Some(json!({"counted": 3})));
    let kinds: Vec<String> = tape(&client, task)
        .await
        .iter()
        .map(|event| event.body.kind().as_str().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["task_started", "progress", "progress", "progress", "final"]
    );

    // A cancel: the program is killed, the task ends cancelled.
    let long = client
        .submit(&Submission::new("count", json!({"n": 600})))
        .await
        .unwrap()
        .task_id;
    wait_row(&client, long, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    let pid = loop {
        let found: Vec<_> = std::fs::read_dir(&pids).unwrap().collect();
        if found.len() == 2 {
            let names: Vec<String> = found
                .into_iter()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            break names
                .into_iter()
                .map(|name| name.parse::<i32>().unwrap())
                .max()
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    client.cancel(long).await.unwrap();
    let row = wait_row(&client, long, Duration::from_secs(10), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Cancelled);
    let gone = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "the program {pid} was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM drains: the running task finishes, the worker exits 0.
    let last = client
        .submit(&Submission::new("count", json!({"n": 5})))
        .await
        .unwrap()
        .task_id;
    wait_row(&client, last, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    let exit = crate::support::terminate(
        &mut worker,
        Duration::from_secs(20),
        "the worker drains and exits",
    )
    .await;
    assert!(exit.success(), "{exit:?}");
    let row = client.task(last).await.unwrap();
    assert_eq!(row.status, Status::Succeeded, "{row:?}");
    let workers = client.workers().await.unwrap();
    assert_eq!(workers[0].state, WorkerState::Gone);
}

/// A worker's heartbeats must name what it runs: a task it acknowledged
/// (a report) and then leaves out of two heartbeats in a row ends
/// `owner_lost` (the worker gave it up); a secret param of a remote op
/// shows neither its allowed values nor its default, and a 422 for it does
/// not say the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reconcile_runs_and_remote_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let mut secret = op("unlock");
    secret.params_schema = json!({
        "type": "object",
        "properties": {"pin": {"type": "string", "writeOnly": true, "enum": ["1111", "2222"], "default": "1111"}},
        "additionalProperties": false
    });
    let session = client
        .register_worker(&registration("w-reconcile", vec![op("kept"), secret]))
        .await
        .unwrap()
        .session;
    let ops = client.ops().await.unwrap();
    let shown = serde_json::to_string(&ops).unwrap();
    assert!(
        !shown.contains("1111") && !shown.contains("2222"),
        "{shown}"
    );
    let refused = client
        .submit(&Submission::new("unlock", json!({"pin": "9999"})))
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&refused),
        Some((422, "invalid_request".to_owned()))
    );
    let text = refused.to_string();
    assert!(!text.contains("9999") && !text.contains("1111"), "{text}");

    let task = submit(&client, "kept", 1).await;
    let claimed = client
        .claim(&claim(&session, "kept", 1, 5000))
        .await
        .unwrap();
    let answers = client
        .report(
            &session,
            vec![item(task, &claimed[0].lease, vec![progress(1)], None)],
        )
        .await
        .unwrap();
    assert!(answers[0].ok);
    client.heartbeat(&session, vec![]).await.unwrap();
    assert_eq!(
        client.task(task).await.unwrap().status,
        Status::Running,
        "one miss is not enough"
    );
    client.heartbeat(&session, vec![]).await.unwrap();
    let row = wait_row(&client, task, Duration::from_secs(5), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.unwrap().code, "owner_lost");
}

/// A report sent again after its answer was lost (the worker cannot know
/// whether it was written) writes nothing twice when its items say where
/// they start; one that leaves events out (too large to send) goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_sent_again_writes_its_events_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let registered = client
        .register_worker(&registration("w-resend", vec![op("square")]))
        .await
        .unwrap();
    let session = registered.session.clone();
    let task_id = submit(&client, "square", 4).await;
    let claimed = client
        .claim(&claim(&session, "square", 1, 5000))
        .await
        .unwrap();
    let lease = claimed[0].lease.clone();
    let at = |offset: u64, events: Vec<EventBody>, finish| {
        let mut item = item(task_id, &lease, events, finish);
        item.offset = Some(offset);
        item
    };
    let send = |item: ReportItem| {
        let (client, session) = (client.clone(), session.clone());
        async move {
            let answers = client.report(&session, vec![item]).await.unwrap();
            assert!(answers[0].ok, "{answers:?}");
        }
    };
    // Events 0–2, then the same report again, then one holding 1–4 (its
    // first two written already).
    send(at(0, vec![progress(0), progress(1), progress(2)], None)).await;
    send(at(0, vec![progress(0), progress(1), progress(2)], None)).await;
    send(at(1, (1..=4).map(progress).collect(), None)).await;
    // Event 5 was left out by the worker: 6 is written after 4.
    send(at(6, vec![progress(6)], result(json!({"sq": 16})))).await;
    let row = wait_row(&client, task_id, Duration::from_secs(10), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Succeeded);
    let currents: Vec<u64> = tape(&client, task_id)
        .await
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::Progress { current, .. } => Some(*current),
            _ => None,
        })
        .collect();
    assert_eq!(currents, vec![0, 1, 2, 3, 4, 6]);
}

/// At the server's shutdown the runs it stops are cancelled on the worker
/// too: the signal stream stays open long enough to carry the cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_pushes_cancels_before_the_signal_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(&config, "shutdown_timeout_secs = 1\n").unwrap();
    let server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let client = Client::new(&server.base, None).unwrap();
    let session = client
        .register_worker(&registration("w-shutdown", vec![op("slow")]))
        .await
        .unwrap()
        .session;
    let mut signals = Box::pin(client.worker_signals(&session).await.unwrap());
    assert_eq!(signals.next().await.unwrap().unwrap(), WorkerSignal::Ready);
    let task = submit(&client, "slow", 1).await;
    let claimed = client
        .claim(&claim(&session, "slow", 1, 5000))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    // The drain waits a second for the run, then the shutdown stops it.
    let mut seen = Vec::new();
    while let Ok(Some(signal)) = tokio::time::timeout(Duration::from_secs(5), signals.next()).await
    {
        match signal {
            Ok(signal) => seen.push(signal),
            Err(_) => break,
        }
    }
    assert!(
        seen.contains(&WorkerSignal::Cancel(task)),
        "the worker heard {seen:?}"
    );
}
