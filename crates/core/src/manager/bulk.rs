//! Bulk actions: cancel or retry every task a filter matches
//! (`POST /v1/tasks/cancel`, `POST /v1/tasks/retry`). The matching tasks
//! are walked page by page through the list order. A page's cancels are
//! one store write (`Store::request_cancels`: each task judged as a single
//! cancel is, in one transaction); retries go one by one through the
//! submitter (at most [`IN_FLIGHT`] at a time). Every promise of the
//! single-task operations holds: a pending task ends `cancelled` with its
//! `final` at once, a running one is stopped by its owner.

use tokio::task::JoinSet;

use super::{Manager, SubmitError, SubmitOptions};
use crate::model::{Status, Task, TaskId};
use crate::store::{CancelOutcome, ListQuery, StoreError};
use tasktape_wire::jobs::TaskFilter;

/// Single-task operations a bulk action keeps in flight.
const IN_FLIGHT: usize = 64;

/// Rows read per page while matching.
const PAGE: usize = 500;

/// How many tasks a bulk action matched and acted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkCount {
    /// Tasks the filter matched.
    pub matched: u64,
    /// Of those, tasks the action applied to.
    pub acted: u64,
}

impl Manager {
    /// Cancels every pending or running task `filter` matches (finished
    /// ones are counted as matched and left alone). Cancel-safe like
    /// `cancel`: once called, the walk runs to its end even if the caller
    /// stops waiting (a client that hangs up does not leave it half done).
    pub async fn cancel_matching(&self, filter: &TaskFilter) -> Result<BulkCount, StoreError> {
        let (manager, filter) = (self.clone(), filter.clone());
        tokio::spawn(async move { manager.cancel_matching_now(&filter).await })
            .await
            .unwrap_or_else(|error| Err(StoreError::backend("bulk cancel", error)))
    }

    /// Makes a new task for every finished task `filter` matches, with the
    /// same op, params, priority and retry plan, linked by `retry_of`
    /// (pending and running ones are counted as matched and left alone).
    /// Cancel-safe like [`Manager::cancel_matching`] (a walk stopped half
    /// way and asked again would retry some tasks twice).
    pub async fn retry_matching(&self, filter: &TaskFilter) -> Result<BulkCount, StoreError> {
        let (manager, filter) = (self.clone(), filter.clone());
        tokio::spawn(async move { manager.retry_matching_now(&filter).await })
            .await
            .unwrap_or_else(|error| Err(StoreError::backend("bulk retry", error)))
    }

    async fn cancel_matching_now(&self, filter: &TaskFilter) -> Result<BulkCount, StoreError> {
        let mut pages = Pages::new(self, filter)?;
        let mut acted = 0;
        while let Some(tasks) = pages.next().await? {
            acted += self.cancel_page(tasks).await?;
        }
        Ok(BulkCount {
            matched: pages.matched,
            acted,
        })
    }

    /// Cancels a page's live tasks in one store write; how many it acted on.
    async fn cancel_page(&self, tasks: Vec<Task>) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let live: Vec<Task> = tasks
            .into_iter()
            .filter(|task| !task.status.is_terminal())
            .collect();
        let ids = live.iter().map(|task| task.task_id).collect();
        let outcomes = inner.store.request_cancels(ids).await?;
        let mut acted = 0;
        for (task, outcome) in live.iter().zip(outcomes) {
            match outcome {
                CancelOutcome::Requested { owner } => {
                    let ours = owner.as_deref() == Some(&*inner.config.instance_id);
                    inner.runs.cancel(task.task_id, ours);
                    acted += 1;
                }
                CancelOutcome::Cancelled { .. } => {
                    let labels = [task.op.as_str(), Status::Cancelled.as_str()];
                    inner.metrics.finished.with(&labels).inc();
                    acted += 1;
                }
                CancelOutcome::AlreadyTerminal { .. } | CancelOutcome::NotFound => {}
            }
        }
        Ok(acted)
    }

    async fn retry_matching_now(&self, filter: &TaskFilter) -> Result<BulkCount, StoreError> {
        let mut pages = Pages::new(self, filter)?;
        let mut acted = 0;
        let mut running: JoinSet<Result<bool, StoreError>> = JoinSet::new();
        while let Some(tasks) = pages.next().await? {
            for task in tasks.into_iter().filter(|task| task.status.is_terminal()) {
                while running.len() >= IN_FLIGHT {
                    if let Some(done) = running.join_next().await {
                        acted += u64::from(joined(done)?);
                    }
                }
                running.spawn(self.clone().retry_one(task));
            }
        }
        while let Some(done) = running.join_next().await {
            acted += u64::from(joined(done)?);
        }
        Ok(BulkCount {
            matched: pages.matched,
            acted,
        })
    }

    /// A new task for finished `task`; whether one was made.
    async fn retry_one(self, task: Task) -> Result<bool, StoreError> {
        let options = SubmitOptions {
            priority: task.priority,
            retry: task.retry.map(|plan| plan.policy),
            retry_of: Some(task.task_id),
            metadata: task.metadata,
            ..SubmitOptions::default()
        };
        // As the task was: the submit rules judged its first submit (its
        // plan may be the op's own, which they never judged), so the
        // submitter takes it as it is.
        let trace_parent = self.inner.config.task_tracing.capture();
        let submitter = &self.inner.submitter;
        match submitter
            .submit(&task.op, task.params, options, trace_parent)
            .await
        {
            Ok(_) => Ok(true),
            Err(SubmitError::Store(error)) => Err(error),
            // An op no longer registered, params it now refuses: that task
            // is not retried; the others go on.
            Err(error) => {
                tracing::warn!(task_id = %task.task_id, %error, "not retried");
                Ok(false)
            }
        }
    }
}

