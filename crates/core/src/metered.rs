//! A store wrapper that times every operation into [`Metrics`] and counts
//! appended events: a [`Metering`] layer ([`crate::store::layer`]). The
//! manager wraps the store it is given, so the server's reads are timed
//! too.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Metrics, StoreOperation};
use crate::store::layer::{Answer, Layered, StoreLayer};
use crate::store::{AppendAck, Result, Store};

/// Times a store's operations into `metrics`.
pub struct Metering {
    metrics: Arc<Metrics>,
}

impl StoreLayer for Metering {
    fn admit(&self, _operation: StoreOperation, ack: Option<&Arc<AppendAck>>) -> Result<()> {
        // A queued event is counted when it lands, not when it is queued.
        if let Some(ack) = ack {
            ack.count_into(&self.metrics.events_appended);
        }
        Ok(())
    }

    fn answered(&self, operation: StoreOperation, elapsed: Duration, answer: Answer) -> Duration {
        self.metrics.store[operation as usize].observe(elapsed);
        if answer == Answer::Appended {
            self.metrics.events_appended.inc();
        }
        Duration::ZERO
    }
}

/// `inner` with every operation timed.
pub type MeteredStore = Layered<Metering>;

impl Layered<Metering> {
    /// Times `inner`'s operations into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Layered::wrap(inner, Metering { metrics })
    }
}
