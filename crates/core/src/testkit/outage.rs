//! A store wrapper that plays an outage: for a set time every write of a
//! running task (its events, its finish) and every lease renewal fails with
//! [`StoreError::Unavailable`], as a restarting database would answer; all
//! else passes through. For tests of what survives a store outage. It can
//! also hold back claims' answers (a slow network or database: the claim
//! committed, its answer not yet back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::StoreOperation;
use crate::store::layer::{Answer, Layered, StoreLayer};
use crate::store::{AppendAck, Result, Store, StoreError};

/// The outage a [`FlakyStore`] plays.
#[derive(Default)]
pub struct Outage {
    down_until: Mutex<Option<Instant>>,
    refused: AtomicU64,
    claim_delay: Mutex<Duration>,
}

impl StoreLayer for Outage {
    fn admit(&self, operation: StoreOperation, _ack: Option<&Arc<AppendAck>>) -> Result<()> {
        use StoreOperation::{Append, AppendQueued, Finish, RenewLease};
        if !matches!(operation, Append | AppendQueued | Finish | RenewLease) {
            return Ok(());
        }
        match *self.down_until.lock().unwrap() {
            Some(until) if Instant::now() < until => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Unavailable {
                    message: "the test's outage".into(),
                })
            }
            _ => Ok(()),
        }
    }

    fn answered(&self, operation: StoreOperation, _elapsed: Duration, answer: Answer) -> Duration {
        match (operation, answer) {
            (StoreOperation::Claim, Answer::Claimed(started)) if started > 0 => {
                *self.claim_delay.lock().unwrap()
            }
            _ => Duration::ZERO,
        }
    }
}

/// `inner`, with task writes failing while an outage lasts.
pub type FlakyStore = Layered<Outage>;

impl Layered<Outage> {
    /// Wraps `inner` (up, until [`FlakyStore::fail_for`]).
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Layered::wrap(inner, Outage::default())
    }

    /// Holds back every claim's answer for `delay` after the claim was
    /// carried out in the store.
    pub fn delay_claim_answers(&self, delay: Duration) {
        *self.layer().claim_delay.lock().unwrap() = delay;
    }

    /// Fails task writes and lease renewals from now for `outage`.
    pub fn fail_for(&self, outage: Duration) {
        *self.layer().down_until.lock().unwrap() = Some(Instant::now() + outage);
    }

    /// How many calls the outage refused so far.
    pub fn refused(&self) -> u64 {
        self.layer().refused.load(Ordering::Relaxed)
    }
}
