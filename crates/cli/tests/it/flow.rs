//! `[flow.OPNAME]` on a real `tasktape serve`: bad settings exit 2 naming
//! the op and the key; a submit whose key names nothing is a 422 naming
//! the field; keys take turns and keep their concurrency.

use std::time::Duration;

use serde_json::{Value, json};

use crate::jobs::serve_config;
use crate::support::tasktape;

fn refused(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(&config, toml).unwrap();
    let out = tasktape()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{toml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flow_settings_exit_2_naming_the_op_and_the_key() {
    for (toml, wanted) in [
        ("[flow.echo]\nkey = \"customer\"\n", "flow \"echo\": key:"),
        ("[flow.echo]\nkey = \"{customer\"\n", "flow \"echo\": key:"),
        (
            "[flow.echo]\nkey_concurrency = 2\n",
            "flow \"echo\": key_concurrency: needs a key",
        ),
        (
            "[flow.echo]\nkey = \"{c}\"\nkey_concurrency = 0\n",
            "flow \"echo\": key_concurrency: 0 is not",
        ),
        (
            "[flow.echo]\nkey = \"{c}\"\nweights = { gold = 0 }\n",
            "flow \"echo\": weights.gold:",
        ),
        ("[flow.echo]\nkey = \"{c}\"\nspeed = 1\n", "speed"),
    ] {
        let stderr = refused(toml);
        assert!(stderr.contains(wanted), "{toml}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

async fn submit(base: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_metadata_or_params_and_keep_their_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_config(
        dir.path(),
        "[flow.echo]\nkey = \"{customer}\"\nkey_concurrency = 1\n",
    );
    let base = server.base.clone();
    // No customer anywhere: a 422 naming the field.
    let (status, error) = submit(&base, json!({"op": "echo", "params": {"count": 1}})).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(
        error["error"]["detail"]["field"], "metadata.customer",
        "{error}"
    );
    // From metadata (a key from params is covered by the template's own
    // tests in core).
    let mut ids = Vec::new();
    for customer in ["a", "a", "a", "b"] {
        let (status, handle) = submit(
            &base,
            json!({"op": "echo", "params": {"count": 2, "delay_ms": 150}, "metadata": {"customer": customer}}),
        )
        .await;
        assert_eq!(status, 200, "{handle}");
        ids.push((customer, handle["task_id"].as_str().unwrap().to_owned()));
    }
    // At most one of customer a's runs at a time: sample the rows.
    let http = reqwest::Client::new();
    let mut most = 0;
    let since = std::time::Instant::now();
    loop {
        let mut running_a = 0;
        let mut done = 0;
        for (customer, id) in &ids {
            let row: Value = http
                .get(format!("{base}/v1/tasks/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match row["status"].as_str().unwrap() {
                "running" if *customer == "a" => running_a += 1,
                "succeeded" => done += 1,
                _ => {}
            }
        }
        most = most.max(running_a);
        if done == ids.len() {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(20), "not done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 1, "customer a ran {most} at once");
    // b did not wait behind a's three: it started before a's last.
    let started = |id: &str| {
        let http = http.clone();
        let url = format!("{base}/v1/tasks/{id}");
        async move {
            let row: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            row["started_at"].as_str().unwrap().to_owned()
        }
    };
    // GET /v1/ops shows the op's flow control.
    let echo = echo_op(&base).await;
    assert_eq!(
        echo["flow"],
        json!({"key": "{customer}", "key_concurrency": 1}),
        "{echo}"
    );
    let b = started(&ids[3].1).await;
    let last_a = started(&ids[2].1).await;
    assert!(b < last_a, "b started {b}, a's last {last_a}");
}

/// The `echo` op's entry in `GET /v1/ops`.
async fn echo_op(base: &str) -> Value {
    let ops: Value = reqwest::get(format!("{base}/v1/ops"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ops["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == "echo")
        .cloned()
        .unwrap_or_else(|| panic!("no echo in {ops}"))
}

/// Submits `count` echo(0) tasks round-robin over `bases`, waits for all
/// to succeed, and returns their start times (ms), sorted.
async fn rated_starts(bases: &[String], count: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for n in 0..count {
        let base = &bases[n % bases.len()];
        let (status, handle) = submit(base, json!({"op": "echo", "params": {"count": 0}})).await;
        assert_eq!(status, 200, "{handle}");
        ids.push(handle["task_id"].as_str().unwrap().to_owned());
    }
    // All end (the waiting ones are woken when the window moves on, with
    // no submit or finish to kick a claim).
    let http = reqwest::Client::new();
    let since = std::time::Instant::now();
    let mut starts = Vec::new();
    for id in &ids {
        loop {
            let row: Value = http
                .get(format!("{}/v1/tasks/{id}", bases[0]))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if row["status"] == "succeeded" {
                let at = row["started_at"].as_str().unwrap();
                starts.push(tasktape_core::Timestamp::parse(at).unwrap().as_millis());
                break;
            }
            assert!(since.elapsed() < Duration::from_secs(15), "{row}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    starts.sort_unstable();
    starts
}

/// No 1 s window holds more than `most` of `starts`.
fn assert_spaced(starts: &[i64], most: usize) {
    for (n, first) in starts.iter().enumerate() {
        let within = starts[n..].iter().filter(|at| **at - first < 1_000).count();
        assert!(
            within <= most,
            "{within} starts within 1 s from {first}: {starts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_spaces_the_starts_and_the_waiting_tasks_start_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_config(dir.path(), "[flow.echo]\nrate = \"5/s\"\n");
    let starts = rated_starts(std::slice::from_ref(&server.base), 12).await;
    let echo = echo_op(&server.base).await;
    let flow = &echo["flow"];
    assert_eq!(flow["rate"], "5/s", "{echo}");
    assert!(flow["rate_used"].as_u64().is_some(), "{echo}");
    assert_spaced(&starts, 5);
    let span = starts[11] - starts[0];
    assert!(
        (2_000..4_000).contains(&span),
        "12 starts over {span} ms: {starts:?}"
    );
}

/// Two PostgreSQL instances share one rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_instances_share_one_rate() {
    let url = crate::multi::test_url();
    let schema = crate::multi::schema();
    let flow = "[flow.echo]\nrate = \"5/s\"\n";
    let a = crate::multi::instance(&url, "a", &schema, flow);
    let b = crate::multi::instance(&url, "b", &schema, flow);
    let starts = rated_starts(&[a.server.base.clone(), b.server.base.clone()], 15).await;
    assert_spaced(&starts, 5);
    let span = starts[14] - starts[0];
    assert!(
        (2_000..5_000).contains(&span),
        "15 starts over {span} ms: {starts:?}"
    );
}
