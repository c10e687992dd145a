//! Tape events: their bodies, their JSON encoding, and the tape grammar.
//!
//! # The tape grammar
//!
//! Every task's tape is a sequence of events with `seq` = 1, 2, 3 … and no gaps:
//!
//! ```text
//! tape := task_started (progress | log | partial)* final
//!       | final                      (cancelled or failed before it started)
//! ```
//!
//! A retried task keeps one tape: each failed attempt but the last ends with
//! a `partial` of kind `tasktape.attempt_failed` (the task is `pending`
//! then: **a pending task's tape is empty or ends with that partial**), and
//! the next attempt begins with a `log` line, not a second `task_started`.
//!
//! - `task_started` is written by the store's `start`, in the same
//!   transaction that makes the row `running`; it is seq 1 when present.
//! - `progress`, `log` and `partial` are written by `append`, only while the
//!   row is `running`.
//! - `final` is written by the store's `finish` (or by `request_cancel` on a
//!   pending task), in the same transaction that makes the row terminal. It is
//!   the last event, there is exactly one, and its `status` equals the row's.
//! - `heartbeat` is a streaming keep-alive: never stored, always seq 0.
//!
//! [`validate_tape`] checks a tape against this grammar and its row.
//!
//! Stores keep each event as its JSON text ([`StoredEvent`]) so that replay
//! copies bytes instead of re-encoding them.

use std::fmt::Write as _;

use crate::model::{Outcome, Status};
use crate::time::Timestamp;

pub use tasktape_wire::event::{Event, EventBody, EventKind};

/// How the engine writes event bodies: encoding for storage, and the
/// `final` body of an outcome.
pub trait BodyExt {
    /// Encodes the body for storage: its JSON object without the closing
    /// brace, so that [`EncodedBody::seal`] can add `seq` and `ts` cheaply.
    fn encode(&self) -> EncodedBody;
}

impl BodyExt for EventBody {
    fn encode(&self) -> EncodedBody {
        let mut json = serde_json::to_string(self).unwrap_or_else(|_| {
            // Serializing these types cannot fail: every map key is a string.
            format!("{{\"type\":\"{}\"}}", self.kind().as_str())
        });
        json.pop();
        EncodedBody {
            kind: self.kind(),
            open: json,
        }
    }
}

impl Outcome {
    /// The `final` body for this outcome.
    pub fn final_body(&self) -> EventBody {
        match self {
            Outcome::Succeeded(result) => EventBody::Final {
                status: Status::Succeeded,
                result: Some(result.clone()),
                error: None,
            },
            Outcome::Failed(error) => EventBody::Final {
                status: Status::Failed,
                result: None,
                error: Some(error.clone()),
            },
            Outcome::Cancelled => EventBody::Final {
                status: Status::Cancelled,
                result: None,
                error: None,
            },
            // Not a final; should a store end the task instead, it failed.
            Outcome::Retry(retry) => EventBody::Final {
                status: Status::Failed,
                result: None,
                error: Some(retry.error.clone()),
            },
        }
    }
}

/// An event body encoded as JSON, still open for `seq` and `ts`.
#[derive(Clone, Debug)]
pub struct EncodedBody {
    kind: EventKind,
    open: String,
}

impl EncodedBody {
    /// The body's type.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The JSON object without its closing brace (stores that seal events
    /// themselves, say in SQL, append `,"seq":…,"ts":"…"}`).
    pub fn open_json(&self) -> &str {
        &self.open
    }

    /// Closes the object with `seq` and `ts`, giving the stored event.
    pub fn seal(&self, seq: u64, ts: Timestamp) -> StoredEvent {
        let mut json = String::with_capacity(self.open.len() + 48);
        json.push_str(&self.open);
        // Writing into a String cannot fail.
        let _ = write!(json, ",\"seq\":{seq},\"ts\":\"");
        ts.write_to(&mut json);
        json.push_str("\"}");
        StoredEvent { seq, json }
    }
}

