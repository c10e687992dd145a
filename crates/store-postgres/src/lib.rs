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

mod codes;
mod config;
mod coordination;
mod creates;
mod finishes;
mod guard;
mod listener;
mod migrations;
mod reads;
mod rows;
mod schema;
mod sql;
mod texts;
mod tls;
mod transitions;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tasktape_core::BodyExt as _;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tasktape_core::event::EventBody;
use tasktape_core::model::{NewTask, Outcome, Task, TaskId};
use tasktape_core::store::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease,
    ListPage, ListQuery, LostRun, MinuteCount, Reads, Result, StartOutcome, StatusCounts,
    StoreError, StoreSignal, TapePage, Transitions,
};
use tasktape_core::time::Timestamp;
use tasktape_core::wake::WakeHub;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use crate::config::PostgresConfig;
use crate::config::{bound_connections, describe};
use crate::rows::{driver, task_id};
pub use crate::schema::valid_schema_name;
use crate::sql::Sql;
use crate::writer::{AppendReply, WriteJob};

/// What the store, its writer and its listener share.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) sql: Sql,
    pub(crate) hub: Arc<WakeHub>,
    pub(crate) signals: broadcast::Sender<StoreSignal>,
    /// Whether the listener is connected (wake-ups from peers arrive).
    pub(crate) listening: AtomicBool,
    /// The longest any one database call may take (see
    /// [`PostgresConfig::operation_timeout`]).
    pub(crate) timeout: Duration,
    /// How connections of their own (listener, guard) do TLS.
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The instance using this store (set by `guard_instance`): its task
    /// writes are fenced by owner (a task taken again after its lease ran
    /// out no longer takes this instance's events or finish).
    pub(crate) owner: std::sync::OnceLock<String>,
    /// Creates waiting to be written together (`creates.rs`).
    pub(crate) creates: std::sync::Mutex<crate::creates::CreateQueue>,
}

impl Shared {
    /// Runs `sql` with `params` on a pooled connection (a cached statement).
    pub(crate) async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.bounded(context, async {
            let client = self.pool.get().await.map_err(rows::pool)?;
            let statement = client.prepare_cached(sql).await.map_err(driver(context))?;
            client
                .query(&statement, params)
                .await
                .map_err(driver(context))
        })
        .await
    }

    /// `call`, given up as [`StoreError::Unavailable`] past the timeout (a
    /// dead or black-holed connection must not hang its caller).
    pub(crate) async fn bounded<T>(
        &self,
        context: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Unavailable {
                message: format!(
                    "{context}: no answer from the database within {} ms",
                    self.timeout.as_millis()
                ),
            }),
        }
    }
}

/// The PostgreSQL store; see the crate docs.
pub struct PostgresStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteJob>,
    listener: tokio::task::JoinHandle<()>,
    /// How to connect (for the instance-id guard's own connection).
    connect: tokio_postgres::Config,
    /// The task holding the instance id's lock, once taken.
    guard: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// `user@host:port/database`, for messages (never the password).
    target: String,
    schema: String,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        if let Some(guard) = self
            .guard
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
        {
            guard.abort();
        }
    }
}

