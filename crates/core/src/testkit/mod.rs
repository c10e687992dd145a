//! The store contract test kit (feature `testkit`): every operation and
//! invariant of [`crate::store::Store`], including races, as plain async
//! checks. A store crate runs all of them with one macro call:
//!
//! ```ignore
//! async fn fresh() -> tasktape_core::testkit::Harness { /* open an empty store */ }
//! tasktape_core::store_contract_tests!(fresh);
//! ```
//!
//! Each check panics (assert) on a broken contract.

mod checks;
mod claims;
mod counters;
mod flow;
mod jobs;
mod metadata;
mod outage;
mod races;
mod reads;
mod retention;
mod stats;

use std::any::Any;
use std::sync::Arc;

pub use checks::*;
pub use claims::*;
pub use counters::*;
pub use flow::*;
pub use jobs::*;
pub use metadata::*;
pub use outage::FlakyStore;
pub use races::*;
pub use reads::*;
pub use retention::*;
pub use stats::{time_counter_reads, time_delete_stall};

use crate::event::{Event, validate_tape};
use crate::model::{NewTask, Status, Task, TaskId};
use crate::store::{Lease, StartOutcome, Store};
use crate::time::Timestamp;

/// A fresh, empty store and whatever keeps it alive (a temp dir, a schema).
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Harness {
    /// Wraps a store and the guard that must outlive it.
    pub fn new(store: Arc<dyn Store>, guard: impl Any + Send + Sync) -> Self {
        Harness {
            store,
            _guard: Box::new(guard),
        }
    }
}

/// The contract's checks, listed once: calls `$crate::$callback!` with
/// `$prefix` followed by every check's name. [`store_contract_tests!`] makes
/// a test of each; [`CHECKS`] names them (and a test checks that every
/// `pub async fn …(h: Harness)` of the kit is listed).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_contract_checks {
    ($callback:ident ! ($($prefix:tt)*)) => {
        $crate::$callback! {
            $($prefix)*
            create_then_get_returns_a_pending_row_and_an_empty_tape,
            idempotency_key_returns_the_original_task,
            start_writes_task_started_as_seq_one,
            start_answers_already_running_finished_and_not_found,
            append_assigns_contiguous_seqs,
            append_to_pending_unknown_or_finished_writes_nothing,
            append_rejects_started_final_and_heartbeat_bodies,
            finish_writes_final_last_and_the_row_outcome,
            first_finish_wins,
            finish_of_a_pending_task_gives_a_tape_of_just_final,
            cancel_of_a_pending_task_gives_final_and_it_never_starts,
            cancel_of_a_running_task_is_recorded_and_wins_over_success,
            cancel_of_terminal_or_unknown_changes_nothing,
            terminal_rows_never_change,
            list_orders_filters_and_pages,
            cursor_walk_over_equal_created_at_yields_each_row_once,
            events_pages_by_from_seq_and_limit,
            tape_bytes_sums_the_stored_events,
            create_many_answers_each_task_in_order,
            one_megabyte_result_round_trips,
            unicode_and_odd_json_round_trip,
            leases_renew_expire_and_leftovers,
            delete_removes_only_terminal_tasks,
            purge_removes_only_old_finished_tasks,
            purge_and_sweep_go_in_small_batches,
            retention_deletes_old_finished_tasks_in_the_background,
            commits_wake_watchers,
            counts_by_status,
            counters_follow_every_transition,
            queued_appends_commit_in_order_before_finish,
            eight_concurrent_appenders_get_contiguous_seqs,
            append_racing_finish_leaves_final_last_and_alone,
            finish_racing_finish_has_one_winner,
            cancel_racing_success_leaves_one_final_matching_the_row,
            request_cancels_answers_each_task_in_order,
            claim_starts_the_oldest_pending_tasks_up_to_the_limit,
            claim_some_takes_at_most_what_it_asks,
            a_start_is_never_before_the_creation,
            records_swap_only_over_what_was_expected,
            concurrent_claims_never_exceed_the_limit_or_start_a_task_twice,
            reap_checks_the_lease_again,
            event_times_are_report_times_under_write_load,
            claims_go_by_priority_then_age_and_wait_for_run_at,
            a_failed_attempt_requeues_and_the_next_begins_with_a_log_line,
            cancels_win_over_retries_at_every_point,
            a_reap_can_requeue_a_lost_run,
            one_task_per_schedule_slot_and_the_latest_slot_key,
            lists_filter_by_creation_time_and_statuses,
            metadata_is_kept_and_filters_lists,
            create_many_and_repeated_keys_keep_metadata,
            keyed_claims_take_keys_in_turns,
            keyed_claims_keep_each_keys_concurrency,
            keyed_claims_over_many_keys_skip_full_ones,
            keyed_claims_cut_turns_by_what_keys_have,
            rates_bound_starts_per_window,
        }
    };
}

