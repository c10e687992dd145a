//! Creating tasks: one (`create_task_at`) or many in one statement
//! (`create_tasks`, migration 9); a key in use finds its task.
//!
//! Single creates (`Transitions::create`) are coalesced: a create joins a
//! queue, and while fewer than [`WRITERS`] writers run, it starts one (a
//! spawned task, so a caller that goes away strands nothing). A writer
//! takes whatever queued and writes it, one `create_task_at` for a lone
//! task (no wait when idle) and one `create_tasks` for more, until the
//! queue is empty. A batch holds each idempotency key once (a repeat goes
//! in the next round, where it finds the first one's task); a batch whose
//! statement fails for another reason than an outage is written again one
//! task at a time, so a bad row fails alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tasktape_core::model::{NewTask, Task, TaskId};
use tasktape_core::store::{Created, Result, StoreError};
use tasktape_core::time::Timestamp;
use tokio::sync::oneshot;

use crate::Shared;
use crate::rows::{driver, task_from_row, task_id, uuid};

/// How many batches of creates may be written at once.
const WRITERS: usize = 4;

/// The most creates one statement takes.
const BATCH_MAX: usize = 1_000;

type Reply = oneshot::Sender<Result<Created>>;

/// Creates waiting for a writer, and how many writers run.
#[derive(Default)]
pub(crate) struct CreateQueue {
    waiting: Vec<(NewTask, Reply)>,
    writers: usize,
}

impl Shared {
    /// Creates `task` in a batch with whatever other creates are waiting.
    pub(crate) async fn create_coalesced(self: &Arc<Self>, task: NewTask) -> Result<Created> {
        let (reply, answer) = oneshot::channel();
        let start_writer = {
            let mut queue = self
                .creates
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            queue.waiting.push((task, reply));
            let start = queue.writers < WRITERS;
            if start {
                queue.writers += 1;
            }
            start
        };
        if start_writer {
            tokio::spawn(Arc::clone(self).write_creates());
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes queued creates until none wait.
    async fn write_creates(self: Arc<Self>) {
        loop {
            let batch: Vec<(NewTask, Reply)> = {
                let mut queue = self
                    .creates
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                if queue.waiting.is_empty() {
                    queue.writers -= 1;
                    return;
                }
                let take = queue.waiting.len().min(BATCH_MAX);
                queue.waiting.drain(..take).collect()
            };
            self.write_create_batch(batch).await;
        }
    }

    /// One batch of creates, in rounds of distinct idempotency keys.
    async fn write_create_batch(&self, batch: Vec<(NewTask, Reply)>) {
        let mut pending = batch;
        while !pending.is_empty() {
            let mut keys = HashSet::new();
            let (round, later): (Vec<_>, Vec<_>) =
                pending
                    .into_iter()
                    .partition(|(task, _)| match &task.idempotency_key {
                        Some(key) => keys.insert(key.clone()),
                        None => true,
                    });
            pending = later;
            if round.len() == 1 {
                for (task, reply) in round {
                    let _ = reply.send(self.create_task(task).await);
                }
                continue;
            }
            let tasks: Vec<&NewTask> = round.iter().map(|(task, _)| task).collect();
            match self.insert_tasks(&tasks).await {
                // Committed: every caller is answered from what the
                // statement said (never written again).
                Ok(answers) => {
                    let found = self.found_tasks(&answers).await;
                    for ((task, reply), (made, id)) in round.into_iter().zip(answers) {
                        let _ = reply.send(created_answer(task, made, id, &found));
                    }
                }
                Err(error) if error.is_transient() => {
                    for (_, reply) in round {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, count = round.len(), "create batch failed; writing one by one");
                    for (task, reply) in round {
                        let _ = reply.send(self.create_task(task).await);
                    }
                }
            }
        }
    }

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
                &self.sql.create,
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
                    &crate::rows::metadata_text(&task.metadata),
                    &task.flow_key,
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::backend("creating a task", "no answer"))?;
        let made: bool = row.try_get(0).map_err(driver("creating a task"))?;
        let id: Option<uuid::Uuid> = row.try_get(1).map_err(driver("creating a task"))?;
        let answer = [(made, id)];
        // Reads nothing when the task was made.
        let found = self.found_tasks(&answer).await;
        created_answer(task, made, id, &found)
    }

    /// Many creates in one statement (`create_tasks`, migration 9).
    pub(crate) async fn create_tasks(&self, tasks: Vec<NewTask>) -> Result<Vec<Created>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.insert_tasks(&tasks.iter().collect::<Vec<_>>()).await?;
        let found = self.found_tasks(&answers).await;
        tasks
            .into_iter()
            .zip(answers)
            .map(|(task, (made, id))| created_answer(task, made, id, &found))
            .collect()
    }

    /// The `create_tasks` statement: per task, whether it was made, and
    /// the id of the task its key found otherwise.
    async fn insert_tasks(&self, tasks: &[&NewTask]) -> Result<Vec<(bool, Option<uuid::Uuid>)>> {
        const CONTEXT: &str = "creating tasks";
        let retries: Vec<Option<String>> = tasks
            .iter()
            .map(|task| {
                task.retry
                    .as_ref()
                    .and_then(|plan| serde_json::to_string(plan).ok())
            })
            .collect();
        let column =
            |f: &dyn Fn(&NewTask) -> String| tasks.iter().map(|t| f(t)).collect::<Vec<_>>();
        let rows = self
            .query(
                CONTEXT,
                &self.sql.create_many,
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
                    &tasks
                        .iter()
                        .map(|t| crate::rows::metadata_text(&t.metadata))
                        .collect::<Vec<_>>(),
                    &tasks.iter().map(|t| t.flow_key.clone()).collect::<Vec<_>>(),
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
        Ok(answers)
    }

    /// The tasks that keys in use found (`answers` of `insert_tasks`), read
    /// at once.
    async fn found_tasks(
        &self,
        answers: &[(bool, Option<uuid::Uuid>)],
    ) -> Result<HashMap<TaskId, Task>> {
        let found: Vec<uuid::Uuid> = answers
            .iter()
            .filter(|(made, _)| !made)
            .filter_map(|(_, id)| *id)
            .collect();
        let mut existing = HashMap::new();
        if !found.is_empty() {
            let rows = self
                .query("creating tasks", &self.sql.get_many, &[&found])
                .await?;
            for row in &rows {
                let task = task_from_row(row)?;
                existing.insert(task.task_id, task);
            }
        }
        Ok(existing)
    }
}

/// One create's answer: its own task when made, else the task its key
/// found (or the error reading it).
fn created_answer(
    task: NewTask,
    made: bool,
    id: Option<uuid::Uuid>,
    found: &Result<HashMap<TaskId, Task>>,
) -> Result<Created> {
    if made {
        return Ok(Created {
            task: Task::pending(task),
            created: true,
        });
    }
    let existing = found.as_ref().map_err(Clone::clone)?;
    let task = id
        .and_then(|id| existing.get(&task_id(id)).cloned())
        .ok_or_else(|| {
            StoreError::backend("creating tasks", "the idempotency key's task vanished")
        })?;
    Ok(Created {
        task,
        created: false,
    })
}
