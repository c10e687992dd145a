//! Timers for pending tasks that are due later (delayed tasks, the next
//! attempt of a retried one): at most one per op, armed for the earliest
//! `run_at` known, which kicks a claim when it fires and then looks up the
//! next one (`Store::next_due`). No polling: an idle server claims a task
//! within milliseconds of its `run_at`. On a shared store every instance
//! arms its timer from the `Due` signal, so whichever is free claims.

use std::time::Duration;

use tracing::{debug, warn};

use super::Manager;
use crate::time::Timestamp;

impl Manager {
    /// Makes sure a claim pass for `op` runs at `at` (or earlier).
    pub(super) fn arm_due(&self, op: &str, at: Timestamp) {
        if !self.inner.config.worker || self.inner.ops.get(op).is_none() {
            return;
        }
        {
            let mut state = self.state();
            if !state.accepting {
                return;
            }
            match state.due.get(op) {
                Some(armed) if *armed <= at => return,
                _ => {}
            }
            state.due.insert(op.to_owned(), at);
        }
        let manager = self.clone();
        let op = op.to_owned();
        tokio::spawn(async move {
            let wait = at.as_millis().saturating_sub(Timestamp::now().as_millis());
            let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = manager.inner.stopping.cancelled() => return,
            }
            {
                let mut state = manager.state();
                // An earlier timer took its place; that one looks further.
                if state.due.get(&op) != Some(&at) {
                    return;
                }
                state.due.remove(&op);
            }
            debug!(op, %at, "a pending task is due");
            manager.kick(&op);
            manager.rearm(&op).await;
        });
    }

    /// Arms the timer for `op`'s next pending task that is due later.
    pub(super) async fn rearm(&self, op: &str) {
        if !self.inner.config.worker || self.inner.ops.get(op).is_none() {
            return;
        }
        // Tasks due already are the claim's (kicked now, or by the next
        // run's end when the op is at its limit): look past them.
        match self.inner.store.next_due(op, Timestamp::now()).await {
            Ok(Some(at)) => self.arm_due(op, at),
            Ok(None) => {}
            Err(error) => warn!(op, %error, "could not look up when the next task is due"),
        }
    }

    /// Arms every registered op's timer (at start, after missed signals).
    pub(super) fn rearm_all(&self) {
        for name in self.inner.ops.names() {
            let manager = self.clone();
            let op = name.to_owned();
            tokio::spawn(async move { manager.rearm(&op).await });
        }
    }
}
