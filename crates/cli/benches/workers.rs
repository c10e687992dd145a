//! The worker protocol's benchmark (`cargo bench -p tasktape --bench
//! workers`): a release `tasktape serve` on SQLite (or PostgreSQL with
//! `TASKTAPE_LOAD_STORE=postgres` under `scripts/with-postgres`), loopback.
//!
//! - (a) drain: 20,000 pending no-op tasks of a remote op drained by one
//!   worker speaking the protocol from Rust (claims of up to 256, finishes
//!   batched into one report per claim): tasks/s. The protocol's ceiling
//!   for one worker; the Python worker's figure is `python/bench`'s.
//! - (b) cancel → the worker hears it on its signal stream: p50/p99 ms over
//!   200 tries.
//! - (c) 1,000 idle workers, each with its signal stream open, a claim
//!   long-poll waiting and a heartbeat every `lease_interval_ms`: the
//!   server's RSS (MiB) and CPU (% of one core) over 10 s.
//! - (d) `tasktape worker` with a trivial exec op (`true`): tasks/s end to
//!   end (bound by spawning a process per task).
//!
//! `TASKTAPE_WORKERS_ONLY=abcd` picks figures; `TASKTAPE_LOAD_RUNS` (default
//! 3) runs each on a fresh server and prints the median.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use tasktape_client::protocol::{ClaimRequest, Registration, ReportItem, WorkerFinish, WorkerOp};
use tasktape_client::{Client, Submission, TaskId, WorkerSignal};

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> String {
    std::env::var("TASKTAPE_LOAD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tasktape").to_owned())
}

