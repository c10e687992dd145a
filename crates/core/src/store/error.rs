//! What goes wrong in a store, and which failures are worth retrying.

use std::sync::Arc;

/// What went wrong in a store. Driver errors are kept (shared) in
/// [`StoreError::Backend`] so no driver type leaks out; cloning is cheap, so
/// one failed batch answers each of its callers with the same error.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be opened or created.
    #[error("cannot open the store at {path}: {message}")]
    Open {
        /// The file or address.
        path: String,
        /// Why.
        message: String,
    },
    /// The store is read-only.
    #[error("the store at {path} is read-only: {message}")]
    ReadOnly {
        /// The file or address.
        path: String,
        /// What the backend said.
        message: String,
    },
    /// The file is not a tasktape database, or is damaged.
    #[error("the store at {path} is not a valid database (corrupt or foreign file): {message}")]
    Corrupt {
        /// The file or address.
        path: String,
        /// What the backend said.
        message: String,
    },
    /// The disk (or the configured size limit) is full; nothing was written.
    #[error("the store at {path} is full, nothing was written: {message}")]
    Full {
        /// The file or address.
        path: String,
        /// What the backend said.
        message: String,
    },
    /// The database was migrated by a newer tasktape.
    #[error("the store at {path} has schema version {found}, newer than this build's {known}")]
    SchemaTooNew {
        /// The file or address.
        path: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// `append` was given a `task_started`, `final` or `heartbeat` body.
    #[error("{kind} events cannot be appended: start, finish and streaming write them")]
    NotAppendable {
        /// The rejected type.
        kind: &'static str,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// Another live instance uses this instance id on the same store.
    #[error(
        "instance id {id:?} is in use by another live instance on {store}: give each instance its own instance_id (a restarted instance keeps its id once its old process is gone)"
    )]
    InstanceIdInUse {
        /// The id.
        id: String,
        /// Which store (address and schema).
        store: String,
    },
    /// The database cannot be reached now (connection refused or lost);
    /// trying again later may succeed.
    #[error("the store is unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
    /// Any other backend failure.
    #[error("{context}: {source}")]
    Backend {
        /// Which store (its path or address).
        context: String,
        /// The driver's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether trying the same write again later may succeed: the database
    /// is unreachable, restarting, locked or hit an I/O error
    /// ([`StoreError::Unavailable`]). Writes of running tasks (their events,
    /// their finish) are retried on these rather than given up. A full disk
    /// or size limit ([`StoreError::Full`]) is not: one oversized write must
    /// fail alone rather than hold every other write behind it.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// A [`StoreError::Backend`] in `context` (which store, which step).
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Backend {
            context: context.into(),
            source: Arc::from(source.into()),
        }
    }
}

/// How long a store's writer keeps retrying queued appends and finishes
/// that fail transiently (the database restarting, a disk freed) before it
/// gives them up, in order, as errors: as long as the default lease lasts.
pub const TRANSIENT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
