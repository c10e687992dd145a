//! Storage per byte: what an event of a given size costs on disk, and what
//! the layout costs to append and to replay.
//!
//! Two parts:
//! - `layouts`: the events table alone in plain SQLite (the store's own
//!   columns), `WITHOUT ROWID` (the key holds the row) against a rowid
//!   table with a `(task_id, seq)` index, at 4 KiB and 16 KiB pages, so
//!   the choice the store makes can be checked against the others;
//! - `stores`: the stores themselves — SQLite at its default page size and
//!   at 4 KiB (files made before it changed; `TASKTAPE_STORAGE_PAGES` picks
//!   others), and PostgreSQL when
//!   `TASKTAPE_TEST_PG` is set (run under `scripts/with-postgres`).
//!
//! Each run writes the events of 50 tasks at once (their events interleave,
//! as concurrent runs' do), then reads every tape back in order. Messages
//! are random letters and digits, so compression gains nothing.
//!
//! Run: `cargo bench -p tasktape --bench storage`, or
//! `scripts/with-postgres cargo bench -p tasktape --bench storage`.
//! `TASKTAPE_STORAGE_SIZES=100,1000,4000` picks the event sizes (bytes of
//! the stored JSON), `TASKTAPE_STORAGE_ONLY=layouts` (or `stores`) one part.
//! Figures print one per line: bytes on disk per event, that over the
//! event's size (the amplification), appends and replays per second.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tasktape_core::model::{NewTask, Outcome, TaskId};
use tasktape_core::store::{Lease, StartOutcome, Store};
use tasktape_core::{CancellationToken, Reporter, Timestamp};
use tasktape_store_sqlite::{DEFAULT_PAGE_SIZE, SqliteConfig, SqliteStore};

/// Tasks writing at once.
const TASKS: usize = 50;
/// The JSON around a log event's message (`{"type":"log",…,"ts":"…"}`),
/// for seq values of up to four digits.
const FRAME: usize = 82;

fn main() {
    let sizes: Vec<usize> = std::env::var("TASKTAPE_STORAGE_SIZES")
        .unwrap_or_else(|_| "100,1000,2000,3000,4000,16000".into())
        .split(',')
        .map(|size| size.trim().parse().expect("sizes are whole numbers"))
        .collect();
    let only = std::env::var("TASKTAPE_STORAGE_ONLY").unwrap_or_default();
    if only.is_empty() || only == "layouts" {
        println!("# layouts (plain SQLite, the events table alone)");
        for &size in &sizes {
            for page in [4096, 16384] {
                for without_rowid in [true, false] {
                    layout(size, page, without_rowid);
                }
            }
        }
    }
    if only.is_empty() || only == "stores" {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let pg = std::env::var("TASKTAPE_TEST_PG").ok();
        println!("# stores");
        // The default page size, and 4 KiB (files made before it changed).
        let pages: Vec<u32> = std::env::var("TASKTAPE_STORAGE_PAGES")
            .unwrap_or_else(|_| format!("{DEFAULT_PAGE_SIZE},4096"))
            .split(',')
            .map(|page| page.trim().parse().expect("page sizes are whole numbers"))
            .collect();
        for &size in &sizes {
            for &page in &pages {
                runtime.block_on(sqlite_store(size, page));
            }
            if let Some(url) = &pg {
                runtime.block_on(postgres_store(url, size));
            }
        }
    }
}

/// How many events of `size` bytes to write: about 24 MiB, within bounds.
fn event_count(size: usize) -> usize {
    ((24usize << 20) / size).clamp(5_000, 100_000)
}

