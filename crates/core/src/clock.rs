//! Time the engine waits on, from one source: [`Clock`]. Every component
//! that waits for a moment (lease ticks and expiry, cancel grace, op time
//! limits, retry backoff, due timers, schedules) reads `now` and sleeps
//! through the manager's clock, so tests can run those rules on a
//! [`ManualClock`] in milliseconds instead of sleeping.
//!
//! Not on the clock: pauses between retries of a failing store (they wait
//! for real I/O to recover), the shutdown deadline (a real operator's
//! wait), and the times a store stamps on rows and events. A manual clock
//! suits a store one process owns (SQLite): a shared store judges leases by
//! its own clock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::time::Timestamp;

/// A future a clock resolves once its moment has come.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the engine's time comes from.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Resolves once `now()` has reached `at`.
    fn sleep_until(&self, at: Timestamp) -> Sleep;

    /// Resolves after `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.now().add_millis(millis(duration)))
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The system's clock and Tokio's timers: the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let wait = at.as_millis().saturating_sub(Timestamp::now().as_millis());
        self.sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]); sleepers
/// wake as soon as it passes their moment. For tests.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: std::sync::Arc::new(tokio::sync::watch::Sender::new(start.as_millis())),
        }
    }

    /// A clock standing at the system's now.
    pub fn starting_now() -> Self {
        Self::new(Timestamp::now())
    }

    /// Moves the clock forward by `by`, waking every sleeper whose moment
    /// came.
    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|now| *now = now.saturating_add(millis(by)));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(*self.now.borrow())
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut time = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; should
            // every clone be gone, no one can move time: sleep for ever.
            if time.wait_for(|now| *now >= at.as_millis()).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_it_passes_them() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let early = tokio::spawn(clock.sleep(Duration::from_millis(10)));
        let late = tokio::spawn(clock.sleep_until(Timestamp::from_millis(5_000)));
        tokio::task::yield_now().await;
        assert!(!early.is_finished() && !late.is_finished());
        clock.advance(Duration::from_millis(10));
        early.await.unwrap();
        assert!(!late.is_finished());
        clock.advance(Duration::from_secs(10));
        late.await.unwrap();
        assert_eq!(clock.now(), Timestamp::from_millis(11_010));
        // A moment already past resolves at once.
        clock.sleep_until(Timestamp::from_millis(0)).await;
    }
}
