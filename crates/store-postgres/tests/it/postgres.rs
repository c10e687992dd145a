//! What only the Postgres store does: migrations and schemas, peers' signals
//! through LISTEN/NOTIFY, typed errors for a bad URL or an unreachable
//! database.

use std::time::Duration;

use tasktape_core::store::{CancelOutcome, Store, StoreError, StoreSignal};
use tasktape_core::testkit::{lease, new_task};
use tasktape_store_postgres::{PostgresConfig, PostgresStore};

use crate::support::{open_schema, test_url, unique_schema};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_schema_migrate_once_and_see_each_other() {
    let schema = unique_schema();
    let ((a, _guard), (b, _other)) = tokio::join!(open_schema(&schema), open_schema(&schema));
    let created = a.create(new_task("work")).await.unwrap();
    assert_eq!(
        b.get(created.task.task_id).await.unwrap().unwrap().status,
        tasktape_core::Status::Pending
    );
    // Reopening an up-to-date schema changes nothing.
    let (again, _third) = open_schema(&schema).await;
    assert!(again.get(created.task.task_id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_hear_pending_work_cancels_finishes_and_events() {
    let schema = unique_schema();
    let (a, _guard) = open_schema(&schema).await;
    let (b, _other) = open_schema(&schema).await;
    let mut heard = b.signals().expect("a shared store has signals");
    // The listener connects in the background; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !b.listening() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next = async || loop {
        match tokio::time::timeout(Duration::from_secs(10), heard.recv()).await {
            Ok(Ok(StoreSignal::Resync)) => continue,
            Ok(Ok(signal)) => return signal,
            other => panic!("no signal: {other:?}"),
        }
    };
    let task = a.create(new_task("work")).await.unwrap().task;
    assert_eq!(next().await, StoreSignal::Pending { op: "work".into() });

    // A follower on b is woken by a's commits.
    let watch = b.wake_hub().watch(task.task_id);
    let claimed = a.claim("work", 1, lease("node-a")).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        watch
            .wait_past(0, tokio::time::Instant::now() + Duration::from_secs(10))
            .await,
        "task_started woke the peer"
    );
    assert!(matches!(
        b.request_cancel(task.task_id).await.unwrap(),
        CancelOutcome::Requested { .. }
    ));
    assert_eq!(
        next().await,
        StoreSignal::CancelRequested {
            task_id: task.task_id,
            owner: "node-a".into()
        }
    );
    a.finish(task.task_id, tasktape_core::Outcome::Cancelled)
        .await
        .unwrap();
    assert_eq!(next().await, StoreSignal::Finished { op: "work".into() });
    assert!(watch.announced() >= 2, "final woke the peer");
}

#[tokio::test]
async fn bad_urls_schemas_and_unreachable_databases_are_typed() {
    let error = PostgresStore::open(PostgresConfig::new("postgres://a b c:::"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error}");

    let mut config = PostgresConfig::new(test_url());
    config.schema = "Bad-Name".into();
    let error = PostgresStore::open(config).await.unwrap_err();
    assert!(error.to_string().contains("invalid schema name"), "{error}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config =
        PostgresConfig::new(format!("postgres://tasktape:secret@127.0.0.1:{port}/none"));
    config.connect_timeout = Duration::from_secs(1);
    let error = PostgresStore::open(config).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, StoreError::Open { .. }), "{text}");
    assert!(
        text.contains(&port.to_string()) && !text.contains("secret"),
        "{text}"
    );
}
