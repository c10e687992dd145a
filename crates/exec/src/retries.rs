//! `retries = {…}` of an exec op: the retry policy, plus the exit codes
//! that mean "do not try again" (`permanent_exit_codes`).

use serde::Deserialize;
use tasktape_core::retry::{Backoff, RetryPolicy};

/// `[ops.NAME] retries = { max_attempts = 5, backoff = "exponential",
/// initial_ms = 1000, max_ms = 300000, jitter = true,
/// permanent_exit_codes = [2] }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesSpec {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// `exponential` (default) or `fixed`.
    #[serde(default)]
    pub backoff: Backoff,
    /// The first wait in ms (default 1000).
    #[serde(default)]
    pub initial_ms: Option<u64>,
    /// The longest wait in ms (default 300000).
    #[serde(default)]
    pub max_ms: Option<u64>,
    /// ±20 % at random (default true).
    #[serde(default)]
    pub jitter: Option<bool>,
    /// Exit statuses that end the task at once, not retried.
    #[serde(default)]
    pub permanent_exit_codes: Vec<i32>,
}

impl RetriesSpec {
    /// The policy; the error names the key that is wrong.
    pub fn policy(&self) -> Result<RetryPolicy, String> {
        let defaults = RetryPolicy::once();
        let policy = RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            initial_ms: self.initial_ms.unwrap_or(defaults.initial_ms),
            max_ms: self.max_ms.unwrap_or(defaults.max_ms),
            jitter: self.jitter.unwrap_or(defaults.jitter),
        };
        policy
            .check()
            .map_err(|(field, message)| format!("retries.{field}: {message}"))?;
        Ok(policy)
    }
}
