//! Retries: the plan a task carries (its op's policy, or its submit's, and
//! whether the op is idempotent), which failures another attempt may fix,
//! how long to wait before it, and the final error's `detail.attempts`.
//!
//! A retried task keeps its id. Between attempts it is `pending` with a
//! `run_at`, its tape ending with a `tasktape.attempt_failed` partial
//! (`Outcome::Retry` in the store); the next attempt writes a `log` line,
//! not a second `task_started`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::EventBody;
use crate::model::{ErrorInfo, Outcome, Retry, Task};
use crate::time::Timestamp;
pub use tasktape_wire::jobs::{ATTEMPT_FAILED, AttemptFailed, Backoff, RetryPolicy};

/// What a task stores about its retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPlan {
    /// How many attempts and how far apart.
    pub policy: RetryPolicy,
    /// Whether the op may run again after its run was lost (its instance
    /// died: `owner_lost`, `server_restart`) or stopped by a shutdown.
    #[serde(default)]
    pub idempotent: bool,
}

/// Error codes no other attempt can fix.
const NEVER_RETRIED: &[&str] = &[
    "invalid_request",
    "tape_full",
    "op_not_found",
    "internal_error",
];

/// Error codes of runs the server lost or stopped (the op may have done
/// part of its work): retried only for an idempotent op.
const RETRIED_IF_IDEMPOTENT: &[&str] = &[
    "owner_lost",
    "server_restart",
    "server_shutdown",
    "orphaned",
];

impl RetryPlan {
    /// Whether `error`, ending attempt `attempt`, gets another attempt.
    pub fn retries(&self, error: &ErrorInfo, attempt: u32) -> bool {
        if attempt >= self.policy.max_attempts {
            return false;
        }
        if is_permanent(error) || NEVER_RETRIED.contains(&error.code.as_str()) {
            return false;
        }
        if RETRIED_IF_IDEMPOTENT.contains(&error.code.as_str()) {
            return self.idempotent;
        }
        true
    }

