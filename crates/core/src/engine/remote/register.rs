//! Registering a worker: its ops' declarations checked against the
//! store's and installed, a takeover of a gone process, the session opened.

use std::sync::Arc;

use tasktape_wire::worker::{
    MAX_BATCH, Registered, Registration, WorkerOp, WorkerState, differences,
};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::records::{self, OpRecord, WorkerRecord};
use super::sessions::random_token;
use super::{Remote, RemoteOp, Session, op};
use crate::manager::WorkerCallError;
use crate::op::Op;
use crate::store::StoreError;

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
        token: Option<&str>,
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
        // An id registered with a token stays that token's (until its
        // record is purged): no other token takes its tasks over.
        if let Some((record, _)) = &stored
            && let Some(owner) = &record.token
            && token != Some(owner.as_str())
        {
            return Err(WorkerCallError::IdOwned {
                worker_id,
                token: owner.clone(),
            });
        }
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
            token: token.map(str::to_owned),
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
}

fn same_settings(op: &dyn Op, decl: &WorkerOp) -> bool {
    op.description() == decl.description
        && op.retry() == decl.retry
        && op.idempotent() == decl.idempotent
        && op.timeout().map(|t| t.as_millis() as u64) == decl.timeout_ms
}
