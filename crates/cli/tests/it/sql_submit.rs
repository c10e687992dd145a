//! `submit()` in SQL on PostgreSQL (migration 11), called from `psql` as an
//! application would inside its own transaction: the task exists if and
//! only if the transaction commits, an instance starts it at once (NOTIFY
//! at commit), the submit rules refuse bad input naming the field, a
//! repeated key answers the same task, and params are checked at the claim.
//! With the default schema (`tasktape`, in a database of its own) and a
//! custom one.

use std::process::Command;
use std::time::{Duration, Instant};

use tasktape_client::{ListQuery, Status, TaskId};

use crate::multi::{instance, schema, tape, test_url, wait_row};

/// Runs `sql` with `psql` (stops at the first error): its output (`-At`:
/// bare values) or its error text.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let bin = std::env::var("TASKTAPE_TEST_PG_BIN")
        .expect("TASKTAPE_TEST_PG_BIN (set by scripts/with-postgres)");
    let output = Command::new(format!("{bin}/psql"))
        .args([url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A database of its own on the test server (for the default schema).
fn fresh_database(url: &str) -> String {
    let name = format!("sql_submit_{}", uuid::Uuid::new_v4().simple());
    psql(url, &format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_submit_in_sql_enqueues_inside_the_callers_transaction() {
    let url = test_url();
    for (url, schema) in [
        (fresh_database(&url), "tasktape".to_owned()),
        (url.clone(), schema()),
    ] {
        let node = instance(&url, "a", &schema, "[ops.other]\ncommand = [\"true\"]\n");
        let s = format!("\"{schema}\"");

        // Rolled back: no task.
        psql(
            &url,
            &format!("BEGIN; SELECT {s}.submit('echo', '{{\"count\": 1}}'); ROLLBACK;"),
        )
        .unwrap();
        // Committed: the task exists and an instance starts it at once.
        let out = psql(
            &url,
            &format!("BEGIN; SELECT {s}.submit('echo', '{{\"count\": 2}}', 'order-1'); COMMIT;"),
        )
        .unwrap();
        let committed = Instant::now();
        let id: TaskId = out.lines().find_map(|line| line.parse().ok()).unwrap();
        let row = wait_row(&node.client, id, Duration::from_secs(10), |row| {
            row.status.is_terminal()
        })
        .await;
        assert_eq!(row.status, Status::Succeeded, "{schema}");
        assert!(
            committed.elapsed() < Duration::from_secs(2),
            "started at commit, not by a poll: {:?}",
            committed.elapsed()
        );
        assert_eq!(row.result, Some(serde_json::json!({"echoed": 2})));
        let events = tape(&node.client, id).await;
        assert_eq!(
            events.len(),
            2 + 3,
            "task_started, 2 progress, partial, final"
        );
        let all = node.client.list(&ListQuery::default()).await.unwrap();
        assert_eq!(all.tasks.len(), 1, "the rolled-back submit left nothing");

        // A repeated key answers the same task.
        let again = psql(
            &url,
            &format!("SELECT {s}.submit('echo', '{{\"count\": 9}}', 'order-1')"),
        )
        .unwrap();
        assert_eq!(again.parse::<TaskId>().unwrap(), id);

        // Delayed, with a priority.
        let later: TaskId = psql(
            &url,
            &format!("SELECT {s}.submit('echo', '{{}}', NULL, now() + interval '2 hours', 5)"),
        )
        .unwrap()
        .parse()
        .unwrap();
        let row = node.client.task(later).await.unwrap();
        assert_eq!((row.status, row.priority), (Status::Pending, 5));
        assert!(row.run_at.is_some());

        // Bad input: an error naming the field, nothing written.
        let refusals = [
            ("'nope', '{}'", "op: nope is not served"),
            ("'echo', '{}', NULL, NULL, 2000000", "priority: must be"),
            (
                "'echo', '{}', repeat('k', 300)",
                "idempotency_key: must be 1 to 256",
            ),
            (
                "'echo', '{}', 'schedule:x'",
                "idempotency_key: keys starting with",
            ),
            (
                "'other', '{}', 'order-1'",
                "idempotency_key: already used by a task of op echo",
            ),
            (
                "'echo', '{}', NULL, now() + interval '11 years'",
                "run_at: must be at most 10 years",
            ),
        ];
        for (arguments, expected) in refusals {
            let error = psql(&url, &format!("SELECT {s}.submit({arguments})")).unwrap_err();
            assert!(error.contains(expected), "{arguments}: {error}");
        }
        let all = node.client.list(&ListQuery::default()).await.unwrap();
        assert_eq!(all.tasks.len(), 2, "refusals wrote nothing");

        // Params the op refuses: the task ends failed at its claim.
        let bad: TaskId = psql(
            &url,
            &format!("SELECT {s}.submit('echo', '{{\"count\": \"many\"}}')"),
        )
        .unwrap()
        .parse()
        .unwrap();
        let row = wait_row(&node.client, bad, Duration::from_secs(10), |row| {
            row.status.is_terminal()
        })
        .await;
        assert_eq!(row.status, Status::Failed);
        let error = row.error.unwrap();
        assert_eq!(error.code, "invalid_request");
        assert_eq!(error.extra["field"], "count", "{error:?}");
        tasktape_core::validate_tape(row.status, &tape(&node.client, bad).await).unwrap();
    }
}
