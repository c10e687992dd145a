//! One task's run (claimed, so already started in the store): run its op
//! with a Reporter, handle cancel (grace, then abort) and finish it,
//! retrying a failing store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{CancelCause, Manager};
use crate::model::{ErrorInfo, Outcome, Retry, Status, Task, TaskId};
use crate::op::Op;
use crate::reporter::Reporter;
use crate::retry::{attempt_record, with_attempts};
use crate::store::{AppendAck, FinishOutcome};
use crate::time::Timestamp;

/// Longest pause between retries of a failing store call (short: the
/// `final` should land soon after the store is back).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Manager {
    /// Runs a claimed task's op and finishes the task.
    pub(super) async fn run(&self, mut task: Task, token: CancellationToken) {
        let task_id = task.task_id;
        let attempt_started = Timestamp::now();
        let Some(op) = self.inner.ops.get(&task.op).cloned() else {
            // Claims only ask for registered ops; should the registry ever
            // disagree, the task must still end.
            let error = ErrorInfo::new(
                "op_not_found",
                format!("op {:?} is not registered", task.op),
            );
            self.finish_until_written(task_id, Outcome::Failed(error), Arc::default())
                .await;
            return;
        };
        let limit = self.inner.config.max_events_per_task;
        // The cap is the tape's, not an attempt's: a later attempt has what
        // the earlier ones left (one store read, for retried tasks only).
        let used = if task.attempt > 1 {
            let last = self.inner.store.last_seq(task_id).await;
            last.ok().flatten().unwrap_or(0).saturating_sub(1)
        } else {
            0
        };
        let on_full = {
            let (manager, token) = (self.clone(), token.clone());
            Box::new(move || {
                manager.set_cause(task_id, CancelCause::TapeFull(limit));
                token.cancel();
            })
        };
        let reporter = Reporter::with_shutdown(
            Arc::clone(&self.inner.store),
            task_id,
            token.clone(),
            self.inner.stopping.clone(),
            self.inner.hard_stop.clone(),
            limit.saturating_sub(used).max(1),
            Some(on_full),
            self.inner.config.lease_ttl,
        );
        let started = std::time::Instant::now();
        // Cancelled (or shut down) between its claim and now: the op never runs.
        let outcome = if token.is_cancelled() {
            self.cancel_outcome(task_id)
        } else {
            let params = std::mem::take(&mut task.params);
            self.drive(op, params, reporter.clone(), &token, task_id)
                .await
        };
        reporter.close();
        // Past its tape's cap the task ends `tape_full`, whatever it returned
        // (unless something else stopped it first: that cause stands).
        let outcome = if reporter.is_full() {
            match self.cause(task_id) {
                Some(CancelCause::TapeFull(_)) | None => Outcome::Failed(tape_full(limit)),
                Some(_) => self.cancel_outcome(task_id),
            }
        } else {
            outcome
        };
        let outcome = attempt_outcome(&task, outcome, Some(attempt_started));
        let retry_at = match &outcome {
            Outcome::Retry(retry) => Some(retry.retry_at),
            _ => None,
        };
        let finished = self
            .finish_until_written(task_id, outcome, reporter.ack())
            .await;
        if let (Some((Status::Pending, error)), Some(at)) = (&finished, retry_at) {
            info!(%task_id, attempt = task.attempt, retry_at = %at, error = ?error.as_ref().map(|e| &e.code), "attempt failed; the task will be tried again");
            self.arm_due(&task.op, at);
            return;
        }
        if let Some((status, error)) = finished {
            let metrics = &self.inner.metrics;
            metrics.finished.with(&[&task.op, status.as_str()]).inc();
            metrics
                .duration
                .with(&[&task.op, status.as_str()])
                .observe(started.elapsed());
            record_end(&tracing::Span::current(), status, error.as_ref());
        }
    }

    /// Runs the op to its outcome: its own, or the cancel's when its token
    /// fired (aborting it after the grace period, or at shutdown's deadline).
    async fn drive(
        &self,
        op: Arc<dyn Op>,
        params: Value,
        reporter: Reporter,
        token: &CancellationToken,
        task_id: TaskId,
    ) -> Outcome {
        let timeout = op.timeout();
        let grace_for_op = op.cancel_grace();
        let mut handle = tokio::spawn(async move { op.run(params, reporter).await });
        let hard_stop = &self.inner.hard_stop;
        let timed_out = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let joined = tokio::select! {
            joined = &mut handle => Some(joined),
            () = token.cancelled() => None,
            () = hard_stop.cancelled() => None,
            () = timed_out => {
                if let Some(limit) = timeout {
                    self.set_cause(task_id, CancelCause::Timeout(limit));
                }
                token.cancel();
                None
            }
        };
        let joined = match joined {
            Some(joined) => joined,
            None => {
                // A user cancel or a timeout waits the grace period; a
                // shutdown waits for its deadline (the hard stop).
                let grace = match self.cause(task_id) {
                    Some(
                        CancelCause::User | CancelCause::Timeout(_) | CancelCause::TapeFull(_),
                    ) => grace_for_op.unwrap_or(self.inner.config.cancel_grace),
                    _ => Duration::from_secs(24 * 3600),
                };
                let joined = tokio::select! {
                    joined = &mut handle => Some(joined),
                    () = tokio::time::sleep(grace) => None,
                    () = hard_stop.cancelled() => None,
                };
                match joined {
                    Some(joined) => joined,
                    None => {
                        warn!(%task_id, "op did not return after its cancel; aborting it");
                        handle.abort();
                        return self.cancel_outcome(task_id);
                    }
                }
            }
        };
        let cancelled = token.is_cancelled();
        match joined {
            // Past its time limit the task ends `timeout`, whatever it returns.
            Ok(Ok(_)) if matches!(self.cause(task_id), Some(CancelCause::Timeout(_))) => {
                self.cancel_outcome(task_id)
            }
            Ok(Ok(result)) => Outcome::Succeeded(result),
            Ok(Err(_)) if cancelled => self.cancel_outcome(task_id),
            Ok(Err(op_error)) => Outcome::Failed(op_error.0),
            Err(join_error) if join_error.is_panic() => {
                let panic = join_error.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "op panicked".to_owned());
                error!(%task_id, %message, "op panicked");
                Outcome::Failed(ErrorInfo::new("op_panicked", message))
            }
            Err(_) => self.cancel_outcome(task_id),
        }
    }

    fn cause(&self, task_id: TaskId) -> Option<CancelCause> {
        self.state()
            .running
            .get(&task_id)
            .and_then(|running| running.cause)
    }

    /// Records why a run's token fires, unless a cause is already set.
    fn set_cause(&self, task_id: TaskId, cause: CancelCause) {
        if let Some(running) = self.state().running.get_mut(&task_id) {
            running.cause.get_or_insert(cause);
        }
    }

    fn cancel_outcome(&self, task_id: TaskId) -> Outcome {
        match self.cause(task_id) {
            Some(CancelCause::User) => Outcome::Cancelled,
            Some(CancelCause::TapeFull(limit)) => Outcome::Failed(tape_full(limit)),
            Some(CancelCause::Timeout(limit)) => Outcome::Failed(
                ErrorInfo::new(
                    "timeout",
                    format!(
                        "the task ran past its op's time limit of {} and was stopped",
                        describe_duration(limit)
                    ),
                )
                .with(
                    "timeout_ms",
                    u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                ),
            ),
            // A shutdown (or its hard stop): the user did not cancel this task.
            _ => Outcome::Failed(ErrorInfo::new(
                "server_shutdown",
                "the server shut down while the task was running",
            )),
        }
    }

    /// Finishes the task. The store checks `ack` in order, so a task whose
    /// events failed to store cannot end `succeeded`. A store that fails
    /// transiently (restarting, unreachable, locked) is retried with
    /// backoff, the outcome kept, until it is written: a short outage delays
    /// the `final`, it does not turn finished work into a failure. Past the
    /// task's lease a peer may reap it first (`owner_lost`), and the finish
    /// then loses. Only a permanent error gives a result up, for a small
    /// `store_error` (the result may be what does not fit). Ends when
    /// written, or when shutdown ends (the next start then finishes the
    /// task). Returns the status (and error) written, or `None` when another
    /// finish won or shutdown ended the retries.
    async fn finish_until_written(
        &self,
        task_id: TaskId,
        mut outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Option<(Status, Option<ErrorInfo>)> {
        let mut backoff = Duration::from_millis(10);
        let mut failures = 0u32;
        loop {
            match self
                .inner
                .store
                .finish_reported(task_id, outcome.clone(), Arc::clone(&ack))
                .await
            {
                Ok(FinishOutcome::Finished { status, .. }) => {
                    if failures > 0 {
                        info!(%task_id, %status, failures, "finished after the store came back");
                    }
                    debug!(%task_id, %status, "finished");
                    let error = match outcome {
                        // The store wrote cancelled (a recorded cancel wins) or our outcome.
                        Outcome::Failed(error) if status == Status::Failed => Some(error),
                        _ => None,
                    };
                    return Some((status, error));
                }
                Ok(FinishOutcome::Requeued { .. }) => {
                    let error = match outcome {
                        Outcome::Retry(retry) => Some(retry.error),
                        _ => None,
                    };
                    return Some((Status::Pending, error));
                }
                Ok(other) => {
                    debug!(%task_id, ?other, "finish lost to an earlier one");
                    return None;
                }
                Err(store_error) => {
                    failures += 1;
                    if store_error.is_transient() {
                        warn!(%task_id, error = %store_error, failures, "could not finish task (store unavailable); retrying");
                    } else {
                        error!(%task_id, error = %store_error, failures, "could not finish task; retrying without its result");
                        if matches!(outcome, Outcome::Succeeded(_)) {
                            outcome = Outcome::Failed(
                                ErrorInfo::new(
                                    "store_error",
                                    "the task's result could not be stored",
                                )
                                .with("detail", store_error.to_string()),
                            );
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.inner.background.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// What attempt `task.attempt` records as it ends with `outcome`: a failure
/// its retry plan retries becomes [`Outcome::Retry`]; the last failure of a
/// retried task carries every attempt under `detail.attempts`.
pub(super) fn attempt_outcome(
    task: &Task,
    outcome: Outcome,
    started_at: Option<Timestamp>,
) -> Outcome {
    let Outcome::Failed(error) = outcome else {
        return outcome;
    };
    let Some(plan) = &task.retry else {
        return Outcome::Failed(error);
    };
    let attempt = task.attempt.max(1);
    let now = Timestamp::now();
    if plan.retries(&error, attempt) {
        return Outcome::Retry(Box::new(Retry {
            error,
            retry_at: plan.retry_at(attempt, now),
            started_at,
        }));
    }
    if task.history.is_empty() {
        return Outcome::Failed(error);
    }
    let mut records = task.history.clone();
    records.push(attempt_record(attempt, &error, started_at, now));
    Outcome::Failed(with_attempts(error, records))
}

impl Manager {
    /// How a run this instance lost (a dead owner's, a leftover of our own
    /// last life) ends: `error`, or another attempt when the task's plan
    /// retries it (an idempotent op).
    pub(super) async fn lost_run_outcome(&self, task_id: TaskId, error: ErrorInfo) -> Outcome {
        match self.inner.store.get(task_id).await {
            Ok(Some(task)) => attempt_outcome(&task, Outcome::Failed(error), None),
            _ => Outcome::Failed(error),
        }
    }
}

/// The error of a task whose tape reached `max_events_per_task`.
fn tape_full(limit: u64) -> ErrorInfo {
    ErrorInfo::new(
        "tape_full",
        format!(
            "the task reported more than {limit} events, the cap of one tape; it was stopped. Raise max_events_per_task in the config file (or ManagerConfig) for longer tapes"
        ),
    )
    .with("max_events_per_task", limit)
}

/// `90 s`, `1.5 s`, `250 ms`.
fn describe_duration(duration: Duration) -> String {
    if duration.as_millis().is_multiple_of(1000) {
        format!("{} s", duration.as_secs())
    } else if duration >= Duration::from_secs(1) {
        format!("{:.1} s", duration.as_secs_f64())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Records how a run ended on its span: `task.status`; a failure also sets
/// the OpenTelemetry status to error with the message and `error.code`; a
/// cancel is not an error.
fn record_end(span: &tracing::Span, status: Status, error: Option<&ErrorInfo>) {
    span.record("task.status", status.as_str());
    match (status, error) {
        (Status::Failed, Some(error)) => {
            // The description sets the error status with its message.
            span.record("otel.status_description", error.message.as_str());
            span.record("error.code", error.code.as_str());
            tracing::warn!(error.code = %error.code, error.message = %error.message, "task failed");
        }
        (Status::Failed, None) => {
            span.record("otel.status_code", "ERROR");
        }
        _ => {
            span.record("otel.status_code", "OK");
        }
    }
}
