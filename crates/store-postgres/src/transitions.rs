//! The transitions: each one call of a PL/pgSQL function of `schema.rs`
//! (which locks the row, checks its state and writes row and tape in one
//! transaction), and its answer code mapped to the store's typed outcome.

use deadpool_postgres::GenericClient;
use tasktape_core::BodyExt as _;
use tasktape_core::event::EventBody;
use tasktape_core::model::{Outcome, Retry, Task, TaskId};
use tasktape_core::store::{
    AppendOutcome, CancelOutcome, DeleteOutcome, FinishOutcome, Lease, LostRun, Reads as _, Result,
    StartOutcome, StoreError,
};
use tasktape_core::time::Timestamp;
use tokio::sync::oneshot;

use crate::codes::{cancel, delete, finish, start};
use crate::rows::{self, driver, task_from_row, uuid};
use crate::writer::{self, AppendReply, WriteJob};
use crate::{PostgresStore, Shared};

impl PostgresStore {
    pub(crate) async fn start_task(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome> {
        let now = Timestamp::now();
        let row = self
            .query_one(
                "starting a task",
                &self.shared.sql.start,
                &[
                    &uuid(task_id),
                    &lease.owner,
                    &lease_length(&lease),
                    &now.as_millis(),
                    &now.to_string(),
                    &self.shared.sql.start_texts.started,
                    &self.shared.sql.start_texts.attempt,
                ],
            )
            .await?;
        let code: i16 = row.try_get(0).map_err(driver("starting a task"))?;
        match code {
            start::STARTED => {
                self.shared.hub.notify(task_id, 1);
                match self.get(task_id).await? {
                    Some(task) => Ok(StartOutcome::Started(Box::new(task))),
                    None => Ok(StartOutcome::NotFound),
                }
            }
            start::ALREADY_RUNNING => Ok(StartOutcome::AlreadyRunning),
            start::ALREADY_FINISHED => Ok(StartOutcome::AlreadyFinished {
                status: rows::status(row.try_get(1).map_err(driver("starting a task"))?)?,
            }),
            _ => Ok(StartOutcome::NotFound),
        }
    }

    pub(crate) async fn claim_tasks(
        &self,
        op: &str,
        (limit, take): (usize, usize),
        keys: Option<&tasktape_core::flow::ClaimRule>,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let take = i32::try_from(take).unwrap_or(i32::MAX);
        let length = lease_length(&lease);
        let (millis, ts) = (now.as_millis(), now.to_string());
        let texts = &self.shared.sql.start_texts;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &op,
            &limit,
            &take,
            &lease.owner,
            &length,
            &millis,
            &ts,
            &texts.started,
            &texts.attempt,
        ];
        let key_limit = keys
            .and_then(|rule| rule.key_concurrency)
            .map(|limit| i32::try_from(limit).unwrap_or(i32::MAX));
        let (names, weights): (Vec<&str>, Vec<i32>) = keys
            .map(|rule| {
                rule.weights
                    .iter()
                    .map(|(name, weight)| (name.as_str(), i32::try_from(*weight).unwrap_or(1)))
                    .unzip()
            })
            .unwrap_or_default();
        let keyed = keys.is_some_and(|rule| rule.keyed);
        let rate = keys.and_then(|rule| rule.rate);
        let rate_count = rate.map(|rate| i32::try_from(rate.count).unwrap_or(i32::MAX));
        let rate_window = rate.map_or(0, |rate| rate.window_ms);
        let per_key = keys.is_some_and(|rule| rule.rate_per_key);
        let sql = match keys {
            None => &self.shared.sql.claim,
            Some(_) => {
                params.extend([
                    &keyed as &(dyn tokio_postgres::types::ToSql + Sync),
                    &key_limit,
                    &names,
                    &weights,
                    &rate_count,
                    &rate_window,
                    &per_key,
                ]);
                &self.shared.sql.claim_keyed
            }
        };
        let rows = self.query("claiming tasks", sql, &params).await?;
        let tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        for task in &tasks {
            self.shared.hub.notify(task.task_id, 1);
        }
        Ok(tasks)
    }

