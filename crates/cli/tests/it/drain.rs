//! Draining on SIGTERM: running tasks finish, no new ones start, `readyz`
//! turns 503 at once; a second signal stops at once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, serve, submit_echo_http, wait_status};

fn signal(server: &Server, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

async fn wait_exit(server: &mut Server, limit: Duration) -> Duration {
    let since = Instant::now();
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "the server did not exit in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn row(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let url = format!("{base}/v1/tasks/{id}");
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_tasks_to_their_end_and_starts_no_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(&config, "shutdown_timeout_secs = 30\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let mut server = serve(dir.path(), &args);
    let client = reqwest::Client::new();
    let running = submit_echo_http(&server, None, json!({"count": 4, "delay_ms": 500})).await;
    wait_status(&server.base, &running, |status| status == "running").await;

    signal(&server, "TERM");
    // readyz turns 503 at once, and says why.
    let since = Instant::now();
    loop {
        let ready = client
            .get(format!("{}/v1/readyz", server.base))
            .send()
            .await
            .unwrap();
        if ready.status().as_u16() == 503 {
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("draining")
            );
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "readyz stayed 200"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reads are still served; a submit is taken but waits, pending.
    assert_eq!(
        row(&client, &server.base, &running).await["status"],
        "running"
    );
    let later = submit_echo_http(&server, None, json!({"count": 1})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        row(&client, &server.base, &later).await["status"],
        "pending"
    );

    // The running task ends on its own (2 s), well inside the 30 s drain,
    // and the server exits right after it.
    let took = wait_exit(&mut server, Duration::from_secs(15)).await;
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    let server = serve(dir.path(), &args);
    let done = row(&client, &server.base, &running).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"echoed": 4}));
    // The task submitted during the drain runs after the restart.
    let status = wait_status(&server.base, &later, |status| {
        !matches!(status, "pending" | "running")
    })
    .await;
    assert_eq!(status, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(&config, "shutdown_timeout_secs = 600\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let mut server = serve(dir.path(), &args);
    let client = reqwest::Client::new();
    let long = submit_echo_http(&server, None, json!({"count": 100000, "delay_ms": 5})).await;
    wait_status(&server.base, &long, |status| status == "running").await;
    signal(&server, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.child.try_wait().unwrap().is_none(), "still draining");
    signal(&server, "INT");
    let took = wait_exit(&mut server, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    let server = serve(dir.path(), &args);
    let done = row(&client, &server.base, &long).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"]["code"], "server_shutdown", "{done}");
}
