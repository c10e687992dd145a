//! tasktape's PostgreSQL store: several `tasktape serve` instances on one
//! database.
//!
//! - Transitions are PL/pgSQL functions (`schema.rs`): one round trip each,
//!   row and tape written in one transaction, the row locked first.
//! - Appends and finishes go through one writer task per store (`writer.rs`)
//!   that writes each run of queued appends in one call, so a Reporter's
//!   events land in order and before its `final`.
//! - Claims start the oldest pending tasks of an op under a per-op advisory
//!   lock with `FOR UPDATE SKIP LOCKED`, so per-op limits hold across
//!   instances.
//! - Commits NOTIFY the schema's channel; a dedicated connection LISTENs
//!   (`listener.rs`) and turns them into wake-ups for followers and signals
//!   for the manager (pending work, freed slots, cancels for tasks running
//!   here); it reconnects and catches up after the database restarts.
//! - A database that cannot be reached gives `StoreError::Unavailable`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tasktape_core::StoreError> {
//! use tasktape_store_postgres::{PostgresConfig, PostgresStore};
//! let store = PostgresStore::open(PostgresConfig::new("postgres://app:secret@db/tasks")).await?;
//! # Ok(())
//! # }
//! ```

mod listener;
mod rows;
mod schema;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tasktape_core::BodyExt as _;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tasktape_core::StoredEvent;
use tasktape_core::event::EventBody;
use tasktape_core::model::{NewTask, Outcome, Status, Task, TaskId};
use tasktape_core::store::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease,
    ListPage, ListQuery, Result, StartOutcome, StatusCounts, Store, StoreError, StoreSignal,
    TapePage,
};
use tasktape_core::time::Timestamp;
use tasktape_core::wake::WakeHub;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::NoTls;

use crate::rows::{TASK_COLUMNS, driver, task_from_row, task_id, uuid};
pub use crate::schema::valid_schema_name;
use crate::writer::{AppendReply, WriteJob};

/// How to reach the database and shape the store.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// A `postgres://user:password@host:port/database` URL (or a libpq
    /// key=value string).
    pub url: String,
    /// The schema holding tasktape's tables (created if missing; default
    /// `tasktape`). Instances that share a schema share their tasks.
    pub schema: String,
    /// Pooled connections (default 16), besides the listener's own.
    pub pool_size: usize,
    /// Most appends written in one call (default 2048).
    pub batch_max: usize,
    /// How long connecting may take before the database counts as
    /// unreachable (default 5 s).
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: "tasktape".to_owned(),
            pool_size: 16,
            batch_max: 2048,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQL this store runs, rendered for its schema once.
struct Sql {
    append: String,
    start: String,
    claim: String,
    finish: String,
    cancel: String,
    create: String,
    delete: String,
    get: String,
    list: String,
    counts: String,
    events: String,
    last_seq: String,
    last_seqs: String,
    renew: String,
    expired: String,
    leftovers: String,
    pending: String,
    purge: String,
}

