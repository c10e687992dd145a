//! Helpers shared by the manager, regression and stress tests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tasktape_core::follow::events_page;
use tasktape_core::model::{Status, Task, TaskId};
use tasktape_core::testkit::assert_row_and_tape_agree;
use tasktape_core::{Event, Manager, ManagerConfig, OpRegistry, Store};
use tasktape_store_sqlite::{SqliteConfig, SqliteStore};

/// A manager on a fresh SQLite file, with its directory.
pub struct Rig {
    pub manager: Manager,
    pub store: Arc<dyn Store>,
    pub _dir: tempfile::TempDir,
}

impl Rig {
    /// Submits `op` with `params`; returns the new task's id.
    pub async fn submit(&self, op: &str, params: serde_json::Value) -> TaskId {
        self.manager
            .submit(op, params, None)
            .await
            .expect("submit")
            .task
            .task_id
    }

    pub async fn new(ops: OpRegistry, config: ManagerConfig) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let manager = Manager::start(Arc::clone(&store), ops, config)
            .await
            .expect("manager starts");
        Rig {
            manager,
            store,
            _dir: dir,
        }
    }
}

pub fn open(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(SqliteConfig::new(dir.join("tasktape.db"))).expect("open store"))
}

/// Quick timings for tests: short grace, short lease interval.
pub fn quick_config() -> ManagerConfig {
    ManagerConfig {
        cancel_grace: Duration::from_millis(200),
        lease_interval: Duration::from_millis(50),
        lease_ttl: Duration::from_secs(5),
        ..ManagerConfig::default()
    }
}

/// Follows the tape with long-polls until `final`; returns the row and the tape.
pub async fn wait_final(store: &Arc<dyn Store>, task_id: TaskId) -> (Task, Vec<Event>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut from_seq = 0;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {task_id} did not finish in 30 s"
        );
        let page = events_page(&**store, task_id, from_seq, 1000, Duration::from_secs(5))
            .await
            .expect("events page")
            .expect("task exists");
        from_seq = page.next_from_seq;
        if page.task_status.is_terminal() && !page.has_more {
            return assert_row_and_tape_agree(&**store, task_id).await;
        }
    }
}

/// Waits until the row has `status`.
pub async fn wait_status(store: &Arc<dyn Store>, task_id: TaskId, status: Status) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let task = store.get(task_id).await.unwrap().unwrap();
        if task.status == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {task_id} stayed {}",
            task.status
        );
        let watch = store.wake_hub().watch(task_id);
        watch
            .wait_past(
                watch.announced(),
                tokio::time::Instant::now() + Duration::from_millis(20),
            )
            .await;
    }
}

/// A tiny deterministic PRNG (xorshift64*) for seeded stress runs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// Creates a task of an op this instance does not run (so its manager
/// never claims it) and starts it as `owner` with a lease of `lease_ms`.
pub async fn started_by(store: &Arc<dyn Store>, owner: &str, lease_ms: i64) -> TaskId {
    use tasktape_core::model::NewTask;
    use tasktape_core::store::{Lease, StartOutcome};
    let task_id = store
        .create(NewTask::new("peer-op", serde_json::json!({})))
        .await
        .unwrap()
        .task
        .task_id;
    let lease = Lease {
        owner: owner.into(),
        until: tasktape_core::Timestamp::now().add_millis(lease_ms),
    };
    assert!(matches!(
        store.start(task_id, lease).await.unwrap(),
        StartOutcome::Started(_)
    ));
    task_id
}
