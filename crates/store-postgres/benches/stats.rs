//! What the dashboard's counts and activity chart cost with 1,000,000 tasks
//! in a PostgreSQL store: `counts()` and `finished_per_minute()` read the
//! counters the trigger keeps. Fills a fresh schema with 1,000,000 finished
//! tasks (over the last day) in SQL — the trigger keeps the counters as for
//! any write — then times 200 calls of each. Prints p50/p99 in ms.
//!
//!     scripts/with-postgres cargo bench -p tasktape-store-postgres --bench stats

use std::time::Instant;

use tasktape_core::time::Timestamp;
use tasktape_store_postgres::{PostgresConfig, PostgresStore};

const TASKS: i64 = 1_000_000;

#[tokio::main]
async fn main() {
    let url = std::env::var("TASKTAPE_TEST_PG")
        .expect("TASKTAPE_TEST_PG is not set: run under scripts/with-postgres");
    let schema = format!("stats_{}", std::process::id());
    let mut config = PostgresConfig::new(url.clone());
    config.schema = schema.clone();
    let store = PostgresStore::open(config).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let started = Instant::now();
    let now = Timestamp::now().as_millis();
    // In chunks of 500 rows a statement: the trigger updates one counter
    // row per row changed, and one statement changing very many rows grows
    // that row's version chain (the store's own statements change a few).
    const CHUNK: i64 = 500;
    let mut first = 1;
    while first <= TASKS {
        let last = (first + CHUNK - 1).min(TASKS);
        client
            .batch_execute(&format!(
                "INSERT INTO {schema}.tasks (task_id, op, status, created_at, params, params_digest) \
                 SELECT md5(n::text)::uuid, 'echo', 'pending', {now} - ({TASKS} - n) * 86, '{{}}', '' \
                   FROM generate_series({first}, {last}) AS n; \
                 UPDATE {schema}.tasks \
                    SET status = (ARRAY['succeeded','succeeded','succeeded','failed','cancelled'])[1 + (created_at % 5)], \
                        finished_at = created_at + 50 \
                  WHERE task_id IN (SELECT md5(n::text)::uuid FROM generate_series({first}, {last}) AS n);"
            ))
            .await
            .unwrap();
        first = last + 1;
    }
    println!(
        "filled {TASKS} finished tasks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tasktape_core::testkit::time_counter_reads(&store, TASKS as u64).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
