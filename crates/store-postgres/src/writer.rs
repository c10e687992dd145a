//! The writer: one task that takes appends and finishes in queue order and
//! writes each run of queued appends with one `append_task_events` call (one
//! round trip, one transaction, one NOTIFY per task), so a Reporter's events
//! land in order and before its task's `final`. While the database is
//! unreachable (restarting, the network down) the writer holds the batch
//! and retries it with backoff for [`TRANSIENT_RETRY`] (queued writes wait
//! behind it, in order); only then are the writes answered with the error.

use std::sync::Arc;

use tasktape_core::event::EncodedBody;
use tasktape_core::model::{Outcome, Status, TaskId};
use tasktape_core::store::{
    AppendAck, AppendOutcome, FinishOutcome, Result, StoreError, TRANSIENT_RETRY,
    outcome_after_events,
};
use tasktape_core::time::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use crate::Shared;
use crate::codes::append;
use crate::rows::{self, uuid};

/// Where an append's outcome goes.
pub(crate) enum AppendReply {
    Wait(oneshot::Sender<Result<AppendOutcome>>),
    Ack(Arc<AppendAck>),
}

impl AppendReply {
    fn send(self, outcome: Result<AppendOutcome>) {
        match self {
            AppendReply::Wait(reply) => drop(reply.send(outcome)),
            AppendReply::Ack(ack) => ack.record(&outcome),
        }
    }
}

/// One queued write.
pub(crate) enum WriteJob {
    Append {
        task_id: TaskId,
        body: EncodedBody,
        /// When it was reported: the event's `ts`.
        at: Timestamp,
        reply: AppendReply,
    },
    Finish {
        task_id: TaskId,
        outcome: Outcome,
        ack: Option<Arc<AppendAck>>,
        reply: oneshot::Sender<Result<FinishOutcome>>,
    },
}

struct Append {
    task_id: TaskId,
    body: EncodedBody,
    at: Timestamp,
    reply: AppendReply,
}

/// Retries of one batch through a transient outage.
struct Outage {
    since: Option<std::time::Instant>,
    backoff: std::time::Duration,
}

impl Outage {
    fn new() -> Self {
        Outage {
            since: None,
            backoff: std::time::Duration::from_millis(10),
        }
    }

    /// After a transient failure: waits and answers true while the window
    /// for retrying lasts.
    async fn wait_to_retry(&mut self, error: &StoreError) -> bool {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= TRANSIENT_RETRY {
            return false;
        }
        tracing::warn!(%error, "database unavailable; holding writes to retry");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(std::time::Duration::from_secs(1));
        true
    }
}

/// Runs until every sender is gone.
pub(crate) async fn run(shared: Arc<Shared>, mut jobs: mpsc::Receiver<WriteJob>, batch_max: usize) {
    let mut batch = Vec::with_capacity(batch_max);
    while jobs.recv_many(&mut batch, batch_max).await > 0 {
        // The batch's appends go first, in one call, then its finishes. Jobs
        // in one batch were in the queue together, so no caller awaited one
        // before sending another; what the queue does order (a Reporter's
        // events before its task's finish) stays in order.
        let mut appends = Vec::new();
        let mut finishes = Vec::new();
        for job in batch.drain(..) {
            match job {
                WriteJob::Append {
                    task_id,
                    body,
                    at,
                    reply,
                } => appends.push(Append {
                    task_id,
                    body,
                    at,
                    reply,
                }),
                WriteJob::Finish {
                    task_id,
                    outcome,
                    ack,
                    reply,
                } => finishes.push((task_id, outcome, ack, reply)),
            }
        }
        write_appends(&shared, appends).await;
        // Every append an ack covers has been answered now: settle the
        // outcomes, then write the finishes together (one statement for the
        // plain ones, `finishes.rs`).
        let finishes: Vec<_> = finishes
            .into_iter()
            .map(|(task_id, outcome, ack, reply)| {
                let outcome = match ack {
                    Some(ack) => outcome_after_events(outcome, &ack),
                    None => outcome,
                };
                (task_id, outcome, reply)
            })
            .collect();
        write_finishes(&shared, finishes).await;
    }
}

