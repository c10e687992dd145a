//! dikw-core's own client (`dikw client tasks …`, pip package dikw-core
//! 0.6.10, unchanged) against a real `tasktape serve`: every tasks verb,
//! with and without a token, with its exit codes, and without
//! `DIKW_ALLOW_VERSION_SKEW`. `scripts/with-postgres` (and so CI) installs
//! it in a Python 3.12 venv and sets `TASKTAPE_DIKW`; these tests fail,
//! never skip, without it.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Server, serve, submit_echo_http, wait_status};

fn dikw() -> String {
    match std::env::var("TASKTAPE_DIKW") {
        Ok(path) if !path.is_empty() => path,
        _ => panic!(
            "TASKTAPE_DIKW is not set: run the tests through scripts/with-postgres, which installs \
             dikw-core==0.6.10 (its client) in a Python 3.12 venv"
        ),
    }
}

/// Runs `dikw client tasks ARGS --server URL`; returns (exit code, stdout, stderr).
fn client(server: &Server, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(dikw());
    command
        .args(["client", "tasks"])
        .args(args)
        .args(["--server", &server.base])
        .env_remove("DIKW_ALLOW_VERSION_SKEW")
        .env_remove("DIKW_SERVER_TOKEN")
        .env_remove("DIKW_SERVER_URL")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "200");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("dikw runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dikw_core_s_client_runs_every_tasks_verb_against_tasktape() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let done = submit_echo_http(&server, None, json!({"count": 3, "delay_ms": 50})).await;

    let (code, out, err) = client(&server, &["wait", &done], &[]);
    assert_eq!(code, 0, "wait: {out}{err}");
    let (code, out, err) = client(&server, &["status", &done], &[]);
    assert_eq!(code, 0, "status: {err}");
    let row: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["result"], json!({"echoed": 3}));
    let (code, out, err) = client(&server, &["events", &done], &[]);
    assert_eq!(code, 0, "events: {err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    let types: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "task_started",
            "progress",
            "progress",
            "progress",
            "partial",
            "final"
        ]
    );
    let (code, out, err) = client(&server, &["list", "--format", "json"], &[]);
    assert_eq!(code, 0, "list: {err}");
    assert!(out.contains(&done), "{out}");

    // Cancel a long task; waiting on it then exits 130 (cancelled).
    let long = submit_echo_http(&server, None, json!({"count": 1000, "delay_ms": 100})).await;
    wait_status(&server.base, &long, |status| status == "running").await;
    let (code, out, err) = client(&server, &["cancel", &long], &[]);
    assert_eq!(code, 0, "cancel: {out}{err}");
    assert!(out.contains("\"cancelled\": true"), "{out}");
    let (code, _, err) = client(&server, &["wait", &long], &[]);
    assert_eq!(code, 130, "wait on a cancelled task: {err}");
    // A client-side timeout exits 124 and leaves the task running.
    let slow = submit_echo_http(&server, None, json!({"count": 1000, "delay_ms": 100})).await;
    let (code, _, err) = client(&server, &["wait", &slow, "--timeout", "0.5"], &[]);
    assert_eq!(code, 124, "wait --timeout: {err}");
    assert_eq!(wait_status(&server.base, &slow, |_| true).await, "running");
    // An unknown task is an error exit with the server's message.
    let (code, out, err) = client(
        &server,
        &["status", "01a21fc1-a675-73b9-bbde-0881f151904e"],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("404"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dikw_core_s_client_sends_its_token_and_is_refused_without_it() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &["--token", "s3cret"]);
    let done = submit_echo_http(&server, Some("s3cret"), json!({"count": 1})).await;
    let (code, out, err) = client(&server, &["list"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("401"), "{out}{err}");
    let (code, _, err) = client(&server, &["status", &done, "--token", "wrong"], &[]);
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = client(&server, &["status", &done, "--token", "s3cret"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&done));
    let (code, _, err) = client(
        &server,
        &["wait", &done],
        &[("DIKW_SERVER_TOKEN", "s3cret")],
    );
    assert_eq!(code, 0, "{err}");
}

/// A retried task's tape (one `task_started`, `tasktape.attempt_failed`
/// partials, log lines, one `final`) and a delayed task: dikw-core's client
/// reads the first and waits on the second without error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dikw_core_s_client_reads_a_retried_tape_and_waits_on_a_delayed_task() {
    let data = tempfile::tempdir().unwrap();
    let flaky = crate::jobs::flaky_script(data.path(), 2);
    let server = crate::jobs::serve_config(
        data.path(),
        &format!(
            "[ops.flaky]\ncommand = [\"sh\", \"{flaky}\"]\n\
             retries = {{ max_attempts = 3, backoff = \"fixed\", initial_ms = 100, jitter = false }}\n"
        ),
    );
    let http = reqwest::Client::new();
    let submit = |body: Value| {
        let http = http.clone();
        let url = format!("{}/v1/tasks", server.base);
        async move {
            let handle: Value = http
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            handle["task_id"].as_str().unwrap().to_owned()
        }
    };
    let retried = submit(json!({"op": "flaky", "params": {}})).await;
    let (code, out, err) = client(&server, &["wait", &retried], &[]);
    assert_eq!(code, 0, "wait on a retried task: {out}{err}");
    let (code, out, err) = client(&server, &["events", &retried], &[]);
    assert_eq!(code, 0, "events: {err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    let types: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"task_started"), "{types:?}");
    assert_eq!(types.last(), Some(&"final"), "{types:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "partial").count(),
        2,
        "{types:?}"
    );
    let (code, out, err) = client(&server, &["status", &retried], &[]);
    assert_eq!(code, 0, "status: {err}");
    let row: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (row["status"].as_str(), row["attempt"].as_u64()),
        (Some("succeeded"), Some(3))
    );

    let run_at = tasktape_client::Timestamp::now()
        .add_millis(1500)
        .to_string();
    let delayed = submit(json!({"op": "echo", "params": {"count": 1}, "run_at": run_at})).await;
    let (code, out, err) = client(&server, &["wait", &delayed], &[]);
    assert_eq!(code, 0, "wait on a delayed task: {out}{err}");
    assert_eq!(
        wait_status(&server.base, &delayed, |_| true).await,
        "succeeded"
    );
}
