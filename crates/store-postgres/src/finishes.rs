//! A writer batch's finishes, set-based: the plain finishes of one round
//! (distinct task ids) in one `finish_tasks` call, one transaction for them
//! all, and its retries in one `requeue_tasks` call (pipelined on the same
//! connection).
//! A task finished twice in one batch has its later finishes in the next
//! round, so the first finish wins as it would one by one. A round whose
//! statement fails for another reason than an outage is written again one
//! task at a time, so a bad row fails alone.

use std::collections::HashSet;

use tasktape_core::BodyExt as _;
use tasktape_core::model::{Outcome, TaskId};
use tasktape_core::store::{FinishOutcome, Result, StoreError};
use tasktape_core::time::Timestamp;

use crate::Shared;
use crate::rows::{driver, uuid};
use crate::writer;

impl Shared {
    /// Writes `finishes` on `client`; one answer each, in order.
    pub(crate) async fn finish_batch(
        &self,
        client: &deadpool_postgres::Object,
        finishes: &[(TaskId, &Outcome)],
    ) -> Vec<Result<FinishOutcome>> {
        let mut answers: Vec<Option<Result<FinishOutcome>>> = vec![None; finishes.len()];
        let mut pending: Vec<usize> = (0..finishes.len()).collect();
        while !pending.is_empty() {
            let mut seen = HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) = pending
                .into_iter()
                .partition(|&index| seen.insert(finishes[index].0));
            pending = later;
            let (plain, retries): (Vec<usize>, Vec<usize>) = round
                .into_iter()
                .partition(|&index| !matches!(finishes[index].1, Outcome::Retry(_)));
            let set = self.finish_set(client, &plain, finishes);
            let requeues = self.finish_set(client, &retries, finishes);
            let (set_answers, retry_answers) = futures::join!(set, requeues);
            for (index, answer) in plain.into_iter().zip(set_answers) {
                answers[index] = Some(answer);
            }
            for (index, answer) in retries.into_iter().zip(retry_answers) {
                answers[index] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| {
                    Err(StoreError::backend(
                        "finishing tasks",
                        "a finish got no answer",
                    ))
                })
            })
            .collect()
    }

    /// The finishes at `indexes` (distinct tasks; all retries or none) in
    /// one `finish_tasks` or `requeue_tasks` call; one by one when that call
    /// fails on a statement error.
    async fn finish_set(
        &self,
        client: &deadpool_postgres::Object,
        indexes: &[usize],
        finishes: &[(TaskId, &Outcome)],
    ) -> Vec<Result<FinishOutcome>> {
        match indexes {
            [] => return Vec::new(),
            [index] => {
                let (task_id, outcome) = finishes[*index];
                return vec![self.finish_on(client, task_id, outcome).await];
            }
            _ => {}
        }
        let chosen: Vec<(TaskId, &Outcome)> =
            indexes.iter().map(|&index| finishes[index]).collect();
        let written = if matches!(chosen[0].1, Outcome::Retry(_)) {
            self.requeue_tasks(client, &chosen).await
        } else {
            self.finish_tasks(client, &chosen).await
        };
        match written {
            // Committed: each caller answered from its row (never written
            // again, which would tell a winner it lost).
            Ok(answers) => answers,
            Err(error) if error.is_transient() => vec![Err(error); chosen.len()],
            Err(error) => {
                tracing::warn!(%error, count = chosen.len(), "finish batch failed; writing one by one");
                futures::future::join_all(
                    chosen
                        .iter()
                        .map(|(task_id, outcome)| self.finish_on(client, *task_id, outcome)),
                )
                .await
            }
        }
    }

    /// One `finish_tasks` call; each finished task's followers woken. The
    /// outer error: the statement failed (nothing written); the inner
    /// ones: a committed row whose answer could not be read.
    async fn finish_tasks(
        &self,
        client: &deadpool_postgres::Object,
        chosen: &[(TaskId, &Outcome)],
    ) -> Result<Vec<Result<FinishOutcome>>> {
        let context = "finishing tasks";
        let ids: Vec<uuid::Uuid> = chosen.iter().map(|(task_id, _)| uuid(*task_id)).collect();
        let statuses: Vec<&str> = chosen
            .iter()
            .map(|(_, outcome)| writer::status_text(outcome.status()))
            .collect();
        let (results, errors): (Vec<Option<String>>, Vec<Option<String>>) = chosen
            .iter()
            .map(|(_, outcome)| outcome.stored_texts())
            .unzip();
        let finals: Vec<_> = chosen
            .iter()
            .map(|(_, outcome)| outcome.final_body().encode())
            .collect();
        let finals: Vec<&str> = finals.iter().map(|body| body.open_json()).collect();
        let cancel_body = Outcome::Cancelled.final_body().encode();
        let now = Timestamp::now();
        let statement = client
            .prepare_cached(&self.sql.finish_many)
            .await
            .map_err(driver(context))?;
        let rows = client
            .query(
                &statement,
                &[
                    &ids,
                    &statuses,
                    &results,
                    &errors,
                    &finals,
                    &cancel_body.open_json(),
                    &now.as_millis(),
                    &now.to_string(),
                    &self.owner.get().map(String::as_str),
                ],
            )
            .await
            .map_err(driver(context))?;
        self.answers_by_id(&rows, chosen, context)
    }

    /// One `requeue_tasks` call (every outcome a retry); each requeued or
    /// cancelled task's followers woken. Errors as [`Self::finish_tasks`].
    async fn requeue_tasks(
        &self,
        client: &deadpool_postgres::Object,
        chosen: &[(TaskId, &Outcome)],
    ) -> Result<Vec<Result<FinishOutcome>>> {
        let context = "requeueing tasks";
        let now = Timestamp::now();
        let mut ids = Vec::with_capacity(chosen.len());
        let mut partials = Vec::with_capacity(chosen.len());
        let mut records = Vec::with_capacity(chosen.len());
        let mut run_ats = Vec::with_capacity(chosen.len());
        for (task_id, outcome) in chosen {
            let Outcome::Retry(retry) = outcome else {
                return Err(StoreError::backend(context, "not a retry"));
            };
            let (partial, record) = crate::texts::requeue_texts(retry, now);
            ids.push(uuid(*task_id));
            partials.push(partial);
            records.push(record);
            run_ats.push(retry.retry_at.as_millis());
        }
        let cancel_body = Outcome::Cancelled.final_body().encode();
        let statement = client
            .prepare_cached(&self.sql.requeue_many)
            .await
            .map_err(driver(context))?;
        let rows = client
            .query(
                &statement,
                &[
                    &ids,
                    &partials,
                    &records,
                    &run_ats,
                    &cancel_body.open_json(),
                    &now.as_millis(),
                    &now.to_string(),
                    &self.owner.get().map(String::as_str),
                ],
            )
            .await
            .map_err(driver(context))?;
        self.answers_by_id(&rows, chosen, context)
    }

    /// The answers of a set-based call's rows (`out_id` first, then the
    /// codes of `finish_answer_at`), in `chosen`'s order; each finished or
    /// requeued task's followers woken.
    fn answers_by_id(
        &self,
        rows: &[tokio_postgres::Row],
        chosen: &[(TaskId, &Outcome)],
        context: &str,
    ) -> Result<Vec<Result<FinishOutcome>>> {
        // Answered by task id (each id is in the batch once).
        let mut by_id = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            if let Ok(id) = row.try_get::<_, uuid::Uuid>(0) {
                by_id.insert(id, row);
            }
        }
        let mut answers = Vec::with_capacity(chosen.len());
        for (task_id, _) in chosen {
            let answer = match by_id.get(&uuid(*task_id)) {
                Some(row) => self
                    .finish_answer_at(row, 1, None, context)
                    .map(|answer| answer.unwrap_or(FinishOutcome::NotFound)),
                None => Err(StoreError::backend(context, "no answer for this task")),
            };
            if let Ok(FinishOutcome::Finished { seq, .. } | FinishOutcome::Requeued { seq }) =
                answer
            {
                self.hub.notify(*task_id, seq);
            }
            answers.push(answer);
        }
        Ok(answers)
    }
}