    pub(crate) async fn append_event(
        &self,
        task_id: TaskId,
        body: EventBody,
    ) -> Result<AppendOutcome> {
        tasktape_core::store::check_appendable(&body)?;
        let (reply, answer) = oneshot::channel();
        self.write(WriteJob::Append {
            task_id,
            body: body.encode(),
            at: Timestamp::now(),
            reply: AppendReply::Wait(reply),
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// `Store::reap`: in one transaction, the running row is locked (a
    /// peer's run only while its lease is over by the database's clock),
    /// what the lost run becomes is decided from it, and it is finished or
    /// requeued by the same fenced functions as any finish.
    pub(crate) async fn reap_task(
        &self,
        task_id: TaskId,
        lost: LostRun,
    ) -> Result<Option<FinishOutcome>> {
        let context = "reaping a task";
        let shared = &self.shared;
        let answer = shared
            .bounded(context, async {
                let mut client = self.shared.pool.get().await.map_err(rows::pool)?;
                let transaction = client.transaction().await.map_err(driver(context))?;
                let statement = transaction
                    .prepare_cached(&shared.sql.lock_running)
                    .await
                    .map_err(driver(context))?;
                let row = transaction
                    .query_opt(&statement, &[&uuid(task_id), &lost.expired_only])
                    .await
                    .map_err(driver(context))?;
                // Not running, or its owner renewed: the transaction rolls back.
                let Some(row) = row else { return Ok(None) };
                // A row that does not decode still ends, plainly failed.
                let outcome = match task_from_row(&row) {
                    Ok(task) => lost.outcome(&task),
                    Err(_) => Outcome::Failed(lost.error.clone()),
                };
                let expired_before = lost.expired_only.then_some(lost.now);
                let answer = shared
                    .finish_task(&transaction, task_id, &outcome, expired_before)
                    .await?;
                transaction.commit().await.map_err(driver(context))?;
                Ok(answer)
            })
            .await?;
        shared.announce(task_id, answer.as_ref());
        Ok(answer)
    }

    pub(crate) async fn cancel_task(&self, task_id: TaskId) -> Result<CancelOutcome> {
        let now = Timestamp::now();
        let cancel_body = Outcome::Cancelled.final_body().encode();
        let context = "cancelling a task";
        let row = self
            .query_one(
                context,
                &self.shared.sql.cancel,
                &[
                    &uuid(task_id),
                    &cancel_body.open_json(),
                    &now.as_millis(),
                    &now.to_string(),
                ],
            )
            .await?;
        self.cancel_outcome(task_id, &row, context)
    }

    /// Many cancels in one transaction: every row locked first, in id order,
    /// then one statement (`request_cancel` per task). Locked first: a
    /// cancel's UPDATE takes the counter rows, and a bulk cancel holding
    /// them while it waited for a task row a claim holds (which then waits
    /// for the counters) would deadlock.
    pub(crate) async fn cancel_tasks(&self, ids: Vec<TaskId>) -> Result<Vec<CancelOutcome>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = Timestamp::now();
        let cancel_body = Outcome::Cancelled.final_body().encode();
        let context = "cancelling tasks";
        let mut sorted: Vec<(usize, TaskId)> = ids.iter().copied().enumerate().collect();
        sorted.sort_by_key(|(_, id)| *id);
        let ids_sorted: Vec<uuid::Uuid> = sorted.iter().map(|(_, id)| uuid(*id)).collect();
        let (open, millis, ts) = (cancel_body.open_json(), now.as_millis(), now.to_string());
        let shared = &self.shared;
        let rows = shared
            .bounded(context, async {
                let mut client = self.shared.pool.get().await.map_err(rows::pool)?;
                let transaction = client.transaction().await.map_err(driver(context))?;
                let lock = transaction
                    .prepare_cached(&shared.sql.lock_many)
                    .await
                    .map_err(driver(context))?;
                transaction
                    .execute(&lock, &[&ids_sorted])
                    .await
                    .map_err(driver(context))?;
                let cancel = transaction
                    .prepare_cached(&shared.sql.cancel_many)
                    .await
                    .map_err(driver(context))?;
                let rows = transaction
                    .query(&cancel, &[&ids_sorted, &open, &millis, &ts])
                    .await
                    .map_err(driver(context))?;
                transaction.commit().await.map_err(driver(context))?;
                Ok(rows)
            })
            .await?;
        if rows.len() != ids.len() {
            return Err(StoreError::backend(context, "one answer per task expected"));
        }
        let mut outcomes = vec![CancelOutcome::NotFound; ids.len()];
        for ((index, task_id), row) in sorted.into_iter().zip(rows) {
            outcomes[index] = self.cancel_outcome(task_id, &row, context)?;
        }
        Ok(outcomes)
    }

    /// A `request_cancel` row as the caller's outcome (waking followers of
    /// a task it ended).
    fn cancel_outcome(
        &self,
        task_id: TaskId,
        row: &tokio_postgres::Row,
        context: &'static str,
    ) -> Result<CancelOutcome> {
        let code: i16 = row.try_get(0).map_err(driver(context))?;
        Ok(match code {
            cancel::CANCELLED => {
                let seq: i64 = row.try_get(2).map_err(driver(context))?;
                self.shared.hub.notify(task_id, seq as u64);
                CancelOutcome::Cancelled { seq: seq as u64 }
            }
            cancel::REQUESTED => CancelOutcome::Requested {
                owner: row.try_get(3).map_err(driver(context))?,
            },
            cancel::ALREADY_TERMINAL => CancelOutcome::AlreadyTerminal {
                status: rows::status(row.try_get(1).map_err(driver(context))?)?,
            },
            _ => CancelOutcome::NotFound,
        })
    }

    pub(crate) async fn renew_leases(&self, owner: &str, until: Timestamp) -> Result<u64> {
        let context = "renewing leases";
        self.shared
            .bounded(context, async {
                let client = self.shared.pool.get().await.map_err(rows::pool)?;
                let statement = client
                    .prepare_cached(&self.shared.sql.renew)
                    .await
                    .map_err(driver(context))?;
                client
                    .execute(
                        &statement,
                        &[&owner, &(until.as_millis() - Timestamp::now().as_millis())],
                    )
                    .await
                    .map_err(driver(context))
            })
            .await
    }

    pub(crate) async fn delete_task(&self, task_id: TaskId) -> Result<DeleteOutcome> {
        let context = "deleting a task";
        let row = self
            .query_one(context, &self.shared.sql.delete, &[&uuid(task_id)])
            .await?;
        let code: i16 = row.try_get(0).map_err(driver(context))?;
        Ok(match code {
            delete::DELETED => DeleteOutcome::Deleted,
            delete::NOT_TERMINAL => DeleteOutcome::NotTerminal {
                status: rows::status(row.try_get(1).map_err(driver(context))?)?,
            },
            _ => DeleteOutcome::NotFound,
        })
    }

    pub(crate) async fn purge_finished(
        &self,
        finished_before: Timestamp,
        limit: usize,
    ) -> Result<u64> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let row = self
            .query_one(
                "purging tasks",
                &self.shared.sql.purge,
                &[&finished_before.as_millis(), &limit],
            )
            .await?;
        let count: i64 = row.try_get(0).map_err(driver("purging tasks"))?;
        Ok(count as u64)
    }

    pub(crate) async fn sweep_tapes(&self, limit: usize) -> Result<u64> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let row = self
            .query_one("sweeping deleted tapes", &self.shared.sql.sweep, &[&limit])
            .await?;
        let count: i64 = row.try_get(0).map_err(driver("sweeping deleted tapes"))?;
        Ok(count as u64)
    }
}

