//! Storage failures: each gives a typed error naming the file, never a panic
//! and never a half-written task.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::json;
use tasktape_core::EventBody;
use tasktape_core::model::{NewTask, Outcome};
use tasktape_core::store::prelude::*;
use tasktape_core::store::{AppendOutcome, Store, StoreError};
use tasktape_core::testkit::{assert_row_and_tape_agree, running_task};
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

fn open_at(path: &Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(SqliteConfig::new(path))
}

#[test]
fn an_unwritable_directory_is_an_open_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let path = blocker.join("data").join("tasktape.db");
    let error = open_at(&path).unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*blocker.to_string_lossy()),
        "{error}"
    );
}

#[test]
fn a_foreign_or_corrupt_file_is_a_corrupt_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.db");
    std::fs::write(&path, vec![0xA5u8; 64 * 1024]).unwrap();
    let error = open_at(&path).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![0xA5u8; 64 * 1024],
        "the file was not touched"
    );
}

/// Makes `path` unwritable even for root (chmod, then `chattr +i` when root
/// ignores modes); returns an undo.
fn make_read_only(path: &Path) -> impl FnOnce() {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let immutable = std::fs::OpenOptions::new().write(true).open(path).is_ok();
    if immutable {
        let status = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("chattr runs");
        assert!(
            status.success(),
            "cannot make {} read-only for this user",
            path.display()
        );
    }
    let path = path.to_owned();
    move || {
        if immutable {
            let _ = Command::new("chattr").arg("-i").arg(&path).status();
        }
    }
}

