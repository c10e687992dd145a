//! Integration tests of the SQLite store, one binary: the core contract kit,
//! the manager on a real SQLite file, stress runs and storage failures.

mod clock;
mod contract;
mod errors;
mod jobs;
mod manager;
mod outage;
mod regressions;
mod rules;
mod stress;
mod support;
mod tail;

use std::sync::Arc;

use tasktape_core::testkit::Harness;
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

/// A fresh store in a temporary directory (removed when the harness drops).
pub async fn fresh() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        SqliteStore::open(SqliteConfig::new(dir.path().join("tasktape.db"))).expect("open store");
    Harness::new(Arc::new(store), dir)
}
