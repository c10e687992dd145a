//! What deleting a huge tape costs the other writes on PostgreSQL: one task
//! with 5,000,000 events is deleted (its row at once, its tape swept in the
//! background in small transactions) while another writer creates tasks one
//! after another; prints that writer's latency before and during the sweep,
//! and how long the sweep took. `DELETE_EVENTS` sets the tape's size.
//!
//!     scripts/with-postgres cargo bench -p tasktape-store-postgres --bench delete

use std::sync::Arc;

use tasktape_store_postgres::{PostgresConfig, PostgresStore};

#[tokio::main]
async fn main() {
    let events = std::env::var("DELETE_EVENTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5_000_000);
    let url = std::env::var("TASKTAPE_TEST_PG")
        .expect("TASKTAPE_TEST_PG is not set: run under scripts/with-postgres");
    let schema = format!("delete_{}", std::process::id());
    let mut config = PostgresConfig::new(url.clone());
    config.schema = schema.clone();
    let store = PostgresStore::open(config).await.unwrap();
    tasktape_core::testkit::time_delete_stall(Arc::new(store), events).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}
