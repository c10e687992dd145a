//! The submit rules hold for every caller: an embedder calling the
//! manager gets the refusals an HTTP client gets (the server maps these
//! to its 422s), each naming its field, and nothing is created.

use serde_json::json;
use tasktape_core::manager::SubmitOptions;
use tasktape_core::retry::{Backoff, RetryPolicy};
use tasktape_core::{OpRegistry, SubmitError, Timestamp};

use crate::support::{Rig, quick_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_gets_the_same_refusals_as_an_http_client() {
    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let eleven_years = 11 * 366 * 24 * 3600 * 1000;
    let cases: Vec<(SubmitOptions, &str, &str)> = vec![
        (
            SubmitOptions {
                idempotency_key: Some(String::new()),
                ..SubmitOptions::default()
            },
            "idempotency_key",
            "string_length",
        ),
        (
            SubmitOptions {
                idempotency_key: Some("k".repeat(257)),
                ..SubmitOptions::default()
            },
            "idempotency_key",
            "string_length",
        ),
        (
            SubmitOptions {
                idempotency_key: Some("schedule:nightly:x".into()),
                ..SubmitOptions::default()
            },
            "idempotency_key",
            "value_error",
        ),
        (
            SubmitOptions {
                priority: 1_000_001,
                ..SubmitOptions::default()
            },
            "priority",
            "range",
        ),
        (
            SubmitOptions {
                run_at: Some(Timestamp::now().add_millis(eleven_years)),
                ..SubmitOptions::default()
            },
            "run_at",
            "datetime_future",
        ),
        (
            SubmitOptions {
                retry: Some(RetryPolicy {
                    max_attempts: 0,
                    backoff: Backoff::Fixed,
                    initial_ms: 10,
                    max_ms: 10,
                    jitter: false,
                }),
                ..SubmitOptions::default()
            },
            "retry.max_attempts",
            "value_error",
        ),
    ];
    for (options, want_field, want_kind) in cases {
        let refused = rig
            .manager
            .submit_with("echo", json!({"count": 1}), options)
            .await
            .expect_err(want_field);
        match refused {
            SubmitError::InvalidOption { field, kind, .. } => {
                assert_eq!((field.as_str(), kind.as_str()), (want_field, want_kind));
            }
            other => panic!("{want_field}: {other:?}"),
        }
    }
    // The bounds themselves pass, and nothing was created before.
    assert!(
        rig.store
            .list(Default::default())
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
    let edge = SubmitOptions {
        idempotency_key: Some("k".repeat(256)),
        priority: -1_000_000,
        run_at: Some(Timestamp::now().add_millis(9 * 366 * 24 * 3600 * 1000)),
        ..SubmitOptions::default()
    };
    let submitted = rig
        .manager
        .submit_with("echo", json!({"count": 1}), edge)
        .await
        .unwrap();
    assert!(submitted.created);
}

/// Digests are keyed by the store's key: the same for equal params, the
/// same key on a reopen; a task made before digests were keyed (its plain
/// digest stored) is still found by its idempotency key with equal params,
/// and other params are still a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_are_keyed_and_older_plain_ones_still_match() {
    use tasktape_core::model::{NewTask, params_digest};

    let rig = Rig::new(OpRegistry::with_builtins(), quick_config()).await;
    let params = json!({"count": 2, "delay_ms": 0});
    let keyed = |key: &str| SubmitOptions {
        idempotency_key: Some(key.to_owned()),
        ..SubmitOptions::default()
    };
    let first = rig
        .manager
        .submit_with("echo", params.clone(), keyed("a"))
        .await
        .unwrap();
    let second = rig
        .manager
        .submit_with("echo", params.clone(), keyed("b"))
        .await
        .unwrap();
    assert_eq!(first.task.params_digest, second.task.params_digest);
    assert_ne!(
        first.task.params_digest,
        params_digest(&params),
        "keyed, not plain"
    );
    // A task as an older release made it: the plain digest.
    let mut old = NewTask::new("echo", params.clone());
    old.idempotency_key = Some("old".into());
    let old = rig.store.create(old).await.unwrap().task;
    assert_eq!(old.params_digest, params_digest(&params));
    let again = rig
        .manager
        .submit_with("echo", params.clone(), keyed("old"))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.task.task_id, old.task_id);
    let other = rig
        .manager
        .submit_with("echo", json!({"count": 3}), keyed("old"))
        .await
        .unwrap_err();
    assert!(
        matches!(other, SubmitError::IdempotencyConflict { .. }),
        "{other:?}"
    );
}
