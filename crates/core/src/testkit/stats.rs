//! The timing half of the stores' `stats` benches: with a store already
//! filled with `tasks` finished tasks, times 200 calls each of `counts()`
//! and `finished_per_minute(last hour)` and prints p50/p99 in ms.

use std::time::Instant;

use crate::store::Store;
use crate::time::Timestamp;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Milliseconds of 200 calls of `call`, sorted.
async fn timed<F, Fut, T>(mut call: F) -> Vec<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut timings = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        std::hint::black_box(call().await);
        timings.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    timings.sort_by(f64::total_cmp);
    timings
}

/// Checks the counters hold `tasks` tasks, then times and prints both reads.
pub async fn time_counter_reads(store: &dyn Store, tasks: u64) {
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), tasks, "{counts:?}");
    let timings = timed(|| async { store.counts().await.unwrap() }).await;
    println!(
        "counts() with {tasks} tasks                 p50 {:.3} ms  p99 {:.3} ms   target <= 10",
        percentile(&timings, 0.5),
        percentile(&timings, 0.99)
    );
    let since = Timestamp::from_millis(Timestamp::now().as_millis() - 3_600_000);
    let minutes = store.finished_per_minute(since).await.unwrap();
    assert!(!minutes.is_empty());
    let timings = timed(|| async { store.finished_per_minute(since).await.unwrap() }).await;
    println!(
        "finished_per_minute(last hour), {} rows      p50 {:.3} ms  p99 {:.3} ms   target <= 10",
        minutes.len(),
        percentile(&timings, 0.5),
        percentile(&timings, 0.99)
    );
}

/// The delete-stall bench: fills one task's tape with `events` events,
/// then measures a concurrent writer's latency (`create`, one after
/// another, 1 ms apart) for 3 s as a baseline and again while a manager
/// deletes that task and sweeps its tape. Prints p50/p99/max of both and
/// how long the sweep took.
pub async fn time_delete_stall(store: std::sync::Arc<dyn Store>, events: u64) {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::model::{NewTask, Outcome};
    use crate::store::AppendAck;
    use crate::{Manager, ManagerConfig, OpRegistry};

    let task_id = super::running_task(&*store).await;
    let ack = Arc::new(AppendAck::default());
    let filling = Instant::now();
    for current in 1..=events {
        store
            .append_queued(
                task_id,
                &super::progress(current),
                Timestamp::now(),
                Arc::clone(&ack),
            )
            .await
            .unwrap();
    }
    store
        .finish(task_id, Outcome::Succeeded(serde_json::Value::Null))
        .await
        .unwrap();
    assert!(ack.error().is_none(), "{:?}", ack.error());
    println!(
        "filled one tape with {events} events in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let config = ManagerConfig {
        retention: None,
        retention_interval: Duration::from_secs(3600),
        ..ManagerConfig::default()
    };
    let manager = Manager::start(Arc::clone(&store), OpRegistry::new(), config)
        .await
        .unwrap();
    let writes = |until: Box<dyn Fn() -> bool + Send>| {
        let store = Arc::clone(&store);
        async move {
            let mut timings = Vec::new();
            while !until() {
                let started = Instant::now();
                store
                    .create(NewTask::new("other", serde_json::json!({})))
                    .await
                    .unwrap();
                timings.push(started.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            timings.sort_by(f64::total_cmp);
            timings
        }
    };
    let baseline_end = Instant::now() + Duration::from_secs(3);
    let baseline = writes(Box::new(move || Instant::now() >= baseline_end)).await;
    let sweeping = Instant::now();
    assert_eq!(
        manager.delete(task_id).await.unwrap(),
        crate::store::DeleteOutcome::Deleted
    );
    let deleted_in = sweeping.elapsed();
    let metrics = Arc::clone(manager.metrics());
    let total = events + 2;
    let during = writes(Box::new(move || metrics.swept.get() >= total)).await;
    let swept_in = sweeping.elapsed();
    let line = |label: &str, timings: &[f64]| {
        println!(
            "{label:<44} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} writes)",
            percentile(timings, 0.5),
            percentile(timings, 0.99),
            timings.last().copied().unwrap_or(0.0),
            timings.len()
        );
    };
    line("concurrent create, baseline", &baseline);
    line("concurrent create, while the tape is swept", &during);
    println!(
        "delete answered in {:.1} ms; {total} events swept in {:.1} s ({:.0} events/s)",
        deleted_in.as_secs_f64() * 1000.0,
        swept_in.as_secs_f64(),
        total as f64 / swept_in.as_secs_f64()
    );
    manager.shutdown(Duration::from_secs(1)).await;
}
