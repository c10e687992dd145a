//! tasktape's wire types: what travels between the server and its clients.
//! Task ids, statuses, timestamps, the error object, tape events, and the
//! HTTP API's bodies, each serialisable both ways. The server renders them,
//! the client reads them, the engine (`tasktape-core`) uses the same ids,
//! statuses and events; this crate knows no engine, no HTTP and no SQL.
//!
//! # Layout
//!
//! - [`time`]: millisecond UTC timestamps in the wire format.
//! - [`model`]: [`TaskId`], [`Status`], [`ErrorInfo`].
//! - [`event`]: [`EventBody`] (the `type` tag) and [`Event`].
//! - [`bodies`]: the routes' response bodies and the error envelope.
//! - [`batch`]: bulk submit's body and answer.
//! - [`jobs`]: retry policies, bulk-action filters and answers, schedules.
//! - [`metadata`]: a task's metadata and its rules.
//! - [`requests`]: what clients send (the submit body, the list query)
//!   and the probes' answers, read the same way by the server.

pub mod batch;
pub mod bodies;
pub mod event;
pub mod jobs;
pub mod metadata;
pub mod model;
pub mod requests;
pub mod time;
pub mod worker;

pub use batch::{BatchResult, BatchResults, BatchSubmission, MAX_BATCH_SUBMISSIONS};
pub use bodies::{
    CancelAnswer, ErrorBody, ErrorEnvelope, EventsPage, FlowInfo, Links, MinuteStats, OpInfo,
    OpsList, ServerInfo, Stats, TaskHandle, TaskPage, TaskResult, TaskRow, TaskSummary,
};
pub use event::{Event, EventBody, EventKind};
pub use jobs::{
    ATTEMPT_FAILED, AttemptFailed, Backoff, BulkCancelAnswer, BulkRetryAnswer, RetryPolicy,
    ScheduleInfo, ScheduleList, StatusFilter, TaskFilter,
};
pub use metadata::Metadata;
pub use model::{ErrorInfo, Status, TaskId};
pub use requests::{FieldError, Health, ListQuery, Ready, Submission};
pub use time::Timestamp;
