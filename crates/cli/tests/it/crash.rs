//! A crash storm: the server is killed with SIGKILL 20 times under load
//! (submits, long tasks, cancels, followers) and restarted each time; then
//! every submit that was answered 2xx exists, every tape is valid (seqs
//! 1..n, `task_started` first, one `final`, last, matching the row), and no
//! task is left running by a dead owner once the lease bound has passed.
//! On SQLite, then with two instances on PostgreSQL.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tasktape_client::{Client, FollowMode, Submission};
use tasktape_core::TaskId;

use crate::multi::{instance, schema, test_url};
use crate::support::{Server, serve};

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}

/// Load on `client` until the process dies: submits (short and long echo
/// tasks), cancels of earlier ones, and followers. Every id a submit got
/// back goes into `accepted`.
async fn load(client: Client, seed: u64, accepted: Arc<Mutex<BTreeSet<TaskId>>>) {
    let mut rng = Rng(seed | 1);
    loop {
        let long = rng.below(4) == 0;
        let params = if long {
            json!({"count": 200, "delay_ms": 20})
        } else {
            json!({"count": 1 + rng.below(20), "delay_ms": rng.below(10)})
        };
        let Ok(handle) = client.submit(&Submission::new("echo", params)).await else {
            return; // the server is gone
        };
        accepted.lock().unwrap().insert(handle.task_id);
        if rng.below(3) == 0 {
            let known: Vec<TaskId> = accepted.lock().unwrap().iter().copied().collect();
            let victim = known[rng.below(known.len() as u64) as usize];
            let _ = client.cancel(victim).await;
        }
        if rng.below(4) == 0 {
            let client = client.clone();
            let task = handle.task_id;
            tokio::spawn(async move {
                let mut tape = client.follow(task, 0, FollowMode::Sse);
                while let Ok(Some(_)) = tape.next().await {}
            });
        }
    }
}

/// Checks every accepted task on `client`: it exists, its tape is valid and
/// agrees with its row; returns how many are still not terminal.
async fn check_all(client: &Client, accepted: &BTreeSet<TaskId>) -> usize {
    let mut unfinished = 0;
    for task_id in accepted {
        let row = client
            .task(*task_id)
            .await
            .unwrap_or_else(|error| panic!("accepted task {task_id} is missing: {error}"));
        let page = client
            .events(*task_id, 0, 1000, Duration::ZERO)
            .await
            .unwrap();
        tasktape_core::event::validate_tape(row.status, &page.events)
            .unwrap_or_else(|error| panic!("task {task_id}: {error}: {:?}", page.events));
        if !row.status.is_terminal() {
            unfinished += 1;
        }
    }
    unfinished
}

