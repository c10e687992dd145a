//! Retention and sweeping, in the background and in small steps: finished
//! tasks older than `retention` are deleted a hundred at a time, and the
//! tapes of deleted tasks are swept a few thousand events per transaction,
//! so neither ever holds the store's writes up for long (a tape of millions
//! of events is gone after many short transactions, not one long one).

use std::time::Duration;

use tracing::{debug, warn};

use super::Manager;
use crate::time::Timestamp;

/// Tasks deleted per purge call (one short transaction).
const PURGE_BATCH: usize = 100;
/// Events deleted per sweep call (one short transaction).
const SWEEP_BATCH: usize = 2_000;
/// The pause between two batches, leaving the store to other writes.
const BREATHE: Duration = Duration::from_millis(2);

impl Manager {
    /// Runs [`Manager::retain_once`] every `retention_interval`, and at once
    /// when a delete left a tape to sweep.
    pub(super) async fn retention_loop(&self) {
        loop {
            self.retain_once().await;
            tokio::select! {
                () = tokio::time::sleep(self.inner.config.retention_interval) => {}
                () = self.inner.sweep_wanted.notified() => {}
                () = self.inner.background.cancelled() => return,
            }
        }
    }

    /// Deletes finished tasks past retention and sweeps deleted tapes, batch
    /// by batch, until none is left (or the store fails: next time then).
    pub async fn retain_once(&self) {
        let store = &self.inner.store;
        let metrics = &self.inner.metrics;
        if let Some(keep) = self.inner.config.retention {
            let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let cutoff = Timestamp::now().add_millis(-keep);
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
                if self.pause().await {
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
            if self.pause().await {
                return;
            }
        }
    }

    /// A short pause between batches; true when shutdown ended it.
    async fn pause(&self) -> bool {
        tokio::select! {
            () = tokio::time::sleep(BREATHE) => false,
            () = self.inner.background.cancelled() => true,
        }
    }
}