/// One event as a store keeps it: its seq and its full JSON text
/// (`{"type":…, <body fields>, "seq":…, "ts":…}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's place on the tape.
    pub seq: u64,
    /// The whole event as JSON.
    pub json: String,
}

impl StoredEvent {
    /// The event's `type` tag, read from the stored text without decoding it.
    pub fn kind_name(&self) -> &str {
        self.json
            .strip_prefix("{\"type\":\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("event")
    }

    /// Whether this is the tape's `final` event.
    pub fn is_final(&self) -> bool {
        self.kind_name() == "final"
    }

    /// Decodes the JSON into a typed [`Event`].
    pub fn decode(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

/// How a tape breaks the grammar or disagrees with its row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrammarError {
    /// The seqs are not 1, 2, 3, … without gaps.
    #[error("seq {found} at position {index}, expected {expected}")]
    Gap {
        /// Index in the tape.
        index: usize,
        /// What the seq should be.
        expected: u64,
        /// What it is.
        found: u64,
    },
    /// An event type where the grammar does not allow it.
    #[error("{kind} at seq {seq} is out of place")]
    OutOfPlace {
        /// The event's type.
        kind: &'static str,
        /// Its seq.
        seq: u64,
    },
    /// The row's status and the tape disagree.
    #[error("row is {row} but the tape {tape}")]
    RowMismatch {
        /// The row's status.
        row: Status,
        /// What the tape shows.
        tape: String,
    },
}

/// Checks a whole tape against the grammar and against its row's status.
pub fn validate_tape(row_status: Status, tape: &[Event]) -> Result<(), GrammarError> {
    for (index, event) in tape.iter().enumerate() {
        let expected = index as u64 + 1;
        if event.seq != expected {
            return Err(GrammarError::Gap {
                index,
                expected,
                found: event.seq,
            });
        }
        let kind = event.body.kind();
        let first = index == 0;
        let last = index + 1 == tape.len();
        let allowed = match kind {
            EventKind::TaskStarted => first,
            EventKind::Progress | EventKind::Log | EventKind::Partial => !first,
            EventKind::Final => last,
            EventKind::Heartbeat => false,
        };
        if !allowed {
            return Err(GrammarError::OutOfPlace {
                kind: kind.as_str(),
                seq: event.seq,
            });
        }
    }
    let mismatch = |tape: &str| GrammarError::RowMismatch {
        row: row_status,
        tape: tape.to_owned(),
    };
    match (row_status, tape.last().map(|event| &event.body)) {
        (Status::Pending, None) => Ok(()),
        // Between attempts of a retried task.
        (Status::Pending, Some(EventBody::Partial { kind, .. }))
            if kind == crate::retry::ATTEMPT_FAILED =>
        {
            Ok(())
        }
        (Status::Pending, Some(_)) => Err(mismatch("is not empty and does not end an attempt")),
        (Status::Running, Some(EventBody::Final { .. })) => Err(mismatch("has a final")),
        (Status::Running, Some(_)) => Ok(()),
        (Status::Running, None) => Err(mismatch("is empty")),
        (
            terminal,
            Some(EventBody::Final {
                status,
                result,
                error,
            }),
        ) => {
            if tape.len() == 1 && *status == Status::Succeeded {
                return Err(mismatch(
                    "is a lone final succeeded: a task that never ran cannot succeed",
                ));
            }
            if *status != terminal {
                return Err(mismatch(&format!("ends with final {status}")));
            }
            let shaped = match status {
                // An op may return `null`, which decodes as an absent result.
                Status::Succeeded => error.is_none(),
                Status::Failed => result.is_none() && error.is_some(),
                _ => result.is_none() && error.is_none(),
            };
            if shaped {
                Ok(())
            } else {
                Err(mismatch("has a final with the wrong fields"))
            }
        }
        (_, _) => Err(mismatch("has no final")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ErrorInfo, TaskId};
    use serde_json::json;

    fn event(seq: u64, body: EventBody) -> Event {
        Event {
            body,
            seq,
            ts: Timestamp::from_millis(0),
        }
    }

    fn started() -> EventBody {
        EventBody::TaskStarted {
            task_id: TaskId::from_bytes([0; 16]),
            op: "echo".into(),
        }
    }

    fn progress() -> EventBody {
        EventBody::Progress {
            phase: "p".into(),
            current: 1,
            total: 2,
            detail: None,
        }
    }

    fn final_(outcome: Outcome) -> EventBody {
        outcome.final_body()
    }

    #[test]
    fn encodes_like_the_wire_samples() {
        let body = EventBody::Progress {
            phase: "echo".into(),
            current: 1,
            total: 3,
            detail: Some(json!({"step":1})),
        };
        let stored = body
            .encode()
            .seal(2, Timestamp::parse("2026-11-27T22:05:20.255Z").unwrap());
        assert_eq!(
            stored.json,
            r#"{"type":"progress","phase":"echo","current":1,"total":3,"detail":{"step":1},"seq":2,"ts":"2026-11-27T22:05:20.255Z"}"#
        );
        let cancelled = final_(Outcome::Cancelled)
            .encode()
            .seal(33, Timestamp::from_millis(0));
        assert_eq!(
            cancelled.json,
            r#"{"type":"final","status":"cancelled","seq":33,"ts":"1970-01-01T00:00:00.000Z"}"#
        );
        let heartbeat = EventBody::Heartbeat {}
            .encode()
            .seal(0, Timestamp::from_millis(0));
        assert_eq!(
            heartbeat.json,
            r#"{"type":"heartbeat","seq":0,"ts":"1970-01-01T00:00:00.000Z"}"#
        );
        assert_eq!(stored.kind_name(), "progress");
        assert!(cancelled.is_final());
        let decoded = stored.decode().unwrap();
        assert_eq!(decoded.seq, 2);
        assert_eq!(decoded.body, body);
        assert_eq!(serde_json::to_string(&decoded).unwrap(), stored.json);
    }

    #[test]
    fn grammar_table() {
        use Status::*;
        let ok = |status, tape: Vec<EventBody>| {
            let tape: Vec<Event> = tape
                .into_iter()
                .enumerate()
                .map(|(i, body)| event(i as u64 + 1, body))
                .collect();
            validate_tape(status, &tape)
        };
        let succeeded = || final_(Outcome::Succeeded(json!(1)));
        let failed = || final_(Outcome::Failed(ErrorInfo::new("x", "y")));
        let cancelled = || final_(Outcome::Cancelled);
        let cases: Vec<(Status, Vec<EventBody>, bool)> = vec![
            (Pending, vec![], true),
            (Running, vec![started()], true),
            (Running, vec![started(), progress(), progress()], true),
            (Succeeded, vec![started(), progress(), succeeded()], true),
            (Failed, vec![started(), failed()], true),
            (Cancelled, vec![cancelled()], true),
            (Failed, vec![failed()], true),
            (Succeeded, vec![succeeded()], false),
            (Pending, vec![started()], false),
            (Running, vec![], false),
            (Running, vec![progress()], false),
            (Running, vec![started(), started()], false),
            (Running, vec![started(), succeeded()], false),
            (Succeeded, vec![started()], false),
            (Succeeded, vec![started(), cancelled()], false),
            (Succeeded, vec![started(), succeeded(), progress()], false),
            (Succeeded, vec![started(), succeeded(), succeeded()], false),
            (Cancelled, vec![cancelled(), cancelled()], false),
            (Running, vec![started(), EventBody::Heartbeat {}], false),
            (
                Succeeded,
                vec![started(), final_(Outcome::Failed(ErrorInfo::new("a", "b")))],
                false,
            ),
        ];
        for (status, tape, valid) in cases {
            let kinds: Vec<_> = tape.iter().map(|b| b.kind().as_str()).collect();
            assert_eq!(ok(status, tape).is_ok(), valid, "{status} {kinds:?}");
        }
        let gap = vec![event(1, started()), event(3, progress())];
        assert!(matches!(
            validate_tape(Running, &gap),
            Err(GrammarError::Gap { .. })
        ));
    }
}