    /// The wait after attempt `attempt` (1-based) failed: `initial_ms`,
    /// doubled per attempt for `exponential`, at most `max_ms`, moved by
    /// `jitter` ∈ [-1, 1] × 20 % when the policy jitters.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let policy = &self.policy;
        let base = match policy.backoff {
            Backoff::Fixed => policy.initial_ms,
            Backoff::Exponential => {
                let doublings = attempt.saturating_sub(1).min(40);
                policy.initial_ms.saturating_mul(1u64 << doublings)
            }
        }
        .min(policy.max_ms);
        let ms = if policy.jitter {
            (base as f64 * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0))).round() as u64
        } else {
            base
        };
        Duration::from_millis(ms)
    }

    /// When the next attempt is due after attempt `attempt` failed at `now`.
    pub fn retry_at(&self, attempt: u32, now: Timestamp) -> Timestamp {
        let wait = self.backoff(attempt, random_unit());
        now.add_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Marks an error as permanent: no retry policy tries its task again.
pub fn permanent(error: ErrorInfo) -> ErrorInfo {
    error.with("permanent", true)
}

/// Whether the error was marked [`permanent`].
pub fn is_permanent(error: &ErrorInfo) -> bool {
    error.extra.get("permanent") == Some(&Value::Bool(true))
}

/// One attempt's record, as the row's history and `detail.attempts` hold it.
pub fn attempt_record(
    attempt: u32,
    error: &ErrorInfo,
    started_at: Option<Timestamp>,
    ended_at: Timestamp,
) -> Value {
    serde_json::json!({
        "attempt": attempt,
        "error": error,
        "started_at": started_at,
        "ended_at": ended_at,
    })
}

/// The last attempt's error with every attempt's record under
/// `detail.attempts` (merged into an object `detail`; an error whose
/// `detail` is something else gets `attempts` beside it).
pub fn with_attempts(mut error: ErrorInfo, attempts: Vec<Value>) -> ErrorInfo {
    match error.extra.get_mut("detail") {
        Some(Value::Object(detail)) => {
            detail.insert("attempts".into(), Value::Array(attempts));
        }
        Some(_) => {
            error
                .extra
                .insert("attempts".into(), Value::Array(attempts));
        }
        None => {
            let mut detail = Map::new();
            detail.insert("attempts".into(), Value::Array(attempts));
            error.extra.insert("detail".into(), Value::Object(detail));
        }
    }
    error
}

/// The partial that ends failed attempt `attempt` of a task retried at
/// `retry.retry_at`.
pub fn attempt_failed(attempt: u32, retry: &Retry) -> EventBody {
    let payload = AttemptFailed {
        attempt,
        error: retry.error.clone(),
        retry_at: retry.retry_at,
    };
    EventBody::Partial {
        kind: ATTEMPT_FAILED.to_owned(),
        payload: serde_json::to_value(payload).unwrap_or(Value::Null),
    }
}

/// The log line a later attempt of `task` (as the claim returned it, its
/// `attempt` counted up) begins with.
pub fn attempt_started(task: &Task) -> EventBody {
    EventBody::Log {
        level: "info".to_owned(),
        message: attempt_started_message(task.attempt, task.max_attempts),
    }
}

/// `attempt 2 of 5 started`.
pub fn attempt_started_message(attempt: u32, max_attempts: u32) -> String {
    format!("attempt {attempt} of {max_attempts} started")
}

/// What attempt `task.attempt` records as it ends at `now` with `outcome`:
/// a failure its retry plan retries becomes [`Outcome::Retry`]; the last
/// failure of a retried task carries every attempt under `detail.attempts`.
/// The manager applies it to a run's outcome, a store to a lost run's
/// (`Store::reap`), from the row it locked.
pub fn attempt_outcome(
    task: &Task,
    outcome: Outcome,
    started_at: Option<Timestamp>,
    now: Timestamp,
) -> Outcome {
    let Outcome::Failed(error) = outcome else {
        return outcome;
    };
    let Some(plan) = &task.retry else {
        return Outcome::Failed(error);
    };
    let attempt = task.attempt.max(1);
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

/// A uniform number in [-1, 1] (from a v4 UUID's random bits: its low 62
/// bits are random, the two above them the fixed variant).
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() as u64 & ((1u64 << 62) - 1)) >> 9;
    (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(max_attempts: u32, backoff: Backoff, jitter: bool, idempotent: bool) -> RetryPlan {
        RetryPlan {
            policy: RetryPolicy {
                max_attempts,
                backoff,
                initial_ms: 1000,
                max_ms: 5000,
                jitter,
            },
            idempotent,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_within_a_fifth() {
        let exponential = plan(9, Backoff::Exponential, false, false);
        let waits: Vec<u64> = (1..=5)
            .map(|attempt| exponential.backoff(attempt, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(waits, [1000, 2000, 4000, 5000, 5000]);
        let fixed = plan(9, Backoff::Fixed, false, false);
        assert_eq!(fixed.backoff(4, 0.0), Duration::from_millis(1000));
        let jittered = plan(9, Backoff::Exponential, true, false);
        assert_eq!(jittered.backoff(2, 1.0), Duration::from_millis(2400));
        assert_eq!(jittered.backoff(2, -1.0), Duration::from_millis(1600));
        let units: Vec<f64> = (0..2000).map(|_| random_unit()).collect();
        assert!(units.iter().all(|unit| (-1.0..=1.0).contains(unit)));
        // Both halves of the range, about evenly.
        let below = units.iter().filter(|unit| **unit < 0.0).count();
        assert!((800..=1200).contains(&below), "{below} of 2000 below 0");
        assert!(units.iter().any(|unit| *unit < -0.9) && units.iter().any(|unit| *unit > 0.9));
    }

    #[test]
    fn which_failures_are_retried() {
        let plain = plan(3, Backoff::Fixed, false, false);
        let idempotent = plan(3, Backoff::Fixed, false, true);
        let failed = ErrorInfo::new("op_error", "boom");
        assert!(plain.retries(&failed, 1));
        assert!(plain.retries(&failed, 2));
        assert!(!plain.retries(&failed, 3), "the last attempt");
        assert!(!plain.retries(&permanent(failed.clone()), 1));
        for code in ["invalid_request", "tape_full"] {
            assert!(!idempotent.retries(&ErrorInfo::new(code, "x"), 1), "{code}");
        }
        for code in ["owner_lost", "server_restart", "server_shutdown"] {
            let error = ErrorInfo::new(code, "x");
            assert!(!plain.retries(&error, 1), "{code}");
            assert!(idempotent.retries(&error, 1), "{code}");
        }
        assert!(plain.retries(&ErrorInfo::new("timeout", "x"), 1));
    }

    #[test]
    fn attempts_go_under_detail() {
        let records = vec![serde_json::json!({"attempt": 1})];
        let plain = with_attempts(ErrorInfo::new("op_error", "x"), records.clone());
        assert_eq!(plain.extra["detail"]["attempts"][0]["attempt"], 1);
        let object = with_attempts(
            ErrorInfo::new("op_error", "x").with("detail", serde_json::json!({"k": 1})),
            records.clone(),
        );
        assert_eq!(object.extra["detail"]["k"], 1);
        assert_eq!(object.extra["detail"]["attempts"][0]["attempt"], 1);
        let text = with_attempts(
            ErrorInfo::new("store_error", "x").with("detail", "why"),
            records,
        );
        assert_eq!(text.extra["detail"], "why");
        assert_eq!(text.extra["attempts"][0]["attempt"], 1);
    }
}
