//! The fairness bench of flow control: tenant A submits 20,000 tasks of an
//! op limited to 8 at once (`echo` with one 20 ms step), then tenant B
//! submits 10. With `[flow.echo] key = "{tenant}"` B's first task should
//! start within 100 ms and all ten finish within a second, and A's
//! throughput over the next 4 s should drop by at most 10 % against the same
//! run without the flow table (B's tasks then wait behind A's backlog).
//!
//! Then the claims' cost with many keys: 100,000 pending `echo(0)` tasks
//! over 10,000 keys (due together), drained for 20,000 tasks from their
//! `run_at` and, steady, from the 2,000th success to the 22,000th (op
//! limit 256), with the key against without it (target: within 20 %).
//!
//! Run: `cargo bench -p tasktape --bench flow` (SQLite); under
//! `scripts/with-postgres` with `TASKTAPE_FLOW_STORE=postgres` for
//! PostgreSQL. `TASKTAPE_FLOW_RUNS` runs per setting (default 3; medians);
//! `TASKTAPE_FLOW_ONLY=fair|keys|spread|binding|rate` one of them. `spread` (PostgreSQL
//! only, and only when asked): three instances drain 1,000 keys × 20 tasks
//! (one 20 ms step each; each key's 20 submitted together, so without keys
//! the oldest-first claims run many of one key at once) with
//! `key_concurrency = 2`, against the same
//! without the key, then once more with 200 keys × 100 tasks, where the
//! key's limit binds; the peak of running tasks per key is computed from
//! the rows' start and finish times and sampled from the database through
//! the drain. `binding` runs only that last case. `rate` (PostgreSQL only, when asked):
//! three instances with `rate = "600/min"` on a backlog for
//! `TASKTAPE_FLOW_RATE_SECS` (default 300): the most starts in any 60 s
//! window, and the average per minute.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

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

/// The flow table of the fairness and key benches.
const KEYED: &str = "[flow.echo]\nkey = \"{tenant}\"\n";

fn start(flow: bool, limit: usize) -> Server {
    start_on(if flow { KEYED } else { "" }, limit, None)
}

