//! Counters, gauges and histograms kept with atomics, and their Prometheus
//! text rendering. The manager records what tasks do ([`Metrics`]); the
//! server adds its own families and renders everything on `GET /metrics`.
//! An unlabelled metric's update is one atomic add; a labelled family's
//! `with` first joins the label values into a key and looks it up in a
//! mutex-guarded map (callers on hot paths keep the returned `Arc`).
//!
//! Why not `prometheus-client` (`cargo bench -p tasktape-core --bench
//! metrics`, medians, this machine): a labelled counter inc costs the same
//! (71–96 ns both), a histogram observe — once per store operation — is
//! 20–25 % dearer there (11–13 ns against 9–10 ns), and a scrape is 4–6×
//! cheaper there (~100 µs against 400–600 µs, a cold path). Switching would
//! also change `/metrics` from the Prometheus 0.0.4 text format that
//! scrapers read today to OpenMetrics text. So we keep these.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod exposition;

pub use exposition::Exposition;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away (never below zero).
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
                Some(value.saturating_sub(1))
            });
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds (seconds) for store operations: 50 µs to 5 s.
pub const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Bucket bounds (seconds) for task runs: 5 ms to an hour.
pub const TASK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Bucket bounds (seconds) for HTTP requests.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0,
];

/// Durations in fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with `bounds` (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// What a family's members are.
pub trait Metric: Send + Sync {
    /// Makes a member.
    fn make(bounds: &'static [f64]) -> Self;
}

impl Metric for Counter {
    fn make(_: &'static [f64]) -> Self {
        Counter::default()
    }
}

impl Metric for Gauge {
    fn make(_: &'static [f64]) -> Self {
        Gauge::default()
    }
}

impl Metric for Histogram {
    fn make(bounds: &'static [f64]) -> Self {
        Histogram::new(bounds)
    }
}

/// One metric per combination of label values.
#[derive(Debug)]
pub struct Family<M> {
    labels: &'static [&'static str],
    bounds: &'static [f64],
    /// Keyed by the label values joined with U+001F.
    members: Mutex<BTreeMap<String, Arc<M>>>,
}

const SEPARATOR: char = '\u{1f}';

impl<M: Metric> Family<M> {
    /// A family with these label names (and histogram bounds, if any).
    pub fn new(labels: &'static [&'static str], bounds: &'static [f64]) -> Self {
        Family {
            labels,
            bounds,
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// The member for `values` (one per label name, in order).
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        let key = values.join(&SEPARATOR.to_string());
        let mut members = self
            .members
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        Arc::clone(
            members
                .entry(key)
                .or_insert_with(|| Arc::new(M::make(self.bounds))),
        )
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<M>)> {
        self.members
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .map(|(key, member)| {
                let values = if self.labels.is_empty() {
                    Vec::new()
                } else {
                    key.split(SEPARATOR).map(str::to_owned).collect()
                };
                (values, Arc::clone(member))
            })
            .collect()
    }
}

/// What the manager records.
#[derive(Debug)]
pub struct Metrics {
    /// Tasks created, by op.
    pub submitted: Family<Counter>,
    /// Tasks ended, by op and status.
    pub finished: Family<Counter>,
    /// Run time of ended tasks (start to finish), by op and status.
    pub duration: Family<Histogram>,
    /// Events written to tapes through this instance.
    pub events_appended: Arc<Counter>,
    /// Finished tasks retention deleted through this instance.
    pub purged: Arc<Counter>,
    /// Events of deleted tasks' tapes this instance swept.
    pub swept: Arc<Counter>,
    /// Store operation latency, indexed by [`StoreOperation`].
    pub store: Vec<Histogram>,
}

/// A store operation the manager times; indexes [`Metrics::store`] (no
/// string search on the hot path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOperation {
    /// `create`.
    Create,
    /// `start`.
    Start,
    /// `claim`.
    Claim,
    /// `append`.
    Append,
    /// `append_queued`.
    AppendQueued,
    /// `finish`.
    Finish,
    /// `reap`.
    Reap,
    /// `request_cancel`.
    RequestCancel,
    /// `get`.
    Get,
    /// `list`.
    List,
    /// `counts`.
    Counts,
    /// `finished_per_minute`.
    FinishedPerMinute,
    /// `events`.
    Events,
    /// `last_seq`.
    LastSeq,
    /// `renew_lease`.
    RenewLease,
    /// `expired`.
    Expired,
    /// `leftovers`.
    Leftovers,
    /// `pending_ops`.
    Pending,
    /// `delete`.
    Delete,
    /// `purge`.
    Purge,
    /// `sweep`.
    Sweep,
    /// `ready`.
    Ready,
    /// `next_due`.
    NextDue,
    /// `latest_key`.
    LatestKey,
    /// `check_schema`.
    CheckSchema,
}

