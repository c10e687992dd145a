//! tasktape's embedded default store: one SQLite file in WAL mode.
//!
//! One writer thread owns the read-write connection and group-commits every
//! command waiting in its queue in one transaction ([`writer`]); a pool of
//! read-only connections serves reads in parallel ([`reader`]). A lock file
//! beside the database keeps a second process out, so the writer's cache of
//! live tasks is the truth. This crate knows SQL and SQLite; it knows nothing
//! of HTTP and decides nothing a `Store` caller should decide.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tasktape_core::StoreError> {
//! use tasktape_store_sqlite::{SqliteConfig, SqliteStore};
//! let store = SqliteStore::open(SqliteConfig::new("./tasktape-data/tasktape.db"))?;
//! # Ok(()) }
//! ```

mod checkpointer;
mod connection;
mod counters;
mod deletes;
mod files;
mod keyed;
mod reader;
mod records;
mod rows;
mod schema;
mod tail;
mod transitions;
mod writer;

pub use crate::counters::rebuild_counters;
use crate::files::{lock_file, probe_directory};

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use tasktape_core::BodyExt as _;

use async_trait::async_trait;
use tasktape_core::event::EventBody;
use tasktape_core::model::{NewTask, Outcome, Task, TaskId};
use tasktape_core::store::{
    AppendAck, AppendOutcome, CancelOutcome, Created, DeleteOutcome, FinishOutcome, Lease,
    ListPage, ListQuery, LostRun, Maintenance, MinuteCount, Reads, Result, StartOutcome,
    StatusCounts, StoreError, TapePage, Transitions,
};
use tasktape_core::time::Timestamp;
use tasktape_core::wake::WakeHub;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{configure_writer, open_connection};
use crate::reader::Readers;
use crate::rows::classify;
use crate::tail::Tails;
use crate::writer::{AppendReply, Command, Writer};

/// How SQLite syncs commits to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: a commit survives a process crash (kill -9); the
    /// last commits may be lost on power loss. SQLite's advice for WAL.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is fsynced.
    Full,
}

/// The page size of new files (see [`SqliteConfig::page_size`]): an event
/// of up to nearly 16 KiB is stored whole in one page, and 1–3 KB events
/// pack several to a page (`benches/storage.rs`).
pub const DEFAULT_PAGE_SIZE: u32 = 16_384;