/// Waits until every accepted task is terminal (tasks still running after
/// the storm belong to the live instance here, and end on their own).
async fn wait_all_terminal(client: &Client, accepted: &BTreeSet<TaskId>, limit: Duration) {
    let since = Instant::now();
    loop {
        let unfinished = check_all(client, accepted).await;
        if unfinished == 0 {
            return;
        }
        assert!(
            since.elapsed() < limit,
            "{unfinished} tasks still not terminal after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn kill_9(server: &mut Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9s_under_load_on_sqlite_lose_no_accepted_task() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut rng = Rng(7);
    for round in 0..20u64 {
        let mut server = serve(dir.path(), &[]);
        let client = Client::new(&server.base, None).unwrap();
        let worker = tokio::spawn(load(client, round + 1, Arc::clone(&accepted)));
        tokio::time::sleep(Duration::from_millis(200 + rng.below(500))).await;
        kill_9(&mut server);
        let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 100,
        "the load submitted only {}",
        accepted.len()
    );
    // One last start: leftovers end `server_restart`, pending tasks run.
    let server = serve(dir.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    wait_all_terminal(&client, &accepted, Duration::from_secs(60)).await;
    eprintln!("{} accepted tasks, every tape valid", accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9s_of_two_postgres_instances_lose_no_accepted_task() {
    let url = test_url();
    let schema = schema();
    let leases = "lease_ttl_ms = 2000\nlease_interval_ms = 300";
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut rng = Rng(11);
    for round in 0..20u64 {
        let mut a = instance(&url, "a", &schema, leases);
        let mut b = instance(&url, "b", &schema, leases);
        let workers = [
            tokio::spawn(load(a.client.clone(), 2 * round + 1, Arc::clone(&accepted))),
            tokio::spawn(load(b.client.clone(), 2 * round + 2, Arc::clone(&accepted))),
        ];
        tokio::time::sleep(Duration::from_millis(200 + rng.below(500))).await;
        // Sometimes one dies and the other lives on a while (it reaps).
        kill_9(&mut a.server);
        if rng.below(2) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(2500))).await;
        }
        kill_9(&mut b.server);
        for worker in workers {
            let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
        }
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 100,
        "the load submitted only {}",
        accepted.len()
    );
    // Only one instance comes back, with a new id: the dead owners' tasks
    // are reaped `owner_lost` within the lease bound, pending ones run.
    let c = instance(&url, "c", &schema, leases);
    wait_all_terminal(&c.client, &accepted, Duration::from_secs(60)).await;
    eprintln!("{} accepted tasks, every tape valid", accepted.len());
}

/// Load at the set-based paths' throughput: bulk submits of 25 short
/// tasks (their claims, appends and finishes batch in the writers), bulk
/// cancels of earlier ones, and single submits coalescing with each other.
async fn bulk_load(client: Client, seed: u64, accepted: Arc<Mutex<BTreeSet<TaskId>>>) {
    let mut rng = Rng(seed | 1);
    loop {
        let batch: Vec<Submission> = (0..25)
            .map(|_| Submission::new("echo", json!({"count": rng.below(4), "delay_ms": 0})))
            .collect();
        let Ok(results) = client.submit_batch(&batch).await else {
            return;
        };
        let ids: Vec<TaskId> = results
            .into_iter()
            .map(|result| match result {
                tasktape_client::BatchResult::Submitted(handle) => handle.task_id,
                tasktape_client::BatchResult::Refused(error) => panic!("refused: {error:?}"),
            })
            .collect();
        accepted.lock().unwrap().extend(ids.iter().copied());
        let single = Submission::new("echo", json!({"count": 1}));
        match client.submit(&single).await {
            Ok(handle) => drop(accepted.lock().unwrap().insert(handle.task_id)),
            Err(_) => return,
        }
        if rng.below(3) == 0 {
            let filter = tasktape_client::TaskFilter {
                ids: Some(ids.iter().step_by(3).copied().collect()),
                ..Default::default()
            };
            let _ = client.cancel_matching(&filter).await;
        }
    }
}

/// Waits until no task of the schema is pending or running (paging the
/// list is cheaper than reading each of the many thousands of tasks), then
/// checks every accepted one once.
async fn wait_none_unfinished(client: &Client, accepted: &BTreeSet<TaskId>, limit: Duration) {
    let since = Instant::now();
    for status in [
        tasktape_core::Status::Pending,
        tasktape_core::Status::Running,
    ] {
        loop {
            let query = tasktape_client::ListQuery {
                status: Some(status),
                limit: Some(1),
                ..Default::default()
            };
            if client.list(&query).await.unwrap().tasks.is_empty() {
                break;
            }
            assert!(
                since.elapsed() < limit,
                "tasks still {status:?} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let ids: Vec<TaskId> = accepted.iter().copied().collect();
    let checks = ids.chunks(ids.len().div_ceil(8)).map(|chunk| async move {
        let chunk: BTreeSet<TaskId> = chunk.iter().copied().collect();
        check_all(client, &chunk).await
    });
    let unfinished: usize = futures::future::join_all(checks).await.into_iter().sum();
    assert_eq!(unfinished, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9s_of_two_postgres_instances_under_bulk_load_lose_no_accepted_task() {
    let url = test_url();
    let schema = schema();
    let leases = "lease_ttl_ms = 2000\nlease_interval_ms = 300";
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut rng = Rng(13);
    for round in 0..10u64 {
        let mut a = instance(&url, "a", &schema, leases);
        let mut b = instance(&url, "b", &schema, leases);
        let mut workers = Vec::new();
        for n in 0..3 {
            let seed = 6 * round + 2 * n;
            let (x, y) = (a.client.clone(), b.client.clone());
            workers.push(tokio::spawn(bulk_load(x, seed + 1, Arc::clone(&accepted))));
            workers.push(tokio::spawn(bulk_load(y, seed + 2, Arc::clone(&accepted))));
        }
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        kill_9(&mut a.server);
        if rng.below(2) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        }
        kill_9(&mut b.server);
        for worker in workers {
            let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
        }
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 2000,
        "the load submitted only {}",
        accepted.len()
    );
    let c = instance(&url, "c", &schema, leases);
    wait_none_unfinished(&c.client, &accepted, Duration::from_secs(120)).await;
    eprintln!("{} accepted tasks, every tape valid", accepted.len());
}
