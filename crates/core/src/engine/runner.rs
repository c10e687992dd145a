//! One task's run (claimed, so already started in the store): the op with
//! its Reporter, the stop (grace, then abort) when its [`RunControl`]
//! fires, and the finish, retried until written.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{debug, error, info, warn};

use super::Life;
use super::runs::{CancelCause, RunControl, TapeCap};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::{ErrorInfo, Outcome, Status, Task, TaskId};
use crate::op::{Op, OpRegistry};
use crate::reporter::{Reporter, TapeRoom};
use crate::retry::attempt_outcome;
use crate::store::{AppendAck, FinishOutcome, Store};

/// Longest pause between retries of a failing store call (short: the
/// `final` should land soon after the store is back).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a run needs to know of the config.
#[derive(Clone, Debug)]
pub(crate) struct RunSettings {
    /// Most events one tape may hold.
    pub(crate) max_events_per_task: u64,
    /// Most bytes of event JSON one tape may hold.
    pub(crate) max_tape_bytes: u64,
    /// How long a stopped op may take to return (unless the op says).
    pub(crate) cancel_grace: Duration,
    /// How long a failing store is retried for an event (the lease's length).
    pub(crate) lease_ttl: Duration,
}

/// Runs claimed tasks.
pub(crate) struct Runner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ops: OpRegistry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) life: Life,
    pub(crate) settings: RunSettings,
}

impl Runner {
    /// Runs a claimed task's op and finishes the task; returns when its next
    /// attempt is due when the task went back to pending.
    pub(crate) async fn run(
        &self,
        mut task: Task,
        control: Arc<RunControl>,
    ) -> Option<crate::Timestamp> {
        let task_id = task.task_id;
        let attempt_started = self.clock.now();
        let Some(op) = self.ops.get(&task.op) else {
            // Claims only ask for registered ops; should the registry ever
            // disagree, the task must still end.
            let error = ErrorInfo::new(
                "op_not_found",
                format!("op {:?} is not registered", task.op),
            );
            self.finish_until_written(task_id, Outcome::Failed(error), Arc::default())
                .await;
            return None;
        };
        let (limit, max_bytes) = (
            self.settings.max_events_per_task,
            self.settings.max_tape_bytes,
        );
        // The caps are the tape's, not an attempt's: a later attempt has
        // what the earlier ones left (store reads, for retried tasks only).
        let (used, used_bytes) = if task.attempt > 1 {
            let last = self.store.last_seq(task_id).await;
            let bytes = self.store.tape_bytes(task_id).await.unwrap_or_else(|error| {
                // The attempt will most likely fail on the same store; if
                // not, its tape may pass the size cap by what came before.
                warn!(%task_id, %error, "could not read the tape's size; counting this attempt's events only");
                0
            });
            (last.ok().flatten().unwrap_or(0).saturating_sub(1), bytes)
        } else {
            (0, 0)
        };
        let room = TapeRoom {
            events: (limit.saturating_sub(used).max(1), limit),
            bytes: (max_bytes.saturating_sub(used_bytes), max_bytes),
        };
        let reporter = Reporter::for_run(
            Arc::clone(&self.store),
            task_id,
            Arc::clone(&control),
            &self.life,
            room,
            self.settings.lease_ttl,
        );
        let started = std::time::Instant::now();
        // Stopped between its claim and now: the op never runs.
        let outcome = if control.token().is_cancelled() {
            stopped_outcome(control.cause())
        } else {
            match checked_params(&*op, &mut task) {
                Ok(params) => {
                    self.drive(op, params, reporter.clone(), &control, task_id)
                        .await
                }
                Err(error) => Outcome::Failed(error),
            }
        };
        reporter.close();
        // Past its tape's cap the task ends `tape_full`, whatever it returned
        // (unless something else stopped it first: that cause stands).
        let outcome = match reporter.full_cap() {
            Some(cap) => match control.cause() {
                Some(CancelCause::TapeFull(_)) | None => Outcome::Failed(tape_full(cap)),
                cause => stopped_outcome(cause),
            },
            None => outcome,
        };
        let outcome = attempt_outcome(&task, outcome, Some(attempt_started), self.clock.now());
        let retry_at = match &outcome {
            Outcome::Retry(retry) => Some(retry.retry_at),
            _ => None,
        };
        let finished = self
            .finish_until_written(task_id, outcome, reporter.ack())
            .await;
        if let (Some((Status::Pending, error)), Some(at)) = (&finished, retry_at) {
            info!(%task_id, attempt = task.attempt, retry_at = %at, error = ?error.as_ref().map(|e| &e.code), "attempt failed; the task will be tried again");
            return Some(at);
        }
        if let Some((status, error)) = finished {
            let metrics = &self.metrics;
            metrics.finished.with(&[&task.op, status.as_str()]).inc();
            metrics
                .duration
                .with(&[&task.op, status.as_str()])
                .observe(started.elapsed());
            record_end(&tracing::Span::current(), status, error.as_ref());
        }
        None
    }

