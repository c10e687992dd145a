//! Creating tasks: one (`create_task_at`) or many in one statement
//! (`create_tasks`, migration 9); a key in use finds its task.

use tasktape_core::model::{NewTask, Task};
use tasktape_core::store::{Created, Reads as _, Result, StoreError};
use tasktape_core::time::Timestamp;

use crate::PostgresStore;
use crate::rows::{driver, task_from_row, task_id, uuid};

impl PostgresStore {
    pub(crate) async fn create_task(&self, task: NewTask) -> Result<Created> {
        let params = task.params.to_string();
        let retry = task
            .retry
            .as_ref()
            .and_then(|plan| serde_json::to_string(plan).ok());
        let max_attempts = task
            .retry
            .as_ref()
            .map_or(1, |plan| plan.policy.max_attempts as i32);
        let rows = self
            .query(
                "creating a task",
                &self.shared.sql.create,
                &[
                    &uuid(task.task_id),
                    &task.op,
                    &task.created_at.as_millis(),
                    &params,
                    &task.params_digest,
                    &task.idempotency_key,
                    &task.trace_parent,
                    &task.priority,
                    &task.run_at.map(Timestamp::as_millis),
                    &max_attempts,
                    &retry,
                    &task.retry_of.map(uuid),
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::backend("creating a task", "no answer"))?;
        let created: bool = row.try_get(0).map_err(driver("creating a task"))?;
        if created {
            return Ok(Created {
                task: Task::pending(task),
                created: true,
            });
        }
        let existing: uuid::Uuid = row.try_get(1).map_err(driver("creating a task"))?;
        let task = self.get(task_id(existing)).await?.ok_or_else(|| {
            StoreError::backend("creating a task", "the idempotency key's task vanished")
        })?;
        Ok(Created {
            task,
            created: false,
        })
    }

    /// Many creates in one statement (`create_tasks`, migration 9).
    pub(crate) async fn create_tasks(&self, tasks: Vec<NewTask>) -> Result<Vec<Created>> {
        const CONTEXT: &str = "creating tasks";
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let retries: Vec<Option<String>> = tasks
            .iter()
            .map(|task| {
                task.retry
                    .as_ref()
                    .and_then(|plan| serde_json::to_string(plan).ok())
            })
            .collect();
        let column = |f: &dyn Fn(&NewTask) -> String| tasks.iter().map(f).collect::<Vec<_>>();
        let rows = self
            .query(
                CONTEXT,
                &self.shared.sql.create_many,
                &[
                    &tasks.iter().map(|t| uuid(t.task_id)).collect::<Vec<_>>(),
                    &column(&|t| t.op.clone()),
                    &tasks
                        .iter()
                        .map(|t| t.created_at.as_millis())
                        .collect::<Vec<_>>(),
                    &column(&|t| t.params.to_string()),
                    &column(&|t| t.params_digest.clone()),
                    &tasks
                        .iter()
                        .map(|t| t.idempotency_key.clone())
                        .collect::<Vec<_>>(),
                    &tasks
                        .iter()
                        .map(|t| t.trace_parent.clone())
                        .collect::<Vec<_>>(),
                    &tasks.iter().map(|t| t.priority).collect::<Vec<_>>(),
                    &tasks
                        .iter()
                        .map(|t| t.run_at.map(Timestamp::as_millis))
                        .collect::<Vec<_>>(),
                    &tasks
                        .iter()
                        .map(|t| {
                            t.retry
                                .as_ref()
                                .map_or(1, |plan| plan.policy.max_attempts as i32)
                        })
                        .collect::<Vec<_>>(),
                    &retries,
                    &tasks
                        .iter()
                        .map(|t| t.retry_of.map(uuid))
                        .collect::<Vec<_>>(),
                ],
            )
            .await?;
        if rows.len() != tasks.len() {
            return Err(StoreError::backend(
                CONTEXT,
                format!("{} answers for {} tasks", rows.len(), tasks.len()),
            ));
        }
        let mut answers = Vec::with_capacity(rows.len());
        for row in &rows {
            let made: bool = row.try_get(0).map_err(driver(CONTEXT))?;
            let id: Option<uuid::Uuid> = row.try_get(1).map_err(driver(CONTEXT))?;
            answers.push((made, id));
        }
        // The tasks keys in use found, read at once.
        let found: Vec<uuid::Uuid> = answers
            .iter()
            .filter(|(made, _)| !made)
            .filter_map(|(_, id)| *id)
            .collect();
        let mut existing = std::collections::HashMap::new();
        if !found.is_empty() {
            let rows = self
                .query(CONTEXT, &self.shared.sql.get_many, &[&found])
                .await?;
            for row in &rows {
                let task = task_from_row(row)?;
                existing.insert(task.task_id, task);
            }
        }
        let mut created = Vec::with_capacity(tasks.len());
        for (task, (made, id)) in tasks.into_iter().zip(answers) {
            if made {
                created.push(Created {
                    task: Task::pending(task),
                    created: true,
                });
                continue;
            }
            let task = id
                .and_then(|id| existing.get(&task_id(id)).cloned())
                .ok_or_else(|| {
                    StoreError::backend(CONTEXT, "the idempotency key's task vanished")
                })?;
            created.push(Created {
                task,
                created: false,
            });
        }
        Ok(created)
    }
}
