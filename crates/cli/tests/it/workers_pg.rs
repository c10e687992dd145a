//! Remote workers across instances on PostgreSQL: what one instance does
//! to a worker whose session is on another reaches it at once, not when a
//! heartbeat or a lease comes round.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tasktape_client::{Status, WorkerSignal};

use crate::multi::{instance, schema, test_url, wait_row};
use crate::workers::{claim, op, registration, submit};

/// Leases long enough that waiting for one to lapse would fail the test.
const LONG_LEASES: &str = "lease_ttl_ms = 30000\nlease_interval_ms = 10000\n";

/// A drain asked on instance B reaches the stream of a worker whose
/// session is on A within a second; once that worker's stream closes, its
/// id registered on B takes over at once: the task it held on A ends
/// `server_restart` (the lease is 30 s), and A's session is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_drain_or_takeover_on_another_instance_acts_at_once() {
    let url = test_url();
    let schema = schema();
    let a = instance(&url, "a", &schema, LONG_LEASES);
    let b = instance(&url, "b", &schema, LONG_LEASES);
    let on_a = a
        .client
        .register_worker(&registration("w-moves", vec![op("moving")]))
        .await
        .unwrap()
        .session;
    let mut signals = Box::pin(a.client.worker_signals(&on_a).await.unwrap());
    assert_eq!(signals.next().await.unwrap().unwrap(), WorkerSignal::Ready);
    let task = submit(&b.client, "moving", 1).await;
    let got = a
        .client
        .claim(&claim(&on_a, "moving", 1, 5000))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task_id, task);

    let since = Instant::now();
    b.client.drain_worker("w-moves").await.unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(3), signals.next())
        .await
        .expect("the drain reaches the worker's stream on the other instance")
        .unwrap()
        .unwrap();
    assert_eq!(signal, WorkerSignal::Drain);
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "{:?}",
        since.elapsed()
    );

    // The worker's process dies: its stream closes, its id moves to B.
    drop(signals);
    let since = Instant::now();
    let taken = loop {
        match b
            .client
            .register_worker(&registration("w-moves", vec![op("moving")]))
            .await
        {
            Ok(registered) => break registered,
            Err(error) if since.elapsed() < Duration::from_secs(3) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the id was not taken over: {error}"),
        }
    };
    assert_ne!(taken.session, on_a);
    let row = wait_row(&b.client, task, Duration::from_secs(5), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.unwrap().code, "server_restart");
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "{:?}",
        since.elapsed()
    );
    let old = a.client.heartbeat(&on_a, vec![]).await.unwrap_err();
    assert!(old.to_string().contains("session"), "{old}");
    let workers = b.client.workers().await.unwrap();
    let moved = workers.iter().find(|w| w.worker_id == "w-moves").unwrap();
    assert_eq!(moved.state, tasktape_client::protocol::WorkerState::Live);
}