impl StoreOperation {
    /// Every operation, in [`Metrics::store`]'s order.
    pub const ALL: [StoreOperation; 25] = [
        StoreOperation::Create,
        StoreOperation::Start,
        StoreOperation::Claim,
        StoreOperation::Append,
        StoreOperation::AppendQueued,
        StoreOperation::Finish,
        StoreOperation::Reap,
        StoreOperation::RequestCancel,
        StoreOperation::Get,
        StoreOperation::List,
        StoreOperation::Counts,
        StoreOperation::FinishedPerMinute,
        StoreOperation::Events,
        StoreOperation::LastSeq,
        StoreOperation::RenewLease,
        StoreOperation::Expired,
        StoreOperation::Leftovers,
        StoreOperation::Pending,
        StoreOperation::Delete,
        StoreOperation::Purge,
        StoreOperation::Sweep,
        StoreOperation::Ready,
        StoreOperation::NextDue,
        StoreOperation::LatestKey,
        StoreOperation::CheckSchema,
    ];

    /// The `operation` label.
    pub fn name(self) -> &'static str {
        match self {
            StoreOperation::Create => "create",
            StoreOperation::Start => "start",
            StoreOperation::Claim => "claim",
            StoreOperation::Append => "append",
            StoreOperation::AppendQueued => "append_queued",
            StoreOperation::Finish => "finish",
            StoreOperation::Reap => "reap",
            StoreOperation::RequestCancel => "request_cancel",
            StoreOperation::Get => "get",
            StoreOperation::List => "list",
            StoreOperation::Counts => "counts",
            StoreOperation::FinishedPerMinute => "finished_per_minute",
            StoreOperation::Events => "events",
            StoreOperation::LastSeq => "last_seq",
            StoreOperation::RenewLease => "renew_lease",
            StoreOperation::Expired => "expired",
            StoreOperation::Leftovers => "leftovers",
            StoreOperation::Pending => "pending_ops",
            StoreOperation::Delete => "delete",
            StoreOperation::Purge => "purge",
            StoreOperation::Sweep => "sweep",
            StoreOperation::Ready => "ready",
            StoreOperation::NextDue => "next_due",
            StoreOperation::LatestKey => "latest_key",
            StoreOperation::CheckSchema => "check_schema",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            submitted: Family::new(&["op"], &[]),
            finished: Family::new(&["op", "status"], &[]),
            duration: Family::new(&["op", "status"], TASK_BUCKETS),
            events_appended: Arc::default(),
            purged: Arc::default(),
            swept: Arc::default(),
            store: StoreOperation::ALL
                .iter()
                .map(|_| Histogram::new(STORE_BUCKETS))
                .collect(),
        }
    }
}

impl Metrics {
    /// Renders these into `out`.
    pub fn render(&self, out: &mut Exposition) {
        out.counters(
            "tasktape_tasks_submitted_total",
            "Tasks created through this instance, by op.",
            &self.submitted,
        );
        out.counters(
            "tasktape_tasks_finished_total",
            "Tasks this instance finished, by op and terminal status.",
            &self.finished,
        );
        out.histograms(
            "tasktape_task_duration_seconds",
            "Run time of tasks this instance finished (start to final), by op and status.",
            &self.duration,
        );
        out.single(
            "tasktape_events_appended_total",
            "Events appended to tapes through this instance.",
            "counter",
            self.events_appended.get(),
        );
        out.single(
            "tasktape_tasks_purged_total",
            "Finished tasks deleted by retention (retention_days) through this instance.",
            "counter",
            self.purged.get(),
        );
        out.single(
            "tasktape_events_swept_total",
            "Events of deleted tasks' tapes swept by this instance.",
            "counter",
            self.swept.get(),
        );
        let name = "tasktape_store_operation_duration_seconds";
        out.header(
            name,
            "Latency of store operations, by operation.",
            "histogram",
        );
        for (operation, histogram) in StoreOperation::ALL
            .iter()
            .map(|op| op.name())
            .zip(&self.store)
        {
            if histogram.count() > 0 {
                out.histogram_lines(name, &["operation"], &[(*operation).to_owned()], histogram);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.submitted.with(&["echo"]).inc();
        metrics.submitted.with(&["echo"]).inc();
        metrics.finished.with(&["we\"ird\\op", "failed"]).inc();
        metrics
            .duration
            .with(&["echo", "succeeded"])
            .observe(Duration::from_millis(30));
        let mut out = Exposition::new();
        metrics.render(&mut out);
        let text = out.finish();
        assert!(
            text.contains("tasktape_tasks_submitted_total{op=\"echo\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "tasktape_tasks_finished_total{op=\"we\\\"ird\\\\op\",status=\"failed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tasktape_task_duration_seconds_bucket{op=\"echo\",status=\"succeeded\",le=\"0.025\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tasktape_task_duration_seconds_bucket{op=\"echo\",status=\"succeeded\",le=\"0.05\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tasktape_task_duration_seconds_count{op=\"echo\",status=\"succeeded\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn gauges_never_go_below_zero() {
        let gauge = Gauge::default();
        gauge.inc();
        gauge.dec();
        gauge.dec();
        assert_eq!(gauge.get(), 0);
    }
}
