//! Schedules: one loop per `[schedules.NAME]` that submits the schedule's
//! task at each slot with the idempotency key `schedule:<name>:<slot>`, so
//! that every instance sharing a store may submit it and one task is made.
//! At start the loop catches up on slots missed while no instance ran
//! (`catch_up`), from the latest slot key in the store. Slots come from
//! the manager's clock.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::submitter::Submitter;
use super::{Life, back_off};
use crate::cron::{CatchUp, MAX_CATCH_UP, Schedule};
use crate::manager::{SubmitError, SubmitOptions};
use crate::store::StoreError;
use crate::time::Timestamp;
use tasktape_wire::jobs::ScheduleInfo;

/// Submits the schedules' tasks.
pub(crate) struct Scheduler {
    pub(crate) submitter: Arc<Submitter>,
    pub(crate) schedules: Vec<Schedule>,
}

impl Scheduler {
    /// Starts a loop per schedule whose op is registered here.
    pub(crate) fn start(self: &Arc<Self>) {
        let submitter = &self.submitter;
        for schedule in self.schedules.iter().cloned() {
            if submitter.ops.get(&schedule.op).is_none() {
                warn!(schedule = %schedule.name, op = %schedule.op, "schedule skipped: its op is not registered here");
                continue;
            }
            let this = Arc::clone(self);
            submitter
                .life
                .tracker
                .spawn(async move { this.schedule_loop(schedule).await });
        }
    }

    /// The schedules with their last and next slots (`GET /v1/schedules`).
    pub(crate) async fn infos(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        let now = self.submitter.clock.now();
        let mut out = Vec::new();
        for schedule in &self.schedules {
            out.push(ScheduleInfo {
                name: schedule.name.clone(),
                op: schedule.op.clone(),
                cron: schedule.cron.as_str().to_owned(),
                timezone: schedule.timezone.clone(),
                catch_up: schedule.catch_up.as_str().to_owned(),
                params: schedule.params.clone(),
                last_slot: self.last_slot(schedule).await?,
                next_slot: schedule.next_after(now),
            });
        }
        Ok(out)
    }

    /// The latest slot submitted, from the store's keys.
    async fn last_slot(&self, schedule: &Schedule) -> Result<Option<Timestamp>, StoreError> {
        let key = self
            .submitter
            .store
            .latest_key(&schedule.key_prefix())
            .await?;
        Ok(key.and_then(|key| schedule.slot_of(&key)))
    }

    fn life(&self) -> &Life {
        &self.submitter.life
    }

    async fn schedule_loop(&self, schedule: Schedule) {
        let mut after = self.catch_up(&schedule).await;
        loop {
            let Some(slot) = schedule.next_after(after) else {
                warn!(schedule = %schedule.name, "the schedule's cron expression matches no future time");
                return;
            };
            let wait = self.submitter.clock.sleep_until(slot);
            if !Life::unless(&self.life().stopping, wait).await {
                return;
            }
            self.submit_slot(&schedule, slot).await;
            after = slot;
        }
    }

    /// Submits the slots missed since the latest one in the store, as
    /// `catch_up` says; returns the time to look for the next slot after.
    async fn catch_up(&self, schedule: &Schedule) -> Timestamp {
        let now = self.submitter.clock.now();
        let last = match self.last_slot(schedule).await {
            Ok(last) => last,
            Err(error) => {
                warn!(schedule = %schedule.name, %error, "could not read the schedule's last slot; not catching up");
                None
            }
        };
        // Never run before (or its tasks were purged): start from now.
        let Some(last) = last else { return now };
        // Every missed slot up to now, keeping only the latest MAX_CATCH_UP.
        let mut latest = std::collections::VecDeque::with_capacity(MAX_CATCH_UP);
        let mut missed = 0usize;
        let mut at = last;
        while let Some(slot) = schedule.next_after(at).filter(|slot| *slot <= now) {
            if latest.len() == MAX_CATCH_UP {
                latest.pop_front();
            }
            latest.push_back(slot);
            missed += 1;
            at = slot;
        }
        if missed == 0 {
            return now;
        }
        let chosen: Vec<Timestamp> = match schedule.catch_up {
            CatchUp::None => Vec::new(),
            CatchUp::Last => latest.back().copied().into_iter().collect(),
            CatchUp::All => {
                if missed > MAX_CATCH_UP {
                    warn!(schedule = %schedule.name, missed, "more than {MAX_CATCH_UP} slots were missed; running the latest {MAX_CATCH_UP}");
                }
                latest.into_iter().collect()
            }
        };
        info!(schedule = %schedule.name, missed, running = chosen.len(), catch_up = schedule.catch_up.as_str(), "catching up on missed slots");
        for slot in chosen {
            self.submit_slot(schedule, slot).await;
        }
        now
    }

    /// Submits the task of `slot`, retrying a failing store until the next
    /// slot is due (a short outage delays a slot, it does not lose it).
    async fn submit_slot(&self, schedule: &Schedule, slot: Timestamp) {
        let clock = &self.submitter.clock;
        let mut backoff = Duration::from_millis(100);
        let give_up = schedule
            .next_after(slot.max(clock.now()))
            .unwrap_or_else(|| clock.now().add_millis(3_600_000));
        while clock.now() < give_up {
            let options = SubmitOptions {
                idempotency_key: Some(schedule.key(slot)),
                metadata: schedule.metadata.clone(),
                ..SubmitOptions::default()
            };
            let submitted = self
                .submitter
                .submit(
                    &schedule.op,
                    schedule.params.clone(),
                    options,
                    self.submitter.tracing.capture(),
                )
                .await;
            match submitted {
                Ok(submitted) => {
                    if submitted.created {
                        info!(schedule = %schedule.name, %slot, task_id = %submitted.task.task_id, "scheduled task submitted");
                    }
                    return;
                }
                Err(SubmitError::Store(error)) => {
                    warn!(schedule = %schedule.name, %slot, %error, "could not submit the scheduled task; retrying");
                }
                Err(SubmitError::ShuttingDown) => return,
                Err(error) => {
                    warn!(schedule = %schedule.name, %slot, %error, "the scheduled task was refused");
                    return;
                }
            }
            if !Life::unless(&self.life().stopping, tokio::time::sleep(backoff)).await {
                return;
            }
            back_off(&mut backoff, Duration::from_secs(5));
        }
        warn!(schedule = %schedule.name, %slot, "gave up on the slot: the store failed until the next one was due");
    }
}