impl Shared {
    /// `finish_task` on `client` (calls on one client are pipelined).
    pub(crate) async fn finish_on(
        &self,
        client: &deadpool_postgres::Object,
        task_id: TaskId,
        outcome: &Outcome,
    ) -> Result<FinishOutcome> {
        let finished = self.finish_task(client, task_id, outcome, None).await?;
        self.announce(task_id, finished.as_ref());
        Ok(finished.unwrap_or(FinishOutcome::NotFound))
    }

    /// Wakes the task's followers after a finish or requeue committed.
    fn announce(&self, task_id: TaskId, finished: Option<&FinishOutcome>) {
        if let Some(FinishOutcome::Finished { seq, .. } | FinishOutcome::Requeued { seq }) =
            finished
        {
            self.hub.notify(task_id, *seq);
        }
    }

    /// `finish_task`; with `expired_before`, only a running task whose lease
    /// ended before it (`None` otherwise).
    async fn finish_task(
        &self,
        client: &impl GenericClient,
        task_id: TaskId,
        outcome: &Outcome,
        expired_before: Option<Timestamp>,
    ) -> Result<Option<FinishOutcome>> {
        if let Outcome::Retry(retry) = outcome {
            return self
                .requeue_task(client, task_id, retry, expired_before)
                .await;
        }
        let (result, error) = outcome.stored_texts();
        let final_body = outcome.final_body().encode();
        let cancel_body = Outcome::Cancelled.final_body().encode();
        let now = Timestamp::now();
        let context = "finishing a task";
        let statement = client
            .prepare_cached(&self.sql.finish)
            .await
            .map_err(driver(context))?;
        let row = client
            .query_one(
                &statement,
                &[
                    &uuid(task_id),
                    &writer::status_text(outcome.status()),
                    &result,
                    &error,
                    &final_body.open_json(),
                    &cancel_body.open_json(),
                    &now.as_millis(),
                    &now.to_string(),
                    &expired_before.is_some(),
                    &self.owner.get().map(String::as_str),
                ],
            )
            .await
            .map_err(driver(context))?;
        self.finish_answer(&row, expired_before, context)
    }

