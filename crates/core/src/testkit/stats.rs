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
