//! The real `tasktape serve`: startup checks, kill -9 recovery, SIGTERM.

use std::time::{Duration, Instant};

use crate::support::{serve, serve_with_env, tasktape, terminate};

use serde_json::{Value, json};

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The whole tape via one events page.
async fn tape(client: &reqwest::Client, base: &str, task_id: &str) -> Value {
    get(
        client,
        format!("{base}/v1/tasks/{task_id}/events?from_seq=0&limit=1000"),
    )
    .await
}

#[test]
fn refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = tasktape()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
}

#[test]
fn a_blank_or_spaced_token_is_refused_at_start() {
    for token in ["   ", "two words", "tab\there"] {
        let dir = tempfile::tempdir().unwrap();
        let output = tasktape()
            .args([
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--token",
                token,
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{token:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("printable ASCII without spaces"),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_config_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(&config, "listen = 7\nunknown_key = true\n").unwrap();
    let output = tasktape()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid config file"));
}

#[test]
fn a_tape_size_cap_below_one_long_line_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(&config, "max_tape_bytes = 65536\n").unwrap();
    let output = tasktape()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("max_tape_bytes must be at least 1048576"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_finishes_running_tasks_as_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = serve(dir.path(), &[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let handle = post(
            &client,
            format!("{}/v1/echo", server.base),
            json!({"count": 100000, "delay_ms": 5}),
        )
        .await;
        ids.push(handle["task_id"].as_str().unwrap().to_owned());
    }
    let done = post(
        &client,
        format!("{}/v1/echo", server.base),
        json!({"count": 1}),
    )
    .await;
    let done = done["task_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        while tape(&client, &server.base, id).await["last_seq"]
            .as_u64()
            .unwrap()
            < 3
        {
            assert!(Instant::now() < deadline, "task {id} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(server); // SIGKILL
    let server = serve(dir.path(), &[]);
    for id in &ids {
        let page = tape(&client, &server.base, id).await;
        assert_eq!(page["task_status"], "failed", "{page}");
        let events = page["events"].as_array().unwrap();
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event["seq"].as_u64().unwrap(), index as u64 + 1);
        }
        assert_eq!(events[0]["type"], "task_started");
        let last = events.last().unwrap();
        assert_eq!(
            (last["type"].as_str(), last["status"].as_str()),
            (Some("final"), Some("failed"))
        );
        assert_eq!(last["error"]["code"], "server_restart");
        assert_eq!(last["error"]["reason"], "server_restart");
        let row = get(&client, format!("{}/v1/tasks/{id}", server.base)).await;
        assert_eq!(row["error"], last["error"]);
    }
    let page = tape(&client, &server.base, &done).await;
    assert!(matches!(
        page["task_status"].as_str(),
        Some("succeeded" | "failed")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_and_leaves_no_task_running() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // A task longer than the drain: cancelled when the drain's 1 s is over.
    let config = dir.path().join("tasktape.toml");
    std::fs::write(&config, "shutdown_timeout_secs = 1\n").unwrap();
    let mut server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let handle = post(
        &client,
        format!("{}/v1/echo", server.base),
        json!({"count": 100000, "delay_ms": 5}),
    )
    .await;
    let id = handle["task_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tape(&client, &server.base, &id).await["last_seq"]
        .as_u64()
        .unwrap()
        < 2
    {
        assert!(Instant::now() < deadline, "task did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exit = terminate(
        &mut server.child,
        Duration::from_secs(5),
        "server did not stop within the drain's 1 s and its wind-down",
    )
    .await;
    assert!(exit.success(), "{exit:?}");
    let server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let page = tape(&client, &server.base, &id).await;
    let last = page["events"].as_array().unwrap().last().unwrap().clone();
    // echo stops when its token fires, so the shutdown outcome is recorded, not a restart.
    assert_eq!(
        (last["type"].as_str(), last["status"].as_str()),
        (Some("final"), Some("failed")),
        "{page}"
    );
    assert_eq!(last["error"]["code"], "server_shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_environment_guards_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_env(dir.path(), &[], &[("TASKTAPE_TOKEN", "t0ken")]);
    let client = reqwest::Client::new();
    let denied = client
        .get(format!("{}/v1/tasks", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    let allowed = client
        .get(format!("{}/v1/tasks", server.base))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 200);
    let health = client
        .get(format!("{}/v1/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_a_request_open_cannot_hold_up_shutdown() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(&config, "shutdown_timeout_secs = 1\n").unwrap();
    let mut server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    let handle = post(
        &client,
        format!("{}/v1/echo", server.base),
        json!({"count": 100000, "delay_ms": 5}),
    )
    .await;
    let id = handle["task_id"].as_str().unwrap().to_owned();
    // A request whose body never arrives.
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.write_all(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let exit = terminate(
        &mut server.child,
        Duration::from_secs(15),
        "the slow client held shutdown up",
    )
    .await;
    assert!(exit.success(), "{exit:?}");
    drop(slow);
    let server = serve(dir.path(), &[]);
    let page = tape(&client, &server.base, &id).await;
    let last = page["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["error"]["code"], "server_shutdown", "{page}");
}
