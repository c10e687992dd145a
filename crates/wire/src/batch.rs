//! Bulk submit: `POST /v1/tasks/batch` takes many submissions and answers
//! one result per submission, in order.

use serde::{Deserialize, Serialize};

use crate::bodies::{ErrorEnvelope, TaskHandle};
use crate::requests::Submission;

/// The most submissions one `POST /v1/tasks/batch` takes.
pub const MAX_BATCH_SUBMISSIONS: usize = 10_000;

/// `POST /v1/tasks/batch`: 1 to 10,000 submissions, each as
/// `POST /v1/tasks` takes one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BatchSubmission {
    /// The submissions.
    #[cfg_attr(feature = "utoipa", schema(min_items = 1, max_items = 10000))]
    pub tasks: Vec<Submission>,
}

/// One submission's answer: its task's handle (the existing task for a
/// key in use, or one given earlier in the batch), or why that submission
/// alone was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum BatchResult {
    /// Refused: the error `POST /v1/tasks` would have answered.
    Refused(ErrorEnvelope),
    /// The task.
    Submitted(TaskHandle),
}

/// The answer to `POST /v1/tasks/batch`: one result per submission, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BatchResults {
    /// Per submission.
    pub results: Vec<BatchResult>,
}