impl PostgresStore {
    /// Connects, creates the schema if missing and migrates it (under an
    /// advisory lock, so instances starting together take turns), and
    /// starts the writer and the listener. Must be called inside a Tokio
    /// runtime.
    pub async fn open(config: PostgresConfig) -> Result<Self> {
        let (url, tls) = tls::connector(&config.url)?;
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(|error| StoreError::Open {
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
        bound_connections(&mut pg, config.operation_timeout);
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
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
        migrations::migrate(&pool, &config.schema, &target).await?;
        let (signals, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            pool,
            sql: Sql::new(&config.schema),
            hub: WakeHub::new(),
            signals,
            listening: AtomicBool::new(false),
            timeout: config.operation_timeout,
            tls,
            owner: std::sync::OnceLock::new(),
            creates: std::sync::Mutex::default(),
        });
        let (writer, jobs) = mpsc::channel(16_384);
        tokio::spawn(writer::run(
            Arc::clone(&shared),
            jobs,
            config.batch_max.max(1),
        ));
        let listener = tokio::spawn(listener::run(
            Arc::clone(&shared),
            pg.clone(),
            config.schema.clone(),
        ));
        Ok(PostgresStore {
            shared,
            writer,
            listener,
            connect: pg,
            guard: std::sync::Mutex::new(None),
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

    /// Runs `sql` with `params` on a pooled connection (a cached statement).
    async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.shared.query(context, sql, params).await
    }

    /// Runs `sql` expecting exactly one row (an error otherwise, never an
    /// index out of bounds).
    async fn query_one(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row> {
        let rows = self.shared.query(context, sql, params).await?;
        match <[tokio_postgres::Row; 1]>::try_from(rows) {
            Ok([row]) => Ok(row),
            Err(rows) => Err(StoreError::backend(
                context.to_owned(),
                format!("{} rows where one was expected", rows.len()),
            )),
        }
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

#[async_trait]
impl Transitions for PostgresStore {
    async fn create(&self, task: NewTask) -> Result<Created> {
        self.shared.create_coalesced(task).await
    }

    async fn create_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Created>> {
        self.shared.create_tasks(tasks).await
    }

    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome> {
        self.start_task(task_id, lease).await
    }

    async fn claim_some(
        &self,
        op: &str,
        limit: usize,
        take: usize,
        keys: Option<&tasktape_core::flow::ClaimRule>,
        lease: Lease,
        now: Timestamp,
    ) -> Result<Vec<Task>> {
        self.claim_tasks(op, (limit, take), keys, lease, now).await
    }

    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome> {
        self.append_event(task_id, body).await
    }

    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        tasktape_core::store::check_appendable(body)?;
        self.write(WriteJob::Append {
            task_id,
            body: body.encode(),
            at,
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

    async fn reap(&self, task_id: TaskId, lost: LostRun) -> Result<Option<FinishOutcome>> {
        self.reap_task(task_id, lost).await
    }

    async fn request_cancels(&self, ids: Vec<TaskId>) -> Result<Vec<CancelOutcome>> {
        self.cancel_tasks(ids).await
    }

    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome> {
        self.cancel_task(task_id).await
    }

    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64> {
        self.renew_leases(owner, until).await
    }

    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome> {
        self.delete_task(task_id).await
    }
}

#[async_trait]
impl Reads for PostgresStore {
    async fn get(&self, task_id: TaskId) -> Result<Option<Task>> {
        self.read_task(task_id).await
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage> {
        self.list_tasks(query).await
    }

    async fn counts(&self) -> Result<StatusCounts> {
        self.count_tasks().await
    }

    async fn finished_per_minute(&self, since: Timestamp) -> Result<Vec<MinuteCount>> {
        self.finished_minutes(since).await
    }

    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>> {
        self.read_events(task_id, from_seq, limit).await
    }

    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>> {
        self.read_last_seq(task_id).await
    }

    async fn tape_bytes(&self, task_id: TaskId) -> Result<u64> {
        self.read_tape_bytes(task_id).await
    }

    async fn next_due(&self, op: &str, after: Timestamp) -> Result<Option<Timestamp>> {
        self.next_due_at(op, after).await
    }

    async fn rate_window(&self, op: &str, since: Timestamp) -> Result<(u64, Option<Timestamp>)> {
        let context = "reading a rate's window";
        let row = self
            .query_one(
                context,
                &self.shared.sql.rate_window,
                &[&op, &since.as_millis()],
            )
            .await?;
        let count: i64 = row.try_get(0).map_err(rows::driver(context))?;
        let oldest: Option<i64> = row.try_get(1).map_err(rows::driver(context))?;
        Ok((count.max(0) as u64, oldest.map(Timestamp::from_millis)))
    }

    async fn latest_key(&self, prefix: &str) -> Result<Option<String>> {
        self.latest_key_with(prefix).await
    }

    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>> {
        self.expired_tasks(now, exclude_owner).await
    }

    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>> {
        self.leftover_tasks(owner).await
    }

    async fn pending_ops(&self) -> Result<Vec<(String, u64)>> {
        self.pending_op_counts().await
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
