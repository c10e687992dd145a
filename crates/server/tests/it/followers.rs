//! Many followers over a real socket: each sees the whole tape exactly once.

use std::sync::Arc;
use std::time::Duration;

use crate::support::followers;
use futures::StreamExt;
use serde_json::{Value, json};
use tasktape_core::{Manager, ManagerConfig, OpRegistry, Store};
use tasktape_server::ServerConfig;
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};
use tokio_util::sync::CancellationToken;

use crate::routes::parse_sse;

struct Server {
    base: String,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_server() -> Server {
    start_server_with(ServerConfig::default()).await
}

async fn start_server_with(config: ServerConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("t.db"))).unwrap());
    let manager = Manager::start(store, OpRegistry::with_builtins(), ManagerConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(tasktape_server::serve(
        listener,
        manager,
        config,
        tasktape_server::Stop {
            drain: shutdown.clone(),
            now: CancellationToken::new(),
        },
        Duration::from_secs(5),
    ));
    Server {
        base,
        shutdown,
        served,
        _dir: dir,
    }
}

/// Submits echo with `params`; returns the task handle.
async fn submit_echo(client: &reqwest::Client, base: &str, params: Value) -> Value {
    client
        .post(format!("{base}/v1/echo"))
        .json(&params)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Follows with long-polls from seq 0 to `final`; returns the seqs seen.
async fn long_poll(client: reqwest::Client, base: String, task_id: String) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut from = 0;
    loop {
        let url = format!("{base}/v1/tasks/{task_id}/events?from_seq={from}&wait=30&limit=7");
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        for event in page["events"].as_array().unwrap() {
            seqs.push(event["seq"].as_u64().unwrap());
            if event["type"] == "final" {
                return seqs;
            }
        }
        from = page["next_from_seq"].as_u64().unwrap();
    }
}

/// Follows with SSE until the server closes the stream; returns the seqs seen.
async fn sse(client: reqwest::Client, base: String, task_id: String) -> Vec<u64> {
    let response = client
        .get(format!("{base}/v1/tasks/{task_id}/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    parse_sse(&text)
        .into_iter()
        .map(|(seq, _, _)| seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_followers_on_fifty_tasks_each_see_the_whole_tape_once() {
    let server = start_server().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(600)
        .build()
        .unwrap();
    let mut task_ids = Vec::new();
    for _ in 0..50 {
        let handle = submit_echo(&client, &server.base, json!({"count": 20, "delay_ms": 25})).await;
        task_ids.push(handle["task_id"].as_str().unwrap().to_owned());
    }
    let mut followers = Vec::new();
    for index in 0..500 {
        let task_id = task_ids[index % 50].clone();
        let (client, base) = (client.clone(), server.base.clone());
        followers.push(tokio::spawn(async move {
            if index % 2 == 0 {
                long_poll(client, base, task_id).await
            } else {
                sse(client, base, task_id).await
            }
        }));
    }
    let expected: Vec<u64> = (1..=23).collect();
    let all = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join_all(followers),
    )
    .await
    .unwrap();
    for (index, seqs) in all.into_iter().enumerate() {
        assert_eq!(
            seqs.unwrap(),
            expected,
            "follower {index} ({})",
            if index % 2 == 0 { "long-poll" } else { "sse" }
        );
    }
    // A follower that arrives after the end still gets the whole tape.
    let late = sse(client.clone(), server.base.clone(), task_ids[0].clone()).await;
    assert_eq!(late, expected);
    server.shutdown.cancel();
    server.served.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_waiting_long_polls_and_streams() {
    let server = start_server().await;
    let client = reqwest::Client::new();
    let handle = submit_echo(
        &client,
        &server.base,
        json!({"count": 1000, "delay_ms": 1000}),
    )
    .await;
    let task_id = handle["task_id"].as_str().unwrap().to_owned();
    let poll = {
        let (client, base, task_id) = (client.clone(), server.base.clone(), task_id.clone());
        tokio::spawn(async move {
            client
                .get(format!(
                    "{base}/v1/tasks/{task_id}/events?from_seq=99&wait=60"
                ))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let stream = tokio::spawn(sse(client.clone(), server.base.clone(), task_id.clone()));
    // Both are waiting (the server counts them) before the shutdown.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if followers(&metrics, "long_poll") >= 1 && followers(&metrics, "sse") >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the followers never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = std::time::Instant::now();
    server.shutdown.cancel();
    assert_eq!(poll.await.unwrap().as_u16(), 200);
    let seen = stream.await.unwrap();
    assert!(seen.starts_with(&[1, 2]), "{seen:?}");
    server.served.await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_comment_heartbeats() {
    let server = start_server_with(ServerConfig {
        heartbeat: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let handle = submit_echo(
        &client,
        &server.base,
        json!({"count": 3, "delay_ms": 10000}),
    )
    .await;
    let task_id = handle["task_id"].as_str().unwrap();
    let response = client
        .get(format!("{}/v1/tasks/{task_id}/events/stream", server.base))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.matches(": heartbeat").count() >= 2 {
                return;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no heartbeats in: {text:?}");
    // Heartbeats are comments: the events parsed around them are the tape's.
    assert_eq!(
        parse_sse(&text)
            .iter()
            .map(|event| event.0)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    client
        .post(format!("{}/v1/tasks/{task_id}/cancel", server.base))
        .send()
        .await
        .unwrap();
    server.shutdown.cancel();
    server.served.await.unwrap().unwrap();
}

/// The header-read timeout closes idle connections, never a follower in
/// the middle of its answer: a stream and long-polls outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_outlive_the_header_read_timeout() {
    let server = start_server_with(ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    // 2 s of events, four times the timeout.
    let handle = submit_echo(&client, &server.base, json!({"count": 10, "delay_ms": 200})).await;
    let task_id = handle["task_id"].as_str().unwrap().to_owned();
    let stream = tokio::spawn(sse(client.clone(), server.base.clone(), task_id.clone()));
    let polls = tokio::spawn(long_poll(client.clone(), server.base.clone(), task_id));
    let streamed = stream.await.unwrap();
    let polled = polls.await.unwrap();
    assert_eq!(streamed, (1..=13).collect::<Vec<u64>>());
    assert_eq!(polled, streamed);
    server.shutdown.cancel();
}