/// A string of `len` random letters and digits (xorshift; no dependency).
fn random_text(len: usize, state: &mut u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            ALPHABET[(*state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

fn print(label: &str, size: usize, bytes_per_event: f64, appends: f64, replays: f64) {
    println!(
        "{label:<34} {size:>6} B events: {bytes_per_event:>8.0} B on disk each ({:.2}x), append {appends:>8.0}/s, replay {replays:>9.0}/s",
        bytes_per_event / size as f64
    );
}

fn file_bytes(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// The events table alone: `size`-byte events of [`TASKS`] interleaved
/// tapes, in transactions of 500 events (the store's group commit).
fn layout(size: usize, page: u32, without_rowid: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layout.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "page_size", page).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let table = if without_rowid {
        "CREATE TABLE events (task_id BLOB NOT NULL, seq INTEGER NOT NULL, json TEXT NOT NULL, \
         PRIMARY KEY (task_id, seq)) WITHOUT ROWID"
    } else {
        "CREATE TABLE events (task_id BLOB NOT NULL, seq INTEGER NOT NULL, json TEXT NOT NULL, \
         UNIQUE (task_id, seq))"
    };
    conn.execute_batch(table).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let before = file_bytes(&path);
    let ids: Vec<[u8; 16]> = (0..TASKS).map(|_| *TaskId::new().as_bytes()).collect();
    let count = event_count(size);
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let texts: Vec<String> = (0..64)
        .map(|_| random_text(size - FRAME.min(size), &mut state))
        .collect();
    let started = Instant::now();
    let mut written = 0;
    while written < count {
        conn.execute_batch("BEGIN").unwrap();
        {
            let mut insert = conn
                .prepare_cached("INSERT INTO events (task_id, seq, json) VALUES (?1, ?2, ?3)")
                .unwrap();
            for n in written..(written + 500).min(count) {
                let task = n % TASKS;
                let json = format!(
                    r#"{{"type":"log","level":"info","message":"{}","seq":{},"ts":"2026-12-07T11:00:00.000Z"}}"#,
                    texts[n % texts.len()],
                    n / TASKS + 1
                );
                insert
                    .execute(rusqlite::params![
                        ids[task].as_slice(),
                        (n / TASKS + 1) as i64,
                        json
                    ])
                    .unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        written = (written + 500).min(count);
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let append_secs = started.elapsed().as_secs_f64();
    let bytes = file_bytes(&path) - before;
    let started = Instant::now();
    let mut json_bytes = 0;
    let mut read = 0;
    let mut select = conn
        .prepare("SELECT seq, json FROM events WHERE task_id = ?1 ORDER BY seq")
        .unwrap();
    for id in &ids {
        let mut rows = select.query([id.as_slice()]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let json: String = row.get(1).unwrap();
            json_bytes += json.len();
            read += 1;
        }
    }
    assert_eq!(read, count, "every event reads back");
    let replay_secs = started.elapsed().as_secs_f64();
    let label = format!(
        "sqlite {} KiB pages, {}",
        page / 1024,
        if without_rowid {
            "WITHOUT ROWID"
        } else {
            "rowid + index"
        }
    );
    print(
        &label,
        json_bytes / count,
        bytes as f64 / count as f64,
        count as f64 / append_secs,
        count as f64 / replay_secs,
    );
}

/// Starts [`TASKS`] tasks in `store`.
async fn started_tasks(store: &Arc<dyn Store>) -> Vec<TaskId> {
    let lease = Lease {
        owner: "storage-bench".into(),
        until: Timestamp::now().add_millis(3_600_000),
    };
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        let task_id = store
            .create(NewTask::new("bench", json!({})))
            .await
            .unwrap()
            .task
            .task_id;
        assert!(matches!(
            store.start(task_id, lease.clone()).await.unwrap(),
            StartOutcome::Started(_)
        ));
        ids.push(task_id);
    }
    ids
}

/// Writes `size`-byte events to every task at once through a Reporter (as
/// ops do), finishes them, and returns the events written and the seconds.
async fn write_tapes(store: &Arc<dyn Store>, ids: &[TaskId], size: usize) -> (usize, f64) {
    let per_task = event_count(size) / TASKS;
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let texts: Arc<Vec<String>> = Arc::new(
        (0..64)
            .map(|_| random_text(size - FRAME.min(size), &mut state))
            .collect(),
    );
    let started = Instant::now();
    let mut writers = Vec::new();
    for (index, &task_id) in ids.iter().enumerate() {
        let store = Arc::clone(store);
        let texts = Arc::clone(&texts);
        writers.push(tokio::spawn(async move {
            let reporter = Reporter::new(Arc::clone(&store), task_id, CancellationToken::new());
            for n in 0..per_task {
                let text = &texts[(index + n) % texts.len()];
                reporter.log("info", text.as_str()).await.unwrap();
            }
            // `final` is queued after every event above: its commit means all committed.
            store
                .finish(task_id, Outcome::Succeeded(json!(null)))
                .await
                .unwrap();
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    (per_task * TASKS, started.elapsed().as_secs_f64())
}

/// Reads every tape back in pages; returns the events' JSON bytes, the
/// events read and the seconds.
async fn replay(store: &Arc<dyn Store>, ids: &[TaskId]) -> (usize, usize, f64) {
    let started = Instant::now();
    let (mut bytes, mut read) = (0, 0);
    for &task_id in ids {
        let mut from = 1;
        loop {
            let page = store.events(task_id, from, 1000).await.unwrap().unwrap();
            let Some(last) = page.events.last() else {
                break;
            };
            from = last.seq + 1;
            for event in &page.events {
                // Only the op's own events (not `task_started` or `final`).
                if event.kind_name() == "log" {
                    bytes += event.json.len();
                    read += 1;
                }
            }
        }
    }
    (bytes, read, started.elapsed().as_secs_f64())
}

async fn sqlite_store(size: usize, page: u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let config = || {
        let mut config = SqliteConfig::new(&path);
        config.page_size = page;
        config
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config()).unwrap());
    let ids = started_tasks(&store).await;
    // Dropping the store checkpoints its log: the file is the whole store.
    drop(store);
    let before = file_bytes(&path);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config()).unwrap());
    let (written, append_secs) = write_tapes(&store, &ids, size).await;
    drop(store);
    let bytes = file_bytes(&path) - before;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config()).unwrap());
    let (json_bytes, read, replay_secs) = replay(&store, &ids).await;
    assert_eq!(read, written, "every event reads back");
    let label = format!("sqlite store, {} KiB pages", page / 1024);
    print(
        &label,
        json_bytes / read,
        bytes as f64 / written as f64,
        written as f64 / append_secs,
        read as f64 / replay_secs,
    );
}

async fn postgres_store(url: &str, size: usize) {
    use tasktape_store_postgres::{PostgresConfig, PostgresStore};
    let schema = format!("storage_{}_{size}", std::process::id());
    let mut config = PostgresConfig::new(url.to_owned());
    config.schema = schema.clone();
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(config).await.unwrap());
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let events_bytes = || async {
        let row = client
            .query_one(
                &format!("SELECT pg_total_relation_size('{schema}.events')"),
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) as f64
    };
    let ids = started_tasks(&store).await;
    let before = events_bytes().await;
    let (written, append_secs) = write_tapes(&store, &ids, size).await;
    let bytes = events_bytes().await - before;
    let (json_bytes, read, replay_secs) = replay(&store, &ids).await;
    assert_eq!(read, written, "every event reads back");
    print(
        "postgres store",
        json_bytes / read,
        bytes / written as f64,
        written as f64 / append_secs,
        read as f64 / replay_secs,
    );
    drop(store);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