impl Sql {
    fn new(schema: &str) -> Sql {
        let s = schema::quoted(schema);
        Sql {
            append: format!("SELECT out_seq, out_code FROM {s}.append_events($1, $2, $3)"),
            start: format!("SELECT out_code, out_status FROM {s}.start_task($1, $2, $3, $4, $5)"),
            claim: format!("SELECT {TASK_COLUMNS} FROM {s}.claim($1, $2, $3, $4, $5, $6)"),
            finish: format!(
                "SELECT out_code, out_status, out_seq FROM {s}.finish_task($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            cancel: format!(
                "SELECT out_code, out_status, out_seq, out_owner FROM {s}.request_cancel($1, $2, $3, $4)"
            ),
            create: format!(
                "SELECT out_created, out_id FROM {s}.create_task($1, $2, $3, $4, $5, $6, $7)"
            ),
            delete: format!("SELECT out_code, out_status FROM {s}.delete_task($1)"),
            get: format!("SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE task_id = $1"),
            list: format!("SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE true"),
            counts: format!("SELECT status, count(*) FROM {s}.tasks GROUP BY status"),
            // One statement, one snapshot: status, last seq and the page agree.
            events: format!(
                "SELECT t.status, t.last_seq, e.seq, e.json FROM {s}.tasks t \
                 LEFT JOIN LATERAL (SELECT seq, json FROM {s}.events e \
                     WHERE e.task_id = t.task_id AND e.seq >= $2 ORDER BY e.seq LIMIT $3) e ON true \
                 WHERE t.task_id = $1 ORDER BY e.seq"
            ),
            last_seq: format!("SELECT last_seq FROM {s}.tasks WHERE task_id = $1"),
            last_seqs: format!("SELECT task_id, last_seq FROM {s}.tasks WHERE task_id = ANY ($1)"),
            // Rows are locked in id order, like the writer's batches: no deadlock.
            renew: format!(
                "WITH mine AS (SELECT task_id FROM {s}.tasks WHERE status = 'running' AND owner = $1 \
                     ORDER BY task_id FOR UPDATE) \
                 UPDATE {s}.tasks t SET lease_until = $2 FROM mine WHERE t.task_id = mine.task_id"
            ),
            expired: format!(
                "SELECT task_id FROM {s}.tasks WHERE status = 'running' AND lease_until < $1 \
                 AND owner IS DISTINCT FROM $2 ORDER BY task_id"
            ),
            leftovers: format!(
                "SELECT task_id FROM {s}.tasks WHERE status = 'running' AND owner = $1 ORDER BY task_id"
            ),
            pending: format!(
                "SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE status = 'pending' ORDER BY created_at, task_id"
            ),
            purge: format!(
                "WITH gone AS (DELETE FROM {s}.tasks WHERE status IN ('succeeded', 'failed', 'cancelled') \
                     AND finished_at < $1 RETURNING task_id), \
                 tapes AS (DELETE FROM {s}.events e USING gone WHERE e.task_id = gone.task_id) \
                 SELECT count(*) FROM gone"
            ),
        }
    }
}

/// What the store, its writer and its listener share.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) sql: Sql,
    pub(crate) hub: Arc<WakeHub>,
    pub(crate) signals: broadcast::Sender<StoreSignal>,
    /// Whether the listener is connected (wake-ups from peers arrive).
    pub(crate) listening: AtomicBool,
}

/// The PostgreSQL store; see the crate docs.
pub struct PostgresStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteJob>,
    listener: tokio::task::JoinHandle<()>,
    /// `user@host:port/database`, for messages (never the password).
    target: String,
    schema: String,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// `user@host:port/database` of `config`.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

impl PostgresStore {
    /// Connects, creates the schema if missing and migrates it (under an
    /// advisory lock, so instances starting together take turns), and
    /// starts the writer and the listener. Must be called inside a Tokio
    /// runtime.
    pub async fn open(config: PostgresConfig) -> Result<Self> {
        let mut pg =
            tokio_postgres::Config::from_str(&config.url).map_err(|error| StoreError::Open {
                path: "the postgres url".to_owned(),
                message: error.to_string(),
            })?;
        let target = describe(&pg);
        if !valid_schema_name(&config.schema) {
            return Err(StoreError::Open {
                path: target,
                message: format!(
                    "invalid schema name {:?}: use lowercase letters, digits and _ (at most 48)",
                    config.schema
                ),
            });
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("tasktape");
        }
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|error| StoreError::Open {
                path: target.clone(),
                message: error.to_string(),
            })?;
        migrate(&pool, &config.schema, &target).await?;
        let (signals, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            pool,
            sql: Sql::new(&config.schema),
            hub: WakeHub::new(),
            signals,
            listening: AtomicBool::new(false),
        });
        let (writer, jobs) = mpsc::channel(16_384);
        tokio::spawn(writer::run(
            Arc::clone(&shared),
            jobs,
            config.batch_max.max(1),
        ));
        let listener = tokio::spawn(listener::run(
            Arc::clone(&shared),
            pg,
            config.schema.clone(),
        ));
        Ok(PostgresStore {
            shared,
            writer,
            listener,
            target,
            schema: config.schema,
        })
    }

    /// `postgres://user@host:port/database` (never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The schema this store uses.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Whether the listener is connected now (peers' wake-ups arrive).
    pub fn listening(&self) -> bool {
        self.shared
            .listening
            .load(std::sync::atomic::Ordering::Acquire)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.shared.pool.get().await.map_err(rows::pool)
    }

    /// Runs `sql` with `params` on a pooled connection (a cached statement).
    async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(driver(context))?;
        client
            .query(&statement, params)
            .await
            .map_err(driver(context))
    }

    async fn write(&self, job: WriteJob) -> Result<()> {
        self.writer.send(job).await.map_err(|_| StoreError::Closed)
    }

    async fn finish_queued(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Option<Arc<AppendAck>>,
    ) -> Result<FinishOutcome> {
        let (reply, answer) = oneshot::channel();
        self.write(WriteJob::Finish {
            task_id,
            outcome,
            ack,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn task_ids(rows: &[tokio_postgres::Row], context: &str) -> Result<Vec<TaskId>> {
        rows.iter()
            .map(|row| row.try_get(0).map(task_id).map_err(driver(context)))
            .collect()
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
        Ok(finished.unwrap_or(FinishOutcome::NotFound))
    }

    /// `finish_task`; with `expired_before`, only a running task whose lease
    /// ended before it (`None` otherwise).
    async fn finish_task(
        &self,
        client: &deadpool_postgres::Object,
        task_id: TaskId,
        outcome: &Outcome,
        expired_before: Option<Timestamp>,
    ) -> Result<Option<FinishOutcome>> {
        let (result, error) = match outcome {
            Outcome::Succeeded(result) => (Some(result.to_string()), None),
            Outcome::Failed(error) => {
                (None, Some(serde_json::to_string(error).unwrap_or_default()))
            }
            Outcome::Cancelled => (None, None),
        };
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
                    &expired_before.map(Timestamp::as_millis),
                ],
            )
            .await
            .map_err(driver(context))?;
        let code: i16 = row.try_get(0).map_err(driver(context))?;
        Ok(Some(match code {
            0 => {
                let status = rows::status(row.try_get(1).map_err(driver(context))?)?;
                let seq: i64 = row.try_get(2).map_err(driver(context))?;
                self.hub.notify(task_id, seq as u64);
                FinishOutcome::Finished {
                    seq: seq as u64,
                    status,
                }
            }
            1 => FinishOutcome::AlreadyFinished {
                status: rows::status(row.try_get(1).map_err(driver(context))?)?,
            },
            2 => FinishOutcome::NotStarted,
            // A reap of a task that is not running (or not there) reaps nothing.
            3 | 4 if expired_before.is_some() => return Ok(None),
            _ => FinishOutcome::NotFound,
        }))
    }
}