    /// The typed answer of `finish_task` or `requeue_task` (same codes).
    fn finish_answer(
        &self,
        row: &tokio_postgres::Row,
        expired_before: Option<Timestamp>,
        context: &str,
    ) -> Result<Option<FinishOutcome>> {
        self.finish_answer_at(row, 0, expired_before, context)
    }

    /// [`Self::finish_answer`] of a row whose code is column `at` (then
    /// status, then seq).
    pub(crate) fn finish_answer_at(
        &self,
        row: &tokio_postgres::Row,
        at: usize,
        expired_before: Option<Timestamp>,
        context: &str,
    ) -> Result<Option<FinishOutcome>> {
        let code: i16 = row.try_get(at).map_err(driver(context))?;
        let seq = || -> Result<u64> {
            Ok(row.try_get::<_, i64>(at + 2).map_err(driver(context))? as u64)
        };
        let status = || rows::status(row.try_get(at + 1).map_err(driver(context))?);
        Ok(Some(match code {
            finish::FINISHED => FinishOutcome::Finished {
                seq: seq()?,
                status: status()?,
            },
            finish::REQUEUED => FinishOutcome::Requeued { seq: seq()? },
            finish::ALREADY_FINISHED => FinishOutcome::AlreadyFinished { status: status()? },
            finish::NOT_STARTED => FinishOutcome::NotStarted,
            finish::NOT_OWNER => FinishOutcome::NotOwner,
            // A reap of a task that is not running (or not there) reaps nothing.
            finish::NOT_FOUND | finish::NOT_EXPIRED if expired_before.is_some() => return Ok(None),
            _ => FinishOutcome::NotFound,
        }))
    }
}

impl Shared {
    /// `requeue_task`: a failed attempt back to pending (see
    /// [`Outcome::Retry`]); with `expired_before`, only after a lease ran out.
    async fn requeue_task(
        &self,
        client: &impl GenericClient,
        task_id: TaskId,
        retry: &Retry,
        expired_before: Option<Timestamp>,
    ) -> Result<Option<FinishOutcome>> {
        let context = "requeueing a task";
        let now = Timestamp::now();
        let (partial, record) = crate::texts::requeue_texts(retry, now);
        let cancel_body = Outcome::Cancelled.final_body().encode();
        let statement = client
            .prepare_cached(&self.sql.requeue)
            .await
            .map_err(driver(context))?;
        let row = client
            .query_one(
                &statement,
                &[
                    &uuid(task_id),
                    &partial,
                    &record,
                    &retry.retry_at.as_millis(),
                    &cancel_body.open_json(),
                    &now.as_millis(),
                    &now.to_string(),
                    &expired_before.is_some(),
                    &self.owner.get().map(String::as_str),
                ],
            )
            .await
            .map_err(driver(context))?;
        self.finish_answer(&row, expired_before, context)
    }
}

/// A lease's length from now (ms): the database adds it to its own clock.
fn lease_length(lease: &Lease) -> i64 {
    lease.until.as_millis() - Timestamp::now().as_millis()
}

/// Deleting old finished tasks and sweeping deleted tapes, in batches.
#[async_trait::async_trait]
impl tasktape_core::store::Maintenance for PostgresStore {
    async fn purge(&self, finished_before: Timestamp, limit: usize) -> Result<u64> {
        self.purge_finished(finished_before, limit).await
    }

    async fn sweep(&self, limit: usize) -> Result<u64> {
        self.sweep_tapes(limit).await
    }
}
