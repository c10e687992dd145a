//! Submits through the manager: the options a submit carries, checked by
//! the rules every caller obeys (`SubmitOptions::check`, in
//! `engine/submitter.rs`), then handed to the submitter.

use serde_json::Value;

use super::{Manager, SubmitError, Submitted};
use crate::model::TaskId;
use crate::retry::RetryPolicy;
use crate::time::Timestamp;

/// How a task is submitted besides its op and params.
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    /// Creating twice with one key gives the first task back (1 to 256
    /// bytes; keys starting with `schedule:` are the schedules' own).
    pub idempotency_key: Option<String>,
    /// Not before this time (`None`: now; at most 10 years ahead).
    pub run_at: Option<Timestamp>,
    /// Higher runs first (default 0; -1,000,000 to 1,000,000).
    pub priority: i32,
    /// Overrides the op's retry policy for this task.
    pub retry: Option<RetryPolicy>,
    /// The task this one retries (bulk retry).
    pub retry_of: Option<TaskId>,
    /// String keys to string values, returned on the task's rows and
    /// matched by filters (`tasktape_wire::metadata`'s rules).
    pub metadata: crate::model::Metadata,
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

    /// [`Manager::submit`] with a delay, a priority, a retry policy. Options
    /// that break a rule are refused with [`SubmitError::InvalidOption`]
    /// naming the field, before anything else is looked at.
    pub async fn submit_with(
        &self,
        op: &str,
        params: Value,
        options: SubmitOptions,
    ) -> Result<Submitted, SubmitError> {
        let submitter = &self.inner.submitter;
        options.check(submitter.clock.now())?;
        // The caller's span (not this method's own) is what the run links to.
        let trace_parent = self.inner.config.task_tracing.capture();
        if submitter.ops.get(op).is_none() && self.inner.remote.load().await? {
            // A remote op declared on another instance since this one looked.
            tracing::debug!(op, "loaded remote ops declared elsewhere");
        }
        submitter.submit(op, params, options, trace_parent).await
    }

    /// Many submits at once, written together (on both stores: one
    /// transaction; PostgreSQL: one statement). One answer per entry, in
    /// order, as [`Manager::submit_with`] would give it: a refused entry
    /// does not stop the others, and an idempotency key given twice finds
    /// the task of its first entry. A store error fails the whole call and
    /// writes nothing.
    pub async fn submit_many(
        &self,
        entries: Vec<(String, Value, SubmitOptions)>,
    ) -> Result<Vec<Result<Submitted, SubmitError>>, SubmitError> {
        let submitter = &self.inner.submitter;
        let trace_parent = self.inner.config.task_tracing.capture();
        if entries
            .iter()
            .any(|(op, ..)| submitter.ops.get(op).is_none())
            && self.inner.remote.load().await?
        {
            tracing::debug!("loaded remote ops declared elsewhere");
        }
        submitter.submit_many(entries, trace_parent).await
    }
}
