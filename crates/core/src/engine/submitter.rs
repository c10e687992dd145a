//! Submits: the rules every submit obeys (whoever calls: the server, an
//! embedder, a schedule), the op's check of the params, the task's retry
//! plan (the submit's policy, else the config's for the op, else the op's
//! own), the row, and waking a claim (or, for a delayed task, a timer).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tracing::debug;

use super::Life;
use super::claimer::Claimer;
use crate::clock::Clock;
use crate::manager::{SubmitError, SubmitOptions, Submitted};
use crate::metrics::Metrics;
use crate::model::NewTask;
use crate::op::OpRegistry;
use crate::retry::{RetryPlan, RetryPolicy};
use crate::store::{Created, Store, StoreError};
use crate::time::Timestamp;

/// The priorities a submit may ask for.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1_000_000..=1_000_000;

/// How far ahead `run_at` may be (10 years): further is a typo.
pub const MAX_DELAY_MS: i64 = 10 * 366 * 24 * 3600 * 1000;

/// The longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Idempotency keys with this prefix are the schedules' own.
pub const SCHEDULE_KEY_PREFIX: &str = "schedule:";

/// The `params_digest` of a task submitted in SQL (PostgreSQL's
/// `submit()`): its params were not checked yet, so they are at its claim;
/// a repeated key finds it whatever the params.
pub const SQL_SUBMIT_DIGEST: &str = "sql";

/// What the store records of an op an instance runs itself (kind
/// `served`): that it is served, and the retry plan a task submitted in
/// SQL takes.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Served {
    retry: Option<RetryPlan>,
}

impl SubmitOptions {
    /// The rules every submit's options obey, judged at `now` (in this
    /// order): a `run_at` at most 10 years ahead, a priority in
    /// [`PRIORITY_RANGE`], a valid retry policy, an idempotency key of 1
    /// to 256 bytes not starting with `schedule:`. The refusal names the
    /// field.
    pub fn check(&self, now: Timestamp) -> Result<(), SubmitError> {
        let refuse = |field: &str, kind: &str, message: String| {
            Err(SubmitError::InvalidOption {
                field: field.to_owned(),
                kind: kind.to_owned(),
                message,
            })
        };
        if let Some(at) = self.run_at
            && at.as_millis().saturating_sub(now.as_millis()) > MAX_DELAY_MS
        {
            return refuse(
                "run_at",
                "datetime_future",
                "must be at most 10 years from now".to_owned(),
            );
        }
        if !PRIORITY_RANGE.contains(&self.priority) {
            return refuse(
                "priority",
                "range",
                format!(
                    "must be {} to {}",
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end()
                ),
            );
        }
        if let Some(policy) = &self.retry
            && let Err((field, message)) = policy.check()
        {
            return refuse(&format!("retry.{field}"), "value_error", message);
        }
        if let Err(error) = tasktape_wire::metadata::check(&self.metadata) {
            return refuse(&error.field, error.kind, error.message);
        }
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return refuse(
                    "idempotency_key",
                    "string_length",
                    format!("must be 1 to {MAX_KEY_LEN} characters"),
                );
            }
            if key.starts_with(SCHEDULE_KEY_PREFIX) {
                return refuse(
                    "idempotency_key",
                    "value_error",
                    "keys starting with \"schedule:\" are the schedules' own (one task per slot)"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }
}

/// Creates tasks.
pub(crate) struct Submitter {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ops: OpRegistry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) life: Life,
    pub(crate) claimer: Arc<Claimer>,
    /// How a submitter's span is captured for its task's run.
    pub(crate) tracing: Arc<dyn crate::observe::TaskTracing>,
    /// Retry plans by op name from the config.
    pub(crate) retries: HashMap<String, RetryPlan>,
    /// Flow control by op name from the config (else the op's own).
    pub(crate) flows: HashMap<String, crate::flow::Flow>,
    /// The store's key for `params_digest` (set at start, before any submit).
    pub(crate) digest_key: std::sync::OnceLock<Vec<u8>>,
}

/// Where the store keeps the digest key.
const DIGEST_KEY: (&str, &str) = ("secret", "params_digest_key");

/// The store's key for `params_digest`: made at random by the first
/// instance that needs it, then the same for every instance sharing the store.
pub(crate) async fn digest_key(store: &dyn crate::store::Store) -> Result<Vec<u8>, StoreError> {
    let (kind, key) = DIGEST_KEY;
    loop {
        let stored = store.records(kind).await?;
        if let Some((_, hex)) = stored.iter().find(|(name, _)| name == key) {
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            return bytes.filter(|bytes| bytes.len() >= 16).ok_or_else(|| {
                StoreError::backend(
                    "reading the params digest key",
                    "not hex of 16 bytes or more",
                )
            });
        }
        let fresh: String = (0..2)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        store.swap_record(kind, key, None, Some(&fresh)).await?;
    }
}