/// A server with `flow` as its flow table (or none), the op limited to
/// `limit`; on PostgreSQL `shared`: the schema it shares with others and
/// its instance id.
fn start_on(flow: &str, limit: usize, shared: Option<(&str, &str)>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    let mut text = format!("[concurrency]\necho = {limit}\n{flow}");
    let store = std::env::var("TASKTAPE_FLOW_STORE").ok();
    if store.as_deref() == Some("postgres") {
        let (schema, id) = match shared {
            Some((schema, id)) => (schema.to_owned(), format!("instance_id = \"{id}\"\n")),
            None => (
                format!(
                    "flow_{}",
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                ),
                String::new(),
            ),
        };
        text = format!("pg_schema = \"{schema}\"\n{id}{text}");
    }
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tasktape"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env_remove("TASKTAPE_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if store.as_deref() == Some("postgres") {
        let url = std::env::var("TASKTAPE_TEST_PG").expect(
            "TASKTAPE_FLOW_STORE=postgres reads TASKTAPE_TEST_PG: run under scripts/with-postgres",
        );
        command.env("TASKTAPE_STORE", url);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
            // The server's warnings and errors show: a figure they explain
            // is not read as the claims' cost.
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                eprintln!("server: {line}");
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

fn ms(ts: &str) -> f64 {
    tasktape_core::Timestamp::parse(ts).unwrap().as_millis() as f64
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

async fn batch(client: &reqwest::Client, base: &str, tenant: &str, count: usize) -> Vec<String> {
    let task = json!({"op": "echo", "params": {"count": 1, "delay_ms": 20}, "metadata": {"tenant": tenant}});
    let answer: Value = client
        .post(format!("{base}/v1/tasks/batch"))
        .json(&json!({ "tasks": vec![task; count] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["task_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn succeeded(client: &reqwest::Client, base: &str) -> f64 {
    let stats: Value = client
        .get(format!("{base}/v1/stats?window=60"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["counts"]["succeeded"].as_f64().unwrap_or(0.0)
}

/// One run: (B's first start after its submit, B's last finish after it,
/// A's tasks/s over the 4 s after it), in ms, ms, tasks/s.
async fn run(flow: bool) -> (f64, f64, f64) {
    let server = start(flow, 8);
    let client = reqwest::Client::new();
    for _ in 0..2 {
        batch(&client, &server.base, "a", 10_000).await;
    }
    // A's backlog runs a while first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = succeeded(&client, &server.base).await;
    let submitted = now_ms();
    let window = Instant::now();
    let b = batch(&client, &server.base, "b", 10).await;
    let mut first_start = f64::INFINITY;
    let mut last_finish = 0.0f64;
    let mut b_done = false;
    while window.elapsed() < Duration::from_secs(4) {
        if !b_done {
            let mut done = 0;
            for id in &b {
                let row: Value = client
                    .get(format!("{}/v1/tasks/{id}", server.base))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if let Some(at) = row["started_at"].as_str() {
                    first_start = first_start.min(ms(at) - submitted);
                }
                if let Some(at) = row["finished_at"].as_str() {
                    last_finish = last_finish.max(ms(at) - submitted);
                    done += 1;
                }
            }
            b_done = done == b.len();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = succeeded(&client, &server.base).await;
    let b_finished = if b_done { b.len() as f64 } else { 0.0 };
    let a_rate = (after - before - b_finished) / window.elapsed().as_secs_f64();
    if !b_done {
        last_finish = f64::INFINITY;
    }
    (first_start, last_finish, a_rate)
}

/// Claims over many keys: 100,000 `echo(0)` tasks over 10,000 keys, due
/// 10 s ahead. Tasks/s from their `run_at` until 20,000 have succeeded (the
/// first claim also makes all 100,000 due: it writes them into the
/// claims' indexes, two with a key, one without), and the steady drain
/// from the 2,000th success to the 22,000th (claims alone, with 98,000 to
/// 78,000 pending).
async fn many_keys(flow: bool) -> (f64, f64) {
    let server = start(flow, 256);
    let client = reqwest::Client::new();
    let due = SystemTime::now() + Duration::from_secs(10);
    let due_ms = due.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let run_at = tasktape_core::Timestamp::from_millis(due_ms).to_string();
    for chunk in 0..10 {
        let tasks: Vec<Value> = (0..10_000)
            .map(|n| {
                json!({"op": "echo", "params": {"count": 0}, "run_at": run_at,
                       "metadata": {"tenant": format!("t{}", (chunk * 10_000 + n) % 10_000)}})
            })
            .collect();
        let response = client
            .post(format!("{}/v1/tasks/batch", server.base))
            .json(&json!({ "tasks": tasks }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    assert!(SystemTime::now() < due, "submitting took past the run_at");
    tokio::time::sleep(due.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let started = Instant::now();
    let (mut from_due, mut steady_from) = (None, None);
    loop {
        let done = succeeded(&client, &server.base).await;
        if done >= 20_000.0 && from_due.is_none() {
            from_due = Some(20_000.0 / started.elapsed().as_secs_f64());
        }
        if done >= 2_000.0 && steady_from.is_none() {
            steady_from = Some((Instant::now(), done));
        }
        if done >= 22_000.0
            && let (Some(from_due), Some((at, base))) = (from_due, steady_from)
        {
            return (from_due, (done - base) / at.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three PostgreSQL instances drain 20,000 tasks, `per_key` of each key
/// (20: 1,000 keys; 100: 200 keys, whose 400 slots at `key_concurrency = 2`
/// are fewer than the instances' 768, so the key's limit binds): tasks/s
/// from their `run_at` until all succeeded, and the peak running of one key
/// (from the rows' start and finish times; and sampled from the database
/// through the drain).
async fn spread(flow: bool, per_key: usize) -> (f64, i64, i64) {
    let schema = format!(
        "spread_{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let servers: Vec<Server> = (0..3)
        .map(|n| {
            let table = if flow {
                format!("{KEYED}key_concurrency = 2\n")
            } else {
                String::new()
            };
            start_on(&table, 256, Some((&schema, &format!("spread-{n}"))))
        })
        .collect();
    let client = reqwest::Client::new();
    let due = SystemTime::now() + Duration::from_secs(8);
    let due_ms = due.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let run_at = tasktape_core::Timestamp::from_millis(due_ms).to_string();
    for (chunk, server) in servers.iter().take(2).enumerate() {
        let tasks: Vec<Value> = (0..10_000)
            .map(|n| {
                json!({"op": "echo", "params": {"count": 1, "delay_ms": 20}, "run_at": run_at,
                       "metadata": {"tenant": format!("t{}", (chunk * 10_000 + n) / per_key)}})
            })
            .collect();
        let response = client
            .post(format!("{}/v1/tasks/batch", server.base))
            .json(&json!({ "tasks": tasks }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    let url = std::env::var("TASKTAPE_TEST_PG").unwrap();
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // The database's own view, sampled through the drain: the most rows of
    // one key `running` at once.
    let sampling = format!(
        "SELECT coalesce(max(n), 0)::bigint FROM (SELECT count(*) AS n FROM \"{schema}\".tasks \
         WHERE status = 'running' GROUP BY metadata::jsonb->>'tenant') x"
    );
    let mut sampled = 0i64;
    tokio::time::sleep(due.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let started = Instant::now();
    while succeeded(&client, &servers[0].base).await < 20_000.0 {
        let most: i64 = db.query_one(&sampling, &[]).await.unwrap().get(0);
        sampled = sampled.max(most);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = 20_000.0 / started.elapsed().as_secs_f64();
    let peak: i64 = db
        .query_one(
            &format!(
                "SELECT coalesce(max(running), 0)::bigint FROM (
                   SELECT sum(d) OVER (PARTITION BY key ORDER BY t, d
                                       ROWS UNBOUNDED PRECEDING) AS running
                     FROM (SELECT metadata::jsonb->>'tenant' AS key, started_at AS t, 1 AS d
                             FROM \"{schema}\".tasks
                           UNION ALL
                           SELECT metadata::jsonb->>'tenant', finished_at, -1
                             FROM \"{schema}\".tasks) x) y"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(servers);
    (rate, peak, sampled)
}

/// Three PostgreSQL instances share `rate = "600/min"` over a backlog for
/// `secs`: the most starts in any 60 s window, and the starts per minute
/// over the whole run.
async fn shared_rate(secs: u64) -> (usize, f64) {
    let schema = format!(
        "rate_{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let servers: Vec<Server> = (0..3)
        .map(|n| {
            start_on(
                "[flow.echo]\nrate = \"600/min\"\n",
                256,
                Some((&schema, &format!("rate-{n}"))),
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let count = (secs as usize / 60 + 2) * 600;
    let started = SystemTime::now();
    let tasks: Vec<Value> = (0..count)
        .map(|_| json!({"op": "echo", "params": {"count": 0}}))
        .collect();
    let response = client
        .post(format!("{}/v1/tasks/batch", servers[0].base))
        .json(&json!({ "tasks": tasks }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    drop(servers);
    let url = std::env::var("TASKTAPE_TEST_PG").unwrap();
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let from = started.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let rows = db
        .query(
            &format!(
                "SELECT started_at FROM \"{schema}\".tasks \
                 WHERE started_at IS NOT NULL AND started_at < $1 ORDER BY started_at"
            ),
            &[&(from + secs as i64 * 1000)],
        )
        .await
        .unwrap();
    let starts: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    let mut most = 0;
    let mut back = 0;
    for (n, at) in starts.iter().enumerate() {
        while starts[back] <= at - 60_000 {
            back += 1;
        }
        most = most.max(n + 1 - back);
    }
    (most, starts.len() as f64 / (secs as f64 / 60.0))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("TASKTAPE_FLOW_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = std::env::var("TASKTAPE_FLOW_STORE").unwrap_or_else(|_| "sqlite".into());
    println!("flow bench ({store}), median of {runs} runs");
    let only = std::env::var("TASKTAPE_FLOW_ONLY").unwrap_or_default();
    if only.is_empty() || only == "fair" {
        let mut rates = Vec::new();
        for flow in [true, false] {
            let results: Vec<(f64, f64, f64)> =
                (0..runs).map(|_| runtime.block_on(run(flow))).collect();
            let label = if flow {
                "with [flow] key"
            } else {
                "without [flow]"
            };
            let first = median(results.iter().map(|r| r.0).collect());
            let last = median(results.iter().map(|r| r.1).collect());
            let rate = median(results.iter().map(|r| r.2).collect());
            println!(
                "[{label}] B's first start after its submit (ms)   {first:>9.0}   target <= 100 (with the key)"
            );
            println!(
                "[{label}] B's ten finished after its submit (ms)  {last:>9.0}   target <= 1000 (with the key)"
            );
            println!("[{label}] A's tasks/s over the 4 s after          {rate:>9.0}");
            rates.push(rate);
        }
        println!(
            "A's throughput with the key / without                  {:>9.2}   target >= 0.90",
            rates[0] / rates[1]
        );
    }
    if only.is_empty() || only == "keys" {
        let (mut rates, mut steady) = (Vec::new(), Vec::new());
        for flow in [true, false] {
            let results: Vec<(f64, f64)> = (0..runs)
                .map(|_| runtime.block_on(many_keys(flow)))
                .collect();
            let rate = median(results.iter().map(|r| r.0).collect());
            let steady_rate = median(results.iter().map(|r| r.1).collect());
            let label = if flow {
                "with [flow] key"
            } else {
                "without [flow]"
            };
            println!(
                "[{label}] 100,000 over 10,000 keys, first 20,000 from run_at, tasks/s {rate:>9.0}"
            );
            println!(
                "[{label}] the same, steady drain (2,000th to 22,000th), tasks/s    {steady_rate:>9.0}"
            );
            rates.push(rate);
            steady.push(steady_rate);
        }
        println!(
            "from run_at, with the key / without                     {:>9.2}",
            rates[0] / rates[1]
        );
        println!(
            "steady claims over 10,000 keys / without keys           {:>9.2}   target >= 0.80",
            steady[0] / steady[1]
        );
    }
    if only == "binding" {
        for _ in 0..runs {
            let (rate, peak, sampled) = runtime.block_on(spread(true, 100));
            println!(
                "[key_concurrency 2] 3 instances, 200 keys x 100 tasks (the key's limit binds): tasks/s {rate:>6.0}, peak running per key {peak} (sampled: {sampled})   target <= 2"
            );
        }
    }
    if only == "spread" {
        let mut rates = Vec::new();
        for flow in [true, false] {
            let results: Vec<(f64, i64, i64)> = (0..runs)
                .map(|_| runtime.block_on(spread(flow, 20)))
                .collect();
            let rate = median(results.iter().map(|r| r.0).collect());
            let peak = results.iter().map(|r| r.1).max().unwrap_or(0);
            let sampled = results.iter().map(|r| r.2).max().unwrap_or(0);
            let label = if flow {
                "key_concurrency 2"
            } else {
                "without [flow]"
            };
            println!(
                "[{label}] 3 instances, 1,000 keys x 20 tasks: tasks/s {rate:>9.0}, peak running per key {peak} (sampled: {sampled})"
            );
            rates.push(rate);
        }
        println!(
            "throughput with key_concurrency 2 / without           {:>9.2}   target >= 0.80",
            rates[0] / rates[1]
        );
        // Where the key's limit binds (200 keys × 100 tasks): the peak must
        // reach 2 and go no further.
        let (rate, peak, sampled) = runtime.block_on(spread(true, 100));
        println!(
            "[key_concurrency 2] 3 instances, 200 keys x 100 tasks (the key's limit binds): tasks/s {rate:>6.0}, peak running per key {peak} (sampled: {sampled})   target <= 2"
        );
    }
    if only == "rate" {
        let secs: u64 = std::env::var("TASKTAPE_FLOW_RATE_SECS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(300);
        let (most, per_minute) = runtime.block_on(shared_rate(secs));
        println!(
            "3 instances, rate 600/min, {secs} s: most starts in any 60 s window {most:>6}   target <= 600"
        );
        println!(
            "3 instances, rate 600/min, {secs} s: starts per minute on average  {per_minute:>6.0}   target 570-630"
        );
    }
}