    /// Runs the op to its outcome: its own, or the stop's when its control
    /// fired (aborting it after the grace period, or at shutdown's deadline).
    async fn drive(
        &self,
        op: Arc<dyn Op>,
        params: Value,
        reporter: Reporter,
        control: &RunControl,
        task_id: TaskId,
    ) -> Outcome {
        let timeout = op.timeout();
        let grace_for_op = op.cancel_grace();
        // The limit counts from the op's start, by the clock.
        let timed_out = match timeout {
            Some(limit) => self.clock.sleep(limit),
            None => Box::pin(std::future::pending()),
        };
        let mut handle = tokio::spawn(async move { op.run(params, reporter).await });
        let hard_stop = &self.life.hard_stop;
        let token = control.token();
        let joined = tokio::select! {
            joined = &mut handle => Some(joined),
            () = token.cancelled() => None,
            () = hard_stop.cancelled() => None,
            () = timed_out => {
                if let Some(limit) = timeout {
                    control.stop(CancelCause::Timeout(limit));
                }
                None
            }
        };
        let joined = match joined {
            Some(joined) => joined,
            None => {
                // A user cancel or a timeout waits the grace period; a
                // shutdown waits for its deadline (the hard stop).
                let grace = match control.cause() {
                    Some(
                        CancelCause::User | CancelCause::Timeout(_) | CancelCause::TapeFull(_),
                    ) => self
                        .clock
                        .sleep(grace_for_op.unwrap_or(self.settings.cancel_grace)),
                    _ => Box::pin(std::future::pending()),
                };
                let joined = tokio::select! {
                    joined = &mut handle => Some(joined),
                    () = grace => None,
                    () = hard_stop.cancelled() => None,
                };
                match joined {
                    Some(joined) => joined,
                    None => {
                        warn!(%task_id, "op did not return after its cancel; aborting it");
                        handle.abort();
                        return stopped_outcome(control.cause());
                    }
                }
            }
        };
        let cancelled = token.is_cancelled();
        match joined {
            // Past its time limit the task ends `timeout`, whatever it returns.
            Ok(Ok(_)) if matches!(control.cause(), Some(CancelCause::Timeout(_))) => {
                stopped_outcome(control.cause())
            }
            Ok(Ok(result)) => Outcome::Succeeded(result),
            Ok(Err(_)) if cancelled => stopped_outcome(control.cause()),
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
            Err(_) => stopped_outcome(control.cause()),
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
    pub(crate) async fn finish_until_written(
        &self,
        task_id: TaskId,
        mut outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Option<(Status, Option<ErrorInfo>)> {
        let mut backoff = Duration::from_millis(10);
        let mut failures = 0u32;
        loop {
            match self
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
                    if !Life::unless(&self.life.background, tokio::time::sleep(backoff)).await {
                        return None;
                    }
                    super::back_off(&mut backoff, MAX_BACKOFF);
                }
            }
        }
    }
}

/// How a run that was stopped for `cause` ends.
fn stopped_outcome(cause: Option<CancelCause>) -> Outcome {
    match cause {
        Some(CancelCause::User) => Outcome::Cancelled,
        Some(CancelCause::TapeFull(cap)) => Outcome::Failed(tape_full(cap)),
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
        Some(CancelCause::Shutdown) | None => Outcome::Failed(ErrorInfo::new(
            "server_shutdown",
            "the server shut down while the task was running",
        )),
    }
}

/// The error of a task whose tape reached one of its caps.
fn tape_full(cap: TapeCap) -> ErrorInfo {
    match cap {
        TapeCap::Events(limit) => ErrorInfo::new(
            "tape_full",
            format!(
                "the task reported more than {limit} events, the cap of one tape; it was stopped. Raise max_events_per_task in the config file (or ManagerConfig) for longer tapes"
            ),
        )
        .with("max_events_per_task", limit),
        TapeCap::Bytes(max_bytes) => ErrorInfo::new(
            "tape_full",
            format!(
                "the task's events came to more than {max_bytes} bytes, the size cap of one tape; it was stopped. Raise max_tape_bytes in the config file (or ManagerConfig) for larger tapes"
            ),
        )
        .with("max_tape_bytes", max_bytes),
    }
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

/// The params the op runs with: a task submitted in SQL (its digest the
/// mark [`crate::SQL_SUBMIT_DIGEST`]) has them checked by the op now, as
/// any other submit had at its submit; a refusal fails the task
/// `invalid_request` naming the field (permanent: no attempt fixes it).
pub(crate) fn checked_params(op: &dyn Op, task: &mut Task) -> Result<Value, ErrorInfo> {
    let params = std::mem::take(&mut task.params);
    if task.params_digest != crate::SQL_SUBMIT_DIGEST {
        return Ok(params);
    }
    op.prepare(params).map_err(|refusal| {
        let message = if refusal.field.is_empty() {
            refusal.message.clone()
        } else {
            format!("{}: {}", refusal.field, refusal.message)
        };
        ErrorInfo::new("invalid_request", message)
            .with("field", refusal.field)
            .with("kind", refusal.kind)
            .with("permanent", true)
    })
}
