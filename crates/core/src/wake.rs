//! Wake-ups: stores announce "task T now has seq N" after each commit, and
//! followers wait for "seq > n" without polling the store.
//!
//! The hub only keeps entries for tasks somebody watches, so announcing a
//! commit nobody follows costs one map lookup. A watcher must be registered
//! *before* it reads the store; then a commit is either visible to its read
//! or announced to it afterwards, never lost in between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::model::TaskId;

/// Where stores announce commits and followers wait for them.
#[derive(Debug, Default)]
pub struct WakeHub {
    slots: Mutex<HashMap<TaskId, Weak<Slot>>>,
}

/// Stands in for a released slot (never observed: only `drop` releases it).
static DROPPED: Slot = Slot {
    seq: AtomicU64::new(0),
    announced_at: AtomicU64::new(0),
    notify: Notify::const_new(),
};

/// What announcement times are measured from (see [`Watch::announced_at`]).
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[derive(Debug, Default)]
struct Slot {
    seq: AtomicU64,
    /// Nanoseconds from [`epoch`] to the latest announcement, plus one
    /// (0: none yet). An atomic, so announcing takes no lock of its own.
    announced_at: AtomicU64,
    notify: Notify,
}

impl WakeHub {
    /// A hub with no watchers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Announces that `task_id`'s tape reached `seq` (committed).
    pub fn notify(&self, task_id: TaskId, seq: u64) {
        // Under the lock, so that a watch being dropped sees no stray
        // strong reference and always removes its entry.
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(slot) = slots.get(&task_id).and_then(Weak::upgrade) {
            let since = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            slot.announced_at.store(since + 1, Ordering::Release);
            slot.seq.fetch_max(seq, Ordering::AcqRel);
            slot.notify.notify_waiters();
        }
    }

    /// Starts watching `task_id`. Register before reading the store.
    pub fn watch(self: &Arc<Self>, task_id: TaskId) -> Watch {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = match slots.get(&task_id).and_then(Weak::upgrade) {
            Some(slot) => slot,
            None => {
                let slot = Arc::new(Slot::default());
                slots.insert(task_id, Arc::downgrade(&slot));
                slot
            }
        };
        Watch {
            hub: Arc::clone(self),
            task_id,
            slot: Some(slot),
        }
    }

    /// The tasks someone watches now (to catch them up after missed wake-ups).
    pub fn watched(&self) -> Vec<TaskId> {
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// How many tasks have watchers now.
    pub fn watched_tasks(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }
}

/// One follower's registration for one task; dropping it unregisters.
#[derive(Debug)]
pub struct Watch {
    hub: Arc<WakeHub>,
    task_id: TaskId,
    /// Always `Some` until drop, which releases it under the hub's lock.
    slot: Option<Arc<Slot>>,
}

impl Watch {
    /// The highest seq announced since this watch (or another on the same
    /// task) was registered.
    pub fn announced(&self) -> u64 {
        self.slot().seq.load(Ordering::Acquire)
    }

    fn slot(&self) -> &Slot {
        // Only `drop` takes the slot out.
        self.slot.as_deref().unwrap_or(&DROPPED)
    }

    /// When the latest announcement was made (for wake-latency measurements).
    pub fn announced_at(&self) -> Option<std::time::Instant> {
        match self.slot().announced_at.load(Ordering::Acquire) {
            0 => None,
            since => Some(epoch() + std::time::Duration::from_nanos(since - 1)),
        }
    }

    /// Waits until a seq greater than `seq` is announced or `deadline`
    /// passes; returns whether it was announced.
    pub async fn wait_past(&self, seq: u64, deadline: Instant) -> bool {
        loop {
            let notified = self.slot().notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.announced() > seq {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.announced() > seq;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut slots = self
            .hub
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Release our reference under the lock: whichever watch of this task
        // drops last then sees no strong reference left and removes the entry.
        drop(self.slot.take());
        if slots
            .get(&self.task_id)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            slots.remove(&self.task_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_commit_after_registration_wakes_the_watcher() {
        let hub = WakeHub::new();
        let task_id = TaskId::new();
        let watch = hub.watch(task_id);
        let waiter = tokio::spawn(async move {
            watch
                .wait_past(3, Instant::now() + Duration::from_secs(10))
                .await
        });
        tokio::task::yield_now().await;
        hub.notify(task_id, 3);
        hub.notify(task_id, 4);
        assert!(waiter.await.unwrap());
        assert_eq!(
            hub.watched_tasks(),
            0,
            "the dropped watch left its slot behind"
        );
    }

    #[tokio::test]
    async fn waiting_times_out_without_a_new_seq() {
        let hub = WakeHub::new();
        let task_id = TaskId::new();
        let first = hub.watch(task_id);
        let second = hub.watch(task_id);
        hub.notify(task_id, 2);
        hub.notify(TaskId::new(), 9);
        assert!(
            !first
                .wait_past(2, Instant::now() + Duration::from_millis(20))
                .await
        );
        assert!(second.wait_past(1, Instant::now()).await);
        drop(first);
        assert_eq!(hub.watched_tasks(), 1);
        drop(second);
        assert_eq!(hub.watched_tasks(), 0);
    }
}
