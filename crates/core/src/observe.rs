//! How task runs show up in traces. A run happens in a new root span (a task
//! outlives the request that submitted it, and may run on another instance)
//! that is *linked* to the submitting request's span: at submit the manager
//! asks [`TaskTracing::capture`] for something to keep with the task (a W3C
//! `traceparent`), and the run's span is made by [`TaskTracing::run_span`]
//! from the task. Core knows no tracing backend; the binary plugs one in
//! (OpenTelemetry links in `tasktape-telemetry`).

use std::fmt::Debug;

use tracing::Span;

use crate::model::Task;

/// Makes task runs' spans; see the module docs.
pub trait TaskTracing: Send + Sync + Debug + 'static {
    /// Called inside the submitting caller's span: what to store with the
    /// task to link its run to that span, if anything.
    fn capture(&self) -> Option<String>;

    /// The span `task`'s run happens in: a new root, named `task.<op>`,
    /// with fields `task.id`, `task.op` and (recorded at the end)
    /// `task.status`, plus the `otel.*` and `error.*` fields [`run_span`]
    /// declares.
    fn run_span(&self, task: &Task) -> Span;
}

/// The span every [`TaskTracing`] should make: declares the fields the
/// runner records at the end.
pub fn run_span(task: &Task) -> Span {
    tracing::info_span!(
        parent: None,
        "task",
        otel.name = %format_args!("task.{}", task.op),
        otel.kind = "internal",
        task.id = %task.task_id,
        task.op = %task.op,
        task.status = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        error.code = tracing::field::Empty,
    )
}

/// Spans without links (what a manager uses unless told otherwise).
#[derive(Debug, Default)]
pub struct PlainTaskTracing;

impl TaskTracing for PlainTaskTracing {
    fn capture(&self) -> Option<String> {
        None
    }

    fn run_span(&self, task: &Task) -> Span {
        run_span(task)
    }
}
