//! The worker protocol's calls: register, claim, report, heartbeat,
//! signals, drain, deregister; the tick that ends lapsed sessions and
//! unacknowledged claims; the declarations loaded from the store.

use std::sync::Arc;

use tasktape_wire::worker::{ItemAnswer, ReportItem, WorkerState};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::records::{self, WorkerRecord};
use super::{Msg, Remote, Session, Signal};
use crate::manager::WorkerCallError;
use crate::model::TaskId;

/// A signal stream: its signals, and the session marked disconnected when
/// it is dropped.
pub struct SignalStream {
    remote: Arc<Remote>,
    session: String,
    generation: u64,
    rx: mpsc::UnboundedReceiver<Signal>,
}

impl SignalStream {
    /// The next signal; `None` once the session ended (or a newer stream
    /// replaced this one).
    pub async fn next(&mut self) -> Option<Signal> {
        self.rx.recv().await
    }
}

impl Drop for SignalStream {
    fn drop(&mut self) {
        {
            let mut state = self.remote.state();
            let Some(session) = state.sessions.get_mut(&self.session) else {
                return;
            };
            if session
                .stream
                .as_ref()
                .is_none_or(|(generation, _)| *generation != self.generation)
            {
                return;
            }
            session.stream = None;
            session.record.connected = false;
        }
        // Stored at once, so a registration of the id on another instance
        // may take over without waiting for the lease to run out (unless
        // the worker reconnected meanwhile).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let remote = Arc::clone(&self.remote);
            let session = self.session.clone();
            runtime.spawn(async move {
                let current = {
                    let state = remote.state();
                    state
                        .sessions
                        .get(&session)
                        .filter(|entry| entry.stream.is_none())
                        .map(|entry| (entry.record.clone(), entry.written.clone()))
                };
                if let Some((record, expected)) = current {
                    let _ = remote.write_record(&session, &record, expected).await;
                }
            });
        }
    }
}

