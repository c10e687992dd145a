//! The stand-in op of a remote worker's op: it validates submits against
//! the declared JSON Schema, and its run relays what the worker reports
//! (events through the run's Reporter, in order; the finish as the op's
//! result) and pushes the run's stop (a cancel, a time limit, a shutdown)
//! to the worker.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tasktape_wire::worker::{ItemAnswer, WorkerFinish, WorkerOp};
use tokio::sync::mpsc;

use super::{Msg, Remote, Signal};
use crate::model::ErrorInfo;
use crate::op::{Op, OpError, OpResult, ParamsError};
use crate::reporter::{ReportError, Reporter};
use crate::retry::RetryPolicy;

/// A remote op: its declaration and compiled params schema.
pub(crate) struct RemoteOp {
    pub(crate) decl: WorkerOp,
    validator: jsonschema::Validator,
    /// The schema as shown (`GET /v1/ops`): a secret (`writeOnly`)
    /// property's allowed values and default left out.
    shown: Value,
    remote: Weak<Remote>,
}

/// The names of the secret (`writeOnly`) top-level params.
fn secrets(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, property)| property.get("writeOnly") == Some(&Value::Bool(true)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// `schema` without what would show a secret's values.
pub(crate) fn redacted(schema: &Value) -> Value {
    let mut shown = schema.clone();
    for name in secrets(schema) {
        if let Some(property) = shown
            .get_mut("properties")
            .and_then(|properties| properties.get_mut(&name))
            .and_then(Value::as_object_mut)
        {
            for key in ["enum", "const", "default", "examples"] {
                property.remove(key);
            }
        }
    }
    shown
}

impl RemoteOp {
    /// The op for `decl`; a schema that does not compile is refused with
    /// what is wrong.
    pub(crate) fn new(decl: WorkerOp, remote: Weak<Remote>) -> Result<RemoteOp, String> {
        let validator = jsonschema::validator_for(&decl.params_schema)
            .map_err(|error| format!("params_schema is not a valid JSON Schema: {error}"))?;
        let shown = redacted(&decl.params_schema);
        Ok(RemoteOp {
            decl,
            validator,
            shown,
            remote,
        })
    }
}

/// A JSON pointer (`/items/0/name`) as a field path (`items.0.name`).
fn field_of(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

#[async_trait]
impl Op for RemoteOp {
    fn name(&self) -> &str {
        &self.decl.name
    }

    fn description(&self) -> &str {
        &self.decl.description
    }

    fn params_schema(&self) -> Value {
        self.shown.clone()
    }

    fn prepare(&self, params: Value) -> Result<Value, ParamsError> {
        let params = Value::Object(crate::op::params_object(params)?);
        if let Some(error) = self.validator.iter_errors(&params).next() {
            let mut field = field_of(&error.instance_path().to_string());
            // A missing required property is named by itself, not its parent.
            if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_owned);
                field = if field.is_empty() {
                    name
                } else {
                    format!("{field}.{name}")
                };
            }
            // A secret's value (and what it may be) is never said back.
            let secret = secrets(&self.decl.params_schema)
                .iter()
                .any(|name| field == *name || field.starts_with(&format!("{name}.")));
            let message = if secret {
                "is not a value this secret parameter takes".to_owned()
            } else {
                error.to_string()
            };
            return Err(ParamsError::new(field, "value_error", message));
        }
        Ok(params)
    }

    async fn run(&self, _params: Value, reporter: Reporter) -> OpResult {
        let Some(remote) = self.remote.upgrade() else {
            return Err(OpError::new(
                "server_shutdown",
                "the server is shutting down",
            ));
        };
        remote.serve_run(reporter).await
    }

    fn timeout(&self) -> Option<Duration> {
        self.decl.timeout_ms.map(Duration::from_millis)
    }

    fn retry(&self) -> Option<RetryPolicy> {
        self.decl.retry.clone()
    }

    fn idempotent(&self) -> bool {
        self.decl.idempotent
    }

    fn is_remote(&self) -> bool {
        true
    }
}

/// The run's side: forgets the run however it ends; a run the engine
/// stopped before the worker finished it is pushed a `stop`.
struct Forget {
    remote: Arc<Remote>,
    task_id: crate::model::TaskId,
    attempt: u32,
    finished: bool,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.remote
            .forget(self.task_id, self.attempt, !self.finished);
    }
}