impl Submitter {
    /// The retry plan a task of `op` gets, given its submit's `policy`.
    fn retry_plan(&self, op: &str, policy: Option<RetryPolicy>) -> Option<RetryPlan> {
        let configured = self.retries.get(op);
        let handler = self.ops.get(op);
        let idempotent = configured.map(|plan| plan.idempotent).unwrap_or(false)
            || handler.as_ref().is_some_and(|handler| handler.idempotent());
        let policy = policy
            .or_else(|| configured.map(|plan| plan.policy.clone()))
            .or_else(|| handler.and_then(|handler| handler.retry()))?;
        Some(RetryPlan { policy, idempotent })
    }

    /// Records each op this instance runs itself (kind `served`, with its
    /// retry plan), so a submit in SQL knows it is served and how it retries.
    pub(crate) async fn record_served(&self) -> Result<(), StoreError> {
        use super::remote::records;
        for name in self.ops.names() {
            if self.ops.get(&name).is_none_or(|op| op.is_remote()) {
                continue;
            }
            let served = Served {
                retry: self.retry_plan(&name, None),
            };
            for _ in 0..3 {
                let stored = records::one::<Served>(&*self.store, records::SERVED, &name).await?;
                if stored.as_ref().is_some_and(|(old, _)| *old == served) {
                    break;
                }
                let expected = stored.as_ref().map(|(_, text)| text.as_str());
                if records::swap(&*self.store, records::SERVED, &name, expected, &served)
                    .await?
                    .is_some()
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// A submit checked and made a row, not yet written: the op's check
    /// of the params, the retry plan, the keyed digest.
    fn prepare(
        &self,
        op: &str,
        params: Value,
        options: SubmitOptions,
        trace_parent: Option<String>,
    ) -> Result<Prepared, SubmitError> {
        if self.life.is_stopping() {
            return Err(SubmitError::ShuttingDown);
        }
        let Some(handler) = self.ops.get(op) else {
            return Err(SubmitError::UnknownOp {
                name: op.to_owned(),
                known: self.ops.names(),
            });
        };
        let params = handler.prepare(params)?;
        let mut task = NewTask::new(op, params);
        task.idempotency_key = options.idempotency_key;
        task.trace_parent = trace_parent;
        task.priority = options.priority;
        // A time already past is due now.
        task.run_at = options.run_at.filter(|at| *at > self.clock.now());
        task.retry = self.retry_plan(op, options.retry);
        task.retry_of = options.retry_of;
        task.metadata = options.metadata;
        let flow = match self.flows.get(op) {
            Some(flow) => Some(flow.clone()),
            None => handler.flow(),
        };
        if let Some(template) = flow.as_ref().and_then(|flow| flow.key.as_ref()) {
            let key = template
                .render(&task.metadata, &task.params)
                .map_err(|error| SubmitError::InvalidOption {
                    field: error.field,
                    kind: "missing".to_owned(),
                    message: error.message,
                })?;
            task.flow_key = Some(key);
        }
        // Compared with the task a repeated key finds: keyed, or (a task
        // made before digests were keyed) plain.
        let plain = task.params_digest.clone();
        if let Some(key) = self.digest_key.get() {
            task.params_digest = crate::model::keyed_params_digest(key, &task.params);
        }
        Ok(Prepared { task, plain })
    }

    /// Creates and schedules a task (see [`crate::Manager::submit_with`]).
    #[tracing::instrument(name = "manager.submit", level = "debug", skip_all, fields(op = %op), err(level = "debug"))]
    pub(crate) async fn submit(
        self: &Arc<Self>,
        op: &str,
        params: Value,
        options: SubmitOptions,
        trace_parent: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        let prepared = self.prepare(op, params, options, trace_parent)?;
        let digests = prepared.digests();
        let mut created = self.create(vec![prepared.task]).await?;
        let created = created
            .pop()
            .ok_or_else(|| SubmitError::Store(StoreError::backend("submit", "no answer")))?;
        answer(&digests, created)
    }

    /// Creates and schedules many tasks in one write: one answer per entry,
    /// in order (a refused entry does not stop the others). A key given
    /// twice finds the first entry's task. A failed write fails them all.
    #[tracing::instrument(name = "manager.submit_many", level = "debug", skip_all, fields(entries = entries.len()))]
    pub(crate) async fn submit_many(
        self: &Arc<Self>,
        entries: Vec<(String, Value, SubmitOptions)>,
        trace_parent: Option<String>,
    ) -> Result<Vec<Result<Submitted, SubmitError>>, SubmitError> {
        // Per entry: refused, written as row `n`, or the same key as row `n`.
        enum Slot {
            Refused(SubmitError),
            /// Row `n`; `false`: an earlier entry gave the same key.
            Row(usize, Digests, bool),
        }
        let mut slots = Vec::with_capacity(entries.len());
        let mut rows = Vec::new();
        let mut keys: HashMap<String, usize> = HashMap::new();
        for (op, params, options) in entries {
            let prepared = options
                .check(self.clock.now())
                .and_then(|()| self.prepare(&op, params, options, trace_parent.clone()));
            slots.push(match prepared {
                Err(SubmitError::ShuttingDown) => return Err(SubmitError::ShuttingDown),
                Err(error) => Slot::Refused(error),
                Ok(prepared) => {
                    let digests = prepared.digests();
                    let seen = (prepared.task.idempotency_key.as_ref())
                        .and_then(|key| keys.get(key).copied());
                    match seen {
                        Some(row) => Slot::Row(row, digests, false),
                        None => {
                            if let Some(key) = &prepared.task.idempotency_key {
                                keys.insert(key.clone(), rows.len());
                            }
                            rows.push(prepared.task);
                            Slot::Row(rows.len() - 1, digests, true)
                        }
                    }
                }
            });
        }
        let created = self.create(rows).await?;
        Ok(slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Refused(error) => Err(error),
                Slot::Row(row, digests, first) => {
                    let mut created = created[row].clone();
                    // A later entry with an earlier one's key finds its task.
                    created.created &= first;
                    answer(&digests, created)
                }
            })
            .collect())
    }

    /// Writes the rows and wakes what runs them. Cancel-safe: spawned, so
    /// a caller that stops waiting leaves the tasks written and scheduled.
    async fn create(self: &Arc<Self>, rows: Vec<NewTask>) -> Result<Vec<Created>, SubmitError> {
        let this = Arc::clone(self);
        let created = tokio::spawn(async move {
            let created = if rows.len() > 1 {
                this.store.create_many(rows).await?
            } else {
                let mut created = Vec::with_capacity(1);
                for row in rows {
                    created.push(this.store.create(row).await?);
                }
                created
            };
            // One wake-up per op: a claim for tasks due now, a timer for
            // the earliest delayed one.
            let mut kicks = std::collections::HashSet::new();
            let mut timers: HashMap<&str, Timestamp> = HashMap::new();
            for made in created.iter().filter(|made| made.created) {
                let task = &made.task;
                this.metrics.submitted.with(&[&task.op]).inc();
                match task.run_at {
                    None => {
                        kicks.insert(task.op.as_str());
                    }
                    Some(at) => {
                        let earliest = timers.entry(task.op.as_str()).or_insert(at);
                        *earliest = (*earliest).min(at);
                    }
                }
            }
            for op in kicks {
                this.claimer.kick(op);
            }
            for (op, at) in timers {
                this.claimer.arm_due(op, at);
            }
            Ok::<_, StoreError>(created)
        });
        match created.await {
            Ok(created) => Ok(created?),
            Err(join_error) => Err(SubmitError::Store(StoreError::backend(
                "submit", join_error,
            ))),
        }
    }
}

/// A row ready for the store, with the plain digest its key also matches.
struct Prepared {
    task: NewTask,
    plain: String,
}

impl Prepared {
    fn digests(&self) -> Digests {
        Digests {
            op: self.task.op.clone(),
            digest: self.task.params_digest.clone(),
            plain: self.plain.clone(),
        }
    }
}

/// What a submit compares with the task its key finds.
struct Digests {
    op: String,
    digest: String,
    plain: String,
}

/// A submit's answer: its task, or a conflict when the key found a task of
/// other params or another op.
fn answer(digests: &Digests, created: Created) -> Result<Submitted, SubmitError> {
    let stored = &created.task.params_digest;
    let same_params =
        *stored == digests.digest || *stored == digests.plain || stored == SQL_SUBMIT_DIGEST;
    if !created.created && (!same_params || created.task.op != digests.op) {
        return Err(SubmitError::IdempotencyConflict {
            task_id: created.task.task_id,
        });
    }
    debug!(task_id = %created.task.task_id, created = created.created, "submitted");
    Ok(Submitted {
        created: created.created,
        task: created.task,
    })
}
