//! Exec ops in the real binary: a crashed server leaves no child running,
//! config errors exit 2 with one line, and on PostgreSQL an instance claims
//! only the ops it declares (`worker = false` claims nothing).

use std::time::{Duration, Instant};

use serde_json::json;
use tasktape_client::Submission;

use crate::multi::{instance, schema, test_url};
use crate::support::{serve, tasktape};

/// Whether `pid` still runs (absent or a zombie counts as not running).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_leaves_no_child_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(
        &config,
        "[ops.forever]\ncommand = [\"sh\", \"-c\", \"echo pid=$$; exec sleep 1000\"]\n",
    )
    .unwrap();
    let mut server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let client = tasktape_client::Client::new(&server.base, None).unwrap();
    let task = client
        .submit(&Submission::new("forever", json!({})))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: i32 = loop {
        let page = client
            .events(task.task_id, 1, 100, Duration::from_secs(1))
            .await
            .unwrap();
        let found = page.events.iter().find_map(|event| match &event.body {
            tasktape_core::EventBody::Log { message, .. } => {
                message.strip_prefix("pid=").map(str::to_owned)
            }
            _ => None,
        });
        if let Some(pid) = found {
            break pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the op never printed its pid");
    };
    assert!(running(pid));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(pid) {
        assert!(
            Instant::now() < deadline,
            "child {pid} outlived the killed server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_bad_exec_op_exits_2_with_one_line_naming_the_op_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, expected) in [
        (
            "[ops.resize]\ncommand = [\"sh\", \"{src}\"]\n",
            "op \"resize\": command[1]: placeholder {src} names no declared parameter",
        ),
        (
            "[ops.resize]\ncommand = [\"no-such-program\"]\n",
            "op \"resize\": command[0]: program \"no-such-program\" not found",
        ),
        (
            "[ops.resize]\ncommand = [\"sh\"]\nretry = 1\n",
            "unknown field `retry`",
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, toml).unwrap();
        let output = tasktape()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
}

/// An op printing where it ran (`where=NAME`).
fn op(name: &str, place: &str) -> String {
    format!(
        "[ops.{name}]\ncommand = [\"sh\", \"-c\", \"sleep 0.05; echo where=$WHERE\"]\nenv = {{ WHERE = \"{place}\" }}\n"
    )
}

async fn ran_on(client: &tasktape_client::Client, task_id: tasktape_core::TaskId) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = client.task(task_id).await.unwrap();
        if row.status.is_terminal() {
            assert_eq!(row.status.as_str(), "succeeded", "{row:?}");
            break;
        }
        assert!(Instant::now() < deadline, "task {task_id} never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = client
        .events(task_id, 1, 100, Duration::ZERO)
        .await
        .unwrap();
    page.events
        .iter()
        .find_map(|event| match &event.body {
            tasktape_core::EventBody::Log { message, .. } => {
                message.strip_prefix("where=").map(str::to_owned)
            }
            _ => None,
        })
        .expect("the op said where it ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_instance_claims_only_its_ops_and_an_api_only_one_claims_nothing() {
    let url = test_url();
    let schema = schema();
    let api = instance(
        &url,
        "api",
        &schema,
        &format!("worker = false\n{}", op("job", "api")),
    );
    let b = instance(
        &url,
        "b",
        &schema,
        &format!("{}{}", op("job", "b"), op("only_b", "b")),
    );
    let c = instance(&url, "c", &schema, &op("job", "c"));

    let mut jobs = Vec::new();
    let mut only_b = Vec::new();
    for _ in 0..6 {
        jobs.push(
            api.client
                .submit(&Submission::new("job", json!({})))
                .await
                .unwrap()
                .task_id,
        );
        only_b.push(
            b.client
                .submit(&Submission::new("only_b", json!({})))
                .await
                .unwrap()
                .task_id,
        );
    }
    // Submitted through the API-only instance, claimed by an instance
    // declaring the op (never by the API-only one).
    let mut places = Vec::new();
    for task_id in &jobs {
        places.push(ran_on(&api.client, *task_id).await);
    }
    assert!(
        places.iter().all(|place| place == "b" || place == "c"),
        "{places:?}"
    );
    // The API-only instance knows `only_b` not: 404 with the known ops.
    let refused = api
        .client
        .submit(&Submission::new("only_b", json!({})))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("op_not_found")
            || refused.to_string().contains("not registered"),
        "{refused}"
    );
    // Tasks of `only_b` (declared on b alone) all run on b, though c is idle.
    for task_id in only_b {
        assert_eq!(ran_on(&c.client, task_id).await, "b");
    }
}
