//! The event texts the PL/pgSQL functions write where only the row they
//! lock knows a value (a task's id and op at its start, an attempt's
//! number): made here from core's bodies, encoded as every event is
//! (`tasktape_core::retry`, `EventBody`), with marks that the functions
//! (migration 7) replace by the row's values. The SQL names the marks by
//! placeholder (`{mark.attempt}`), rendered from [`marks`], so both sides
//! agree; the functions only fill in marks (an attempt mark: its first
//! match, which comes before any error text) and seal (`seq`, `ts`).

use tasktape_core::BodyExt as _;
use tasktape_core::event::EventBody;
use tasktape_core::model::{Retry, TaskId};
use tasktape_core::retry::{attempt_failed, attempt_record, attempt_started_message};
use tasktape_core::time::Timestamp;

/// Where the task's id goes (its JSON string).
const TASK_ID: &str = "\"00000000-0000-0000-0000-000000000000\"";
/// Where the op's name goes (its JSON string).
const OP: &str = "\"@op@\"";
/// Where the attempt's number goes.
const ATTEMPT: u32 = u32::MAX;
/// Where the task's most attempts go.
const MAX_ATTEMPTS: u32 = u32::MAX - 1;

/// The marks as the SQL names them, and their text.
pub(crate) fn marks() -> [(&'static str, String); 4] {
    [
        ("{mark.task_id}", TASK_ID.to_owned()),
        ("{mark.op}", OP.to_owned()),
        ("{mark.attempt}", ATTEMPT.to_string()),
        ("{mark.max_attempts}", MAX_ATTEMPTS.to_string()),
    ]
}

/// The texts a start writes, made once per store.
#[derive(Clone, Debug)]
pub(crate) struct StartTexts {
    /// `task_started` (open JSON) with the id and op marked.
    pub(crate) started: String,
    /// A later attempt's log line (open JSON) with its numbers marked.
    pub(crate) attempt: String,
}

impl StartTexts {
    pub(crate) fn new() -> Self {
        let started = EventBody::TaskStarted {
            task_id: TaskId::from_bytes([0; 16]),
            op: "@op@".to_owned(),
        };
        let attempt = EventBody::Log {
            level: "info".to_owned(),
            message: attempt_started_message(ATTEMPT, MAX_ATTEMPTS),
        };
        StartTexts {
            started: started.encode().open_json().to_owned(),
            attempt: attempt.encode().open_json().to_owned(),
        }
    }
}

/// What a failed attempt's requeue writes, with its number marked: the
/// `attempt_failed` partial (open JSON) and the history record (ended
/// `now`).
pub(crate) fn requeue_texts(retry: &Retry, now: Timestamp) -> (String, String) {
    let partial = attempt_failed(ATTEMPT, retry)
        .encode()
        .open_json()
        .to_owned();
    let record = attempt_record(ATTEMPT, &retry.error, retry.started_at, now).to_string();
    (partial, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasktape_core::ErrorInfo;

    /// What the functions make of the marked texts (the SQL's `replace`s)
    /// is exactly what core writes for the row's values.
    #[test]
    fn filled_marks_give_cores_own_texts() {
        let texts = StartTexts::new();
        let task_id = TaskId::new();
        let op = "ingest \"docs\" — ünïcode";
        let filled = texts
            .started
            .replace(TASK_ID, &format!("\"{task_id}\""))
            .replace(OP, &serde_json::to_string(op).unwrap());
        let started = EventBody::TaskStarted {
            task_id,
            op: op.to_owned(),
        };
        assert_eq!(filled, started.encode().open_json());
        let filled = texts
            .attempt
            .replace(&ATTEMPT.to_string(), "2")
            .replace(&MAX_ATTEMPTS.to_string(), "5");
        let log = EventBody::Log {
            level: "info".to_owned(),
            message: attempt_started_message(2, 5),
        };
        assert_eq!(filled, log.encode().open_json());

        // An error whose own text and detail hold the mark: only the first
        // match (the attempt's, before the error) is the function's.
        let error = ErrorInfo::new("flaky", "attempt 4294967295 said \"attempt\":4294967295")
            .with("detail", serde_json::json!({"attempt": ATTEMPT}));
        let retry = Retry {
            error,
            retry_at: Timestamp::from_millis(1_000),
            started_at: Some(Timestamp::from_millis(500)),
        };
        let now = Timestamp::from_millis(900);
        let (partial, record) = requeue_texts(&retry, now);
        let mark = format!("\"attempt\":{ATTEMPT}");
        let first = |text: &str| text.replacen(&mark, "\"attempt\":3", 1);
        assert_eq!(
            first(&partial),
            attempt_failed(3, &retry).encode().open_json()
        );
        assert_eq!(
            first(&record),
            attempt_record(3, &retry.error, retry.started_at, now).to_string()
        );
    }
}
