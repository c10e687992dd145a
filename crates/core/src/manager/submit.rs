//! Submits: checking params with the op, choosing the task's retry plan
//! (the submit's policy, else the config's for the op, else the op's own),
//! creating the row, and waking a claim (or, for a delayed task, a timer).

use serde_json::Value;
use tracing::debug;

use super::{Manager, SubmitError, Submitted};
use crate::model::{NewTask, TaskId};
use crate::retry::{RetryPlan, RetryPolicy};
use crate::store::StoreError;
use crate::time::Timestamp;

/// How a task is submitted besides its op and params.
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    /// Creating twice with one key gives the first task back.
    pub idempotency_key: Option<String>,
    /// Not before this time (`None`: now).
    pub run_at: Option<Timestamp>,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Overrides the op's retry policy for this task.
    pub retry: Option<RetryPolicy>,
    /// The task this one retries (bulk retry).
    pub retry_of: Option<TaskId>,
}

impl Manager {
    /// Creates a task for `op` and schedules it. The params are checked and
    /// normalized by the op; the same idempotency key with the same params
    /// returns the first task, with other params a conflict.
    ///
    /// Cancel-safe: once called, the task is created and scheduled even if
    /// the caller stops waiting (say, an HTTP client hangs up).
    pub async fn submit(
        &self,
        op: &str,
        params: Value,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        let options = SubmitOptions {
            idempotency_key,
            ..SubmitOptions::default()
        };
        self.submit_with(op, params, options).await
    }

    /// [`Manager::submit`] with a delay, a priority, a retry policy.
    pub async fn submit_with(
        &self,
        op: &str,
        params: Value,
        options: SubmitOptions,
    ) -> Result<Submitted, SubmitError> {
        // The caller's span (not this method's own) is what the run links to.
        let trace_parent = self.inner.config.task_tracing.capture();
        self.submit_linked(op, params, options, trace_parent).await
    }

    /// The retry plan a task of `op` gets, given its submit's `policy`.
    pub(super) fn retry_plan(&self, op: &str, policy: Option<RetryPolicy>) -> Option<RetryPlan> {
        let configured = self.inner.config.retries.get(op);
        let handler = self.inner.ops.get(op);
        let idempotent = configured.map(|plan| plan.idempotent).unwrap_or(false)
            || handler.is_some_and(|handler| handler.idempotent());
        let policy = policy
            .or_else(|| configured.map(|plan| plan.policy.clone()))
            .or_else(|| handler.and_then(|handler| handler.retry()))?;
        Some(RetryPlan { policy, idempotent })
    }

    #[tracing::instrument(name = "manager.submit", level = "debug", skip_all, fields(op = %op), err(level = "debug"))]
    async fn submit_linked(
        &self,
        op: &str,
        params: Value,
        options: SubmitOptions,
        trace_parent: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        if !self.state().accepting {
            return Err(SubmitError::ShuttingDown);
        }
        let Some(handler) = self.inner.ops.get(op) else {
            return Err(SubmitError::UnknownOp {
                name: op.to_owned(),
                known: self
                    .inner
                    .ops
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            });
        };
        let params = handler.prepare(params)?;
        let mut new_task = NewTask::new(op, params);
        new_task.idempotency_key = options.idempotency_key;
        new_task.trace_parent = trace_parent;
        new_task.priority = options.priority;
        // A time already past is due now.
        new_task.run_at = options.run_at.filter(|at| *at > new_task.created_at);
        new_task.retry = self.retry_plan(op, options.retry);
        new_task.retry_of = options.retry_of;
        let digest = new_task.params_digest.clone();
        let manager = self.clone();
        let created = tokio::spawn(async move {
            let run_at = new_task.run_at;
            let created = manager.inner.store.create(new_task).await?;
            if created.created {
                manager
                    .inner
                    .metrics
                    .submitted
                    .with(&[&created.task.op])
                    .inc();
                match run_at {
                    Some(at) => manager.arm_due(&created.task.op, at),
                    None => manager.kick(&created.task.op),
                }
            }
            Ok::<_, StoreError>(created)
        });
        let created = match created.await {
            Ok(created) => created?,
            Err(join_error) => {
                return Err(SubmitError::Store(StoreError::backend(
                    "submit", join_error,
                )));
            }
        };
        if !created.created && (created.task.params_digest != digest || created.task.op != op) {
            return Err(SubmitError::IdempotencyConflict {
                task_id: created.task.task_id,
            });
        }
        debug!(task_id = %created.task.task_id, created = created.created, "submitted");
        Ok(Submitted {
            created: created.created,
            task: created.task,
        })
    }
}