/// Generates one `#[tokio::test]` per contract check, each on a fresh store
/// from `$factory` (an async fn returning a [`Harness`]).
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:path) => {
        $crate::__store_contract_checks!(store_contract_tests!(@each $factory;));
    };
    (@each $factory:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                $crate::testkit::$check($factory().await).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_contract_names {
    ($($check:ident),* $(,)?) => {
        &[$(stringify!($check)),*]
    };
}

/// Every contract check's name, in the order [`store_contract_tests!`]
/// runs them.
pub const CHECKS: &[&str] = crate::__store_contract_checks!(__store_contract_names!());

/// A new task for `op` with `{"n": n}` params, created now.
pub fn new_task(op: &str) -> NewTask {
    NewTask::new(op, serde_json::json!({"n": 1}))
}

/// A progress body for step `current` of 10.
pub fn progress(current: u64) -> crate::event::EventBody {
    crate::event::EventBody::Progress {
        phase: "work".into(),
        current,
        total: 10,
        detail: Some(serde_json::json!({"step": current})),
    }
}

/// A lease for `owner` that holds for a minute.
pub fn lease(owner: &str) -> Lease {
    Lease {
        owner: owner.to_owned(),
        until: Timestamp::now().add_millis(60_000),
    }
}

/// Creates and starts a task; returns its id.
pub async fn running_task(store: &dyn Store) -> TaskId {
    let created = store.create(new_task("test")).await.expect("create");
    let started = store
        .start(created.task.task_id, lease("owner-a"))
        .await
        .expect("start");
    assert!(matches!(started, StartOutcome::Started(_)), "{started:?}");
    created.task.task_id
}

/// The whole tape, decoded.
pub async fn tape(store: &dyn Store, task_id: TaskId) -> Vec<Event> {
    let page = store
        .events(task_id, 0, usize::MAX / 2)
        .await
        .expect("events")
        .expect("task exists");
    page.events
        .iter()
        .map(|event| event.decode().expect("stored event decodes"))
        .collect()
}

/// The row, which must exist.
pub async fn row(store: &dyn Store, task_id: TaskId) -> Task {
    store.get(task_id).await.expect("get").expect("task exists")
}

/// Asserts invariant 1: the tape parses by the grammar and agrees with the row.
pub async fn assert_row_and_tape_agree(store: &dyn Store, task_id: TaskId) -> (Task, Vec<Event>) {
    let task = row(store, task_id).await;
    let events = tape(store, task_id).await;
    if let Err(error) = validate_tape(task.status, &events) {
        panic!("task {task_id}: {error}; tape: {events:#?}");
    }
    if let Some(crate::event::EventBody::Final { result, error, .. }) =
        events.last().map(|event| &event.body)
    {
        let present =
            |value: &Option<serde_json::Value>| value.clone().filter(|value| !value.is_null());
        assert_eq!(
            present(&task.result),
            present(result),
            "row result differs from final"
        );
        assert_eq!(&task.error, error, "row error differs from final");
    }
    (task, events)
}

/// Asserts the row has `status`.
pub async fn assert_status(store: &dyn Store, task_id: TaskId, status: Status) {
    let (task, _) = assert_row_and_tape_agree(store, task_id).await;
    assert_eq!(task.status, status, "task {task_id}");
}

#[cfg(test)]
mod tests {
    /// Every `pub async fn NAME(h: Harness)` of the kit is in [`super::CHECKS`]
    /// (so `store_contract_tests!` runs it), and nothing else is.
    #[test]
    fn every_check_is_listed_once() {
        let sources = [
            include_str!("checks.rs"),
            include_str!("claims.rs"),
            include_str!("counters.rs"),
            include_str!("flow.rs"),
            include_str!("jobs.rs"),
            include_str!("metadata.rs"),
            include_str!("races.rs"),
            include_str!("reads.rs"),
            include_str!("retention.rs"),
        ];
        let mut defined: Vec<&str> = sources
            .iter()
            .flat_map(|source| source.lines())
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter(|rest| rest.contains("(h: Harness)"))
            .filter_map(|rest| rest.split('(').next())
            .collect();
        let mut listed = super::CHECKS.to_vec();
        defined.sort_unstable();
        listed.sort_unstable();
        assert_eq!(defined, listed);
    }
}
