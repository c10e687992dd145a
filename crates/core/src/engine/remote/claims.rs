//! A worker's claims: the long-poll, the room per op, the store's
//! `claim_some` through the claimer, each task handed out with a lease token.

use std::collections::BTreeMap;
use std::sync::Arc;

use tasktape_wire::worker::{Assignment, ClaimRequest, WorkerState};
use tokio::sync::mpsc;
use tracing::warn;

use super::sessions::random_token;
use super::{Msg, Remote, Run};
use crate::clock::millis;
use crate::manager::WorkerCallError;
use crate::model::Task;

impl Remote {
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
}
