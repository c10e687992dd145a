//! What the dashboard's counts and activity chart cost with 1,000,000 tasks
//! in the store: `counts()` and `finished_per_minute()` read the counters
//! the writer keeps, never the tasks. Fills a fresh file with 1,000,000
//! finished tasks (spread over the last day) in one SQL transaction, with
//! the counters rebuilt from them in it (`rebuild_counters`), then times
//! 200 calls of each. Prints p50/p99 in ms.
//!
//!     cargo bench -p tasktape-store-sqlite --bench stats

use std::time::Instant;

use tasktape_core::time::Timestamp;
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

const TASKS: i64 = 1_000_000;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.db");
    drop(SqliteStore::open(SqliteConfig::new(&path)).unwrap()); // migrate
    let started = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        let now = Timestamp::now().as_millis();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO tasks (task_id, op, status, created_at, started_at, finished_at, params, params_digest) \
                     VALUES (?1, 'echo', 'pending', ?2, NULL, NULL, '{}', '')",
                )
                .unwrap();
            let mut finish = tx
                .prepare("UPDATE tasks SET status = ?2, finished_at = ?3 WHERE task_id = ?1")
                .unwrap();
            let statuses = ["succeeded", "succeeded", "succeeded", "failed", "cancelled"];
            for n in 0..TASKS {
                let id = n.to_be_bytes().repeat(2);
                let at = now - (TASKS - n) * 86; // over the last ~24 h
                insert.execute(rusqlite::params![id, at]).unwrap();
                finish
                    .execute(rusqlite::params![id, statuses[(n % 5) as usize], at + 50])
                    .unwrap();
            }
        }
        tasktape_store_sqlite::rebuild_counters(&tx).unwrap();
        tx.commit().unwrap();
    }
    println!(
        "filled {TASKS} finished tasks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
    tasktape_core::testkit::time_counter_reads(&store, TASKS as u64).await;
}