impl Remote {
    /// Relays one claimed task's run between the worker and the engine.
    pub(crate) async fn serve_run(self: &Arc<Self>, reporter: Reporter) -> OpResult {
        let task_id = reporter.task_id();
        let Some((mut inbox, attempt)) = self.attach(task_id) else {
            return Err(lost("owner_lost", "the worker that claimed it is gone"));
        };
        let mut guard = Forget {
            remote: Arc::clone(self),
            task_id,
            attempt,
            finished: false,
        };
        let mut stop_sent = false;
        // The worker's number of the next event to write (see
        // `ReportItem::offset`).
        let mut written = 0_u64;
        loop {
            tokio::select! {
                message = inbox.recv() => {
                    let outcome = match message {
                        Some(Msg::Item { offset, events, finish, answer }) => {
                            match relay(&reporter, (offset, &mut written), events, finish).await {
                                Relayed::Answer(reply) if reply.ok => {
                                    let _ = answer.send(reply);
                                    continue;
                                }
                                Relayed::Answer(reply) => {
                                    // The worker is told to stop: the run ends
                                    // here too (a full tape already stopped it).
                                    let code = reply.code.clone().unwrap_or_default();
                                    let message = reply.message.clone().unwrap_or_default();
                                    let _ = answer.send(reply);
                                    if code == "tape_full" {
                                        continue;
                                    }
                                    Err(OpError(ErrorInfo::new(code, message)))
                                }
                                Relayed::Finished(reply, outcome) => {
                                    let _ = answer.send(reply);
                                    outcome
                                }
                            }
                        }
                        Some(Msg::Lost(code, message)) => Err(lost(code, &message)),
                        None => Err(lost("owner_lost", "the worker's session ended")),
                    };
                    guard.finished = true;
                    return outcome;
                }
                () = reporter.cancelled(), if !stop_sent => {
                    stop_sent = true;
                    self.signal_task(task_id, Signal::Cancel(task_id));
                }
            }
        }
    }
}

fn lost(code: &str, message: &str) -> OpError {
    OpError(ErrorInfo::new(code, message))
}

enum Relayed {
    /// Written (or refused: the worker stops); the run goes on.
    Answer(ItemAnswer),
    Finished(ItemAnswer, OpResult),
}

/// Writes an item's events in order, then takes its finish. An item that
/// says where it starts (its `offset` in the worker's numbering of the
/// run's events) skips those before `written`, the next one due: they were
/// written from a report the worker sent again after losing its answer.
/// An offset past `written` is taken as it is (the worker left events out,
/// say too large to send).
async fn relay(
    reporter: &Reporter,
    (offset, written): (Option<u64>, &mut u64),
    events: Vec<tasktape_wire::worker::WorkerEvent>,
    finish: Option<WorkerFinish>,
) -> Relayed {
    let task_id = reporter.task_id();
    let skip = match offset {
        None => 0,
        Some(offset) if offset < *written => {
            usize::try_from(*written - offset).unwrap_or(usize::MAX)
        }
        Some(offset) => {
            *written = offset;
            0
        }
    };
    for event in events.into_iter().skip(skip) {
        let written_now = match event.ts {
            Some(at) => reporter.event_at(event.body, at).await,
            None => reporter.event(event.body).await,
        };
        match written_now {
            Ok(()) => *written = written.saturating_add(1),
            Err(ReportError::Dropped) => {
                return Relayed::Answer(ItemAnswer::stop(
                    task_id,
                    "task_ended",
                    "the task has ended; nothing more is written",
                ));
            }
            Err(ReportError::TapeFull { limit }) => {
                return Relayed::Answer(ItemAnswer::stop(
                    task_id,
                    "tape_full",
                    format!("the task's tape is full ({limit} events); it ends failed"),
                ));
            }
            Err(ReportError::TapeTooLarge { max_bytes }) => {
                return Relayed::Answer(ItemAnswer::stop(
                    task_id,
                    "tape_full",
                    format!("the task's tape is full ({max_bytes} bytes); it ends failed"),
                ));
            }
            Err(ReportError::Store(error)) => {
                return Relayed::Answer(ItemAnswer::stop(task_id, "store_error", error));
            }
        }
    }
    let Some(finish) = finish else {
        return Relayed::Answer(ItemAnswer::ok(task_id));
    };
    let outcome = match finish.error {
        Some(error) => {
            let mut info = ErrorInfo::new(error.code, error.message);
            if let Some(detail) = error.detail {
                info.extra.insert("detail".to_owned(), detail);
            }
            let failure = OpError(info);
            Err(if error.permanent {
                failure.into_permanent()
            } else {
                failure
            })
        }
        None => Ok(finish.result.unwrap_or(Value::Null)),
    };
    Relayed::Finished(ItemAnswer::ok(task_id), outcome)
}

/// A run's inbox: what the report route sends it.
pub(crate) type Inbox = mpsc::UnboundedReceiver<Msg>;
