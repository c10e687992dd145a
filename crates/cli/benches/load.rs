//! The HTTP load benchmark: starts the release `tasktape serve` on a fresh
//! data dir and drives it over loopback, printing one line per figure.
//!
//! Run: `cargo bench -p tasktape --bench load`. `TASKTAPE_LOAD_ONLY=abcdefghij`
//! picks figures ((g): drain a backlog of 20,000 no-op tasks, with CPU per
//! task; (h): end to end, no-op; (i): bulk submit of 10,000 in one
//! request; (j): enqueue → start latency on an idle server);
//! `TASKTAPE_LOAD_FOLLOWERS` sets (d)'s follower count
//! (default 10000) and `TASKTAPE_LOAD_MODE=poll|sse` makes them all one kind;
//! `TASKTAPE_LOAD_TASKS` sets (a)'s tasks per client (default 250);
//! `TASKTAPE_LOAD_CONCURRENCY` the servers' per-op limit (default 256).
//! `TASKTAPE_LOAD_BIN` runs another build's `tasktape` binary (to compare
//! two builds in one session). Every figure is the median of `TASKTAPE_LOAD_RUNS` runs (default 3),
//! each on a fresh server, with the runs' range after the target.
//!
//! Tracing: `TASKTAPE_LOAD_TRACING=off,on,export` runs the figures once per
//! setting, in one run: `off` is `RUST_LOG=off` (no spans, no logs), `on`
//! the default logging with request and task spans (no OpenTelemetry), and
//! `export` adds OTLP export to a receiver in this process (default: `on`).
//!
//! On PostgreSQL: `TASKTAPE_LOAD_STORE=postgres` (the database in
//! `TASKTAPE_TEST_PG`, so run it under `scripts/with-postgres`) or a
//! `postgres://` URL, with `TASKTAPE_LOAD_INSTANCES=2` for two instances on
//! one schema. With two, every figure crosses instances: tasks are submitted
//! on one and followed (and cancelled) on the other ((c) and (f) are then
//! the cross-instance follow latency and cancel → final).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};

