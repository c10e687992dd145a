//! The engine benchmark: the SQLite store and the manager in-process.
//!
//! Run: `cargo bench -p tasktape-store-sqlite --bench engine` (release build).
//! Prints one line per figure with the median of several runs; set
//! `TASKTAPE_BENCH_RUNS` to change how many (default 5) and
//! `TASKTAPE_BENCH_ONLY` to a set of letters (`ac`) to run only those figures,
//! `TASKTAPE_BENCH_PAGE_SIZE` to a page size other than the default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tasktape_core::model::{NewTask, Outcome, TaskId};
use tasktape_core::store::{Lease, StartOutcome, Store};
use tasktape_core::{
    CancellationToken, EventBody, Manager, ManagerConfig, OpRegistry, Reporter, Timestamp,
};
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

struct Bench {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn fresh() -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SqliteConfig::new(dir.path().join("bench.db"));
    if let Ok(page) = std::env::var("TASKTAPE_BENCH_PAGE_SIZE") {
        config.page_size = page.parse().expect("a page size in bytes");
    }
    let store = SqliteStore::open(config).expect("open");
    Bench {
        store: Arc::new(store),
        _dir: dir,
    }
}

async fn running(store: &Arc<dyn Store>) -> TaskId {
    let task_id = store
        .create(NewTask::new("bench", json!({})))
        .await
        .unwrap()
        .task
        .task_id;
    let lease = Lease {
        owner: "bench".into(),
        until: Timestamp::now().add_millis(3_600_000),
    };
    assert!(matches!(
        store.start(task_id, lease).await.unwrap(),
        StartOutcome::Started(_)
    ));
    task_id
}

async fn report_events(store: Arc<dyn Store>, task_id: TaskId, count: u64) {
    let reporter = Reporter::new(Arc::clone(&store), task_id, CancellationToken::new());
    for current in 1..=count {
        reporter
            .progress("bench", current, count, None)
            .await
            .unwrap();
    }
    // `final` is queued after every event above, so its commit means all committed.
    store
        .finish(task_id, Outcome::Succeeded(json!(null)))
        .await
        .unwrap();
}

/// (a) events/s through the Reporter on one task.
async fn reporter_one_task() -> f64 {
    let bench = fresh();
    let task_id = running(&bench.store).await;
    let count = 300_000;
    let started = Instant::now();
    report_events(Arc::clone(&bench.store), task_id, count).await;
    count as f64 / started.elapsed().as_secs_f64()
}

/// (b) events/s through Reporters on 100 concurrent tasks.
async fn reporter_hundred_tasks() -> f64 {
    let bench = fresh();
    let per_task = 5_000;
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(running(&bench.store).await);
    }
    let started = Instant::now();
    let writers: Vec<_> = ids
        .into_iter()
        .map(|task_id| tokio::spawn(report_events(Arc::clone(&bench.store), task_id, per_task)))
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    (100 * per_task) as f64 / started.elapsed().as_secs_f64()
}

/// (c) echo(count=5) tasks/s, submit → final committed, 64 closed-loop clients.
async fn echo_tasks() -> f64 {
    let bench = fresh();
    let config = ManagerConfig {
        default_concurrency: 256,
        ..ManagerConfig::default()
    };
    let manager = Manager::start(
        Arc::clone(&bench.store),
        OpRegistry::with_builtins(),
        config,
    )
    .await
    .unwrap();
    let (clients, per_client) = (64, 400);
    let started = Instant::now();
    let runs: Vec<_> = (0..clients)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let task_id = manager
                        .submit("echo", json!({"count": 5}), None)
                        .await
                        .unwrap()
                        .task
                        .task_id;
                    let watch = manager.watch(task_id);
                    let far = tokio::time::Instant::now() + Duration::from_secs(60);
                    // count + 3 events: the final is seq 8. The watch is registered
                    // before the read, so a later final is announced to it.
                    if manager.last_seq(task_id).await.unwrap() < Some(8) {
                        assert!(watch.wait_past(7, far).await, "echo did not finish");
                    }
                }
            })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    let rate = (clients * per_client) as f64 / started.elapsed().as_secs_f64();
    manager.shutdown(Duration::from_secs(5)).await;
    rate
}

