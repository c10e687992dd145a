//! Bulk actions: cancel or retry every task a filter matches
//! (`POST /v1/tasks/cancel`, `POST /v1/tasks/retry`). The matching tasks
//! are walked page by page through the list order and acted on one by one
//! with the single-task operations (at most [`IN_FLIGHT`] at a time), so
//! every promise of those holds: a pending task ends `cancelled` with its
//! `final` at once, a running one is stopped by its owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinSet;

use super::{Manager, SubmitError, SubmitOptions};
use crate::model::{Task, TaskId};
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
        let acted = Arc::new(AtomicU64::new(0));
        let matched = self
            .for_each_match(filter, |manager, task| {
                let acted = Arc::clone(&acted);
                async move {
                    if task.status.is_terminal() {
                        return Ok(());
                    }
                    match manager.cancel(task.task_id).await? {
                        CancelOutcome::Cancelled { .. } | CancelOutcome::Requested { .. } => {
                            acted.fetch_add(1, Ordering::Relaxed);
                        }
                        CancelOutcome::AlreadyTerminal { .. } | CancelOutcome::NotFound => {}
                    }
                    Ok(())
                }
            })
            .await?;
        Ok(BulkCount {
            matched,
            acted: acted.load(Ordering::Relaxed),
        })
    }

    async fn retry_matching_now(&self, filter: &TaskFilter) -> Result<BulkCount, StoreError> {
        let acted = Arc::new(AtomicU64::new(0));
        let matched = self
            .for_each_match(filter, |manager, task| {
                let acted = Arc::clone(&acted);
                async move {
                    if !task.status.is_terminal() {
                        return Ok(());
                    }
                    let options = SubmitOptions {
                        priority: task.priority,
                        retry: task.retry.map(|plan| plan.policy),
                        retry_of: Some(task.task_id),
                        ..SubmitOptions::default()
                    };
                    // As the task was: the submit rules judged its first
                    // submit (its plan may be the op's own, which they
                    // never judged), so the submitter takes it as it is.
                    let trace_parent = manager.inner.config.task_tracing.capture();
                    let submitter = &manager.inner.submitter;
                    match submitter
                        .submit(&task.op, task.params, options, trace_parent)
                        .await
                    {
                        Ok(_) => {
                            acted.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        Err(SubmitError::Store(error)) => Err(error),
                        // An op no longer registered, params it now refuses:
                        // that task is not retried; the others go on.
                        Err(error) => {
                            tracing::warn!(task_id = %task.task_id, %error, "not retried");
                            Ok(())
                        }
                    }
                }
            })
            .await?;
        Ok(BulkCount {
            matched,
            acted: acted.load(Ordering::Relaxed),
        })
    }

    /// Calls `act` on every task `filter` matches; returns how many matched.
    async fn for_each_match<F, Fut>(&self, filter: &TaskFilter, act: F) -> Result<u64, StoreError>
    where
        F: Fn(Manager, Task) -> Fut,
        Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        if let Err((field, message)) = filter.check() {
            // An empty filter would act on every task: never by accident.
            return Err(StoreError::backend(
                "bulk action",
                format!("refused filter ({field}): {message}"),
            ));
        }
        let mut running = JoinSet::new();
        let mut matched = 0u64;
        let launch = async |task: Task, running: &mut JoinSet<Result<(), StoreError>>| {
            while running.len() >= IN_FLIGHT {
                if let Some(done) = running.join_next().await {
                    done.map_err(|error| StoreError::backend("bulk action", error))??;
                }
            }
            running.spawn(act(self.clone(), task));
            Ok::<_, StoreError>(())
        };
        if let Some(ids) = &filter.ids {
            let mut seen = std::collections::HashSet::<TaskId>::new();
            for id in ids {
                if !seen.insert(*id) {
                    continue;
                }
                if let Some(task) = self.inner.store.get(*id).await?
                    && matches(filter, &task)
                {
                    matched += 1;
                    launch(task, &mut running).await?;
                }
            }
        } else {
            let mut query = ListQuery {
                statuses: filter.statuses(),
                op: filter.op.clone(),
                created_after: filter.created_after,
                created_before: filter.created_before,
                limit: PAGE,
                ..ListQuery::default()
            };
            loop {
                let page = self.inner.store.list(query.clone()).await?;
                for task in page.tasks {
                    matched += 1;
                    launch(task, &mut running).await?;
                }
                match page.next_cursor {
                    Some(cursor) if page.has_more => query.after = Some(cursor),
                    _ => break,
                }
            }
        }
        while let Some(done) = running.join_next().await {
            done.map_err(|error| StoreError::backend("bulk action", error))??;
        }
        Ok(matched)
    }
}

/// Whether `task` passes every filter but `ids`.
fn matches(filter: &TaskFilter, task: &Task) -> bool {
    let statuses = filter.statuses();
    (statuses.is_empty() || statuses.contains(&task.status))
        && filter.op.as_ref().is_none_or(|op| *op == task.op)
        && filter.created_after.is_none_or(|at| task.created_at >= at)
        && filter.created_before.is_none_or(|at| task.created_at < at)
}
