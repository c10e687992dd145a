//! The Prometheus text exposition (format 0.0.4) of the metrics: `# HELP`,
//! `# TYPE`, one line per member, histograms as cumulative buckets.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{Counter, Family, Gauge, Histogram};

/// Writes Prometheus' text exposition format.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// The `# HELP` and `# TYPE` lines of a metric.
    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A counter or gauge without labels.
    pub fn single(&mut self, name: &str, help: &str, kind: &str, value: u64) {
        self.header(name, help, kind);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A family of counters.
    pub fn counters(&mut self, name: &str, help: &str, family: &Family<Counter>) {
        self.header(name, help, "counter");
        for (values, counter) in family.snapshot() {
            let labels = labels(family.labels, &values, None);
            let _ = writeln!(self.out, "{name}{labels} {}", counter.get());
        }
    }

    /// A family of gauges.
    pub fn gauges(&mut self, name: &str, help: &str, family: &Family<Gauge>) {
        self.header(name, help, "gauge");
        for (values, gauge) in family.snapshot() {
            let labels = labels(family.labels, &values, None);
            let _ = writeln!(self.out, "{name}{labels} {}", gauge.get());
        }
    }

    /// A family of histograms (seconds).
    pub fn histograms(&mut self, name: &str, help: &str, family: &Family<Histogram>) {
        self.header(name, help, "histogram");
        for (values, histogram) in family.snapshot() {
            self.histogram_lines(name, family.labels, &values, &histogram);
        }
    }

    pub(super) fn histogram_lines(
        &mut self,
        name: &str,
        names: &[&str],
        values: &[String],
        histogram: &Histogram,
    ) {
        let mut cumulative = 0;
        for (index, count) in histogram.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match histogram.bounds.get(index) {
                Some(bound) => format!("{bound}"),
                None => "+Inf".to_owned(),
            };
            let labels = labels(names, values, Some(&le));
            let _ = writeln!(self.out, "{name}_bucket{labels} {cumulative}");
        }
        let labels = labels(names, values, None);
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(self.out, "{name}_sum{labels} {sum}");
        let _ = writeln!(self.out, "{name}_count{labels} {}", histogram.count());
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// `{a="x",b="y"}` (with `le` last when given), or nothing without labels.
fn labels(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
