//! Single creates coalesced into batches (`creates.rs`): concurrent
//! creates are written together, each caller answered for its own task; a
//! repeated idempotency key gives one task to all; a row the statement
//! cannot write fails alone.
//!
//! On one thread: every call is queued before the store's writer runs, so
//! they are written as one batch (the set-based path, not the fallbacks).

use std::collections::HashSet;

use tasktape_core::Status;
use tasktape_core::store::prelude::*;
use tasktape_core::testkit::new_task;

use crate::support::{open_schema, refuse_rows, unique_schema};

#[tokio::test]
async fn concurrent_creates_each_get_their_task_and_a_key_gives_one() {
    let schema = unique_schema();
    let (store, _guard) = open_schema(&schema).await;
    let tasks: Vec<_> = (0..300)
        .map(|n| {
            let mut task = new_task("work");
            if n % 6 == 0 {
                task.idempotency_key = Some("shared-key".into());
            }
            task
        })
        .collect();
    let ids: Vec<_> = tasks.iter().map(|task| task.task_id).collect();
    let answers = futures::future::join_all(tasks.into_iter().map(|task| store.create(task))).await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    let keyed: HashSet<_> = answers
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 6 == 0)
        .map(|(_, created)| created.task.task_id)
        .collect();
    assert_eq!(keyed.len(), 1, "one task for the repeated key");
    let made = answers.iter().filter(|created| created.created).count();
    assert_eq!(made, 250 + 1);
    for (n, created) in answers.iter().enumerate() {
        if n % 6 != 0 {
            assert!(created.created);
            assert_eq!(
                created.task.task_id, ids[n],
                "each caller gets its own task"
            );
        }
        assert_eq!(created.task.status, Status::Pending);
    }
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&Status::Pending], 251);
    for id in ids
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 6 != 0)
        .map(|(_, id)| id)
    {
        assert!(store.get(*id).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_create_the_statement_refuses_fails_alone() {
    let schema = unique_schema();
    let (store, _guard) = open_schema(&schema).await;
    refuse_rows(&schema, "INSERT", "NEW.op = 'bad'").await;
    let tasks: Vec<_> = (0..40)
        .map(|n| new_task(if n == 17 { "bad" } else { "good" }))
        .collect();
    let answers = futures::future::join_all(tasks.into_iter().map(|task| store.create(task))).await;
    for (n, answer) in answers.into_iter().enumerate() {
        if n == 17 {
            let error = answer.unwrap_err();
            assert!(error.to_string().contains("refused by the test"), "{error}");
        } else {
            assert!(answer.unwrap().created, "task {n}");
        }
    }
    assert_eq!(store.counts().await.unwrap()[&Status::Pending], 39);
}