/// Where and how to open the store.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// Read connections.
    pub readers: usize,
    /// Sync level for commits.
    pub durability: Durability,
    /// Upper bound on the file size; writes past it fail with [`StoreError::Full`].
    pub max_size_bytes: Option<u64>,
    /// Most commands committed in one transaction.
    pub batch_max: usize,
    /// Commands queued for the writer before senders wait.
    pub queue_capacity: usize,
    /// The page size of a new file, in bytes (a power of two from 512 to
    /// 65,536); a file that exists keeps the size it was made with.
    pub page_size: u32,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            readers: 4,
            durability: Durability::Normal,
            max_size_bytes: None,
            batch_max: 2048,
            queue_capacity: 16_384,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc<dyn Store>`.
pub struct SqliteStore {
    path: String,
    commands: mpsc::Sender<Command>,
    readers: Arc<Readers>,
    hub: Arc<WakeHub>,
    tails: Arc<Tails>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    checkpoints: Option<checkpointer::Handle>,
    _lock: File,
}

impl Drop for SqliteStore {
    /// Closes the queue, waits for the writer to commit what it holds and for
    /// the last checkpoint, and only then releases the lock file: a store
    /// opened on the same file afterwards never overlaps with this one.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(writer) = self.writer_thread.take() {
            let _ = writer.join();
        }
        if let Some(checkpoints) = self.checkpoints.take() {
            checkpoints.stop();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database. Fails with a
    /// typed error naming the path for an unwritable directory, a read-only,
    /// foreign or corrupt file, a newer schema, or a second process.
    pub fn open(config: SqliteConfig) -> Result<Self> {
        // A store that cannot be written at start (a full or read-only disk)
        // is refused with one line that says what to do: serving would
        // accept tasks it cannot record.
        let path = config.path.display().to_string();
        Self::open_writable(config).map_err(|error| match error {
            StoreError::Unavailable { message } => StoreError::Open {
                message: format!(
                    "{}: is its disk full, read-only or failing? Free space or fix the disk, then start again",
                    message
                        .strip_prefix(&format!("sqlite store at {path}: "))
                        .unwrap_or(&message)
                ),
                path,
            },
            StoreError::Full { path, message } => StoreError::Full {
                path,
                message: format!(
                    "{message}; free space on its disk (or raise the size limit), then start again"
                ),
            },
            StoreError::ReadOnly { path, message } => StoreError::ReadOnly {
                path,
                message: format!(
                    "{message}; make the file and its directory writable, then start again"
                ),
            },
            other => other,
        })
    }

    fn open_writable(config: SqliteConfig) -> Result<Self> {
        let path = config.path.display().to_string();
        let open_error = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        if let Some(parent) = config
            .path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| {
                open_error(format!(
                    "cannot create directory {}: {error}",
                    parent.display()
                ))
            })?;
        }
        if !(512..=65_536).contains(&config.page_size) || !config.page_size.is_power_of_two() {
            return Err(open_error(format!(
                "page size {} is not a power of two from 512 to 65536",
                config.page_size
            )));
        }
        probe_directory(&config.path, &path)?;
        let lock = lock_file(&config.path).map_err(open_error)?;
        let mut writer =
            open_connection(&config.path, true).map_err(|error| classify(&path, error))?;
        // SQLite opens the file lazily and falls back to read-only when it
        // cannot write: configure first (it touches the file), then check.
        configure_writer(&writer, &config).map_err(|error| classify(&path, error))?;
        if writer.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(StoreError::ReadOnly {
                path,
                message: "the file cannot be opened for writing".into(),
            });
        }
        match schema::migrate(&mut writer).map_err(|error| classify(&path, error))? {
            schema::Migrated::Current => {}
            schema::Migrated::TooNew(found) => {
                return Err(StoreError::SchemaTooNew {
                    path,
                    found,
                    known: schema::latest(),
                });
            }
        }
        let readers = (0..config.readers.max(1))
            .map(|_| {
                let conn = open_connection(&config.path, false)?;
                conn.pragma_update(None, "query_only", true)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(conn)
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|error| classify(&path, error))?;
        let checkpoints =
            checkpointer::start(&config.path, &path).map_err(|error| classify(&path, error))?;
        let hub = WakeHub::new();
        let tails = Arc::new(Tails::default());
        let (commands, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let writer = Writer::new(
            writer,
            path.clone(),
            Arc::clone(&hub),
            Arc::clone(&tails),
            config.batch_max.max(1),
        )
        .map_err(|error| classify(&path, error))?;
        let writer_thread = std::thread::Builder::new()
            .name("tasktape-sqlite-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|error| open_error(format!("cannot start the writer thread: {error}")))?;
        tracing::info!(%path, "sqlite store open");
        Ok(SqliteStore {
            readers: Readers::new(readers, path.clone()),
            path,
            commands,
            hub,
            tails,
            writer_thread: Some(writer_thread),
            checkpoints: Some(checkpoints),
            _lock: lock,
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The SQLite library version in use.
    pub async fn sqlite_version(&self) -> Result<String> {
        self.readers
            .with(|conn| conn.query_row("SELECT sqlite_version()", [], |row| row.get(0)))
            .await
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Transitions for SqliteStore {
    async fn create(&self, task: NewTask) -> Result<Created> {
        self.call(|reply| Command::Create(Box::new(task), reply))
            .await
    }

    async fn create_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Created>> {
        self.call(|reply| Command::CreateMany(tasks, reply)).await
    }

    async fn request_cancels(&self, ids: Vec<TaskId>) -> Result<Vec<CancelOutcome>> {
        self.call(|reply| Command::CancelMany(ids, reply)).await
    }

    async fn start(&self, task_id: TaskId, lease: Lease) -> Result<StartOutcome> {
        self.call(|reply| Command::Start(task_id, lease, reply))
            .await
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
        let op = op.to_owned();
        let keys = keys.cloned();
        self.call(|reply| Command::Claim(op, limit, (take, keys), lease, now, reply))
            .await
    }

    async fn append(&self, task_id: TaskId, body: EventBody) -> Result<AppendOutcome> {
        tasktape_core::store::check_appendable(&body)?;
        let body = body.encode();
        let at = Timestamp::now();
        self.call(|reply| Command::Append(task_id, body, at, AppendReply::Wait(reply)))
            .await
    }

    async fn append_queued(
        &self,
        task_id: TaskId,
        body: &EventBody,
        at: Timestamp,
        ack: Arc<AppendAck>,
    ) -> Result<()> {
        tasktape_core::store::check_appendable(body)?;
        let command = Command::Append(task_id, body.encode(), at, AppendReply::Ack(ack));
        self.commands
            .send(command)
            .await
            .map_err(|_| StoreError::Closed)
    }

    async fn finish(&self, task_id: TaskId, outcome: Outcome) -> Result<FinishOutcome> {
        self.call(|reply| Command::Finish(task_id, outcome, None, reply))
            .await
    }

    async fn finish_reported(
        &self,
        task_id: TaskId,
        outcome: Outcome,
        ack: Arc<AppendAck>,
    ) -> Result<FinishOutcome> {
        self.call(|reply| Command::Finish(task_id, outcome, Some(ack), reply))
            .await
    }

    async fn reap(&self, task_id: TaskId, lost: LostRun) -> Result<Option<FinishOutcome>> {
        self.call(|reply| Command::Reap(task_id, lost, reply)).await
    }

    async fn request_cancel(&self, task_id: TaskId) -> Result<CancelOutcome> {
        self.call(|reply| Command::RequestCancel(task_id, reply))
            .await
    }

    async fn renew_lease(&self, owner: &str, until: Timestamp) -> Result<u64> {
        let owner = owner.to_owned();
        self.call(|reply| Command::RenewLease(owner, until, reply))
            .await
    }

    async fn delete(&self, task_id: TaskId) -> Result<DeleteOutcome> {
        self.call(|reply| Command::Delete(task_id, reply)).await
    }
}

#[async_trait]
impl Reads for SqliteStore {
    async fn get(&self, task_id: TaskId) -> Result<Option<Task>> {
        self.readers
            .with(move |conn| reader::get(conn, task_id))
            .await
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage> {
        self.readers
            .with(move |conn| reader::list(conn, &query))
            .await
    }

    async fn counts(&self) -> Result<StatusCounts> {
        self.readers.with(reader::counts).await
    }

    async fn finished_per_minute(&self, since: Timestamp) -> Result<Vec<MinuteCount>> {
        self.readers
            .with(move |conn| reader::finished_per_minute(conn, since))
            .await
    }

    async fn events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>> {
        if let Some(page) = self.tails.page(task_id, from_seq, limit) {
            return Ok(Some(page));
        }
        self.readers
            .with(move |conn| reader::events(conn, task_id, from_seq, limit))
            .await
    }

    async fn tape_bytes(&self, task_id: TaskId) -> Result<u64> {
        let read = move |conn: &mut _| reader::tape_bytes(conn, task_id);
        self.readers.with(read).await
    }

    async fn last_seq(&self, task_id: TaskId) -> Result<Option<u64>> {
        if let Some(last_seq) = self.tails.last_seq(task_id) {
            return Ok(Some(last_seq));
        }
        self.readers
            .with(move |conn| reader::last_seq(conn, task_id))
            .await
    }

    async fn next_due(&self, op: &str, after: Timestamp) -> Result<Option<Timestamp>> {
        let op = op.to_owned();
        self.readers
            .with(move |conn| reader::next_due(conn, &op, after))
            .await
    }

    async fn rate_window(&self, op: &str, since: Timestamp) -> Result<(u64, Option<Timestamp>)> {
        let op = op.to_owned();
        self.readers
            .with(move |conn| reader::rate_window(conn, &op, since))
            .await
    }

    async fn latest_key(&self, prefix: &str) -> Result<Option<String>> {
        let prefix = prefix.to_owned();
        self.readers
            .with(move |conn| reader::latest_key(conn, &prefix))
            .await
    }

    async fn expired(&self, now: Timestamp, exclude_owner: &str) -> Result<Vec<TaskId>> {
        let exclude_owner = exclude_owner.to_owned();
        self.readers
            .with(move |conn| reader::expired(conn, now, &exclude_owner))
            .await
    }

    async fn leftovers(&self, owner: &str) -> Result<Vec<TaskId>> {
        let owner = owner.to_owned();
        self.readers
            .with(move |conn| reader::leftovers(conn, &owner))
            .await
    }

    async fn pending_ops(&self) -> Result<Vec<(String, u64)>> {
        self.readers.with(reader::pending_ops).await
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn purge(&self, finished_before: Timestamp, limit: usize) -> Result<u64> {
        self.call(|reply| Command::Purge(finished_before, limit, reply))
            .await
    }

    async fn sweep(&self, limit: usize) -> Result<u64> {
        self.call(|reply| Command::Sweep(limit, reply)).await
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
