//! What deleting a huge tape costs the other writes: one task with
//! 5,000,000 events is deleted (its row at once, its tape swept in the
//! background in small transactions) while another writer creates tasks
//! one after another; prints that writer's latency before and during the
//! sweep, and how long the sweep took. `DELETE_EVENTS` sets the tape's size.
//!
//!     cargo bench -p tasktape-store-sqlite --bench delete

use std::sync::Arc;

use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

#[tokio::main]
async fn main() {
    let events = std::env::var("DELETE_EVENTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("delete.db"))).unwrap();
    tasktape_core::testkit::time_delete_stall(Arc::new(store), events).await;
}
