//! Leases judged by one clock: instances whose clocks are off by much more
//! than the lease's length (`TASKTAPE_CLOCK_SKEW_MS`) on one PostgreSQL
//! database neither lose their own tasks nor reap their peers'.

use std::time::Duration;

use serde_json::json;
use tasktape_client::{Client, Submission};
use tasktape_core::Status;

use crate::multi::{Instance, schema, test_url, wait_row};
use crate::support::serve_with_env;

/// Instance `id` with its clock moved by `skew_ms`, declaring exec op `op`
/// (a 4 s sleep) so that only it runs that op's tasks.
fn skewed(url: &str, id: &str, schema: &str, skew_ms: i64, op: &str) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(
        &config,
        format!(
            "instance_id = \"{id}\"\npg_schema = \"{schema}\"\nlease_ttl_ms = 2000\nlease_interval_ms = 300\n\
             [ops.{op}]\ncommand = [\"sleep\", \"4\"]\n"
        ),
    )
    .unwrap();
    let server = serve_with_env(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[
            ("TASKTAPE_STORE", url),
            ("TASKTAPE_CLOCK_SKEW_MS", &skew_ms.to_string()),
        ],
    );
    let client = Client::new(&server.base, None).unwrap();
    Instance::new(server, client, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_two_minutes_apart_keep_their_tasks() {
    let url = test_url();
    let schema = schema();
    // On time, two minutes behind, two minutes ahead; the lease is 2 s.
    let on_time = skewed(&url, "on-time", &schema, 0, "work_a");
    let behind = skewed(&url, "behind", &schema, -120_000, "work_b");
    let ahead = skewed(&url, "ahead", &schema, 120_000, "work_c");
    let mut tasks = Vec::new();
    for (instance, op) in [
        (&on_time, "work_a"),
        (&behind, "work_b"),
        (&ahead, "work_c"),
    ] {
        let submitted = instance
            .client
            .submit(&Submission::new(op, json!({})))
            .await
            .unwrap();
        tasks.push(submitted.task_id);
    }
    // Each runs 4 s, twice the lease: renewals by each instance, reaping
    // checks by all three meanwhile.
    for task in tasks {
        let row = wait_row(&on_time.client, task, Duration::from_secs(30), |row| {
            row.status.is_terminal()
        })
        .await;
        assert_eq!(
            row.status,
            Status::Succeeded,
            "{} ended {:?}",
            row.op,
            row.error
        );
    }
    drop((behind, ahead));
}