#[tokio::test]
async fn a_read_only_file_is_a_read_only_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.db");
    drop(open_at(&path).unwrap());
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("tasktape.db{suffix}")));
    }
    let undo = make_read_only(&path);
    let result = open_at(&path);
    undo();
    let error = result.unwrap_err();
    assert!(matches!(error, StoreError::ReadOnly { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_write_and_leaves_no_half_written_task() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.db");
    let mut config = SqliteConfig::new(&path);
    config.max_size_bytes = Some(1024 * 1024);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config).unwrap());
    let task_id = running_task(&*store).await;
    let chunk = json!("x".repeat(16 * 1024));
    let mut full = None;
    for _ in 0..200 {
        match store
            .append(
                task_id,
                EventBody::Partial {
                    kind: "chunk".into(),
                    payload: chunk.clone(),
                },
            )
            .await
        {
            Ok(AppendOutcome::Appended { .. }) => {}
            Ok(other) => panic!("{other:?}"),
            Err(error) => {
                full = Some(error);
                break;
            }
        }
    }
    let error = full.expect("the size limit was never hit");
    assert!(matches!(error, StoreError::Full { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
    // Reads still work and the task is whole: running, no gap, no final.
    assert_row_and_tape_agree(&*store, task_id).await;
    let big_result = Outcome::Succeeded(json!({"blob": "y".repeat(512 * 1024)}));
    assert!(matches!(
        store.finish(task_id, big_result).await,
        Err(StoreError::Full { .. })
    ));
    assert_row_and_tape_agree(&*store, task_id).await;
    assert!(matches!(
        store
            .create(NewTask::new("big", json!("z".repeat(512 * 1024))))
            .await,
        Err(StoreError::Full { .. })
    ));
    // Small writes that fit still go through, and the tape stays true.
    store.finish(task_id, Outcome::Cancelled).await.unwrap();
    assert_row_and_tape_agree(&*store, task_id).await;
}

#[test]
fn a_second_process_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.db");
    let _first = open_at(&path).unwrap();
    let error = open_at(&path).unwrap_err();
    assert!(error.to_string().contains("another process"), "{error}");
}

#[test]
fn a_schema_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.db");
    drop(open_at(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    match open_at(&path).unwrap_err() {
        StoreError::SchemaTooNew { found, .. } => assert_eq!(found, 99),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_new_file_takes_the_page_size_an_old_one_keeps_its_own_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |path: &Path| -> i64 {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap()
    };
    // The default, on a new file.
    let path = dir.path().join("default.db");
    drop(open_at(&path).unwrap());
    assert_eq!(
        page_size(&path),
        i64::from(tasktape_store_sqlite::DEFAULT_PAGE_SIZE)
    );
    // Another size, kept when the file is opened with a different one.
    let path = dir.path().join("small.db");
    let mut config = SqliteConfig::new(&path);
    config.page_size = 1024;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config).unwrap());
    let task = store
        .create(NewTask::new("echo", json!({})))
        .await
        .unwrap()
        .task;
    drop(store);
    assert_eq!(page_size(&path), 1024);
    let mut config = SqliteConfig::new(&path);
    config.page_size = 65_536;
    let store = SqliteStore::open(config).unwrap();
    assert!(store.get(task.task_id).await.unwrap().is_some());
    drop(store);
    assert_eq!(page_size(&path), 1024);
    // Not a power of two, or out of SQLite's range: refused, naming it.
    for bad in [3000, 256, 131_072] {
        let mut config = SqliteConfig::new(dir.path().join("bad.db"));
        config.page_size = bad;
        let Err(error) = SqliteStore::open(config) else {
            panic!("page size {bad} was accepted");
        };
        assert!(
            error.to_string().contains(&format!("page size {bad}")),
            "{error}"
        );
    }
    assert!(
        !dir.path().join("bad.db").exists(),
        "nothing made for a bad size"
    );
}

#[tokio::test]
async fn reopening_keeps_the_data_and_the_bundled_sqlite_is_not_a_known_bad_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.db");
    let task_id = {
        let store = open_at(&path).unwrap();
        let version = store.sqlite_version().await.unwrap();
        assert!(
            !["3.51.0", "3.51.1"].contains(&version.as_str()),
            "SQLite {version} has the WAL lock-up bug"
        );
        store
            .create(NewTask::new("echo", json!({"count": 1})))
            .await
            .unwrap()
            .task
            .task_id
    };
    let store = open_at(&path).unwrap();
    assert_eq!(
        store.get(task_id).await.unwrap().unwrap().params,
        json!({"count": 1})
    );
}

/// A task whose events could not all be stored never ends `succeeded`, and
/// other tasks' writes in the same batches are not failed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_events_hit_a_full_disk_ends_failed_not_succeeded() {
    use std::time::Duration;
    use tasktape_core::model::Status;
    use tasktape_core::{FnOp, Manager, ManagerConfig, OpRegistry};

    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::new(dir.path().join("tasktape.db"));
    config.max_size_bytes = Some(512 * 1024);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config).unwrap());
    let mut ops = OpRegistry::with_builtins();
    ops.register(FnOp::new(
        "hog",
        "writes big partials",
        |_params, reporter| async move {
            let chunk = json!("h".repeat(64 * 1024));
            for _ in 0..32 {
                // Ignore failures: the op does not notice, the engine must.
                let _ = reporter.partial("chunk", chunk.clone()).await;
            }
            Ok(json!("done"))
        },
    ));
    let manager = Manager::start(Arc::clone(&store), ops, ManagerConfig::default())
        .await
        .unwrap();
    let hog = manager
        .submit("hog", json!({}), None)
        .await
        .unwrap()
        .task
        .task_id;
    let small = manager
        .submit("echo", json!({"count": 3}), None)
        .await
        .unwrap()
        .task
        .task_id;
    for task_id in [hog, small] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let task = store.get(task_id).await.unwrap().unwrap();
            if task.status.is_terminal() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {task_id} did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (task, _) = assert_row_and_tape_agree(&*store, hog).await;
    assert_eq!(task.status, Status::Failed, "{task:?}");
    assert_eq!(task.error.unwrap().code, "store_error");
    let (task, _) = assert_row_and_tape_agree(&*store, small).await;
    assert_eq!(
        task.status,
        Status::Succeeded,
        "the small task was failed with the big one"
    );
    manager.shutdown(Duration::from_secs(2)).await;
}
