//! Claims of an op with a flow key (`ClaimRule`): keys take turns from where
//! the last claim left off, a key's weight is its turn's size, one key
//! alone still fills a claim, no key runs more than its concurrency (also
//! under concurrent claims), and a task without a key is taken when it
//! heads the op's queue.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Harness, lease, new_task};
use crate::flow::ClaimRule;
use crate::model::{Outcome, Task};
use crate::store::Store;
use crate::time::Timestamp;

async fn keyed(store: &dyn Store, op: &str, key: Option<&str>, count: usize) {
    for _ in 0..count {
        let mut task = new_task(op);
        task.flow_key = key.map(str::to_owned);
        store.create(task).await.expect("create");
    }
}

async fn claim(store: &dyn Store, op: &str, take: usize, rule: &ClaimRule) -> Vec<Task> {
    store
        .claim_some(op, 1000, take, Some(rule), lease("owner"), Timestamp::now())
        .await
        .expect("claim")
}

fn keys(tasks: &[Task]) -> Vec<&str> {
    tasks
        .iter()
        .map(|task| task.flow_key.as_deref().unwrap_or("-"))
        .collect()
}

/// Keys take turns; a key new since the last claim gets its turn in the
/// next one; weights size the turns; one key alone fills the claim.
pub async fn keyed_claims_take_keys_in_turns(h: Harness) {
    let store = &*h.store;
    let rule = ClaimRule::keyed();
    keyed(store, "f", Some("a"), 50).await;
    // One key alone: the claim is filled from it.
    assert_eq!(keys(&claim(store, "f", 5, &rule).await), ["a"; 5]);
    // A key submitted after a's backlog gets a turn at once.
    keyed(store, "f", Some("b"), 3).await;
    assert_eq!(keys(&claim(store, "f", 2, &rule).await), ["b", "a"]);
    assert_eq!(keys(&claim(store, "f", 2, &rule).await), ["b", "a"]);
    assert_eq!(
        keys(&claim(store, "f", 4, &rule).await),
        ["b", "a", "a", "a"]
    );
    // b is done: a alone again.
    assert_eq!(keys(&claim(store, "f", 3, &rule).await), ["a"; 3]);

    // Weights: a turn of gold starts 3 where silver starts 1.
    let weighted = ClaimRule {
        weights: [("gold".to_owned(), 3)].into(),
        ..ClaimRule::keyed()
    };
    keyed(store, "w", Some("gold"), 10).await;
    keyed(store, "w", Some("silver"), 10).await;
    assert_eq!(
        keys(&claim(store, "w", 4, &weighted).await),
        ["gold", "gold", "gold", "silver"]
    );
    assert_eq!(
        keys(&claim(store, "w", 4, &weighted).await),
        ["gold", "gold", "gold", "silver"]
    );

    // A task without a key (made before the op had a flow) is taken when
    // it heads the op's queue.
    keyed(store, "u", None, 1).await;
    keyed(store, "u", Some("k"), 2).await;
    let taken = claim(store, "u", 3, &rule).await;
    assert_eq!(taken.len(), 3, "{:?}", keys(&taken));
    assert!(keys(&taken).contains(&"-"), "{:?}", keys(&taken));
}

/// No key runs more than its concurrency: a full key waits without
/// holding the others back, and gets a turn once one of its tasks ends.
pub async fn keyed_claims_keep_each_keys_concurrency(h: Harness) {
    let store = &*h.store;
    let rule = ClaimRule {
        key_concurrency: Some(2),
        ..ClaimRule::keyed()
    };
    keyed(store, "c", Some("a"), 20).await;
    keyed(store, "c", Some("b"), 1).await;
    let first = claim(store, "c", 10, &rule).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for key in keys(&first) {
        *counts.entry(key).or_default() += 1;
    }
    assert_eq!(counts.get("a"), Some(&2), "{:?}", keys(&first));
    assert_eq!(counts.get("b"), Some(&1), "{:?}", keys(&first));
    assert!(claim(store, "c", 10, &rule).await.is_empty());
    // One of a's ends: a has room for one more.
    let a = first
        .iter()
        .find(|task| task.flow_key.as_deref() == Some("a"))
        .unwrap();
    store
        .finish(a.task_id, Outcome::Succeeded(serde_json::json!(1)))
        .await
        .unwrap();
    assert_eq!(keys(&claim(store, "c", 10, &rule).await), ["a"]);

    // Concurrent claims (one store; on PostgreSQL, claims of one op take
    // turns under its lock across instances) never go past the limit.
    keyed(store, "r", Some("x"), 30).await;
    keyed(store, "r", Some("y"), 30).await;
    let store: Arc<dyn Store> = Arc::clone(&h.store);
    let claims: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let rule = ClaimRule {
                key_concurrency: Some(3),
                ..ClaimRule::keyed()
            };
            tokio::spawn(async move { claim(&*store, "r", 10, &rule).await })
        })
        .collect();
    let mut started: HashMap<String, usize> = HashMap::new();
    for claimed in claims {
        for task in claimed.await.unwrap() {
            *started.entry(task.flow_key.unwrap()).or_default() += 1;
        }
    }
    assert_eq!(started.get("x"), Some(&3), "{started:?}");
    assert_eq!(started.get("y"), Some(&3), "{started:?}");
}

