//! The worker protocol's calls: register, claim, report, heartbeat,
//! signals, drain, deregister; the tick that ends lapsed sessions and
//! unacknowledged claims; the declarations loaded from the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use tasktape_wire::worker::{
    Assignment, ClaimRequest, ItemAnswer, MAX_BATCH, Registered, Registration, ReportItem,
    WorkerInfo, WorkerOp, WorkerState, differences,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{info, warn};

use super::records::{self, OpRecord, WorkerRecord};
use super::{Msg, Remote, RemoteOp, Run, Session, Signal, op};
use crate::clock::millis;
use crate::manager::WorkerCallError;
use crate::model::{Task, TaskId};
use crate::op::Op;
use crate::store::StoreError;

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
        let mut state = self.remote.state();
        if let Some(session) = state.sessions.get_mut(&self.session)
            && session
                .stream
                .as_ref()
                .is_some_and(|(generation, _)| *generation == self.generation)
        {
            session.stream = None;
            session.record.connected = false;
        }
    }
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Remote {
    /// Loads the declared remote ops from the store into the registry (at
    /// start; again when a submit names an op this instance has not seen,
    /// or a declaration changed on another instance). Whether any op was
    /// added or replaced.
    pub(crate) async fn load(&self) -> Result<bool, StoreError> {
        let mut changed = false;
        for (decl, _) in records::all::<OpRecord>(&*self.store, records::OP).await? {
            if self.install(decl)? {
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Puts `decl`'s op in the registry unless it is there as declared;
    /// a name the server runs itself is left alone (warned).
    fn install(&self, decl: WorkerOp) -> Result<bool, StoreError> {
        match self.ops.get(&decl.name) {
            Some(op) if !op.is_remote() => {
                warn!(op = %decl.name, "a remote worker declared an op this server runs itself; ignored");
                return Ok(false);
            }
            Some(op)
                if op.params_schema() == op::redacted(&decl.params_schema)
                    && same_settings(&*op, &decl) =>
            {
                return Ok(false);
            }
            _ => {}
        }
        match RemoteOp::new(decl, self.this.clone()) {
            Ok(op) => {
                self.ops.put(Arc::new(op));
                Ok(true)
            }
            Err(message) => {
                warn!(%message, "a stored remote op's schema does not compile; ignored");
                Ok(false)
            }
        }
    }

    /// Registers a worker: checks its ops against the stored declarations,
    /// takes over from its previous process when that one is gone, and
    /// opens its session.
    pub(crate) async fn register(
        &self,
        registration: Registration,
        allowed: Option<&[String]>,
    ) -> Result<Registered, WorkerCallError> {
        if let Some(allowed) = allowed
            && let Some(op) = registration
                .ops
                .iter()
                .find(|op| !allowed.contains(&op.name))
        {
            return Err(WorkerCallError::OpNotAllowed {
                op: op.name.clone(),
            });
        }
        for (i, op) in registration.ops.iter().enumerate() {
            if let Some(existing) = self.ops.get(&op.name)
                && !existing.is_remote()
            {
                return Err(WorkerCallError::OpConflict {
                    op: op.name.clone(),
                    fields: Vec::new(),
                    message: format!("op {:?} is one the server runs itself", op.name),
                });
            }
            if let Err(message) = RemoteOp::new(op.clone(), self.this.clone()) {
                return Err(WorkerCallError::Invalid {
                    field: format!("ops[{i}].params_schema"),
                    message,
                });
            }
        }
        if self.state().draining || self.life.is_stopping() {
            return Err(WorkerCallError::Draining);
        }
        let now = self.clock.now();
        let ttl = self.ttl_ms();
        let worker_id = registration.worker_id.clone();
        // The id's previous process: here, or on another instance.
        let previous = self.state().by_worker.get(&worker_id).cloned();
        if let Some(previous) = &previous {
            let live = self.state().sessions.get(previous).is_some_and(|session| {
                session.connected() && now.as_millis() - session.last_heartbeat.as_millis() <= ttl
            });
            if live {
                return Err(WorkerCallError::IdInUse { worker_id });
            }
        }
        let stored =
            records::one::<WorkerRecord>(&*self.store, records::WORKER, &worker_id).await?;
        if let Some((record, _)) = &stored
            && record.instance != self.settings.instance_id
            && record.alive(now, ttl)
            && record.connected
        {
            return Err(WorkerCallError::IdInUse { worker_id });
        }
        self.declare(&registration, now).await?;
        if let Some(previous) = previous {
            self.end_session(&previous, "server_restart", "the worker restarted")
                .await;
        }
        let session_id = random_token();
        let record = WorkerRecord {
            worker_id: worker_id.clone(),
            session: session_id.clone(),
            instance: self.settings.instance_id.clone(),
            host: registration.host.clone(),
            pid: registration.pid,
            version: registration.version.clone(),
            ops: registration.ops.iter().map(|op| op.name.clone()).collect(),
            capacity: registration.capacity,
            running: 0,
            last_heartbeat: now,
            registered_at: now,
            state: WorkerState::Live,
            connected: false,
        };
        // Over whatever is stored (a gone process's record, or one of
        // another instance whose process is gone).
        let mut expected = stored.map(|(_, text)| text);
        let written = loop {
            match records::swap(
                &*self.store,
                records::WORKER,
                &worker_id,
                expected.as_deref(),
                &record,
            )
            .await?
            {
                Some(text) => break text,
                None => {
                    let now_stored =
                        records::one::<WorkerRecord>(&*self.store, records::WORKER, &worker_id)
                            .await?;
                    // Another registration of the id won the race: it is live.
                    if let Some((other, _)) = &now_stored
                        && other.alive(now, ttl)
                    {
                        return Err(WorkerCallError::IdInUse { worker_id });
                    }
                    expected = now_stored.map(|(_, text)| text);
                }
            }
        };
        let caps = registration
            .ops
            .iter()
            .map(|op| (op.name.clone(), op.concurrency))
            .collect();
        {
            let mut state = self.state();
            state
                .by_worker
                .insert(worker_id.clone(), session_id.clone());
            state.sessions.insert(
                session_id.clone(),
                Session {
                    record,
                    written: Some(written),
                    caps,
                    stream: None,
                    wake: Arc::new(Notify::new()),
                    waiting: false,
                    wanted: Vec::new(),
                    last_heartbeat: now,
                },
            );
        }
        info!(worker_id = %worker_id, host = %registration.host, pid = registration.pid, ops = registration.ops.len(), "remote worker registered");
        Ok(Registered {
            worker_id,
            session: session_id,
            lease_ttl_ms: self.ttl_ms() as u64,
            lease_interval_ms: self.settings.lease_interval.as_millis() as u64,
            cancel_grace_ms: self.settings.cancel_grace.as_millis() as u64,
            max_batch: MAX_BATCH as u64,
        })
    }

    /// Stores each op's declaration: kept when equal, refused when it
    /// differs while another live worker serves the op, else replaced.
    async fn declare(
        &self,
        registration: &Registration,
        now: crate::time::Timestamp,
    ) -> Result<(), WorkerCallError> {
        let ttl = self.ttl_ms();
        for decl in &registration.ops {
            loop {
                let stored =
                    records::one::<OpRecord>(&*self.store, records::OP, &decl.name).await?;
                let expected = match &stored {
                    Some((old, _)) if differences(old, decl).is_empty() => break,
                    Some((old, text)) => {
                        let workers =
                            records::all::<WorkerRecord>(&*self.store, records::WORKER).await?;
                        let mut serving = records::serving(
                            &workers,
                            &decl.name,
                            &registration.worker_id,
                            now,
                            ttl,
                        );
                        if let Some(other) = serving.next() {
                            let fields: Vec<String> = differences(old, decl)
                                .into_iter()
                                .map(str::to_owned)
                                .collect();
                            return Err(WorkerCallError::OpConflict {
                                op: decl.name.clone(),
                                message: format!(
                                    "op {:?} is served by live worker {:?} with another declaration (differs in {})",
                                    decl.name,
                                    other.worker_id,
                                    fields.join(", ")
                                ),
                                fields,
                            });
                        }
                        Some(text.clone())
                    }
                    None => None,
                };
                if records::swap(
                    &*self.store,
                    records::OP,
                    &decl.name,
                    expected.as_deref(),
                    decl,
                )
                .await?
                .is_some()
                {
                    break;
                }
            }
            self.install(decl.clone())?;
        }
        Ok(())
    }

    fn session_mut<'a>(
        state: &'a mut super::State,
        session: &str,
    ) -> Result<&'a mut Session, WorkerCallError> {
        state
            .sessions
            .get_mut(session)
            .ok_or(WorkerCallError::SessionUnknown)
    }

    /// A claim: waits up to `wait_ms` for due tasks of the session's ops,
    /// takes at most what it asks (and has room for), and hands them out.
    /// While parked it is woken by a kick of one of its ops (one waiting
    /// claim per kick, so a submit wakes one worker, not all); a claim that
    /// took all it asked of an op passes the kick on (more may wait).
    pub(crate) async fn claim(
        &self,
        request: ClaimRequest,
    ) -> Result<Vec<Assignment>, WorkerCallError> {
        /// However the claim ends (its caller gone too), it no longer waits.
        struct Parked<'a>(&'a Remote, &'a str);
        impl Drop for Parked<'_> {
            fn drop(&mut self) {
                self.0.not_waiting(self.1);
            }
        }
        let _parked = Parked(self, &request.session);
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_millis(request.wait_ms);
        loop {
            let (wake, wants, room) = {
                let mut state = self.state();
                let server_drains = state.draining || self.life.is_stopping();
                let mut running: BTreeMap<String, u32> = BTreeMap::new();
                let mut total = 0u32;
                for run in state
                    .runs
                    .values()
                    .filter(|run| run.session == request.session)
                {
                    *running.entry(run.op.clone()).or_default() += 1;
                    total += 1;
                }
                let session = Self::session_mut(&mut state, &request.session)?;
                if let Some(op) = request
                    .ops
                    .keys()
                    .find(|op| !session.caps.contains_key(*op))
                {
                    return Err(WorkerCallError::Invalid {
                        field: format!("ops.{op}"),
                        message: format!("op {op:?} is not one this worker registered"),
                    });
                }
                if session.record.state != WorkerState::Live {
                    return Ok(Vec::new());
                }
                // What the worker says is free, and what the server counts.
                let room = request
                    .max
                    .min(session.record.capacity.saturating_sub(total));
                let mut wants = Vec::new();
                if !server_drains {
                    for (op, &asked) in &request.ops {
                        let cap = session.caps.get(op).copied().flatten().unwrap_or(u32::MAX);
                        let free = cap.saturating_sub(running.get(op).copied().unwrap_or(0));
                        let most = asked.min(free);
                        if most > 0 {
                            wants.push((op.clone(), most as usize));
                        }
                    }
                    // Each claim starts at another op: none is always last.
                    if !wants.is_empty() {
                        state.kicks = state.kicks.wrapping_add(1);
                        let turn = state.kicks % wants.len();
                        wants.rotate_left(turn);
                    }
                }
                let session = Self::session_mut(&mut state, &request.session)?;
                // Waiting from before the store is asked: a kick meanwhile
                // leaves a permit, so the wait below returns at once. Kicks
                // of the ops it has room for only.
                session.waiting = true;
                session.wanted = wants.iter().map(|(op, _)| op.clone()).collect();
                (Arc::clone(&session.wake), wants, room as usize)
            };
            let mut assignments = Vec::new();
            let mut room = room;
            // The room goes to the ops that have due tasks, one after another.
            for (op, most) in wants {
                if room == 0 {
                    break;
                }
                let take = most.min(room);
                let got = match self.claim_op(&request.session, &op, take).await {
                    Ok(got) => got,
                    // What was claimed already goes out; the error waits.
                    Err(error) if !assignments.is_empty() => {
                        warn!(%error, op, "a claim failed after others succeeded");
                        break;
                    }
                    Err(error) => return Err(error),
                };
                room -= got.len();
                if got.len() == take {
                    // It may have left more behind: wake another claim.
                    self.kick(&op);
                }
                assignments.extend(got);
            }
            if !assignments.is_empty() {
                return Ok(assignments);
            }
            // A draining server has nothing to hand out: the claim waits its
            // time (a worker's loop does not spin) unless the worker drains.
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = self.life.stopping.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    fn not_waiting(&self, session: &str) {
        if let Some(session) = self.state().sessions.get_mut(session) {
            session.waiting = false;
        }
    }

    /// Claims up to `take` tasks of `op` for `session`. Runs to its end
    /// even when the caller goes away: a claim the store carried out must
    /// reach its runs.
    async fn claim_op(
        &self,
        session: &str,
        op: &str,
        take: usize,
    ) -> Result<Vec<Assignment>, WorkerCallError> {
        let Some(claimer) = self.claimer.get().and_then(std::sync::Weak::upgrade) else {
            return Ok(Vec::new());
        };
        let Some(this) = self.this.upgrade() else {
            return Ok(Vec::new());
        };
        let (session, op) = (session.to_owned(), op.to_owned());
        let timeout = self.ops.get(&op).and_then(|op| op.timeout()).map(millis);
        let claimed = tokio::spawn(async move {
            let mut assignments = Vec::new();
            let claimed = claimer
                .claim_for(&op, take, |task: &Task| {
                    assignments.push(this.hand_out(&session, task, timeout));
                })
                .await;
            claimed.map(|()| assignments)
        })
        .await;
        match claimed {
            Ok(result) => Ok(result?),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Records a claimed task as `session`'s, before its run is spawned.
    fn hand_out(&self, session: &str, task: &Task, timeout: Option<i64>) -> Assignment {
        let lease = random_token();
        let (outbox, inbox) = mpsc::unbounded_channel();
        let now = self.clock.now();
        let mut state = self.state();
        if !state.sessions.contains_key(session) {
            // The session ended while the claim ran: the run ends at once.
            let _ = outbox.send(Msg::Lost(
                "owner_lost",
                "the worker's session ended while the task was claimed".to_owned(),
            ));
        }
        state.runs.insert(
            task.task_id,
            Run {
                session: session.to_owned(),
                lease: lease.clone(),
                op: task.op.clone(),
                attempt: task.attempt,
                missed: 0,
                outbox,
                inbox: Some(inbox),
                acked: false,
                claimed_at: now,
                cancel_pushed: false,
            },
        );
        drop(state);
        Assignment {
            task_id: task.task_id,
            op: task.op.clone(),
            params: task.params.clone(),
            attempt: task.attempt.max(1),
            max_attempts: task.max_attempts.max(1),
            deadline: timeout.map(|ms| now.add_millis(ms)),
            lease,
        }
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

    fn mark_draining(&self, session: &str) {
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
        let (record, expected) = record;
        // Only over what this session wrote: a newer registration's stays.
        if let Err(error) = records::swap(
            &*self.store,
            records::WORKER,
            &record.worker_id,
            expected.as_deref(),
            &record,
        )
        .await
        {
            warn!(%error, "could not mark a remote worker gone");
        }
    }

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

fn ended(task_id: TaskId) -> ItemAnswer {
    ItemAnswer::stop(task_id, "task_ended", "the task has ended; stop it")
}

fn same_settings(op: &dyn Op, decl: &WorkerOp) -> bool {
    op.description() == decl.description
        && op.retry() == decl.retry
        && op.idempotent() == decl.idempotent
        && op.timeout().map(|t| t.as_millis() as u64) == decl.timeout_ms
}
