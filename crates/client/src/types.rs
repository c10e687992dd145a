//! What the client sends: list filters and submissions. The response bodies
//! are `tasktape-wire`'s, re-exported at the crate root.

use serde::Serialize;
use serde_json::Value;
use tasktape_wire::Status;

/// The filters and paging of a list call; `Default` is the server's first
/// page of 100.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only tasks in this status.
    pub status: Option<Status>,
    /// Only tasks of this op.
    pub op: Option<String>,
    /// Page size, 1..=1000.
    pub limit: Option<u32>,
    /// Where to continue ([`TaskPage::next_cursor`]).
    pub cursor: Option<String>,
    /// Only tasks created at or after this time.
    pub created_after: Option<tasktape_wire::Timestamp>,
    /// Only tasks created before this time.
    pub created_before: Option<tasktape_wire::Timestamp>,
}

/// What to submit: an op, its params, and optionally an idempotency key.
#[derive(Clone, Debug, Serialize)]
pub struct Submission {
    /// The op's name.
    pub op: String,
    /// Its params (an object).
    pub params: Value,
    /// Submitting twice with one key (and the same params) gives the first
    /// task back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Not before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<tasktape_wire::Timestamp>,
    /// Higher runs first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Retries for this task (overrides the op's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<tasktape_wire::RetryPolicy>,
}

impl Submission {
    /// `op` with `params` and no key.
    pub fn new(op: impl Into<String>, params: Value) -> Self {
        Submission {
            op: op.into(),
            params,
            idempotency_key: None,
            run_at: None,
            priority: None,
            retry: None,
        }
    }

    /// The same with an idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}
