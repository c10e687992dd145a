//! Bulk submit, `POST /v1/tasks/batch`, on both stores: one result per
//! submission in order, a refused one alone, keys repeated in a batch or
//! already in use, the bounds on its size, and its own body limit.

use std::time::Duration;

use serde_json::{Value, json};
use tasktape_client::{BatchResult, Client, Status, Submission, TaskId};

use crate::multi::{instance, schema, test_url, wait_row};
use crate::support::{run, serve};

async fn post_batch(base: &str, tasks: Vec<Value>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/tasks/batch"))
        .json(&json!({ "tasks": tasks }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn task_id(result: &Value) -> TaskId {
    result["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a handle: {result}"))
        .parse()
        .unwrap()
}

fn error_code(result: &Value) -> &str {
    result["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error: {result}"))
}

async fn finished(client: &Client, task_id: TaskId) -> Status {
    wait_row(client, task_id, Duration::from_secs(20), |row| {
        row.status.is_terminal()
    })
    .await
    .status
}

/// The mix every store must answer alike; `existing` is a task made
/// before with key `before` and params `{"count": 1}`.
async fn a_mixed_batch_answers_each_entry(base: &str, client: &Client, existing: TaskId) {
    let in_an_hour = now_plus(3600).to_string();
    let (status, body) = post_batch(
        base,
        vec![
            json!({"op": "echo", "params": {"count": 1}}),
            json!({"op": "no_such_op", "params": {}}),
            json!({"op": "echo", "params": {"count": "three"}}),
            json!({"op": "echo", "params": {"count": 2}, "idempotency_key": "k1"}),
            json!({"op": "echo", "params": {"count": 2}, "idempotency_key": "k1"}),
            json!({"op": "echo", "params": {"count": 5}, "idempotency_key": "k1"}),
            json!({"params": {}}),
            json!({"op": "echo", "params": {"count": 1}, "run_at": in_an_hour}),
            json!({"op": "echo", "params": {"count": 1}, "idempotency_key": "before"}),
            json!({"op": "echo", "params": {"count": 1}, "priority": 2_000_000}),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 10, "{body}");
    let first = task_id(&results[0]);
    assert_eq!(error_code(&results[1]), "op_not_found");
    assert_eq!(error_code(&results[2]), "invalid_request");
    assert_eq!(results[2]["error"]["detail"]["field"], "count", "{body}");
    // One key, one task; other params under it: a conflict naming it.
    let keyed = task_id(&results[3]);
    assert_eq!(task_id(&results[4]), keyed);
    assert_eq!(error_code(&results[5]), "idempotency_key_conflict");
    assert_eq!(
        results[5]["error"]["detail"]["task_id"],
        keyed.to_string(),
        "{body}"
    );
    assert_eq!(error_code(&results[6]), "invalid_request");
    assert_eq!(results[6]["error"]["detail"]["field"], "op", "{body}");
    let delayed = task_id(&results[7]);
    assert_eq!(task_id(&results[8]), existing, "a key already in use");
    assert_eq!(results[9]["error"]["detail"]["field"], "priority", "{body}");
    assert_eq!(finished(client, first).await, Status::Succeeded);
    assert_eq!(finished(client, keyed).await, Status::Succeeded);
    let row = client.task(delayed).await.unwrap();
    assert_eq!(row.status, Status::Pending);
    assert!(row.run_at.is_some(), "{row:?}");
}

/// Now plus `seconds`, as an RFC 3339 text the server reads.
fn now_plus(seconds: i64) -> tasktape_client::Timestamp {
    tasktape_client::Timestamp::from_millis(
        tasktape_client::Timestamp::now().as_millis() + seconds * 1000,
    )
}

/// The bounds: none, or more than 10,000, is a 422 and writes nothing; a
/// body of 10,000 over the 1 MiB limit of other routes is taken.
async fn the_bounds_hold(base: &str, client: &Client) {
    let (status, body) = post_batch(base, vec![]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["detail"]["field"], "tasks", "{body}");
    let too_many = vec![json!({"op": "echo", "params": {"count": 0}}); 10_001];
    let (status, body) = post_batch(base, too_many).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 10000"),
        "{body}"
    );
    // 10,000 keyed submissions of about 170 bytes each: 1.7 MB.
    let pad = "x".repeat(140);
    let many: Vec<Submission> = (0..10_000)
        .map(|n| {
            let mut submission = Submission::new("echo", json!({"count": 0}));
            submission.idempotency_key = Some(format!("bulk-{n}-{pad}"));
            submission
        })
        .collect();
    let id = |result: &BatchResult| match result {
        BatchResult::Submitted(handle) => handle.task_id,
        BatchResult::Refused(error) => panic!("refused: {error:?}"),
    };
    let results = client.submit_batch(&many).await.unwrap();
    assert_eq!(results.len(), 10_000);
    let mut ids: Vec<TaskId> = results.iter().map(id).collect();
    assert_eq!(finished(client, ids[0]).await, Status::Succeeded);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10_000, "one task per submission");
    // The same batch again finds the same tasks.
    let again = client.submit_batch(&many[..3]).await.unwrap();
    for (result, first) in again.iter().zip(&results) {
        assert_eq!(id(result), id(first));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_submit_on_sqlite_answers_each_submission_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let mut before = Submission::new("echo", json!({"count": 1}));
    before.idempotency_key = Some("before".into());
    let existing = client.submit(&before).await.unwrap().task_id;
    a_mixed_batch_answers_each_entry(&server.base, &client, existing).await;
    the_bounds_hold(&server.base, &client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_submit_on_postgres_answers_each_submission_in_order() {
    let url = test_url();
    let schema = schema();
    let one = instance(&url, "batch-a", &schema, "");
    // A second instance hears of the batch (one NOTIFY per op) and runs
    // its share.
    let two = instance(&url, "batch-b", &schema, "");
    let mut before = Submission::new("echo", json!({"count": 1}));
    before.idempotency_key = Some("before".into());
    let existing = one.client.submit(&before).await.unwrap().task_id;
    a_mixed_batch_answers_each_entry(&one.server.base, &one.client, existing).await;
    the_bounds_hold(&two.server.base, &two.client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasktape_submit_batch_sends_json_lines_and_prints_a_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(
        &file,
        "{\"op\": \"echo\", \"params\": {\"count\": 1}}\n\n\
         {\"op\": \"no_such_op\"}\n\
         {\"op\": \"echo\", \"params\": {\"count\": 2}, \"priority\": 5}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let done = run(&server, dir.path(), &["submit", "--batch", path]);
    assert_eq!(done.code, 1, "one was refused: {done:?}");
    let lines = done.lines();
    assert_eq!(lines.len(), 3, "{done:?}");
    let first: TaskId = lines[0].parse().unwrap();
    assert!(lines[1].starts_with("error op_not_found: "), "{done:?}");
    let third: TaskId = lines[2].parse().unwrap();
    assert!(
        done.stderr.contains("submitted 2 of 3 (1 refused)"),
        "{done:?}"
    );
    assert_eq!(finished(&client, first).await, Status::Succeeded);
    assert_eq!(client.task(third).await.unwrap().priority, 5);
    // --json: the results as JSON lines; all taken: exit 0.
    std::fs::write(&file, "{\"op\": \"echo\", \"params\": {}}\n").unwrap();
    let done = run(&server, dir.path(), &["submit", "--batch", path, "--json"]);
    assert_eq!(done.code, 0, "{done:?}");
    let result: Value = serde_json::from_str(done.lines()[0]).unwrap();
    assert_eq!(result["op"], "echo");
    // A line that is not a submission: a usage error naming it, nothing sent.
    std::fs::write(&file, "{\"op\": \"echo\"}\n{\"params\": {}}\n").unwrap();
    let done = run(&server, dir.path(), &["submit", "--batch", path]);
    assert_eq!(done.code, 2, "{done:?}");
    assert!(done.stderr.contains("tasks.jsonl:2: op"), "{done:?}");
    assert!(done.stdout.is_empty(), "{done:?}");
    // An op and --batch together: refused by the parser.
    let done = run(&server, dir.path(), &["submit", "echo", "--batch", path]);
    assert_eq!(done.code, 2, "{done:?}");
}
