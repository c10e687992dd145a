//! The tick (lapsed sessions, unacknowledged or orphaned runs, the
//! declarations other instances made, the daily purge) and the listings.

use std::collections::BTreeMap;
use std::sync::Arc;

use tasktape_wire::worker::{WorkerInfo, WorkerState};
use tracing::warn;

use super::records::{self, WorkerRecord};
use super::{Msg, Remote};
use crate::model::TaskId;
use crate::store::StoreError;

impl Remote {
    /// One tick: sessions whose heartbeats lapsed end `owner_lost`; claimed
    /// tasks the worker never acknowledged within the lease end
    /// `owner_lost`; declarations changed elsewhere are loaded.
    pub(crate) async fn tick(&self) {
        let now = self.clock.now();
        let ttl = self.ttl_ms();
        let (lapsed, unacked) = {
            let state = self.state();
            let lapsed: Vec<String> = state
                .sessions
                .iter()
                .filter(|(_, session)| now.as_millis() - session.last_heartbeat.as_millis() > ttl)
                .map(|(id, _)| id.clone())
                .collect();
            let unacked: Vec<TaskId> = state
                .runs
                .iter()
                .filter(|(_, run)| {
                    (!run.acked && now.as_millis() - run.claimed_at.as_millis() > ttl)
                        || !state.sessions.contains_key(&run.session)
                })
                .map(|(task_id, _)| *task_id)
                .collect();
            (lapsed, unacked)
        };
        for session in lapsed {
            self.end_session(
                &session,
                "owner_lost",
                "the worker stopped renewing its lease",
            )
            .await;
        }
        for task_id in unacked {
            if let Some(run) = self.state().runs.get(&task_id) {
                let _ = run.outbox.send(Msg::Lost(
                    "owner_lost",
                    "the worker never acknowledged the claim".to_owned(),
                ));
            }
        }
        if let Err(error) = self.load().await {
            warn!(%error, "could not read the remote ops' declarations");
        }
        if self.purge_due() {
            self.purge_gone(now).await;
        }
    }

    /// Another instance wrote a record: a worker's (a registration of an
    /// id whose session is here takes it over at once; a drain asked there
    /// reaches the worker here) or an op's declaration (loaded).
    pub(crate) async fn record_changed(&self, kind: &str, key: &str) {
        if kind == records::OP {
            if let Err(error) = self.load().await {
                warn!(%error, "could not read the remote ops' declarations");
            }
            return;
        }
        if kind != records::WORKER || !self.state().by_worker.contains_key(key) {
            return;
        }
        match records::one::<WorkerRecord>(&*self.store, records::WORKER, key).await {
            Ok(stored) => {
                let replaced = self.follow_record(key, stored.map(|(record, _)| record));
                self.end_replaced(replaced.into_iter().collect()).await;
            }
            Err(error) => warn!(%error, "could not read a remote worker's record"),
        }
    }

    /// After signals may have been missed: every session here checked
    /// against its stored record.
    pub(crate) async fn resync(&self) {
        if self.state().by_worker.is_empty() {
            return;
        }
        match records::all::<WorkerRecord>(&*self.store, records::WORKER).await {
            Ok(stored) => {
                let local: Vec<String> = self.state().by_worker.keys().cloned().collect();
                let mut replaced = Vec::new();
                for worker_id in local {
                    let record = stored
                        .iter()
                        .find(|(record, _)| record.worker_id == worker_id)
                        .map(|(record, _)| record.clone());
                    replaced.extend(self.follow_record(&worker_id, record));
                }
                self.end_replaced(replaced).await;
            }
            Err(error) => warn!(%error, "could not read the remote workers' records"),
        }
    }

    /// Acts on `worker_id`'s stored record for its session here: answers
    /// the session when another session holds the id now (it is to end);
    /// drains it when the record says so.
    fn follow_record(&self, worker_id: &str, stored: Option<WorkerRecord>) -> Option<String> {
        let stored = stored?;
        let session = self.state().by_worker.get(worker_id).cloned()?;
        if stored.session != session {
            return Some(session);
        }
        if stored.state == WorkerState::Draining {
            self.mark_draining(&session);
        }
        None
    }

    /// Ends the sessions another registration of their id replaced.
    async fn end_replaced(&self, replaced: Vec<String>) {
        for session in replaced {
            self.end_session(
                &session,
                "server_restart",
                "the worker registered again on another instance",
            )
            .await;
        }
    }

    /// Whether an hourly purge of long-gone workers is due.
    fn purge_due(&self) -> bool {
        let mut state = self.state();
        state.ticks = state.ticks.wrapping_add(1);
        state.ticks % 3600 == 1
    }

    /// Deletes the records of workers not heard from for a day.
    async fn purge_gone(&self, now: crate::time::Timestamp) {
        let day = 24 * 3600 * 1000;
        let Ok(workers) = records::all::<WorkerRecord>(&*self.store, records::WORKER).await else {
            return;
        };
        for (record, text) in workers {
            if now.as_millis() - record.last_heartbeat.as_millis() > day {
                let _ = self
                    .store
                    .swap_record(records::WORKER, &record.worker_id, Some(&text), None)
                    .await;
            }
        }
    }

    /// Runs the tick until shutdown.
    pub(crate) async fn run_ticks(self: Arc<Self>) {
        let period = (self.settings.lease_interval / 4).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        );
        loop {
            tokio::select! {
                () = self.clock.sleep(period) => self.tick().await,
                () = self.life.background.cancelled() => return,
            }
        }
    }

    /// Every worker the store knows, seen in the last day.
    pub(crate) async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let now = self.clock.now();
        let day = 24 * 3600 * 1000;
        let live: BTreeMap<String, u64> = {
            let state = self.state();
            state
                .sessions
                .values()
                .map(|session| {
                    let id = &session.record.worker_id;
                    let running = state
                        .runs
                        .values()
                        .filter(|run| state.by_worker.get(id) == Some(&run.session))
                        .count() as u64;
                    (id.clone(), running)
                })
                .collect()
        };
        Ok(records::all::<WorkerRecord>(&*self.store, records::WORKER)
            .await?
            .into_iter()
            .filter(|(record, _)| now.as_millis() - record.last_heartbeat.as_millis() <= day)
            .map(|(mut record, _)| {
                if let Some(running) = live.get(&record.worker_id) {
                    record.running = *running;
                }
                record.info(now, self.ttl_ms())
            })
            .collect())
    }

    /// How many live workers serve each remote op.
    pub(crate) async fn serving_counts(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        let now = self.clock.now();
        let mut counts = BTreeMap::new();
        for (record, _) in records::all::<WorkerRecord>(&*self.store, records::WORKER).await? {
            if record.alive(now, self.ttl_ms()) {
                for op in record.ops {
                    *counts.entry(op).or_default() += 1;
                }
            }
        }
        Ok(counts)
    }
}
