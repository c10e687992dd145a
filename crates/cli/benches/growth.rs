//! How the cost of each operation grows as the store fills: the release
//! `tasktape serve` on a store holding 1,000, 100,000 and 1,000,000
//! finished tasks (each with a two-event tape), and once with 100,000
//! pending ones (delayed by a day, so they wait while the figures are
//! taken: claims must pass them by); then one tape growing to 10,000,000
//! events.
//!
//! Run: `cargo bench -p tasktape --bench growth` (SQLite), or under
//! `scripts/with-postgres` with `TASKTAPE_GROWTH_STORE=postgres`.
//! `TASKTAPE_GROWTH_SIZES=1000,100000` picks the sizes,
//! `TASKTAPE_GROWTH_TAPE=10000000` the long tape's length (0: skip it).
//! Figures print one per line, like the load bench.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// A store to fill and serve: a data dir (SQLite) or a schema (PostgreSQL).
struct Target {
    dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Target {
    fn new(pg_url: Option<&str>) -> Target {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Target {
            dir: tempfile::tempdir().unwrap(),
            pg: pg_url.map(|url| (url.to_owned(), format!("growth_{nanos}"))),
        }
    }

    fn config(&self, extra: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("tasktape.toml");
        // Top-level keys first: `extra` may open a table ([ops.…]).
        let mut text = "default_concurrency = 256\nretention_days = 0\n".to_owned();
        if let Some((_, schema)) = &self.pg {
            text.push_str(&format!("pg_schema = \"{schema}\"\npg_pool_size = 32\n"));
        }
        text.push_str(extra);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the server; returns it with how long it took to listen.
    fn serve(&self, extra: &str) -> (Server, Duration) {
        let config = self.config(extra);
        let mut command = Command::new(env!("CARGO_BIN_EXE_tasktape"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.dir.path())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn,tasktape=info,tasktape_app=info")
            .env("NO_COLOR", "1")
            .env_remove("TASKTAPE_STORE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((url, _)) = &self.pg {
            command.env("TASKTAPE_STORE", url);
        }
        let started = Instant::now();
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
        let address = rx.recv_timeout(Duration::from_secs(300)).unwrap();
        let took = started.elapsed();
        (
            Server {
                child,
                base: format!("http://{address}"),
            },
            took,
        )
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` line in MiB (e.g. `RssAnon:`, `RssFile:`).
fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

const BASE_MS: i64 = 1_700_000_000_000;

/// The tasks `fill` writes: id `n` (a v4-shaped UUID from the number),
/// created `n` ms after `BASE_MS`.
fn task_id(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        n >> 32,
        (n >> 16) & 0xffff,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n
    )
}

fn ts(ms: i64) -> String {
    tasktape_core::Timestamp::from_millis(ms).to_string()
}

/// Writes `count` tasks straight into the store (the server stopped):
/// finished ones with `task_started` and `final`, or pending ones.
async fn fill(target: &Target, count: u64, pending: bool) {
    match &target.pg {
        None => fill_sqlite(target, count, pending),
        Some((url, schema)) => fill_postgres(url, schema, count, pending).await,
    }
}

fn fill_sqlite(target: &Target, count: u64, pending: bool) {
    let mut conn = rusqlite::Connection::open(target.dir.path().join("tasktape.db")).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut task = tx
            .prepare(
                "INSERT INTO tasks (task_id, op, status, created_at, started_at, finished_at, params, \
                 params_digest, result, attempt, metadata) VALUES (?1, 'echo', ?2, ?3, ?4, ?5, '{\"count\":5,\"delay_ms\":0}', \
                 'ab12', ?6, ?7, ?8)",
            )
            .unwrap();
        let mut event = tx
            .prepare("INSERT INTO events (task_id, seq, json) VALUES (?1, ?2, ?3)")
            .unwrap();
        for n in 0..count {
            let id = task_id(n);
            let bytes = uuid::Uuid::parse_str(&id).unwrap().as_bytes().to_vec();
            let created = BASE_MS + n as i64;
            if pending {
                task.execute(rusqlite::params![
                    bytes,
                    "pending",
                    created,
                    None::<i64>,
                    None::<i64>,
                    None::<String>,
                    0,
                    customer(n)
                ])
                .unwrap();
                continue;
            }
            task.execute(rusqlite::params![
                bytes,
                "succeeded",
                created,
                created + 1,
                created + 2,
                "{\"echoed\":5}",
                1,
                customer(n)
            ])
            .unwrap();
            event
                .execute(rusqlite::params![
                    bytes,
                    1,
                    format!("{{\"type\":\"task_started\",\"task_id\":\"{id}\",\"op\":\"echo\",\"seq\":1,\"ts\":\"{}\"}}", ts(created + 1))
                ])
                .unwrap();
            event
                .execute(rusqlite::params![
                    bytes,
                    2,
                    format!("{{\"type\":\"final\",\"status\":\"succeeded\",\"result\":{{\"echoed\":5}},\"seq\":2,\"ts\":\"{}\"}}", ts(created + 2))
                ])
                .unwrap();
        }
    }
    tasktape_store_sqlite::rebuild_counters(&tx).unwrap();
    tx.commit().unwrap();
    if pending {
        // Due in a day: they wait (and claims must pass them by cheaply).
        let tomorrow = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 86_400_000;
        conn.execute(
            "UPDATE tasks SET run_at = ?1 WHERE status = 'pending'",
            [tomorrow],
        )
        .unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .unwrap();
}

async fn fill_postgres(url: &str, schema: &str, count: u64, pending: bool) {
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let s = format!("\"{schema}\"");
    // Triggers off while filling (the counter trigger would update one
    // counter row a million times in one transaction); counters set after.
    db.batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let status = if pending { "pending" } else { "succeeded" };
    // Ids as task_id(n) makes them, so the bench can name tasks.
    let id = "(lpad(to_hex(n >> 32), 8, '0') || '-' || lpad(to_hex((n >> 16) & 65535), 4, '0') || '-4' \
              || lpad(to_hex(n & 4095), 3, '0') || '-8' || lpad(to_hex((n >> 12) & 4095), 3, '0') || '-' \
              || lpad(to_hex(n), 12, '0'))::uuid";
    let finished = if pending {
        "NULL::bigint, NULL::bigint, NULL::text, 0, 0"
    } else {
        "c + 1, c + 2, '{\"echoed\":5}', 2, 1"
    };
    db.batch_execute(&format!(
        "INSERT INTO {s}.tasks (task_id, op, status, created_at, started_at, finished_at, result, last_seq, attempt, \
         params, params_digest, metadata) \
         SELECT {id}, 'echo', '{status}', c, {finished}, '{{\"count\":5,\"delay_ms\":0}}', 'ab12', \
         '{{\"customer\":\"' || (n % 1000) || '\"}}' \
         FROM (SELECT n, {BASE_MS} + n AS c FROM generate_series(0::bigint, {}::bigint) AS n) g",
        count - 1
    ))
    .await
    .unwrap();
    if pending {
        db.batch_execute(&format!(
            "UPDATE {s}.tasks SET run_at = (extract(epoch FROM now()) * 1000)::bigint + 86400000 \
             WHERE status = 'pending'"
        ))
        .await
        .unwrap();
    } else {
        db.batch_execute(&format!(
            "INSERT INTO {s}.events (task_id, seq, json) \
             SELECT task_id, 1, '{{\"type\":\"task_started\",\"task_id\":\"' || task_id || '\",\"op\":\"echo\",\"seq\":1,\"ts\":\"2023-11-14T22:13:20.001Z\"}}' FROM {s}.tasks; \
             INSERT INTO {s}.events (task_id, seq, json) \
             SELECT task_id, 2, '{{\"type\":\"final\",\"status\":\"succeeded\",\"result\":{{\"echoed\":5}},\"seq\":2,\"ts\":\"2023-11-14T22:13:20.002Z\"}}' FROM {s}.tasks"
        ))
        .await
        .unwrap();
    }
    // The metadata index (its trigger is off with the others).
    db.batch_execute(&format!(
        "INSERT INTO {s}.task_metadata (key, value, at, task) \
         SELECT e.key, e.value, t.created_at, t.task_id \
         FROM {s}.tasks t, jsonb_each_text(t.metadata::jsonb) e WHERE t.metadata IS NOT NULL \
         ON CONFLICT DO NOTHING"
    ))
    .await
    .unwrap();
    db.batch_execute(&format!(
        "INSERT INTO {s}.task_counts AS c (status, shard, n) VALUES ('{status}', 0, {count}) \
         ON CONFLICT (status, shard) DO UPDATE SET n = c.n + {count}"
    ))
    .await
    .unwrap();
    // One statement each: VACUUM runs outside a transaction block.
    for table in ["tasks", "events", "task_metadata"] {
        db.batch_execute(&format!("VACUUM ANALYZE {s}.{table}"))
            .await
            .unwrap();
    }
}

/// The metadata of filled task `n`: one customer in 1,000.
fn customer(n: u64) -> String {
    format!("{{\"customer\":\"{}\"}}", n % 1000)
}

/// p50 and p99 of `rounds` sequential GETs of `path`, in ms.
async fn latency(client: &reqwest::Client, base: &str, path: &str, rounds: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let _ = response.bytes().await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (
        times[rounds / 2],
        times[(rounds * 99 / 100).min(rounds - 1)],
    )
}

/// echo(count=5) tasks/s, 16 closed-loop clients (submit, then long-poll to final).
async fn echo_rate(base: &str, per_client: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (client, base) = (client.clone(), base.to_owned());
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let handle =
                        post_json(&client, &format!("{base}/v1/echo"), &json!({"count": 5})).await;
                    let id = handle["task_id"].as_str().unwrap().to_owned();
                    loop {
                        let page = get_json(
                            &client,
                            &format!("{base}/v1/tasks/{id}/events?from_seq=0&wait=30&limit=1000"),
                        )
                        .await;
                        if page["task_status"] == "succeeded" {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    (16 * per_client) as f64 / started.elapsed().as_secs_f64()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    client
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn row(name: &str, value: String, target: &str) {
    println!("{name:<52} {value:>12}   target {target}");
}

/// The list cursor at the task created `n` ms after `BASE_MS`.
fn cursor_at(n: u64) -> String {
    use base64::Engine as _;
    let json = json!({"created_at": ts(BASE_MS + n as i64), "task_id": task_id(n)}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

async fn one_size(pg: Option<&str>, count: u64, pending: bool) {
    let target = Target::new(pg);
    // The first start migrates the empty store.
    drop(target.serve(""));
    let filled = Instant::now();
    fill(&target, count, pending).await;
    let kind = if pending { "pending" } else { "finished" };
    eprintln!(
        "filled {count} {kind} tasks in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let (server, startup) = target.serve("");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let label = format!("{count} {kind}");
    row(
        &format!("[{label}] start-up to listening (ms)"),
        format!("{:.0}", startup.as_secs_f64() * 1000.0),
        "< 1000",
    );
    let pid = server.child.id();
    row(
        &format!("[{label}] RSS after start (MiB)"),
        format!("{:.1}", rss_mib(pid)),
        &format!(
            "flat   (anon {:.1}, file-backed {:.1}: the binary and the store's mapped pages)",
            status_mib(pid, "RssAnon:"),
            status_mib(pid, "RssFile:")
        ),
    );
    let client = reqwest::Client::new();
    // A few running tasks for ?status=running.
    for _ in 0..3 {
        client
            .post(format!("{}/v1/echo", server.base))
            .json(&json!({"count": 100000, "delay_ms": 100}))
            .send()
            .await
            .unwrap();
    }
    let middle = count / 2;
    let rounds = 200;
    for (name, path) in [
        (
            "list first page (limit=100)",
            "/v1/tasks?limit=100".to_owned(),
        ),
        (
            "list ?status=running",
            "/v1/tasks?status=running&limit=100".to_owned(),
        ),
        (
            "list a page deep in the walk",
            format!("/v1/tasks?limit=100&cursor={}", cursor_at(middle)),
        ),
        (
            "list ?meta.customer=7 (1 task in 1,000)",
            "/v1/tasks?meta.customer=7&limit=100".to_owned(),
        ),
        (
            "GET /v1/tasks/{id}",
            format!("/v1/tasks/{}", task_id(middle)),
        ),
        (
            "events page of a task",
            format!("/v1/tasks/{}/events?from_seq=0", task_id(middle)),
        ),
    ] {
        let (p50, p99) = latency(&client, &server.base, &path, rounds).await;
        row(
            &format!("[{label}] {name} p50/p99 (ms)"),
            format!("{p50:.2}/{p99:.2}"),
            "<= 1.5x the 1000 figure",
        );
    }
    {
        row(
            &format!("[{label}] echo(count=5) tasks/s, 16 clients"),
            format!("{:.0}", echo_rate(&server.base, 60).await),
            "<= 1.5x slower than at 1000",
        );
    }
}

/// One tape growing to `length` events (an exec op printing progress
/// lines): append rate per million, then replay from the start and from
/// the middle.
async fn long_tape(pg: Option<&str>, length: u64) {
    let target = Target::new(pg);
    let script = target.dir.path().join("flood.sh");
    std::fs::write(
        &script,
        format!(
            "yes '{{\"progress\":{{\"phase\":\"p\",\"current\":1,\"total\":0}}}}' | head -n {length}\n"
        ),
    )
    .unwrap();
    let extra = format!(
        "max_events_per_task = {}\n[ops.flood]\ncommand = [\"sh\", \"{}\"]\n",
        length + 10,
        script.display()
    );
    let (server, _) = target.serve(&extra);
    let client = reqwest::Client::new();
    let handle = post_json(
        &client,
        &format!("{}/v1/tasks", server.base),
        &json!({"op": "flood", "params": {}}),
    )
    .await;
    let id = handle["task_id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let mut marks = vec![started];
    let mut next_mark = 1_000_000u64;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let page = get_json(
            &client,
            &format!("{}/v1/tasks/{id}/events?from_seq=0&limit=1", server.base),
        )
        .await;
        let last = page["last_seq"].as_u64().unwrap_or(0);
        while last >= next_mark {
            marks.push(Instant::now());
            next_mark += 1_000_000;
        }
        if page["task_status"] != "running" {
            assert_eq!(page["task_status"], "succeeded", "{page}");
            break;
        }
    }
    let rates: Vec<String> = marks
        .windows(2)
        .map(|pair| format!("{:.0}k", 1_000.0 / (pair[1] - pair[0]).as_secs_f64()))
        .collect();
    row(
        &format!("[tape {length}] append events/s per million"),
        rates.join(" "),
        "flat",
    );
    for (name, from) in [("from the start", 1), ("from the middle", length / 2)] {
        let started = Instant::now();
        let mut seq = from;
        let mut read = 0u64;
        while read < 200_000 {
            let page = get_json(
                &client,
                &format!(
                    "{}/v1/tasks/{id}/events?from_seq={seq}&limit=1000",
                    server.base
                ),
            )
            .await;
            let got = page["events"].as_array().unwrap().len() as u64;
            if got == 0 {
                break; // the end of a tape shorter than the 200,000 read
            }
            read += got;
            seq = page["next_from_seq"].as_u64().unwrap();
        }
        row(
            &format!("[tape {length}] replay {name}, pages of 1000 (events/s)"),
            format!("{:.0}", read as f64 / started.elapsed().as_secs_f64()),
            "flat",
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = match std::env::var("TASKTAPE_GROWTH_STORE")
        .unwrap_or_default()
        .as_str()
    {
        "" | "sqlite" => None,
        "postgres" => {
            Some(std::env::var("TASKTAPE_TEST_PG").expect("run under scripts/with-postgres"))
        }
        url => Some(url.to_owned()),
    };
    let sizes: Vec<u64> = std::env::var("TASKTAPE_GROWTH_SIZES")
        .unwrap_or_else(|_| "1000,100000,1000000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let tape: u64 = std::env::var("TASKTAPE_GROWTH_TAPE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    println!(
        "tasktape growth benchmark (release server, {}, loopback)",
        if pg.is_some() { "PostgreSQL" } else { "SQLite" }
    );
    runtime.block_on(async {
        for size in &sizes {
            one_size(pg.as_deref(), *size, false).await;
        }
        one_size(pg.as_deref(), 100_000, true).await;
        if tape > 0 {
            long_tape(pg.as_deref(), tape).await;
        }
    });
}