/// Writes `finishes` together (set-based, `finishes.rs`), retrying those
/// that fail transiently.
async fn write_finishes(
    shared: &Shared,
    mut finishes: Vec<(TaskId, Outcome, oneshot::Sender<Result<FinishOutcome>>)>,
) {
    let mut outage = Outage::new();
    while !finishes.is_empty() {
        let pipelined = async {
            let client = shared.pool.get().await.map_err(rows::pool)?;
            let batch: Vec<(TaskId, &Outcome)> = finishes
                .iter()
                .map(|(task_id, outcome, _)| (*task_id, outcome))
                .collect();
            Ok(shared.finish_batch(&client, &batch).await)
        };
        let answers = match shared.bounded("finishing tasks", pipelined).await {
            Ok(answers) => answers,
            Err(error) => vec![Err(error); finishes.len()],
        };
        let mut again = Vec::new();
        let mut transient = None;
        for ((task_id, outcome, reply), answer) in finishes.into_iter().zip(answers) {
            match answer {
                Err(error) if error.is_transient() => {
                    transient = Some(error);
                    again.push((task_id, outcome, reply));
                }
                answer => drop(reply.send(answer)),
            }
        }
        finishes = again;
        if let Some(error) = transient
            && !outage.wait_to_retry(&error).await
        {
            for (_, _, reply) in finishes.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// Writes `appends` in one call; a failing batch is retried once on a
/// deadlock or serialization failure, and split to single appends on any
/// other statement error so one bad append fails alone.
async fn write_appends(shared: &Shared, mut appends: Vec<Append>) {
    if appends.is_empty() {
        return;
    }
    // Lock rows in task-id order (a stable sort keeps each task's order).
    appends.sort_by_key(|append| append.task_id);
    let mut attempt = 0;
    let mut outage = Outage::new();
    let outcome = loop {
        attempt += 1;
        let call = async { Ok(call_append(shared, &appends).await) };
        let answer = match shared.bounded("appending events", call).await {
            Ok(answer) => answer,
            Err(error) => Err(Retry::Unavailable(error)),
        };
        match answer {
            Err(Retry::Conflict(error)) if attempt < 3 => {
                tracing::debug!(%error, "append batch conflicted; retrying");
            }
            Err(Retry::Unavailable(error)) if outage.wait_to_retry(&error).await => {}
            other => break other,
        }
    };
    match outcome {
        Ok(rows) => {
            let mut woken: Option<(TaskId, u64)> = None;
            for (append, outcome) in appends.into_iter().zip(rows) {
                if let AppendOutcome::Appended { seq } = outcome {
                    match &mut woken {
                        Some((task_id, last)) if *task_id == append.task_id => *last = seq,
                        _ => {
                            if let Some((task_id, seq)) = woken {
                                shared.hub.notify(task_id, seq);
                            }
                            woken = Some((append.task_id, seq));
                        }
                    }
                }
                append.reply.send(Ok(outcome));
            }
            if let Some((task_id, seq)) = woken {
                shared.hub.notify(task_id, seq);
            }
        }
        Err(Retry::Statement(error)) if appends.len() > 1 => {
            tracing::warn!(%error, count = appends.len(), "append batch failed; writing one by one");
            for append in appends {
                Box::pin(write_appends(shared, vec![append])).await;
            }
        }
        Err(Retry::Statement(error) | Retry::Conflict(error) | Retry::Unavailable(error)) => {
            for append in appends {
                append.reply.send(Err(error.clone()));
            }
        }
    }
}

enum Retry {
    Conflict(StoreError),
    Statement(StoreError),
    Unavailable(StoreError),
}

async fn call_append(shared: &Shared, appends: &[Append]) -> Result<Vec<AppendOutcome>, Retry> {
    let client = shared
        .pool
        .get()
        .await
        .map_err(|error| Retry::Unavailable(rows::pool(error)))?;
    let statement = client
        .prepare_cached(&shared.sql.append)
        .await
        .map_err(|error| retry("preparing an append", error))?;
    // `appends` is sorted by task: number each event within its task.
    let ids: Vec<uuid::Uuid> = appends.iter().map(|append| uuid(append.task_id)).collect();
    let mut ks: Vec<i32> = Vec::with_capacity(appends.len());
    for (index, append) in appends.iter().enumerate() {
        let k = match index.checked_sub(1).map(|before| &appends[before]) {
            Some(before) if before.task_id == append.task_id => ks[index - 1] + 1,
            _ => 1,
        };
        ks.push(k);
    }
    let bodies: Vec<&str> = appends
        .iter()
        .map(|append| append.body.open_json())
        .collect();
    let times: Vec<String> = appends.iter().map(|append| append.at.to_string()).collect();
    let found = client
        .query(
            &statement,
            &[
                &ids,
                &ks,
                &bodies,
                &times,
                &shared.owner.get().map(String::as_str),
            ],
        )
        .await
        .map_err(|error| retry("appending events", error))?;
    // One row per task: where its events went.
    let mut tasks = std::collections::HashMap::with_capacity(found.len());
    for row in &found {
        let id: uuid::Uuid = row.try_get(0).map_err(|e| retry("reading an append", e))?;
        let base: i64 = row.try_get(1).map_err(|e| retry("reading an append", e))?;
        let code: i16 = row.try_get(2).map_err(|e| retry("reading an append", e))?;
        tasks.insert(id, (base as u64, code));
    }
    appends
        .iter()
        .zip(ks)
        .map(|(append, k)| {
            let Some(&(base, code)) = tasks.get(&uuid(append.task_id)) else {
                return Err(Retry::Statement(StoreError::backend(
                    "appending events",
                    format!("no answer for task {}", append.task_id),
                )));
            };
            Ok(match code {
                append::APPENDED => AppendOutcome::Appended {
                    seq: base + k as u64,
                },
                append::DROPPED => AppendOutcome::Dropped { last_seq: base },
                _ => AppendOutcome::NotFound,
            })
        })
        .collect()
}

fn retry(context: &str, error: tokio_postgres::Error) -> Retry {
    let conflict = error.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    });
    match rows::classify(context, error) {
        error @ StoreError::Unavailable { .. } => Retry::Unavailable(error),
        error if conflict => Retry::Conflict(error),
        error => Retry::Statement(error),
    }
}

/// `status` as the SQL functions spell it.
pub(crate) fn status_text(status: Status) -> &'static str {
    status.as_str()
}
