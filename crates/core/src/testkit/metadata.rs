//! Metadata: kept on the row as given (single and bulk creates, a repeated
//! key's answer), matched by list filters (one key, several keys, with the
//! other filters, paged by cursor over equal creation times), and gone
//! from the filters with its task.

use super::{Harness, new_task};
use crate::model::{Metadata, TaskId};
use crate::store::{ListQuery, Store};
use crate::time::Timestamp;

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

async fn ids(store: &dyn Store, query: ListQuery) -> Vec<TaskId> {
    store
        .list(query)
        .await
        .expect("list")
        .tasks
        .into_iter()
        .map(|task| task.task_id)
        .collect()
}

fn filter(pairs: &[(&str, &str)]) -> ListQuery {
    ListQuery {
        metadata: meta(pairs),
        limit: 100,
        ..ListQuery::default()
    }
}

/// Metadata round-trips and list filters match every key given.
pub async fn metadata_is_kept_and_filters_lists(h: Harness) {
    let store = &*h.store;
    let base = Timestamp::now().as_millis() - 10_000;
    let mut made = Vec::new();
    // Customer 42: four tasks (two created in the same millisecond), the
    // last two in the eu region; customer 7: one; and one without any.
    for (n, (pairs, offset)) in [
        (vec![("customer", "42")], 0),
        (vec![("customer", "42"), ("region", "eu")], 1000),
        (vec![("customer", "42"), ("region", "eu")], 1000),
        (vec![("customer", "42"), ("region", "us")], 2000),
        (vec![("customer", "7"), ("region", "eu")], 3000),
        (vec![], 4000),
    ]
    .into_iter()
    .enumerate()
    {
        let mut task = new_task(if n % 2 == 0 { "a" } else { "b" });
        task.metadata = meta(&pairs);
        task.created_at = Timestamp::from_millis(base + offset);
        let created = store.create(task).await.expect("create");
        assert_eq!(created.task.metadata, meta(&pairs));
        made.push(created.task.task_id);
    }
    for (id, expected) in made.iter().zip([1usize, 2, 2, 2, 2, 0]) {
        let row = store.get(*id).await.unwrap().unwrap();
        assert_eq!(
            row.metadata.len(),
            expected,
            "task {id}: {:?}",
            row.metadata
        );
    }
    let equal = {
        let mut pair = [made[1], made[2]];
        pair.sort();
        pair
    };
    // One key: newest first, equal times by id.
    assert_eq!(
        ids(store, filter(&[("customer", "42")])).await,
        vec![made[3], equal[0], equal[1], made[0]]
    );
    // Several keys: all must hold.
    assert_eq!(
        ids(store, filter(&[("customer", "42"), ("region", "eu")])).await,
        equal.to_vec()
    );
    assert_eq!(
        ids(store, filter(&[("region", "eu"), ("customer", "7")])).await,
        vec![made[4]]
    );
    assert!(ids(store, filter(&[("customer", "9")])).await.is_empty());
    assert!(ids(store, filter(&[("customer", "4")])).await.is_empty());
    // With the other filters.
    let mut query = filter(&[("customer", "42")]);
    query.op = Some("a".into());
    assert_eq!(ids(store, query).await, vec![made[2], made[0]]);
    let mut query = filter(&[("region", "eu")]);
    query.created_after = Some(Timestamp::from_millis(base + 1500));
    assert_eq!(ids(store, query).await, vec![made[4]]);
    store.request_cancel(made[3]).await.unwrap();
    let mut query = filter(&[("customer", "42")]);
    query.statuses = vec![crate::model::Status::Cancelled];
    assert_eq!(ids(store, query).await, vec![made[3]]);
    // Paged one row at a time by cursor: each once, in order.
    let mut walked = Vec::new();
    let mut query = ListQuery {
        limit: 1,
        ..filter(&[("customer", "42")])
    };
    loop {
        let page = store.list(query.clone()).await.unwrap();
        walked.extend(page.tasks.iter().map(|task| task.task_id));
        match page.next_cursor.filter(|_| page.has_more) {
            Some(cursor) => query.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(walked, vec![made[3], equal[0], equal[1], made[0]]);
    // A deleted task leaves the filter.
    assert!(matches!(
        store.delete(made[3]).await.unwrap(),
        crate::store::DeleteOutcome::Deleted
    ));
    assert_eq!(
        ids(store, filter(&[("customer", "42")])).await,
        vec![equal[0], equal[1], made[0]]
    );
    // A purged one too.
    store.request_cancel(made[4]).await.unwrap();
    let purged = store
        .purge(Timestamp::now().add_millis(60_000), 100)
        .await
        .unwrap();
    assert!(purged >= 1, "purged {purged}");
    assert!(ids(store, filter(&[("customer", "7")])).await.is_empty());
}

/// Bulk creates keep each task's metadata; a repeated idempotency key
/// answers the first task, with its metadata.
pub async fn create_many_and_repeated_keys_keep_metadata(h: Harness) {
    let store = &*h.store;
    let mut first = new_task("m");
    first.idempotency_key = Some("k1".into());
    first.metadata = meta(&[("customer", "1")]);
    store.create(first).await.unwrap();
    let mut again = new_task("m");
    again.idempotency_key = Some("k1".into());
    again.metadata = meta(&[("customer", "2")]);
    let found = store.create(again).await.unwrap();
    assert!(!found.created);
    assert_eq!(found.task.metadata, meta(&[("customer", "1")]));
    let tasks: Vec<_> = (0..5)
        .map(|n| {
            let mut task = new_task("m");
            if n % 2 == 0 {
                task.metadata = meta(&[("batch", "b"), ("n", &n.to_string())]);
            }
            task
        })
        .collect();
    let created = store.create_many(tasks).await.unwrap();
    for (n, created) in created.iter().enumerate() {
        let row = store.get(created.task.task_id).await.unwrap().unwrap();
        assert_eq!(row.metadata.len(), if n % 2 == 0 { 2 } else { 0 });
    }
    assert_eq!(ids(store, filter(&[("batch", "b")])).await.len(), 3);
    assert_eq!(
        ids(store, filter(&[("batch", "b"), ("n", "2")])).await,
        vec![created[2].task.task_id]
    );
}
