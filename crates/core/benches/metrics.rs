//! Our metrics (`tasktape_core::metrics`) against `prometheus-client` (the
//! OpenMetrics crate) on the paths tasktape takes: a labelled counter per
//! finished task, a histogram per store operation and per request, and a
//! scrape. Prints ns per operation, medians of 5 rounds.
//!
//!     cargo bench -p tasktape-core --bench metrics

use std::hint::black_box;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use prometheus_client::registry::Registry;
use tasktape_core::metrics::{
    Counter, Exposition, Family, Histogram, Metrics, STORE_BUCKETS, StoreOperation,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Finished {
    op: String,
    status: String,
}

const N: u32 = 1_000_000;

fn median(mut rounds: Vec<f64>) -> f64 {
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn per_op(mut body: impl FnMut(u32)) -> f64 {
    median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                for i in 0..N {
                    body(i);
                }
                started.elapsed().as_nanos() as f64 / f64::from(N)
            })
            .collect(),
    )
}

fn main() {
    let ops = ["echo", "resize", "import", "backup"];
    let statuses = ["succeeded", "failed", "cancelled"];

    let ours: Family<Counter> = Family::new(&["op", "status"], &[]);
    let a = per_op(|i| {
        let (op, status) = (ops[(i % 4) as usize], statuses[(i % 3) as usize]);
        ours.with(&[op, status]).inc();
    });
    let theirs = PcFamily::<Finished, PcCounter>::default();
    let b = per_op(|i| {
        let labels = Finished {
            op: ops[(i % 4) as usize].to_owned(),
            status: statuses[(i % 3) as usize].to_owned(),
        };
        theirs.get_or_create(&labels).inc();
    });
    println!("labelled counter inc     ours {a:6.1} ns   prometheus-client {b:6.1} ns");

    let ours = Histogram::new(STORE_BUCKETS);
    let a = per_op(|i| ours.observe(Duration::from_micros(u64::from(i % 5000))));
    let theirs = PcHistogram::new(STORE_BUCKETS.iter().copied());
    let b = per_op(|i| theirs.observe(Duration::from_micros(u64::from(i % 5000)).as_secs_f64()));
    println!("histogram observe        ours {a:6.1} ns   prometheus-client {b:6.1} ns");

    // A scrape of what a busy instance holds: 20 store histograms, 4×3 finished
    // counters and histograms.
    let metrics = Metrics::default();
    for op in StoreOperation::ALL {
        metrics.store[op as usize].observe(Duration::from_micros(300));
    }
    for op in ops {
        for status in statuses {
            metrics.finished.with(&[op, status]).inc();
            metrics
                .duration
                .with(&[op, status])
                .observe(Duration::from_millis(40));
        }
    }
    let scrapes = 2_000;
    let started = Instant::now();
    for _ in 0..scrapes {
        let mut out = Exposition::new();
        metrics.render(&mut out);
        black_box(out.finish());
    }
    let a = started.elapsed().as_micros() as f64 / f64::from(scrapes);
    let mut registry = Registry::default();
    let finished = PcFamily::<Finished, PcCounter>::default();
    let duration = PcFamily::<Finished, PcHistogram>::new_with_constructor(|| {
        PcHistogram::new(STORE_BUCKETS.iter().copied())
    });
    registry.register("tasktape_tasks_finished", "finished", finished.clone());
    registry.register(
        "tasktape_task_duration_seconds",
        "run time",
        duration.clone(),
    );
    for op in ops {
        for status in statuses {
            let labels = Finished {
                op: op.to_owned(),
                status: status.to_owned(),
            };
            finished.get_or_create(&labels).inc();
            duration.get_or_create(&labels).observe(0.04);
        }
    }
    for op in StoreOperation::ALL {
        let histogram = PcHistogram::new(STORE_BUCKETS.iter().copied());
        histogram.observe(0.0003);
        registry.register(format!("tasktape_store_{}", op.name()), "store", histogram);
    }
    let started = Instant::now();
    for _ in 0..scrapes {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        black_box(out);
    }
    let b = started.elapsed().as_micros() as f64 / f64::from(scrapes);
    println!("scrape (render)          ours {a:6.1} µs   prometheus-client {b:6.1} µs");
}