fn serve(extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    let mut text = format!("default_concurrency = 256\nmax_connections = 20000\n{extra}\n");
    let postgres = std::env::var("TASKTAPE_LOAD_STORE").is_ok_and(|store| store == "postgres");
    if postgres {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        text.push_str(&format!(
            "pg_schema = \"bench_w_{nanos}\"\npg_pool_size = 32\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,tasktape=info")
        .env("NO_COLOR", "1")
        .env_remove("TASKTAPE_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if postgres {
        command.env(
            "TASKTAPE_STORE",
            std::env::var("TASKTAPE_TEST_PG").expect("TASKTAPE_TEST_PG"),
        );
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let address = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Server {
        child,
        base: format!("http://{address}"),
        _dir: dir,
    }
}

fn proc_field(pid: u32, file: &str, prefix: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// The process's user + system CPU time, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn noop(name: &str) -> WorkerOp {
    WorkerOp {
        name: name.to_owned(),
        description: "does nothing".to_owned(),
        params_schema: json!({"type": "object"}),
        concurrency: None,
        retry: None,
        idempotent: false,
        timeout_ms: None,
    }
}

fn registration(id: &str, capacity: u32) -> Registration {
    Registration {
        worker_id: id.to_owned(),
        host: "bench".to_owned(),
        pid: std::process::id(),
        version: "bench".to_owned(),
        capacity,
        ops: vec![noop("noop")],
    }
}

fn claim(session: &str, max: u32, wait_ms: u64) -> ClaimRequest {
    ClaimRequest {
        session: session.to_owned(),
        max,
        ops: [("noop".to_owned(), max)].into_iter().collect(),
        wait_ms,
    }
}

/// Submits `count` tasks with 16 concurrent clients.
async fn submit_many(client: &Client, op: &str, count: usize) {
    let per = count / 16;
    let mut handles = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let op = op.to_owned();
        handles.push(tokio::spawn(async move {
            for _ in 0..per {
                client
                    .submit(&Submission::new(&op, json!({})))
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
}

/// (a) tasks/s drained by one protocol worker.
async fn drain(server: &Server) -> f64 {
    const TASKS: usize = 20_000;
    let client = Client::new(&server.base, None).unwrap();
    let session = client
        .register_worker(&registration("drainer", 256))
        .await
        .unwrap()
        .session;
    submit_many(&client, "noop", TASKS).await;
    let started = Instant::now();
    let mut done = 0;
    while done < TASKS {
        let tasks = client.claim(&claim(&session, 256, 1000)).await.unwrap();
        let items: Vec<ReportItem> = tasks
            .into_iter()
            .map(|task| ReportItem {
                task_id: task.task_id,
                lease: task.lease,
                offset: None,
                events: Vec::new(),
                finish: Some(WorkerFinish {
                    result: Some(json!(null)),
                    error: None,
                }),
            })
            .collect();
        done += items.len();
        let answers = client.report(&session, items).await.unwrap();
        assert!(answers.iter().all(|answer| answer.ok));
    }
    TASKS as f64 / started.elapsed().as_secs_f64()
}

/// (b) cancel → signal latencies, ms, sorted.
async fn cancel_latency(server: &Server) -> Vec<f64> {
    let client = Client::new(&server.base, None).unwrap();
    let session = client
        .register_worker(&registration("canceller", 8))
        .await
        .unwrap()
        .session;
    let mut signals = Box::pin(client.worker_signals(&session).await.unwrap());
    assert_eq!(signals.next().await.unwrap().unwrap(), WorkerSignal::Ready);
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let task = client
            .submit(&Submission::new("noop", json!({})))
            .await
            .unwrap()
            .task_id;
        let claimed = client.claim(&claim(&session, 1, 5000)).await.unwrap();
        assert_eq!(claimed[0].task_id, task);
        let since = Instant::now();
        client.cancel(task).await.unwrap();
        loop {
            if let WorkerSignal::Cancel(id) = signals.next().await.unwrap().unwrap()
                && id == task
            {
                break;
            }
        }
        latencies.push(since.elapsed().as_secs_f64() * 1000.0);
        let finish = ReportItem {
            task_id: task,
            lease: claimed[0].lease.clone(),
            offset: None,
            events: Vec::new(),
            finish: Some(WorkerFinish {
                result: None,
                error: None,
            }),
        };
        client.report(&session, vec![finish]).await.unwrap();
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// (c) RSS MiB and CPU % of one core with 1,000 idle workers.
async fn idle_workers(server: &Server) -> (f64, f64) {
    const WORKERS: usize = 1000;
    let pid = server.child.id();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(WORKERS);
    for index in 0..WORKERS {
        let base = server.base.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::new(&base, None).unwrap();
            let registered = client
                .register_worker(&registration(&format!("idle-{index}"), 4))
                .await
                .unwrap();
            let session = registered.session.clone();
            let mut signals = Box::pin(client.worker_signals(&session).await.unwrap());
            let _ = signals.next().await;
            ready.send(()).await.unwrap();
            let beat = Duration::from_millis(registered.lease_interval_ms);
            let heartbeats = {
                let client = client.clone();
                let session = session.clone();
                async move {
                    loop {
                        tokio::time::sleep(beat).await;
                        let _ = client.heartbeat(&session, Vec::<TaskId>::new()).await;
                    }
                }
            };
            let claims = async move {
                loop {
                    let _ = client.claim(&claim(&session, 4, 30_000)).await;
                }
            };
            tokio::join!(heartbeats, claims, async move {
                while signals.next().await.is_some() {}
            });
        }));
    }
    for _ in 0..WORKERS {
        ready_rx.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_seconds(pid);
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = (cpu_seconds(pid) - cpu_before) / since.elapsed().as_secs_f64() * 100.0;
    let rss = proc_field(pid, "status", "VmRSS:") / 1024.0;
    for task in tasks {
        task.abort();
    }
    (rss, cpu)
}

/// (d) tasks/s through `tasktape worker` running `true` per task.
async fn exec_worker(server: &Server) -> f64 {
    const TASKS: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ops.toml");
    std::fs::write(
        &config,
        "[ops.noop]\ncommand = [\"true\"]\nconcurrency = 16\n",
    )
    .unwrap();
    let mut worker = Command::new(binary())
        .args([
            "worker",
            "--url",
            &server.base,
            "--concurrency",
            "16",
            "--config",
        ])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(&server.base, None).unwrap();
    while !client
        .ops()
        .await
        .unwrap()
        .iter()
        .any(|op| op.name == "noop")
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    submit_many(&client, "noop", TASKS).await;
    loop {
        let stats: serde_json::Value = reqwest::get(format!("{}/v1/stats", server.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["counts"]["succeeded"].as_u64().unwrap_or(0) >= TASKS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = TASKS as f64 / started.elapsed().as_secs_f64();
    let _ = worker.kill();
    let _ = worker.wait();
    rate
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("TASKTAPE_WORKERS_ONLY").unwrap_or_else(|_| "abcd".into());
    let runs: usize = std::env::var("TASKTAPE_LOAD_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
        .max(1);
    let store = std::env::var("TASKTAPE_LOAD_STORE").unwrap_or_else(|_| "sqlite".into());
    println!(
        "tasktape worker-protocol benchmark (release server, {store}, loopback; medians of {runs} runs, each on a fresh server)"
    );
    runtime.block_on(async {
        if only.contains('a') {
            let mut rates = Vec::new();
            for _ in 0..runs {
                rates.push(drain(&serve("")).await);
            }
            println!(
                "(a) drain, one protocol worker, tasks/s          {:>10.0}   runs {rates:.0?}",
                median(rates.clone())
            );
        }
        if only.contains('b') {
            let mut p50s = Vec::new();
            let mut p99s = Vec::new();
            for _ in 0..runs {
                let latencies = cancel_latency(&serve("")).await;
                p50s.push(latencies[latencies.len() / 2]);
                p99s.push(latencies[latencies.len() * 99 / 100]);
            }
            println!(
                "(b) cancel → signal p50 ms                       {:>10.2}   runs {p50s:.2?}",
                median(p50s.clone())
            );
            println!(
                "(b) cancel → signal p99 ms                       {:>10.2}   runs {p99s:.2?}",
                median(p99s.clone())
            );
        }
        if only.contains('c') {
            let mut rss = Vec::new();
            let mut cpu = Vec::new();
            for _ in 0..runs {
                let (r, c) = idle_workers(&serve("")).await;
                rss.push(r);
                cpu.push(c);
            }
            println!(
                "(c) 1,000 idle workers: server RSS MiB            {:>10.1}   runs {rss:.1?}",
                median(rss.clone())
            );
            println!(
                "(c) 1,000 idle workers: server CPU % of a core    {:>10.1}   runs {cpu:.1?}",
                median(cpu.clone())
            );
        }
        if only.contains('d') {
            let mut rates = Vec::new();
            for _ in 0..runs {
                rates.push(exec_worker(&serve("")).await);
            }
            println!(
                "(d) tasktape worker, exec `true`, tasks/s         {:>10.0}   runs {rates:.0?}",
                median(rates.clone())
            );
        }
    });
}