/// (d) follower wake latency: commit announced → waiting follower running again.
async fn wake_latency() -> (Duration, Duration) {
    let bench = fresh();
    let task_id = running(&bench.store).await;
    let rounds = 2_000;
    let watch = bench.store.wake_hub().watch(task_id);
    let follower = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(rounds);
        let mut seen = 1;
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        // The producer's events are seqs 2..=rounds + 1; one wake may cover several.
        while seen < rounds as u64 + 1 {
            assert!(watch.wait_past(seen, far).await, "follower starved");
            let woken = Instant::now();
            seen = watch.announced();
            latencies.push(woken - watch.announced_at().unwrap());
        }
        latencies
    });
    for index in 0..rounds {
        let body = EventBody::Log {
            level: "info".into(),
            message: format!("{index}"),
        };
        bench.store.append(task_id, body).await.unwrap();
        // Let the follower settle so each commit finds it waiting.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let mut latencies = follower.await.unwrap();
    latencies.sort_unstable();
    (percentile(&latencies, 50), percentile(&latencies, 99))
}

/// (e) replay events/s of a 1,000,000-event tape, in pages of `page`.
async fn replay(store: &Arc<dyn Store>, task_id: TaskId, page: usize) -> f64 {
    let started = Instant::now();
    let (mut from_seq, mut seen) = (0, 0usize);
    loop {
        let tape = store
            .events(task_id, from_seq, page)
            .await
            .unwrap()
            .unwrap();
        let Some(last) = tape.events.last() else {
            break;
        };
        from_seq = last.seq + 1;
        seen += tape.events.len();
    }
    assert_eq!(seen, 1_000_002);
    seen as f64 / started.elapsed().as_secs_f64()
}

/// (f) store-level awaited appends/s on one task (each answered after its commit).
async fn awaited_appends() -> f64 {
    let bench = fresh();
    let task_id = running(&bench.store).await;
    let count = 20_000;
    let started = Instant::now();
    for current in 1..=count {
        let body = EventBody::Progress {
            phase: "bench".into(),
            current,
            total: count,
            detail: None,
        };
        bench.store.append(task_id, body).await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
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
    let runs: usize = std::env::var("TASKTAPE_BENCH_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("TASKTAPE_BENCH_ONLY").unwrap_or_else(|_| "abcdef".into());
    println!("tasktape engine benchmark (SQLite, in-process), median of {runs} runs");
    let row = |name: &str, value: f64, target: &str| {
        println!("{name:<42} {value:>12.0}   target {target}")
    };
    runtime.block_on(async {
        macro_rules! figure {
            ($letter:literal, $name:literal, $target:literal, $run:expr) => {
                if only.contains($letter) {
                    let mut values = Vec::new();
                    for _ in 0..runs {
                        values.push($run.await);
                    }
                    row($name, median(values), $target);
                }
            };
        }
        figure!(
            'a',
            "(a) reporter events/s, one task",
            ">= 150000",
            reporter_one_task()
        );
        figure!(
            'b',
            "(b) reporter events/s, 100 tasks",
            ">= 200000",
            reporter_hundred_tasks()
        );
        figure!('c', "(c) echo(count=5) tasks/s", ">= 20000", echo_tasks());
        if only.contains('d') {
            let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (p50, p99) = wake_latency().await;
                p50s.push(p50.as_secs_f64() * 1e6);
                p99s.push(p99.as_secs_f64() * 1e6);
            }
            row("(d) wake latency p50 (us)", median(p50s), "(none)");
            row("(d) wake latency p99 (us)", median(p99s), "<= 1000");
        }
        if only.contains('e') {
            let bench = fresh();
            let task_id = running(&bench.store).await;
            let built = Instant::now();
            report_events(Arc::clone(&bench.store), task_id, 1_000_000).await;
            println!(
                "  (wrote the 1,000,000-event tape in {:.1} s)",
                built.elapsed().as_secs_f64()
            );
            let store = &bench.store;
            figure!(
                'e',
                "(e) replay events/s, pages of 1000",
                ">= 2000000",
                replay(store, task_id, 1_000)
            );
            figure!(
                'e',
                "(e) replay events/s, pages of 10000",
                ">= 2000000",
                replay(store, task_id, 10_000)
            );
        }
        figure!(
            'f',
            "(f) awaited store appends/s, one task",
            ">= 30000",
            awaited_appends()
        );
    });
}
