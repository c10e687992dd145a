//! The manager's face to remote workers (`docs/WORKERS.md`): each call
//! goes to the [`crate::engine::remote`] component.

use std::collections::BTreeMap;

use tasktape_wire::worker::{
    Assignment, ClaimRequest, HeartbeatRequest, ItemAnswer, Registered, Registration,
    ReportRequest, WorkerInfo,
};

use super::{Manager, WorkerCallError};
use crate::model::TaskId;
use crate::store::StoreError;

pub use crate::engine::remote::Signal;
pub use crate::engine::remote::SignalStream;

impl Manager {
    /// Registers a remote worker; `allowed_ops`: the ops its token may
    /// serve (`None`: any).
    pub async fn register_worker(
        &self,
        registration: Registration,
        allowed_ops: Option<&[String]>,
    ) -> Result<Registered, WorkerCallError> {
        self.register_worker_as(registration, allowed_ops, None)
            .await
    }

    /// [`Manager::register_worker`] for the token named `token`: an id
    /// registered with a token may be registered again only with it.
    pub async fn register_worker_as(
        &self,
        registration: Registration,
        allowed_ops: Option<&[String]>,
        token: Option<&str>,
    ) -> Result<Registered, WorkerCallError> {
        self.inner
            .remote
            .register(registration, allowed_ops, token)
            .await
    }

    /// A worker's claim (a long-poll up to its `wait_ms`).
    pub async fn worker_claim(
        &self,
        request: ClaimRequest,
    ) -> Result<Vec<Assignment>, WorkerCallError> {
        self.inner.remote.claim(request).await
    }

    /// A worker's events and finishes; one answer per item.
    pub async fn worker_report(
        &self,
        request: ReportRequest,
    ) -> Result<Vec<ItemAnswer>, WorkerCallError> {
        self.inner
            .remote
            .report(&request.session, request.items)
            .await
    }

    /// A worker's heartbeat; the named tasks it no longer holds.
    pub async fn worker_heartbeat(
        &self,
        request: HeartbeatRequest,
    ) -> Result<Vec<TaskId>, WorkerCallError> {
        self.inner
            .remote
            .heartbeat(&request.session, &request.tasks)
            .await
    }

    /// A worker's signal stream.
    pub fn worker_signals(&self, session: &str) -> Result<SignalStream, WorkerCallError> {
        self.inner.remote.signals(session)
    }

    /// A worker says it drains.
    pub async fn worker_drain(&self, session: &str) -> Result<(), WorkerCallError> {
        self.inner.remote.drain(session).await
    }

    /// A worker exits.
    pub async fn worker_deregister(&self, session: &str) -> Result<(), WorkerCallError> {
        self.inner.remote.deregister(session).await
    }

    /// Asks a worker to drain, whichever instance it talks to; false when
    /// no live worker has that id.
    pub async fn drain_worker(&self, worker_id: &str) -> Result<bool, WorkerCallError> {
        self.inner.remote.drain_worker(worker_id).await
    }

    /// Every worker seen in the last day.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        self.inner.remote.workers().await
    }

    /// How many live workers serve each remote op.
    pub async fn remote_op_workers(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        self.inner.remote.serving_counts().await
    }
}