pub(super) fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Remote {
    pub(super) fn session_mut<'a>(
        state: &'a mut super::State,
        session: &str,
    ) -> Result<&'a mut Session, WorkerCallError> {
        state
            .sessions
            .get_mut(session)
            .ok_or(WorkerCallError::SessionUnknown)
    }

    /// Hands each item to its run, in order; one answer per item.
    pub(crate) async fn report(
        &self,
        session: &str,
        items: Vec<ReportItem>,
    ) -> Result<Vec<ItemAnswer>, WorkerCallError> {
        enum Pending {
            Ready(ItemAnswer),
            Waiting(TaskId, oneshot::Receiver<ItemAnswer>),
            Look(TaskId),
        }
        let mut pending = Vec::with_capacity(items.len());
        {
            let mut state = self.state();
            Self::session_mut(&mut state, session)?;
            for item in items {
                let task_id = item.task_id;
                let Some(run) = state.runs.get_mut(&task_id) else {
                    pending.push(Pending::Look(task_id));
                    continue;
                };
                if run.session != session || run.lease != item.lease {
                    pending.push(Pending::Ready(ItemAnswer::stop(
                        task_id,
                        "lease_lost",
                        "the lease token is not this task's current one; stop it",
                    )));
                    continue;
                }
                run.acked = true;
                let (answer, answered) = oneshot::channel();
                let sent = run.outbox.send(Msg::Item {
                    offset: item.offset,
                    events: item.events,
                    finish: item.finish,
                    answer,
                });
                pending.push(match sent {
                    Ok(()) => Pending::Waiting(task_id, answered),
                    Err(_) => Pending::Ready(ended(task_id)),
                });
            }
        }
        let mut answers = Vec::with_capacity(pending.len());
        for item in pending {
            answers.push(match item {
                Pending::Ready(answer) => answer,
                Pending::Waiting(task_id, answered) => {
                    // A run answers as soon as its events are queued; should
                    // it never (it ended meanwhile), the worker stops it.
                    match tokio::time::timeout(std::time::Duration::from_secs(60), answered).await {
                        Ok(Ok(answer)) => answer,
                        _ => ended(task_id),
                    }
                }
                Pending::Look(task_id) => match self.store.get(task_id).await? {
                    None => ItemAnswer::stop(task_id, "unknown_task", "no task has this id"),
                    Some(task) if task.status.is_terminal() => ended(task_id),
                    Some(_) => ItemAnswer::stop(
                        task_id,
                        "lease_lost",
                        "this worker does not hold the task; stop it",
                    ),
                },
            });
        }
        Ok(answers)
    }

    /// Renews the session; answers the named tasks it no longer holds.
    pub(crate) async fn heartbeat(
        &self,
        session: &str,
        tasks: &[TaskId],
    ) -> Result<Vec<TaskId>, WorkerCallError> {
        let now = self.clock.now();
        let (stop, record, expected) = {
            let mut state = self.state();
            Self::session_mut(&mut state, session)?;
            let mut running = 0;
            let mut stop = Vec::new();
            for task_id in tasks {
                match state.runs.get_mut(task_id) {
                    Some(run) if run.session == session => {
                        run.acked = true;
                        run.missed = 0;
                    }
                    _ => stop.push(*task_id),
                }
            }
            let named: std::collections::HashSet<&TaskId> = tasks.iter().collect();
            for (task_id, run) in state.runs.iter_mut() {
                if run.session != session {
                    continue;
                }
                running += 1;
                // Acknowledged once, then left out of two heartbeats in a
                // row: the worker no longer runs it (a report it gave up on).
                if run.acked && !named.contains(task_id) {
                    run.missed += 1;
                    if run.missed >= 2 {
                        let _ = run.outbox.send(Msg::Lost(
                            "owner_lost",
                            "the worker no longer names the task in its heartbeats".to_owned(),
                        ));
                    }
                }
            }
            let entry = Self::session_mut(&mut state, session)?;
            entry.last_heartbeat = now;
            entry.record.last_heartbeat = now;
            entry.record.running = running;
            entry.record.connected = entry.connected();
            (stop, entry.record.clone(), entry.written.clone())
        };
        self.write_record(session, &record, expected).await?;
        Ok(stop)
    }

    /// Writes a session's record over what it last wrote; a record another
    /// instance replaced (a newer registration) ends the session; one an
    /// admin marked draining drains it.
    async fn write_record(
        &self,
        session: &str,
        record: &WorkerRecord,
        expected: Option<String>,
    ) -> Result<(), WorkerCallError> {
        let mut expected = expected;
        let mut record = record.clone();
        for _ in 0..3 {
            if let Some(text) = records::swap(
                &*self.store,
                records::WORKER,
                &record.worker_id,
                expected.as_deref(),
                &record,
            )
            .await?
            {
                if let Some(entry) = self.state().sessions.get_mut(session) {
                    entry.written = Some(text);
                }
                return Ok(());
            }
            let stored =
                records::one::<WorkerRecord>(&*self.store, records::WORKER, &record.worker_id)
                    .await?;
            match stored {
                Some((other, _)) if other.session != session => {
                    self.end_session(session, "server_restart", "the worker registered again")
                        .await;
                    return Err(WorkerCallError::SessionUnknown);
                }
                Some((other, text)) => {
                    // Written again from the session as it is now (another
                    // write of this instance's may have gone first); not at
                    // all once it ended (its record says gone).
                    match self.state().sessions.get(session) {
                        Some(entry) => record = entry.record.clone(),
                        None => return Err(WorkerCallError::SessionUnknown),
                    }
                    if other.state == WorkerState::Draining && record.state == WorkerState::Live {
                        record.state = WorkerState::Draining;
                        self.mark_draining(session);
                    }
                    expected = Some(text);
                }
                None => expected = None,
            }
        }
        Ok(())
    }

    pub(super) fn mark_draining(&self, session: &str) {
        let mut state = self.state();
        if let Some(entry) = state.sessions.get_mut(session)
            && entry.record.state == WorkerState::Live
        {
            entry.record.state = WorkerState::Draining;
            entry.push(Signal::Drain);
            entry.wake.notify_one();
        }
    }

    /// Opens the session's signal stream (replacing an earlier one); cancels
    /// pushed before are pushed again, and `drain` when draining.
    pub(crate) fn signals(
        self: &Arc<Self>,
        session: &str,
    ) -> Result<SignalStream, WorkerCallError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state();
        state.streams += 1;
        let generation = state.streams;
        let draining = state.draining;
        let cancelled: Vec<TaskId> = state
            .runs
            .iter()
            .filter(|(_, run)| run.session == session && run.cancel_pushed)
            .map(|(task_id, _)| *task_id)
            .collect();
        let entry = Self::session_mut(&mut state, session)?;
        let _ = tx.send(Signal::Ready);
        for task_id in cancelled {
            let _ = tx.send(Signal::Cancel(task_id));
        }
        if draining || entry.record.state == WorkerState::Draining {
            let _ = tx.send(Signal::Drain);
        }
        entry.stream = Some((generation, tx));
        entry.record.connected = true;
        Ok(SignalStream {
            remote: Arc::clone(self),
            session: session.to_owned(),
            generation,
            rx,
        })
    }

    /// The worker drains: its claims answer none from now on.
    pub(crate) async fn drain(&self, session: &str) -> Result<(), WorkerCallError> {
        let (record, expected) = {
            let mut state = self.state();
            let entry = Self::session_mut(&mut state, session)?;
            entry.record.state = WorkerState::Draining;
            entry.wake.notify_one();
            (entry.record.clone(), entry.written.clone())
        };
        self.write_record(session, &record, expected).await
    }

    /// Asks the worker `worker_id` to drain, wherever its session is; false
    /// when no live worker has that id.
    pub(crate) async fn drain_worker(&self, worker_id: &str) -> Result<bool, WorkerCallError> {
        let local = self.state().by_worker.get(worker_id).cloned();
        if let Some(session) = local {
            self.mark_draining(&session);
            self.drain(&session).await?;
            return Ok(true);
        }
        let now = self.clock.now();
        loop {
            let Some((mut record, text)) =
                records::one::<WorkerRecord>(&*self.store, records::WORKER, worker_id).await?
            else {
                return Ok(false);
            };
            if !record.alive(now, self.ttl_ms()) {
                return Ok(false);
            }
            record.state = WorkerState::Draining;
            if records::swap(
                &*self.store,
                records::WORKER,
                worker_id,
                Some(&text),
                &record,
            )
            .await?
            .is_some()
            {
                return Ok(true);
            }
        }
    }

    /// The worker exits: the tasks it still holds end `server_shutdown`.
    pub(crate) async fn deregister(&self, session: &str) -> Result<(), WorkerCallError> {
        if !self.state().sessions.contains_key(session) {
            return Err(WorkerCallError::SessionUnknown);
        }
        self.end_session(session, "server_shutdown", "the worker exited")
            .await;
        Ok(())
    }

    /// Ends a session: its runs end with `code`, its stream closes, its
    /// record says gone.
    pub(crate) async fn end_session(&self, session: &str, code: &'static str, message: &str) {
        let record = {
            let mut state = self.state();
            let Some(mut entry) = state.sessions.remove(session) else {
                return;
            };
            if state
                .by_worker
                .get(&entry.record.worker_id)
                .map(String::as_str)
                == Some(session)
            {
                state.by_worker.remove(&entry.record.worker_id);
            }
            for run in state.runs.values().filter(|run| run.session == session) {
                let _ = run.outbox.send(Msg::Lost(code, message.to_owned()));
            }
            entry.wake.notify_one();
            entry.stream = None;
            entry.record.state = WorkerState::Gone;
            entry.record.connected = false;
            (entry.record, entry.written)
        };
        info!(worker_id = %record.0.worker_id, code, "remote worker session ended");
        let (record, mut expected) = record;
        // Only over this session's record: a newer registration's stays. A
        // write of this session's that went first (a heartbeat, a stream's
        // close) is written over.
        for _ in 0..3 {
            match records::swap(
                &*self.store,
                records::WORKER,
                &record.worker_id,
                expected.as_deref(),
                &record,
            )
            .await
            {
                Ok(Some(_)) => return,
                Ok(None) => {
                    match records::one::<WorkerRecord>(
                        &*self.store,
                        records::WORKER,
                        &record.worker_id,
                    )
                    .await
                    {
                        Ok(Some((stored, text))) if stored.session == record.session => {
                            expected = Some(text);
                        }
                        Ok(_) => return,
                        Err(error) => {
                            warn!(%error, "could not mark a remote worker gone");
                            return;
                        }
                    }
                }
                Err(error) => {
                    warn!(%error, "could not mark a remote worker gone");
                    return;
                }
            }
        }
    }
}

fn ended(task_id: TaskId) -> ItemAnswer {
    ItemAnswer::stop(task_id, "task_ended", "the task has ended; stop it")
}