/// Many keys, some of them full: a claim passes over the full keys (more
/// of them than the claim's room) to reach keys with room, takes one task
/// of each key in a turn, and the next claim goes on after the last key it
/// visited; with every key full nothing starts, and each key that ends a
/// run gets exactly that room back.
pub async fn keyed_claims_over_many_keys_skip_full_ones(h: Harness) {
    let store = &*h.store;
    let rule = ClaimRule {
        key_concurrency: Some(1),
        ..ClaimRule::keyed()
    };
    let names: Vec<String> = (0..60).map(|n| format!("k{n:02}")).collect();
    for name in &names {
        keyed(store, "m", Some(name), 3).await;
    }
    let distinct = |tasks: &[Task]| {
        let mut seen: Vec<String> = tasks.iter().filter_map(|t| t.flow_key.clone()).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    // Two claims of 20: 40 distinct keys, in key order from the first.
    let first = claim(store, "m", 20, &rule).await;
    let second = claim(store, "m", 20, &rule).await;
    let mut both = first.clone();
    both.extend(second.iter().cloned());
    assert_eq!(both.len(), 40, "{:?}", keys(&both));
    assert_eq!(distinct(&both), 40, "{:?}", keys(&both));
    assert_eq!(
        keys(&first),
        names[..20].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        keys(&second),
        names[20..40].iter().map(String::as_str).collect::<Vec<_>>()
    );
    // 40 keys are full: a claim of 30 takes the 20 keys left, one task
    // each, then wraps round and passes over the 40 full ones (more than
    // its room) looking for more; a key picked in this claim is full too.
    let third = claim(store, "m", 30, &rule).await;
    assert_eq!(
        keys(&third),
        names[40..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(claim(store, "m", 100, &rule).await.is_empty());
    let end = |task: &Task| {
        let id = task.task_id;
        async move {
            store
                .finish(id, Outcome::Succeeded(serde_json::json!(1)))
                .await
                .unwrap();
        }
    };
    // k03 ends a run: a claim of one walks from k40 over the full keys to
    // the end, wraps round, and takes k03.
    end(&first[3]).await;
    assert_eq!(keys(&claim(store, "m", 1, &rule).await), ["k03"]);
    // k02 and k47 end a run each: the next claim of one goes on after k03
    // (the last key visited), so k47 comes before k02.
    end(&first[2]).await;
    end(&third[7]).await;
    assert_eq!(keys(&claim(store, "m", 1, &rule).await), ["k47"]);
    assert_eq!(keys(&claim(store, "m", 5, &rule).await), ["k02"]);
}

/// A key with fewer tasks than its turn takes only what it has: the room
/// left goes on to the next keys' turns, as if the turns were taken one
/// after another.
pub async fn keyed_claims_cut_turns_by_what_keys_have(h: Harness) {
    let store = &*h.store;
    let rule = ClaimRule {
        weights: [("a".to_owned(), 3), ("b".to_owned(), 3)].into(),
        ..ClaimRule::keyed()
    };
    keyed(store, "s", Some("a"), 1).await;
    keyed(store, "s", Some("b"), 10).await;
    keyed(store, "s", Some("c"), 10).await;
    assert_eq!(
        keys(&claim(store, "s", 4, &rule).await),
        ["a", "b", "b", "b"]
    );
    // The next claim goes on after b: c's turn, then b's.
    assert_eq!(
        keys(&claim(store, "s", 4, &rule).await),
        ["c", "b", "b", "b"]
    );
}

/// A rate: no more starts in a window than it allows (per op, or per key),
/// every start recorded (`rate_window` tells how many and the oldest); the
/// window moving on lets more start.
pub async fn rates_bound_starts_per_window(h: Harness) {
    let store = &*h.store;
    let rate = crate::flow::Rate {
        count: 3,
        window_ms: 1_000,
    };
    let per_op = ClaimRule {
        rate: Some(rate),
        ..ClaimRule::default()
    };
    keyed(store, "rated", None, 10).await;
    let since = Timestamp::now().add_millis(-1_000);
    assert_eq!(claim(store, "rated", 10, &per_op).await.len(), 3);
    assert!(claim(store, "rated", 10, &per_op).await.is_empty());
    let (used, oldest) = store.rate_window("rated", since).await.unwrap();
    assert_eq!(used, 3);
    assert!(oldest.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1_050)).await;
    assert_eq!(claim(store, "rated", 10, &per_op).await.len(), 3);

    // Per key: each key its own window.
    let per_key = ClaimRule {
        rate: Some(crate::flow::Rate {
            count: 2,
            window_ms: 1_000,
        }),
        rate_per_key: true,
        ..ClaimRule::keyed()
    };
    keyed(store, "pk", Some("a"), 5).await;
    keyed(store, "pk", Some("b"), 5).await;
    let first = claim(store, "pk", 10, &per_key).await;
    let mut sorted = keys(&first);
    sorted.sort_unstable();
    assert_eq!(sorted, ["a", "a", "b", "b"]);
    assert!(claim(store, "pk", 10, &per_key).await.is_empty());
}