/// The tasks a filter matches, a page (up to [`PAGE`]) at a time.
struct Pages<'a> {
    manager: &'a Manager,
    filter: &'a TaskFilter,
    /// By ids: the ids not yet read.
    ids: Option<std::vec::IntoIter<TaskId>>,
    /// By list: the next page's query, until the last page was read.
    query: Option<ListQuery>,
    /// Tasks matched so far.
    matched: u64,
}

impl<'a> Pages<'a> {
    fn new(manager: &'a Manager, filter: &'a TaskFilter) -> Result<Self, StoreError> {
        if let Err((field, message)) = filter.check() {
            // An empty filter would act on every task: never by accident.
            return Err(StoreError::backend(
                "bulk action",
                format!("refused filter ({field}): {message}"),
            ));
        }
        let ids = filter.ids.as_ref().map(|ids| {
            let mut seen = std::collections::HashSet::<TaskId>::new();
            let unique: Vec<TaskId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
            unique.into_iter()
        });
        let query = ids.is_none().then(|| ListQuery {
            statuses: filter.statuses(),
            op: filter.op.clone(),
            created_after: filter.created_after,
            created_before: filter.created_before,
            metadata: filter.metadata.clone(),
            limit: PAGE,
            ..ListQuery::default()
        });
        Ok(Pages {
            manager,
            filter,
            ids,
            query,
            matched: 0,
        })
    }

    /// The next page of matches; `None` after the last.
    async fn next(&mut self) -> Result<Option<Vec<Task>>, StoreError> {
        let store = &self.manager.inner.store;
        let page = if let Some(ids) = &mut self.ids {
            let mut page = Vec::new();
            for id in ids.by_ref() {
                if let Some(task) = store.get(id).await?
                    && matches(self.filter, &task)
                {
                    page.push(task);
                    if page.len() == PAGE {
                        break;
                    }
                }
            }
            page
        } else if let Some(query) = self.query.take() {
            let page = store.list(query.clone()).await?;
            if let Some(cursor) = page.next_cursor.filter(|_| page.has_more) {
                self.query = Some(ListQuery {
                    after: Some(cursor),
                    ..query
                });
            }
            page.tasks
        } else {
            Vec::new()
        };
        self.matched += page.len() as u64;
        Ok((!page.is_empty()).then_some(page))
    }
}

/// A joined bulk step's result.
fn joined(
    done: Result<Result<bool, StoreError>, tokio::task::JoinError>,
) -> Result<bool, StoreError> {
    done.map_err(|error| StoreError::backend("bulk action", error))?
}

/// Whether `task` passes every filter but `ids`.
fn matches(filter: &TaskFilter, task: &Task) -> bool {
    let statuses = filter.statuses();
    (statuses.is_empty() || statuses.contains(&task.status))
        && filter.op.as_ref().is_none_or(|op| *op == task.op)
        && filter.created_after.is_none_or(|at| task.created_at >= at)
        && filter.created_before.is_none_or(|at| task.created_at < at)
        && filter
            .metadata
            .iter()
            .all(|(key, value)| task.metadata.get(key) == Some(value))
}