/// Creates the schema and applies the missing migrations in one
/// transaction under an advisory lock.
async fn migrate(pool: &Pool, schema: &str, target: &str) -> Result<()> {
    let open = |message: String| StoreError::Open {
        path: target.to_owned(),
        message,
    };
    let mut client = pool.get().await.map_err(|error| match rows::pool(error) {
        StoreError::Unavailable { message } => open(message),
        other => other,
    })?;
    let context = "migrating the schema";
    let tx = client.transaction().await.map_err(driver(context))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("tasktape.{schema}.migrate")],
    )
    .await
    .map_err(driver(context))?;
    let s = schema::quoted(schema);
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await
    .map_err(driver(context))?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {s}.migrations"),
            &[],
        )
        .await
        .map_err(driver(context))?
        .get(0);
    if current > schema::latest() {
        return Err(StoreError::SchemaTooNew {
            path: format!("{target} (schema {schema})"),
            found: current.into(),
            known: schema::latest().into(),
        });
    }
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(&schema::render(sql, schema))
            .await
            .map_err(driver(context))?;
        tx.execute(
            &format!("INSERT INTO {s}.migrations (version) VALUES ($1)"),
            &[&(index as i32 + 1)],
        )
        .await
        .map_err(driver(context))?;
    }
    tx.commit().await.map_err(driver(context))
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ready(&self) -> Result<()> {
        self.query("checking the database", "SELECT 1", &[])
            .await
            .map(|_| ())
    }

    fn wake_hub(&self) -> &Arc<WakeHub> {
        &self.shared.hub
    }

    fn shared(&self) -> bool {
        true
    }

    fn signals(&self) -> Option<broadcast::Receiver<StoreSignal>> {
        Some(self.shared.signals.subscribe())
    }

    async fn create(&self, task: NewTask) -> Result<Created> {
        let params = task.params.to_string();
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
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::backend("creating a task", "no answer"))?;
        let created: bool = row.try_get(0).map_err(driver("creating a task"))?;
        if created {
            return Ok(Created {
                task: Task {
                    task_id: task.task_id,
                    op: task.op,
                    status: Status::Pending,
                    created_at: task.created_at,
                    started_at: None,
                    finished_at: None,
                    params_digest: task.params_digest,
                    result: None,
                    error: None,
                    params: task.params,
                    idempotency_key: task.idempotency_key,
                    cancel_requested: false,
                    owner: None,
                    lease_until: None,
                    trace_parent: task.trace_parent,
                },
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

    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome> {
        let now = Timestamp::now();
        let rows = self
            .query(
                "starting a task",
                &self.shared.sql.start,
                &[
                    &uuid(task_id),
                    &lease.owner,
                    &lease.until.as_millis(),
                    &now.as_millis(),
                    &now.to_string(),
                ],
            )
            .await?;
        let row = &rows[0];
        let code: i16 = row.try_get(0).map_err(driver("starting a task"))?;
        match code {
            0 => {
                self.shared.hub.notify(task_id, 1);
                match self.get(task_id).await? {
                    Some(task) => Ok(StartOutcome::Started(Box::new(task))),
                    None => Ok(StartOutcome::NotFound),
                }
            }
            1 => Ok(StartOutcome::AlreadyRunning),
            2 => Ok(StartOutcome::AlreadyFinished {
                status: rows::status(row.try_get(1).map_err(driver("starting a task"))?)?,
            }),
            _ => Ok(StartOutcome::NotFound),
        }
    }

    async fn claim(&self, op: &str, limit: usize, lease: Lease) -> Result<Vec<Task>> {
        let now = Timestamp::now();
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self
            .query(
                "claiming tasks",
                &self.shared.sql.claim,
                &[
                    &op,
                    &limit,
                    &lease.owner,
                    &lease.until.as_millis(),
                    &now.as_millis(),
                    &now.to_string(),
                ],
            )
            .await?;
        let tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        for task in &tasks {
            self.shared.hub.notify(task.task_id, 1);
        }
        Ok(tasks)
    }

    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome> {
        tasktape_core::store::check_appendable(&body)?;
        let (reply, answer) = oneshot::channel();
        self.write(WriteJob::Append {
            task_id,
            body: body.encode(),
            reply: AppendReply::Wait(reply),
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn append_queued(
        &self,
        task_id: TaskId,
        body: EventBody,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        tasktape_core::store::check_appendable(&body)?;
        self.write(WriteJob::Append {
            task_id,
            body: body.encode(),
            reply: AppendReply::Ack(ack),
        })
        .await
    }

    async fn finish(&self, task_id: TaskId, outcome: Outcome) -> Result<FinishOutcome> {
        self.finish_queued(task_id, outcome, None).await
    }

    async fn finish_reported(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Result<FinishOutcome> {
        self.finish_queued(task_id, outcome, Some(ack)).await
    }

    async fn reap(
        &self,
        task_id: TaskId,
        now: Timestamp,
        error: tasktape_core::ErrorInfo,
    ) -> Result<Option<FinishOutcome>> {
        let client = self.client().await?;
        self.shared
            .finish_task(&client, task_id, &Outcome::Failed(error), Some(now))
            .await
    }

    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome> {
        let now = Timestamp::now();
        let cancel_body = Outcome::Cancelled.final_body().encode();
        let context = "cancelling a task";
        let rows = self
            .query(
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
        let row = &rows[0];
        let code: i16 = row.try_get(0).map_err(driver(context))?;
        Ok(match code {
            0 => {
                let seq: i64 = row.try_get(2).map_err(driver(context))?;
                self.shared.hub.notify(task_id, seq as u64);
                CancelOutcome::Cancelled { seq: seq as u64 }
            }
            1 => CancelOutcome::Requested {
                owner: row.try_get(3).map_err(driver(context))?,
            },
            2 => CancelOutcome::AlreadyTerminal {
                status: rows::status(row.try_get(1).map_err(driver(context))?)?,
            },
            _ => CancelOutcome::NotFound,
        })
    }

    async fn get(&self, task_id: TaskId) -> Result<Option<Task>> {
        let rows = self
            .query("reading a task", &self.shared.sql.get, &[&uuid(task_id)])
            .await?;
        rows.first().map(task_from_row).transpose()
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage> {
        let mut sql = self.shared.sql.list.clone();
        let status = query.status.map(|status| status.as_str().to_owned());
        let limit = i64::try_from(query.limit.max(1).saturating_add(1)).unwrap_or(i64::MAX);
        let after = query
            .after
            .map(|cursor| (cursor.created_at.as_millis(), uuid(cursor.task_id)));
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        if let Some(op) = &query.op {
            params.push(op);
            sql.push_str(&format!(" AND op = ${}", params.len()));
        }
        if let Some((created_at, task_id)) = &after {
            params.push(created_at);
            params.push(task_id);
            let (at, id) = (params.len() - 1, params.len());
            sql.push_str(&format!(
                " AND (created_at < ${at} OR (created_at = ${at} AND task_id > ${id}))"
            ));
        }
        params.push(&limit);
        sql.push_str(&format!(
            " ORDER BY created_at DESC, task_id ASC LIMIT ${}",
            params.len()
        ));
        let rows = self.query("listing tasks", &sql, &params).await?;
        let mut tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        let wanted = query.limit.max(1);
        let has_more = tasks.len() > wanted;
        tasks.truncate(wanted);
        let next_cursor = if has_more {
            tasks.last().map(|task| tasktape_core::store::Cursor {
                created_at: task.created_at,
                task_id: task.task_id,
            })
        } else {
            None
        };
        Ok(ListPage {
            tasks,
            next_cursor,
            has_more,
        })
    }

    async fn counts(&self) -> Result<StatusCounts> {
        let rows = self
            .query("counting tasks", &self.shared.sql.counts, &[])
            .await?;
        let mut counts: StatusCounts = Status::ALL.into_iter().map(|status| (status, 0)).collect();
        for row in rows {
            let status = rows::status(row.try_get(0).map_err(driver("counting tasks"))?)?;
            let count: i64 = row.try_get(1).map_err(driver("counting tasks"))?;
            counts.insert(status, count as u64);
        }
        Ok(counts)
    }

    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>> {
        let context = "reading a tape";
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                context,
                &self.shared.sql.events,
                &[&uuid(task_id), &from, &limit],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let status = rows::status(first.try_get(0).map_err(driver(context))?)?;
        let last_seq: i64 = first.try_get(1).map_err(driver(context))?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: Option<i64> = row.try_get(2).map_err(driver(context))?;
            if let Some(seq) = seq {
                events.push(StoredEvent {
                    seq: seq as u64,
                    json: row.try_get(3).map_err(driver(context))?,
                });
            }
        }
        Ok(Some(TapePage {
            status,
            events,
            last_seq: last_seq as u64,
        }))
    }

    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>> {
        let rows = self
            .query(
                "reading a tape",
                &self.shared.sql.last_seq,
                &[&uuid(task_id)],
            )
            .await?;
        rows.first()
            .map(|row| {
                row.try_get::<_, i64>(0)
                    .map(|seq| seq as u64)
                    .map_err(driver("reading a tape"))
            })
            .transpose()
    }

    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64> {
        let client = self.client().await?;
        let context = "renewing leases";
        let statement = client
            .prepare_cached(&self.shared.sql.renew)
            .await
            .map_err(driver(context))?;
        client
            .execute(&statement, &[&owner, &until.as_millis()])
            .await
            .map_err(driver(context))
    }

    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>> {
        let rows = self
            .query(
                "finding expired leases",
                &self.shared.sql.expired,
                &[&now.as_millis(), &exclude_owner],
            )
            .await?;
        Self::task_ids(&rows, "finding expired leases")
    }

    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>> {
        let rows = self
            .query("finding leftovers", &self.shared.sql.leftovers, &[&owner])
            .await?;
        Self::task_ids(&rows, "finding leftovers")
    }

    async fn pending(&self) -> Result<Vec<Task>> {
        let rows = self
            .query("listing pending tasks", &self.shared.sql.pending, &[])
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome> {
        let context = "deleting a task";
        let rows = self
            .query(context, &self.shared.sql.delete, &[&uuid(task_id)])
            .await?;
        let row = &rows[0];
        let code: i16 = row.try_get(0).map_err(driver(context))?;
        Ok(match code {
            0 => DeleteOutcome::Deleted,
            1 => DeleteOutcome::NotTerminal {
                status: rows::status(row.try_get(1).map_err(driver(context))?)?,
            },
            _ => DeleteOutcome::NotFound,
        })
    }

    async fn purge(&self, finished_before: Timestamp) -> Result<u64> {
        let rows = self
            .query(
                "purging tasks",
                &self.shared.sql.purge,
                &[&finished_before.as_millis()],
            )
            .await?;
        let count: i64 = rows[0].try_get(0).map_err(driver("purging tasks"))?;
        Ok(count as u64)
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}
