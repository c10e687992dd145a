//! A black-holed database: a TCP proxy between the instance and PostgreSQL
//! stops forwarding without closing anything (what a network partition
//! looks like). `readyz` turns 503 within 10 s, the instance recovers by
//! itself once the proxy forwards again, and SIGTERM during the outage
//! exits within `shutdown_timeout_secs` + 2 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tasktape_core::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::multi::{echo, instance, schema, test_url, wait_row};

/// Forwards 127.0.0.1:port → `target`, and stalls while `held` is set.
struct Proxy {
    port: u16,
    held: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&held);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, Arc::clone(&flag)));
                tokio::spawn(pump(server_read, client_write, Arc::clone(&flag)));
            }
        });
        Proxy { port, held }
    }

    fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    held: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // Held: read nothing, write nothing, close nothing.
        while held.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Look at the flag again now and then while waiting for bytes.
            () = tokio::time::sleep(Duration::from_millis(50)) => continue,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                while held.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn readyz(base: &str) -> u16 {
    match reqwest::Client::new()
        .get(format!("{base}/v1/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_ready(base: &str, want: u16, limit: Duration) -> Duration {
    let since = Instant::now();
    loop {
        if readyz(base).await == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "readyz never answered {want} in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_is_noticed_survived_and_does_not_hold_up_shutdown() {
    let url = test_url();
    let parsed: tokio_postgres::Config = url.parse().unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &parsed.get_hosts()[0] else {
        panic!("a TCP test database");
    };
    let proxy = Proxy::start(format!("{host}:{}", parsed.get_ports()[0])).await;
    let proxied = url.replacen(
        &format!(":{}/", parsed.get_ports()[0]),
        &format!(":{}/", proxy.port),
        1,
    );
    let mut a = instance(
        &proxied,
        "hole",
        &schema(),
        "shutdown_timeout_secs = 3\npg_timeout_ms = 3000",
    );
    let task = a.client.submit(&echo(40, 150)).await.unwrap().task_id;
    wait_row(&a.client, task, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    // Its run has begun here (its first progress is stored): the claim's
    // answer is not still on the wire when the database goes dark (a claim
    // answered never is an orphan, rightly finished `orphaned`).
    let progressed = a
        .client
        .events(task, 2, 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!progressed.events.is_empty(), "no progress in 10 s");

    proxy.hold(true);
    let noticed = wait_ready(&a.server.base, 503, Duration::from_secs(10)).await;
    eprintln!("readyz turned 503 {noticed:?} into the black hole");
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.hold(false);

    // Back by itself, no restart: ready, the running task ends whole, and
    // new work runs.
    let recovered = wait_ready(&a.server.base, 200, Duration::from_secs(30)).await;
    eprintln!("ready again {recovered:?} after the proxy forwarded again");
    let row = wait_row(&a.client, task, Duration::from_secs(60), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Succeeded, "{:?}", row.error);
    let after = a
        .client
        .submit(&tasktape_client::Submission::new(
            "echo",
            json!({"count": 3}),
        ))
        .await
        .unwrap()
        .task_id;
    let row = wait_row(&a.client, after, Duration::from_secs(20), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Succeeded);

    // Black-holed again with a task running: SIGTERM exits within 3 + 2 s.
    let long = a.client.submit(&echo(1000, 50)).await.unwrap().task_id;
    wait_row(&a.client, long, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    proxy.hold(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    let exit = crate::support::terminate(
        &mut a.server.child,
        Duration::from_secs(5),
        "the instance did not exit within shutdown_timeout_secs + 2 s",
    )
    .await;
    eprintln!("exited {:?} after SIGTERM", asked.elapsed());
    assert!(exit.success(), "{exit:?}");
    proxy.hold(false);
}