/// One or more server processes on one store; tasks are submitted to the
/// first and followed on the last.
struct Server {
    children: Vec<Child>,
    bases: Vec<String>,
    base: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Server {
    /// Where followers, cancels and (d)'s connections go.
    fn follow_base(&self) -> &str {
        self.bases.last().unwrap()
    }

    /// The process followers connect to.
    fn follow_pid(&self) -> u32 {
        self.children.last().unwrap().id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How the servers trace (see the module docs).
#[derive(Clone)]
struct TracingSetting {
    name: String,
    endpoint: Option<String>,
}

impl TracingSetting {
    fn rust_log(&self) -> &'static str {
        // `off` keeps only the line announcing the address.
        if self.name == "off" {
            "off,tasktape::config=info"
        } else if self.name == "norequest" {
            "warn,tasktape=info,tasktape_server=warn"
        } else if self.name == "notask" {
            "warn,tasktape=info,tasktape_core=warn"
        } else {
            "warn,tasktape=info"
        }
    }
}

static TRACING: std::sync::Mutex<Option<TracingSetting>> = std::sync::Mutex::new(None);

fn tracing_setting() -> TracingSetting {
    TRACING.lock().unwrap().clone().unwrap_or(TracingSetting {
        name: "on".into(),
        endpoint: None,
    })
}

/// An OTLP/HTTP receiver that accepts and drops spans; its base URL.
async fn otlp_sink() -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_body: axum::body::Bytes| async { "" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The store the benchmark runs on: `None` for SQLite, or a Postgres URL.
fn store_url() -> Option<String> {
    match std::env::var("TASKTAPE_LOAD_STORE")
        .unwrap_or_default()
        .as_str()
    {
        "" | "sqlite" => None,
        "postgres" => Some(std::env::var("TASKTAPE_TEST_PG").expect(
            "TASKTAPE_LOAD_STORE=postgres reads TASKTAPE_TEST_PG: run under scripts/with-postgres",
        )),
        url => Some(url.to_owned()),
    }
}

fn instances() -> usize {
    std::env::var("TASKTAPE_LOAD_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn start() -> Server {
    let schema = format!(
        "bench_{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let store = store_url();
    let count = if store.is_some() { instances() } else { 1 };
    let mut server = Server {
        children: Vec::new(),
        bases: Vec::new(),
        base: String::new(),
        _dirs: Vec::new(),
    };
    for index in 0..count {
        let (child, base, dir) = start_one(store.as_deref(), &schema, index);
        server.children.push(child);
        server.bases.push(base);
        server._dirs.push(dir);
    }
    server.base = server.bases[0].clone();
    server
}

fn start_one(
    store: Option<&str>,
    schema: &str,
    index: usize,
) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    // `TASKTAPE_LOAD_CONCURRENCY`: the per-op limit (256 unless set; 1
    // gives (g) at concurrency 1).
    let concurrency: usize = std::env::var("TASKTAPE_LOAD_CONCURRENCY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let mut text = format!("default_concurrency = {concurrency}\n");
    if store.is_some() {
        text.push_str(&format!(
            "pg_schema = \"{schema}\"\ninstance_id = \"bench-{index}\"\npg_pool_size = 32\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let binary = std::env::var("TASKTAPE_LOAD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tasktape").to_owned());
    let mut command = Command::new(binary);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", tracing_setting().rust_log())
        .env("NO_COLOR", "1")
        .env_remove("TASKTAPE_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = store {
        command.env("TASKTAPE_STORE", url);
    }
    command.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    if let Some(endpoint) = &tracing_setting().endpoint {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
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
    (child, format!("http://{address}"), dir)
}

async fn submit(client: &reqwest::Client, base: &str, body: Value) -> String {
    let handle: Value = client
        .post(format!("{base}/v1/echo"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    handle["task_id"].as_str().unwrap().to_owned()
}

/// Just what a follower needs of an events page (the events are skipped over).
#[derive(serde::Deserialize)]
struct Page {
    task_status: String,
    events: Vec<serde::de::IgnoredAny>,
    next_from_seq: u64,
    has_more: bool,
}

/// Long-polls until the task is terminal and its tape read; returns how many events were seen.
async fn follow(client: &reqwest::Client, base: &str, task_id: &str) -> usize {
    let (mut from, mut seen) = (0, 0);
    loop {
        let url = format!("{base}/v1/tasks/{task_id}/events?from_seq={from}&wait=30&limit=1000");
        let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
        let page: Page = serde_json::from_slice(&body).unwrap();
        seen += page.events.len();
        from = page.next_from_seq;
        let terminal = matches!(
            page.task_status.as_str(),
            "succeeded" | "failed" | "cancelled"
        );
        if terminal && !page.has_more {
            return seen;
        }
    }
}

fn percentile(sorted: &[f64], percent: usize) -> f64 {
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn ts_ms(ts: &str) -> f64 {
    tasktape_core::Timestamp::parse(ts).unwrap().as_millis() as f64
}

/// (a) echo(count=5) tasks/s, submit → final seen, 16 closed-loop clients;
/// (h) the same with echo(count=0), the no-op (echo runs one step).
async fn echo_tasks(server: &Server, events: u64) -> f64 {
    let client = reqwest::Client::new();
    let per_client: usize = std::env::var("TASKTAPE_LOAD_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(250);
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|index| {
            let count = server.bases.len();
            let client = client.clone();
            let submit_base = server.bases[index % count].clone();
            let follow_base = server.bases[(index + 1) % count].clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let task_id = submit(&client, &submit_base, json!({ "count": events })).await;
                    // task_started, the progress events (at least one),
                    // the echo_done partial, final.
                    assert_eq!(
                        follow(&client, &follow_base, &task_id).await,
                        events.max(1) as usize + 3
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    (16 * per_client) as f64 / started.elapsed().as_secs_f64()
}

/// (b) one echo(count=20000): events/s until `final` is visible; (e) replay
/// of that tape in pages of 1000.
async fn one_long_tape(server: &Server) -> (f64, f64) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let task_id = submit(
        &client,
        &server.base,
        json!({"count": 20000, "delay_ms": 0}),
    )
    .await;
    let seen = follow(&client, server.follow_base(), &task_id).await;
    let live = seen as f64 / started.elapsed().as_secs_f64();
    let mut replays = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(follow(&client, server.follow_base(), &task_id).await, 20003);
        replays.push(20003.0 / started.elapsed().as_secs_f64());
    }
    replays.sort_by(f64::total_cmp);
    (live, replays[2])
}

/// (c) follow latency over SSE, event `ts` → receipt, in ms.
async fn follow_latency(server: &Server) -> (f64, f64) {
    let client = reqwest::Client::new();
    let task_id = submit(&client, &server.base, json!({"count": 200, "delay_ms": 5})).await;
    let response = client
        .get(format!(
            "{}/v1/tasks/{task_id}/events/stream",
            server.follow_base()
        ))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let (mut buffer, mut latencies) = (String::new(), Vec::new());
    while let Some(chunk) = body.next().await {
        let received = now_ms();
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|line| line.strip_prefix("data: ")) {
                let event: Value = serde_json::from_str(data).unwrap();
                // The first events were committed before the stream connected.
                if event["seq"].as_u64().unwrap() > 5 {
                    latencies.push(received - ts_ms(event["ts"].as_str().unwrap()));
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    (percentile(&latencies, 50), percentile(&latencies, 99))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// (d) server RSS with `followers` idle followers, half long-poll, half SSE.
async fn idle_followers(server: &Server, followers: usize) -> (f64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(followers)
        .build()
        .unwrap();
    let task_id = submit(
        &client,
        &server.base,
        json!({"count": 1000, "delay_ms": 10000}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_mib(server.follow_pid());
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let mut handles = Vec::new();
    for index in 0..followers {
        let (client, base, task_id, connected) = (
            client.clone(),
            server.follow_base().to_owned(),
            task_id.clone(),
            connected.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mode = std::env::var("TASKTAPE_LOAD_MODE").unwrap_or_default();
            let poll = match mode.as_str() {
                "poll" => true,
                "sse" => false,
                _ => index % 2 == 0,
            };
            if poll {
                let url = format!("{base}/v1/tasks/{task_id}/events?from_seq=3&wait=60");
                let request = client.get(url).send();
                connected.add_permits(1);
                let _ = request.await;
            } else {
                let url = format!("{base}/v1/tasks/{task_id}/events/stream?from_seq=3");
                let response = client.get(url).send().await;
                connected.add_permits(1);
                if let Ok(response) = response {
                    let mut body = response.bytes_stream();
                    while body.next().await.is_some() {}
                }
            }
        }));
    }
    let _ = connected.acquire_many(followers as u32).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_mib(server.follow_pid());
    client
        .post(format!("{}/v1/tasks/{task_id}/cancel", server.base))
        .send()
        .await
        .unwrap();
    for handle in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
    }
    (before, during)
}

/// (j) enqueue → start on an idle server: 200 single submits, one at a
/// time, 5 ms apart; from just before each POST to its `task_started`
/// event's `ts` (1 ms resolution), p50 and p99 in ms.
async fn enqueue_to_start(server: &Server) -> (f64, f64) {
    let client = reqwest::Client::new();
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = now_ms();
        let task_id = submit(&client, &server.base, json!({"count": 0})).await;
        let url = format!(
            "{}/v1/tasks/{task_id}/events?from_seq=0&wait=5&limit=1",
            server.base
        );
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let started = &page["events"][0];
        assert_eq!(started["type"], "task_started", "{page}");
        samples.push(ts_ms(started["ts"].as_str().unwrap()) - sent);
        follow(&client, &server.base, &task_id).await;
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 50), percentile(&samples, 99))
}

/// (f) cancel → final seen, p50 over 20 long echo tasks, in ms.
async fn cancel_to_final(server: &Server) -> f64 {
    let client = reqwest::Client::new();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let task_id = submit(
            &client,
            &server.base,
            json!({"count": 100000, "delay_ms": 5}),
        )
        .await;
        let url = format!(
            "{}/v1/tasks/{task_id}/events?from_seq=0&wait=10",
            server.follow_base()
        );
        let _ = client.get(url).send().await.unwrap();
        let started = Instant::now();
        client
            .post(format!(
                "{}/v1/tasks/{task_id}/cancel",
                server.follow_base()
            ))
            .send()
            .await
            .unwrap();
        follow(&client, server.follow_base(), &task_id).await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    percentile(&samples, 50)
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&index| fields.get(index).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// CPU seconds of every process named `postgres` (the server and its backends).
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

/// How many tasks succeeded (`GET /v1/stats`).
async fn succeeded(client: &reqwest::Client, base: &str) -> u64 {
    let stats: Value = client
        .get(format!("{base}/v1/stats?window=60"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["counts"]["succeeded"].as_u64().unwrap_or(0)
}

/// (g) drain: 20,000 `echo(0)` tasks submitted (in bulk) due 5 s ahead, so
/// they wait `pending`; from their `run_at` until `GET /v1/stats` counts
/// them all `succeeded` (polled every 5 ms): tasks/s, and the CPU per task
/// of the servers and (on PostgreSQL) every `postgres` process.
async fn drain_backlog(server: &Server) -> (f64, f64) {
    const TASKS: usize = 20_000;
    let client = reqwest::Client::new();
    let due = SystemTime::now() + Duration::from_secs(5);
    let due_ms = due.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let run_at = tasktape_core::Timestamp::from_millis(due_ms).to_string();
    let task = json!({"op": "echo", "params": {"count": 0}, "run_at": run_at});
    for _ in 0..TASKS / 10_000 {
        let body = json!({ "tasks": vec![task.clone(); 10_000] });
        let response = client
            .post(format!("{}/v1/tasks/batch", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    assert!(
        SystemTime::now() < due,
        "submitting the backlog took past its run_at"
    );
    let cpu = || {
        let servers: f64 = server
            .children
            .iter()
            .map(|child| cpu_seconds(child.id()))
            .sum();
        let postgres = if store_url().is_some() {
            postgres_cpu_seconds()
        } else {
            0.0
        };
        servers + postgres
    };
    tokio::time::sleep(due.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let (started, cpu0) = (Instant::now(), cpu());
    while succeeded(&client, &server.base).await < TASKS as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the drain stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let cpu_ms = (cpu() - cpu0) * 1000.0 / TASKS as f64;
    (TASKS as f64 / took, cpu_ms)
}

/// (i) bulk submit: 10,000 `echo(0)` tasks in one `POST /v1/tasks/batch`,
/// tasks/s from sending the body to reading the answer.
async fn bulk_submit(server: &Server) -> f64 {
    const TASKS: usize = 10_000;
    let tasks = vec![json!({"op": "echo", "params": {"count": 0}}); TASKS];
    let body = serde_json::to_vec(&json!({ "tasks": tasks })).unwrap();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/tasks/batch", server.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let answer: Value = response.json().await.unwrap();
    let took = started.elapsed();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), TASKS);
    assert!(results.iter().all(|result| result["task_id"].is_string()));
    TASKS as f64 / took.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("TASKTAPE_LOAD_ONLY").unwrap_or_else(|_| "abcdefghij".into());
    let followers: usize = std::env::var("TASKTAPE_LOAD_FOLLOWERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let setup = match store_url() {
        None => "SQLite".to_owned(),
        Some(_) if instances() > 1 => format!(
            "PostgreSQL, {} instances: submit on one, follow and cancel on another",
            instances()
        ),
        Some(_) => "PostgreSQL, one instance".to_owned(),
    };
    let runs: usize = std::env::var("TASKTAPE_LOAD_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
        .max(1);
    let settings = std::env::var("TASKTAPE_LOAD_TRACING").unwrap_or_else(|_| "on".into());
    for setting in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let endpoint = (setting == "export").then(|| runtime.block_on(otlp_sink()));
        *TRACING.lock().unwrap() = Some(TracingSetting {
            name: setting.to_owned(),
            endpoint,
        });
        println!(
            "tasktape HTTP load benchmark (release server, {setup}, loopback, tracing {setting}; medians of {runs} runs, each on a fresh server)"
        );
        figures(&runtime, &only, followers, runs);
    }
}

/// The median of `values` and their range, as `value` and ` (lo–hi)`.
fn median(mut values: Vec<f64>, decimals: usize) -> (String, String) {
    values.sort_by(f64::total_cmp);
    let middle = values[values.len() / 2];
    let range = if values.len() > 1 {
        format!(
            "   (runs {:.decimals$}–{:.decimals$})",
            values[0],
            values[values.len() - 1]
        )
    } else {
        String::new()
    };
    (format!("{middle:.decimals$}"), range)
}

/// One figure `runs` times, each on a fresh server (dropped after it).
async fn each_run<T, F, Fut>(runs: usize, mut figure: F) -> Vec<T>
where
    F: FnMut(Server) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut values = Vec::with_capacity(runs);
    for _ in 0..runs {
        values.push(figure(start()).await);
    }
    values
}

fn figures(runtime: &tokio::runtime::Runtime, only: &str, followers: usize, runs: usize) {
    let row = |name: &str, (value, range): (String, String), target: &str| {
        println!("{name:<48} {value:>14}   target {target}{range}")
    };
    let postgres = store_url().is_some();
    runtime.block_on(async {
        if only.contains('a') {
            let rates = each_run(runs, |server| async move { echo_tasks(&server, 5).await }).await;
            let target = if postgres && instances() > 1 {
                ">= one instance's"
            } else if postgres {
                ">= 4000"
            } else {
                ">= 6000"
            };
            row(
                "(a) echo(count=5) tasks/s, 16 clients",
                median(rates, 0),
                target,
            );
        }
        if only.contains('b') || only.contains('e') {
            let (lives, replays): (Vec<_>, Vec<_>) =
                each_run(runs, |server| async move { one_long_tape(&server).await })
                    .await
                    .into_iter()
                    .unzip();
            row(
                "(b) events/s until final visible, count=20000",
                median(lives, 0),
                if postgres { ">= 200000" } else { ">= 100000" },
            );
            row(
                "(e) replay events/s, pages of 1000 (median of 5)",
                median(replays, 0),
                ">= 1000000",
            );
        }
        if only.contains('c') {
            let (p50s, p99s): (Vec<_>, Vec<_>) =
                each_run(runs, |server| async move { follow_latency(&server).await })
                    .await
                    .into_iter()
                    .unzip();
            row(
                "(c) follow latency p50, ts -> receipt (ms)",
                median(p50s, 2),
                "<= 0.5 (ts has 1 ms resolution)",
            );
            row(
                "(c) follow latency p99, ts -> receipt (ms)",
                median(p99s, 2),
                "<= 2, every run",
            );
        }
        if only.contains('d') {
            let (befores, durings): (Vec<_>, Vec<_>) = each_run(runs, |server| async move {
                idle_followers(&server, followers).await
            })
            .await
            .into_iter()
            .unzip();
            row("(d) server RSS idle (MiB)", median(befores, 1), "");
            row(
                &format!("(d) server RSS with {followers} followers (MiB)"),
                median(durings, 1),
                "<= 150",
            );
        }
        if only.contains('f') {
            let samples =
                each_run(runs, |server| async move { cancel_to_final(&server).await }).await;
            row("(f) cancel -> final p50 (ms)", median(samples, 2), "<= 2");
        }
        if only.contains('g') {
            let (rates, cpus): (Vec<_>, Vec<_>) =
                each_run(runs, |server| async move { drain_backlog(&server).await })
                    .await
                    .into_iter()
                    .unzip();
            row(
                "(g) drain 20,000 no-op tasks, tasks/s",
                median(rates, 0),
                if postgres { ">= 20000" } else { "" },
            );
            row(
                if postgres {
                    "(g) CPU ms per task, server + PostgreSQL"
                } else {
                    "(g) CPU ms per task, server"
                },
                median(cpus, 3),
                if postgres { "<= 0.1" } else { "" },
            );
        }
        if only.contains('h') {
            let rates = each_run(runs, |server| async move { echo_tasks(&server, 0).await }).await;
            row(
                "(h) end to end, no-op, 16 clients, tasks/s",
                median(rates, 0),
                if postgres { ">= 4000" } else { "" },
            );
        }
        if only.contains('j') {
            let (p50s, p99s): (Vec<_>, Vec<_>) =
                each_run(
                    runs,
                    |server| async move { enqueue_to_start(&server).await },
                )
                .await
                .into_iter()
                .unzip();
            row("(j) enqueue -> start p50, idle (ms)", median(p50s, 2), "");
            row(
                "(j) enqueue -> start p99, idle (ms)",
                median(p99s, 2),
                "<= 5",
            );
        }
        if only.contains('i') {
            let rates = each_run(runs, |server| async move { bulk_submit(&server).await }).await;
            row(
                "(i) bulk submit of 10,000, tasks/s",
                median(rates, 0),
                ">= 50000",
            );
        }
    });
}
