//! Queued appends' acknowledgements: where a Reporter's pipelined events
//! report how they landed, and what that means for the task's outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::{ErrorInfo, Outcome};
use crate::store::{AppendOutcome, Result};

/// Where a queued append reports its outcome (see [`Store::append_queued`]).
#[derive(Debug, Default)]
pub struct AppendAck {
    /// Counts the appends that land, when someone counts them.
    appended: std::sync::OnceLock<Arc<crate::metrics::Counter>>,
    dropped: AtomicBool,
    last_seq: AtomicU64,
    error: Mutex<Option<String>>,
}

impl AppendAck {
    /// Adds each append that lands to `counter` (the first counter set stays).
    pub fn count_into(&self, counter: &Arc<crate::metrics::Counter>) {
        let _ = self.appended.set(Arc::clone(counter));
    }

    /// Records one append's outcome.
    pub fn record(&self, outcome: &Result<AppendOutcome>) {
        match outcome {
            Ok(AppendOutcome::Appended { seq }) => {
                self.last_seq.fetch_max(*seq, Ordering::Relaxed);
                if let Some(counter) = self.appended.get() {
                    counter.inc();
                }
            }
            Ok(AppendOutcome::Dropped { .. } | AppendOutcome::NotFound) => {
                self.dropped.store(true, Ordering::Release);
            }
            Err(error) => {
                let mut slot = self
                    .error
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                slot.get_or_insert_with(|| error.to_string());
            }
        }
    }

    /// Whether some append was dropped (the task is no longer running).
    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    /// The highest seq committed so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    /// The first store error a queued append met, if any.
    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

/// The outcome to record once a reporter's queued events are all processed:
/// `Succeeded` becomes `Failed` with `store_error` if one of them failed.
pub fn outcome_after_events(outcome: Outcome, ack: &AppendAck) -> Outcome {
    match (outcome, ack.error()) {
        (Outcome::Succeeded(_), Some(message)) => Outcome::Failed(
            ErrorInfo::new("store_error", "an event of this task could not be stored")
                .with("detail", message),
        ),
        (outcome, _) => outcome,
    }
}
