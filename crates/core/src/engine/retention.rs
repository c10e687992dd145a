//! Retention and sweeping, in the background and in small steps: finished
//! tasks older than `retention` are deleted a hundred at a time, and the
//! tapes of deleted tasks are swept a few thousand events per transaction,
//! so neither ever holds the store's writes up for long (a tape of millions
//! of events is gone after many short transactions, not one long one).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::Life;
use crate::clock::{Clock, millis};
use crate::metrics::Metrics;
use crate::store::Store;

/// Tasks deleted per purge call (one short transaction).
const PURGE_BATCH: usize = 100;
/// Events deleted per sweep call (one short transaction).
const SWEEP_BATCH: usize = 2_000;
/// The pause between two batches, leaving the store to other writes.
const BREATHE: Duration = Duration::from_millis(2);

/// Deletes what is past retention, and deleted tasks' tapes.
pub(crate) struct Retention {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) life: Life,
    /// How long finished tasks are kept (`None`: for ever).
    pub(crate) retention: Option<Duration>,
    /// How often to look.
    pub(crate) interval: Duration,
    /// Woken when a delete left a tape to sweep.
    pub(crate) sweep_wanted: tokio::sync::Notify,
}

impl Retention {
    /// Runs [`Retention::once`] every `interval`, and at once when a
    /// delete left a tape to sweep, until shutdown ends.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            self.once().await;
            tokio::select! {
                () = self.clock.sleep(self.interval) => {}
                () = self.sweep_wanted.notified() => {}
                () = self.life.background.cancelled() => return,
            }
        }
    }

    /// Deletes finished tasks past retention and sweeps deleted tapes, batch
    /// by batch, until none is left (or the store fails: next time then).
    pub(crate) async fn once(&self) {
        let (store, metrics) = (&self.store, &self.metrics);
        if let Some(keep) = self.retention {
            let cutoff = self.clock.now().add_millis(-millis(keep));
            loop {
                match store.purge(cutoff, PURGE_BATCH).await {
                    Ok(purged) => {
                        metrics.purged.add(purged);
                        if purged > 0 {
                            debug!(purged, "retention deleted finished tasks");
                        }
                        if purged < PURGE_BATCH as u64 {
                            break;
                        }
                    }
                    Err(error) => {
                        warn!(%error, "retention could not delete old tasks; trying again later");
                        break;
                    }
                }
                if !self.breathe().await {
                    return;
                }
            }
        }
        loop {
            match store.sweep(SWEEP_BATCH).await {
                Ok(0) => break,
                Ok(swept) => metrics.swept.add(swept),
                Err(error) => {
                    warn!(%error, "could not sweep deleted tapes; trying again later");
                    break;
                }
            }
            if !self.breathe().await {
                return;
            }
        }
    }

    /// A short pause between batches; false when shutdown ended it.
    async fn breathe(&self) -> bool {
        Life::unless(&self.life.background, tokio::time::sleep(BREATHE)).await
    }
}
